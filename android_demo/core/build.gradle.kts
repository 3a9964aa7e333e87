// athe-core as a Gradle module, for the Android app (android_demo/app includes it as ":core").
// The same sources also build with Maven (pom.xml, run-tests.sh), which is what is tested offline
// here; this file is only exercised by the app's Gradle build.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.withType<JavaCompile>().configureEach {
    options.encoding = "UTF-8"
    options.release.set(17) // --release, whatever JDK Android Studio runs Gradle with
    // Warnings are errors in the Maven build (pom.xml), which is the one tested here.
    options.compilerArgs.add("-Xlint:all")
}

tasks.test {
    // The shared vectors written by android_demo/vectors/make_vectors.py.
    systemProperty("athe.vectors", file("../vectors/vectors.json").absolutePath)
    inputs.file("../vectors/vectors.json")
}

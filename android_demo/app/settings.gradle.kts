// The ATHE Edge phone demo: an Android Studio project. Open this folder (android_demo/app) in
// Android Studio, or build from the command line: see README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "athe-demo"

include(":app")
// The dispatch logic (manifest, preprocessing, level choice) in plain Java, tested offline with
// Maven on the shared vectors; the same sources build here as a Gradle java-library.
include(":core")
project(":core").projectDir = file("../core")

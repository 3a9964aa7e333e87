import javax.inject.Inject

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "org.athe.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.athe.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // Both runtimes ship these ABIs: phones (arm64) and the emulator (x86_64).
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }

    buildFeatures {
        viewBinding = true
    }

    androidResources {
        // Model files are copied out of the APK once; storing them uncompressed makes that a plain copy.
        noCompress += listOf("tflite", "pte")
    }

    packaging {
        jniLibs {
            // LiteRT and ExecuTorch may both carry the NDK's C++ runtime.
            pickFirsts += listOf("**/libc++_shared.so")
        }
    }
}

/**
 * Copies the bundle named by `-PatheBundle=DIR` (manifest.json and its .tflite / .pte files)
 * into the APK's assets under `bundle/`. Without the property the APK has no bundle and the app
 * asks for a bundle folder on the phone instead.
 */
abstract class CopyAtheBundle : DefaultTask() {
    @get:Optional
    @get:InputDirectory
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val bundleDir: DirectoryProperty

    @get:OutputDirectory
    abstract val outputDir: DirectoryProperty

    @get:Inject
    abstract val fs: FileSystemOperations

    @TaskAction
    fun copy() {
        val out = outputDir.get().asFile
        fs.delete { delete(out) }
        out.mkdirs()
        if (!bundleDir.isPresent) {
            logger.lifecycle("copyAtheBundle: no -PatheBundle given; the APK carries no bundle")
            return
        }
        val src = bundleDir.get().asFile
        if (!File(src, "manifest.json").isFile) {
            throw GradleException("-PatheBundle=$src has no manifest.json; pass the folder 'athe convert' wrote")
        }
        fs.copy {
            from(src) { include("manifest.json", "*.tflite", "*.pte") }
            into(File(out, "bundle"))
        }
        logger.lifecycle("copyAtheBundle: packed $src into assets/bundle/")
    }
}

val copyAtheBundle = tasks.register<CopyAtheBundle>("copyAtheBundle") {
    providers.gradleProperty("atheBundle").orNull?.let { bundleDir.set(file(it)) }
}

androidComponents {
    onVariants { variant ->
        variant.sources.assets?.addGeneratedSourceDirectory(copyAtheBundle, CopyAtheBundle::outputDir)
    }
}

val executorchVersion = providers.gradleProperty("executorchVersion").orNull

dependencies {
    implementation(project(":core"))

    implementation(libs.litert)
    if (executorchVersion != null) {
        implementation("org.pytorch:executorch-android:$executorchVersion")
    } else {
        implementation(libs.executorch.android)
    }

    implementation(libs.androidx.core.ktx)
    implementation(libs.androidx.appcompat)
    implementation(libs.androidx.activity.ktx)
    implementation(libs.androidx.lifecycle.runtime.ktx)
    implementation(libs.androidx.exifinterface)
    implementation(libs.androidx.documentfile)
    implementation(libs.material)
    implementation(libs.kotlinx.coroutines.android)
}

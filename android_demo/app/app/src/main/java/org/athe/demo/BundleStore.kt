package org.athe.demo

import android.content.Context
import android.net.Uri
import androidx.documentfile.provider.DocumentFile
import java.io.File
import java.io.IOException
import org.athe.core.Manifest

/**
 * Where the app keeps bundles: always as plain files under `filesDir/bundles/`, because both
 * runtimes load models from a file path. A bundle comes from the APK's assets (packed at build
 * time with `-PatheBundle=DIR`) or from a folder the user picks on the phone. Files are verified
 * (size and sha256 against the manifest) by [org.athe.core.Bundle.open] before anything loads them.
 */
class BundleStore(private val context: Context) {
    private val root = File(context.filesDir, "bundles")

    /** The bundle packed into the APK, copied out on first use (or when the APK's differs); null if none. */
    fun fromAssets(): File? {
        val names = context.assets.list(ASSET_DIR)?.toSet() ?: emptySet()
        if (Manifest.FILE_NAME !in names) {
            return null
        }
        val manifestText = context.assets.open("$ASSET_DIR/${Manifest.FILE_NAME}").use { Manifest.readUtf8(it) }
        val dir = File(root, "packed")
        val installed = File(dir, Manifest.FILE_NAME)
        if (installed.isFile && installed.readText() == manifestText) {
            return dir
        }
        val manifest = Manifest.parse(manifestText, "assets/$ASSET_DIR/${Manifest.FILE_NAME}")
        replace(dir) { tmp ->
            for (path in artifactPaths(manifest)) {
                if (path in names) {
                    context.assets.open("$ASSET_DIR/$path").use { input ->
                        File(tmp, path).outputStream().use { input.copyTo(it) }
                    }
                }
            }
            File(tmp, Manifest.FILE_NAME).writeText(manifestText)
        }
        return dir
    }

    /**
     * Copy a bundle folder the user picked (ACTION_OPEN_DOCUMENT_TREE): manifest.json and the files
     * it lists. Formats whose files are absent are left out; opening that format then says so.
     */
    fun fromTree(tree: Uri): File {
        val folder = DocumentFile.fromTreeUri(context, tree)
            ?: throw IOException("cannot open the folder $tree")
        val manifestDoc = folder.findFile(Manifest.FILE_NAME)
            ?: throw IOException("'${folder.name}' has no manifest.json; pick the folder 'athe convert' wrote")
        val manifestText = context.contentResolver.openInputStream(manifestDoc.uri)?.use { Manifest.readUtf8(it) }
            ?: throw IOException("cannot read manifest.json in '${folder.name}'")
        val manifest = Manifest.parse(manifestText, "${folder.name}/${Manifest.FILE_NAME}")
        val dir = File(root, "picked")
        replace(dir) { tmp ->
            for (path in artifactPaths(manifest)) {
                val doc = findPath(folder, path) ?: continue
                context.contentResolver.openInputStream(doc.uri)?.use { input ->
                    File(tmp, path).apply { parentFile?.mkdirs() }.outputStream().use { input.copyTo(it) }
                }
            }
            File(tmp, Manifest.FILE_NAME).writeText(manifestText)
        }
        return dir
    }

    private fun artifactPaths(manifest: Manifest): Set<String> =
        manifest.artifacts().values.flatMap { files -> files.values.map { it.path() } }.toSet()

    private fun findPath(folder: DocumentFile, path: String): DocumentFile? {
        var node: DocumentFile = folder
        for (part in path.split('/')) {
            node = node.findFile(part) ?: return null
        }
        return node
    }

    /** Build the new bundle in a temporary folder, then swap it in: never a half-copied bundle. */
    private fun replace(dir: File, fill: (File) -> Unit) {
        val tmp = File(root, "${dir.name}.partial")
        tmp.deleteRecursively()
        if (!tmp.mkdirs()) {
            throw IOException("cannot create $tmp")
        }
        try {
            fill(tmp)
        } catch (e: Exception) {
            tmp.deleteRecursively()
            throw e
        }
        dir.deleteRecursively()
        if (!tmp.renameTo(dir)) {
            throw IOException("cannot move $tmp to $dir")
        }
    }

    companion object {
        /** Folder inside the APK's assets that `copyAtheBundle` fills. */
        const val ASSET_DIR = "bundle"
    }
}

package org.athe.demo

import android.net.Uri
import android.os.Bundle
import android.widget.Toast
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.core.content.FileProvider
import androidx.core.view.ViewCompat
import androidx.core.view.WindowInsetsCompat
import androidx.lifecycle.lifecycleScope
import java.io.File
import java.util.Locale
import java.util.concurrent.Executors
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.athe.core.Dispatcher
import org.athe.core.Prediction
import org.athe.demo.databinding.ActivityMainBinding

/**
 * One screen: pick or shoot a photo, see the label, its probability, the exit that answered (the
 * bundle's default policy for a bundle with stages: `exit`) with every gate score against its
 * threshold, or the level the router chose with its scores; the latency of each step and stage, the
 * share of images that exited early, and a short history; switch LiteRT / ExecuTorch.
 */
class MainActivity : AppCompatActivity() {
    private lateinit var ui: ActivityMainBinding
    private lateinit var store: BundleStore

    /** Dispatchers are not thread-safe: every load and prediction runs on this one thread. */
    private val worker = Executors.newSingleThreadExecutor().asCoroutineDispatcher()
    @Volatile private var bundleDir: File? = null
    private var backend = Backend.LITERT
    @Volatile private var dispatcher: Dispatcher? = null
    private val history = ArrayDeque<String>()
    private var exits = 0
    private var early = 0
    private var cameraUri: Uri? = null

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) classify(uri)
    }
    private val takePhoto = registerForActivityResult(ActivityResultContracts.TakePicture()) { saved ->
        val uri = cameraUri
        if (saved && uri != null) classify(uri)
    }
    private val openBundle = registerForActivityResult(ActivityResultContracts.OpenDocumentTree()) { tree ->
        if (tree != null) load { store.fromTree(tree) }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        ui = ActivityMainBinding.inflate(layoutInflater)
        setContentView(ui.root)
        ViewCompat.setOnApplyWindowInsetsListener(ui.root) { view, insets ->
            val bars = insets.getInsets(WindowInsetsCompat.Type.systemBars())
            view.setPadding(bars.left, bars.top, bars.right, bars.bottom)
            insets
        }
        store = BundleStore(this)

        ui.pickPhoto.setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        ui.takePhoto.setOnClickListener {
            val file = File(cacheDir, "photos/shot.jpg").apply { parentFile?.mkdirs() }
            val uri = FileProvider.getUriForFile(this, "$packageName.photos", file)
            cameraUri = uri
            takePhoto.launch(uri)
        }
        ui.openBundle.setOnClickListener { openBundle.launch(null) }
        ui.backend.setOnCheckedChangeListener { _, checkedId ->
            backend = if (checkedId == ui.backendPte.id) Backend.EXECUTORCH else Backend.LITERT
            bundleDir?.let { dir -> load { dir } }
        }
        setBusy(true)
        load { store.fromAssets() }
    }

    override fun onDestroy() {
        super.onDestroy()
        val old = dispatcher
        dispatcher = null
        worker.executor.execute { runCatching { old?.close() } }
        worker.close() // runs the queued close, then stops the thread
    }

    /** Install (copy) a bundle, verify it for the current backend's format and load every artifact. */
    private fun load(source: () -> File?) {
        setBusy(true)
        lifecycleScope.launch {
            val message = withContext(worker) {
                try {
                    dispatcher?.close()
                    dispatcher = null
                    val dir = source() ?: return@withContext getString(R.string.no_bundle)
                    bundleDir = dir
                    val bundle = org.athe.core.Bundle.open(dir, backend.format)
                    val manifest = bundle.manifest()
                    val policy = manifest.defaultPolicy() // exit for bundles with stages, else router
                    val shape = org.athe.core.Preprocessor(manifest.input()).outputShape()
                    val d = Dispatcher.open(bundle, backend.loader(manifest, shape), policy)
                    dispatcher = d
                    exits = 0
                    early = 0
                    describe(d, policy)
                } catch (e: Exception) {
                    "Cannot use the bundle with ${backend.label}: ${e.message ?: e.javaClass.simpleName}"
                }
            }
            ui.bundleInfo.text = message
            setBusy(false)
        }
    }

    private fun describe(d: Dispatcher, policy: String): String {
        val m = d.manifest()
        val loads = d.loads().joinToString(", ") { String.format(Locale.ROOT, "%s %.0f ms", it.owner(), it.seconds() * 1e3) }
        val chain = d.policy().chain()
        val ths = (if (chain) d.exitThresholds() else d.thresholds()).entries
            .joinToString(", ") { (k, v) -> String.format(Locale.ROOT, "%s≥%.2f", k, v) }
        val chainText = if (m.stages().isEmpty()) "" else " · exits ${m.stageNames().joinToString(" → ")}"
        return "${m.variant()} · ${backend.label} (.${backend.format}) · levels ${m.levelNames().joinToString(" < ")}" +
            "$chainText\npolicy $policy" + (if (ths.isNotEmpty()) " · thresholds $ths" else "") +
            "\ninput ${m.input().cropSize()}×${m.input().cropSize()} ${m.input().interpolation()} · load: $loads"
    }

    private fun classify(uri: Uri) {
        val d = dispatcher
        if (d == null) {
            Toast.makeText(this, R.string.no_bundle, Toast.LENGTH_LONG).show()
            return
        }
        setBusy(true)
        lifecycleScope.launch {
            try {
                val photo = withContext(worker) { PhotoDecoder.decode(contentResolver, uri) }
                ui.preview.setImageBitmap(photo.preview)
                val p = withContext(worker) { d.predict(photo.rgb, photo.width, photo.height, photo.decodeMs) }
                show(p, photo)
            } catch (e: Exception) {
                ui.result.text = "Error"
                ui.details.text = e.message ?: e.javaClass.simpleName
            } finally {
                setBusy(false)
            }
        }
    }

    private fun show(p: Prediction, photo: DecodedPhoto) {
        ui.result.text = String.format(Locale.ROOT, "%s  %.1f%%", p.labelName(), p.probability() * 100)
        val d = dispatcher
        val m = d?.manifest()
        val why = if (p.exit() != null && d != null && m != null) {
            // every stage that ran: its gate score against its threshold (the last always answers)
            m.stageNames().filter { it in p.stageMs() }.joinToString("\n") { name ->
                val score = p.gateScores()[name]
                val th = d.exitThresholds()[name]
                when {
                    score != null && th != null -> String.format(Locale.ROOT, "gate %s %.3f %s %.3f", name, score,
                        if (score >= th) "≥" else "<", th)
                    name == m.stageNames().last() -> "gate $name: the last stage always answers"
                    else -> "gate $name: not asked (${d.policy().text()})"
                }
            }
        } else if (p.routerScores().isEmpty()) "router: not run (fixed level)"
        else "router: " + p.routerScores().entries.joinToString("  ") { (k, v) -> String.format(Locale.ROOT, "%s %.3f", k, v) }
        val steps = Prediction.STAGES.joinToString("  ") { s ->
            String.format(Locale.ROOT, "%s %.1f", if (s == "route" && p.exit() != null) "gates" else s, p.timingsMs()[s] ?: 0.0)
        }
        val stageMs = p.stageMs().entries.joinToString("  ") { (k, v) -> String.format(Locale.ROOT, "%s %.1f", k, v) }
        if (p.exit() != null && m != null) {
            exits++
            if (p.exitedEarly(m)) early++
        }
        val share = if (exits > 0) String.format(Locale.ROOT, "\nexited early: %d of %d (%.0f%%)", early, exits,
            100.0 * early / exits) else ""
        val answered = if (p.exit() != null) "exit ${p.exit()}" else "level ${p.level()}"
        ui.details.text = "$answered (${backend.label})\n$why\nms: $steps" +
            (if (stageMs.isNotEmpty()) "\nstages ms: $stageMs" else "") + share + "\nimage ${photo.width}×${photo.height}"
        history.addFirst(String.format(Locale.ROOT, "%-12s %5.1f%%  %-8s %-10s %6.1f ms",
            p.labelName(), p.probability() * 100, answered, backend.label, p.timingsMs()["total"] ?: 0.0))
        while (history.size > HISTORY) history.removeLast()
        ui.history.text = history.joinToString("\n")
    }

    private fun setBusy(busy: Boolean) {
        ui.pickPhoto.isEnabled = !busy
        ui.takePhoto.isEnabled = !busy
        ui.openBundle.isEnabled = !busy
        for (i in 0 until ui.backend.childCount) ui.backend.getChildAt(i).isEnabled = !busy
    }

    private companion object {
        const val HISTORY = 10
    }
}

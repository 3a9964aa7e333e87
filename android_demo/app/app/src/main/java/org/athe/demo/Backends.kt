package org.athe.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.io.File
import org.athe.core.Dispatcher
import org.athe.core.Manifest
import org.athe.core.Model
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The two runtimes behind the core's [Model] interface, one file per artifact, as in the
 * official examples: LiteRT's CompiledModel API for `.tflite`, ExecuTorch's `Module` for `.pte`.
 * Stage artifacts (owner `stage:<name>`) take and give several tensors: [Model.runMany].
 */
enum class Backend(val format: String, val label: String) {
    LITERT("tflite", "LiteRT"),
    EXECUTORCH("pte", "ExecuTorch");

    /** Loads one verified artifact (the router, a level or a stage) of this backend's format. */
    fun loader(manifest: Manifest, inputShape: LongArray): Dispatcher.Loader = Dispatcher.Loader { owner, file ->
        when (this) {
            LITERT -> LiteRtModel(file)
            EXECUTORCH -> ExecuTorchModel(file, inputShape, stageShapes(manifest, owner, inputShape))
        }
    }
}

/**
 * For a stage `owner`, the shape of each input from its flat length: the image has the input
 * spec's shape, `tokens` the previous stage's `[1, tokens, D]`, `scores` `[1, tokens - 1]`
 * (ExecuTorch needs shapes; LiteRT's buffers know theirs). Null for the router and the levels.
 */
private fun stageShapes(manifest: Manifest, owner: String, inputShape: LongArray): ((Int, Int) -> LongArray)? {
    if (!owner.startsWith("stage:")) return null
    val stages = manifest.stages()
    val index = stages.indexOfFirst { it.name() == owner.removePrefix("stage:") }
    val stage = stages[index]
    val previousTokens = if (index > 0) stages[index - 1].tokens().toLong() else 0L
    return { position, length ->
        when (stage.inputs()[position]) {
            "image" -> inputShape
            "tokens" -> longArrayOf(1, previousTokens, length / previousTokens)
            else -> longArrayOf(1, length.toLong())
        }
    }
}

/**
 * A `.tflite` artifact on LiteRT's CPU accelerator (XNNPACK); buffers allocated once. The
 * buffers follow the model signature's order, which for `athe convert`'s files is `args_N` /
 * `output_N`, the manifest's `inputs` / `outputs` order (the Python runtime reads them the same way).
 */
class LiteRtModel(file: File) : Model {
    private val model: CompiledModel =
        CompiledModel.create(file.absolutePath, CompiledModel.Options(Accelerator.CPU))
    private val inputs: List<TensorBuffer> = model.createInputBuffers()
    private val outputs: List<TensorBuffer> = model.createOutputBuffers()

    override fun run(input: FloatArray): FloatArray {
        inputs[0].writeFloat(input)
        model.run(inputs, outputs)
        return outputs[0].readFloat()
    }

    override fun runMany(inputs: Array<FloatArray>): Array<FloatArray> {
        require(inputs.size == this.inputs.size) {
            "the artifact takes ${this.inputs.size} input(s), got ${inputs.size}; re-convert the bundle"
        }
        inputs.forEachIndexed { i, x -> this.inputs[i].writeFloat(x) }
        model.run(this.inputs, outputs)
        return Array(outputs.size) { outputs[it].readFloat() }
    }

    override fun close() {
        inputs.forEach { it.close() }
        outputs.forEach { it.close() }
        model.close()
    }
}

/** A `.pte` artifact on ExecuTorch (XNNPACK-delegated by `athe convert`). */
class ExecuTorchModel(
    file: File,
    private val inputShape: LongArray,
    private val stageShapes: ((Int, Int) -> LongArray)? = null,
) : Model {
    private val module: Module = Module.load(file.absolutePath)

    init {
        // Load the method now so the first prediction does not pay for it.
        val error = module.loadMethod("forward")
        check(error == 0) { "ExecuTorch could not load 'forward' of ${file.name} (error 0x${error.toString(16)}); " +
            "is executorch-android the version that exported it?" }
    }

    override fun run(input: FloatArray): FloatArray {
        val outputs = module.forward(EValue.from(Tensor.fromBlob(input, inputShape)))
        return outputs[0].toTensor().dataAsFloatArray
    }

    override fun runMany(inputs: Array<FloatArray>): Array<FloatArray> {
        val shapes = stageShapes ?: { _: Int, _: Int -> inputShape }
        val values = inputs.mapIndexed { i, x -> EValue.from(Tensor.fromBlob(x, shapes(i, x.size))) }
        val outputs = module.forward(*values.toTypedArray())
        return Array(outputs.size) { outputs[it].toTensor().dataAsFloatArray }
    }

    override fun close() {
        module.destroy()
    }
}

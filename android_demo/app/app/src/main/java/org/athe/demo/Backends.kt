package org.athe.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.io.File
import org.athe.core.Dispatcher
import org.athe.core.Model
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The two runtimes behind the core's [Model] interface, one file per artifact, as in the
 * official examples: LiteRT's CompiledModel API for `.tflite`, ExecuTorch's `Module` for `.pte`.
 */
enum class Backend(val format: String, val label: String) {
    LITERT("tflite", "LiteRT"),
    EXECUTORCH("pte", "ExecuTorch");

    /** Loads one verified artifact (the router or a level) of this backend's format. */
    fun loader(inputShape: LongArray): Dispatcher.Loader = Dispatcher.Loader { _, file ->
        when (this) {
            LITERT -> LiteRtModel(file)
            EXECUTORCH -> ExecuTorchModel(file, inputShape)
        }
    }
}

/** A `.tflite` artifact on LiteRT's CPU accelerator (XNNPACK); buffers allocated once. */
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

    override fun close() {
        inputs.forEach { it.close() }
        outputs.forEach { it.close() }
        model.close()
    }
}

/** A `.pte` artifact on ExecuTorch (XNNPACK-delegated by `athe convert`). */
class ExecuTorchModel(file: File, private val inputShape: LongArray) : Model {
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

    override fun close() {
        module.destroy()
    }
}

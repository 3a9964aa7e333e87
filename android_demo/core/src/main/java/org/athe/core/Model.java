package org.athe.core;

/**
 * One loaded artifact (a level, the router or a stage) of one backend: LiteRT for {@code .tflite},
 * ExecuTorch for {@code .pte}, or a fake in tests.
 */
public interface Model extends AutoCloseable {
    /**
     * Run the model on one preprocessed input.
     *
     * @param input the {@link Preprocessor}'s output (batch 1, the manifest's layout)
     * @return the first output, flattened: logits for a level, per-level probabilities for the router
     */
    float[] run(float[] input) throws Exception;

    /**
     * Run a stage artifact: every input and every output, flat float32, in the artifact's positional
     * order (the manifest's {@code inputs} / {@code outputs}; for {@code .tflite} the order of the
     * signature's {@code args_N} / {@code output_N} names). The default covers one input and one
     * output; a backend that runs stages overrides it.
     */
    default float[][] runMany(float[][] inputs) throws Exception {
        if (inputs.length != 1) {
            throw new UnsupportedOperationException(getClass().getSimpleName() + " runs one input; this stage takes "
                    + inputs.length + " (implement Model.runMany)");
        }
        return new float[][] {run(inputs[0])};
    }

    @Override
    default void close() throws Exception {
    }
}

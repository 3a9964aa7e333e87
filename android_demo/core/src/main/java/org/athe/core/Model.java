package org.athe.core;

/**
 * One loaded artifact (a level or the router) of one backend: LiteRT for {@code .tflite},
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

    @Override
    default void close() throws Exception {
    }
}

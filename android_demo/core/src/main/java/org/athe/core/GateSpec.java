package org.athe.core;

import java.util.List;

/**
 * The exit gate of one stage ({@code athe.runtime.manifest.GateSpec}): a score in [0, 1] that the
 * stage's exit is right. {@code max_softmax}: the exit's top softmax probability. {@code logistic}:
 * {@code sigmoid(weights . (f - mean) / std + bias)} with {@code f} the {@code features}
 * ({@code max_prob}, {@code margin}, {@code entropy} of the exit's softmax; {@code cls}: the
 * stage's output CLS token). {@link ExitGate} computes it.
 *
 * @param kind     {@code logistic} or {@code max_softmax}
 * @param features feature names, in weight order
 * @param mean     standardisation mean per weight
 * @param std      standardisation std per weight (all &gt; 0 for {@code logistic})
 * @param weights  logistic weights
 * @param bias     logistic bias
 */
public record GateSpec(String kind, List<String> features, double[] mean, double[] std, double[] weights,
                       double bias) {
}

package org.athe.core;

import java.util.List;
import java.util.Map;

/**
 * The difficulty router: input is the same preprocessed tensor as the levels; output {@code i}
 * is the probability that level {@code outputs[i]} is right (sigmoid applied inside the artifact).
 *
 * @param files      artifact per format
 * @param outputs    level names in output order (equal to the manifest's levels)
 * @param thresholds one per level except the last (the fallback)
 * @param inputSize  side of the input crop
 * @param macs       multiply-accumulates of one inference
 */
public record RouterSpec(Map<String, Artifact> files, List<String> outputs, Map<String, Double> thresholds,
                         int inputSize, long macs) {
}

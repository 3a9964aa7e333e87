package org.athe.core;

import java.util.Map;

/**
 * What the dispatcher decided for one image (the Python runtime's {@code Prediction}).
 *
 * @param label        predicted class index
 * @param labelName    its name from the bundle's labels ({@code String.valueOf(label)} if none)
 * @param probability  softmax probability of {@code label}
 * @param level        the level that produced the logits (exit policies: the stage that answered)
 * @param routerScores router probability per level, in level order (empty when the router did not run)
 * @param logits       the chosen level's (or exit's) logits
 * @param timingsMs    wall-clock per stage: {@code decode}, {@code preprocess}, {@code route} (the
 *                     router, or the gates), {@code infer} (the level, or every stage run),
 *                     {@code total} (total also covers the glue between stages)
 * @param exit         the stage whose exit answered (exit policies), else null
 * @param stageMs      milliseconds of each stage that ran (exit policies), else empty
 * @param gateScores   gate score of each stage that was asked ({@code exit} policy), else empty
 */
public record Prediction(int label, String labelName, double probability, String level,
                         Map<String, Double> routerScores, float[] logits, Map<String, Double> timingsMs,
                         String exit, Map<String, Double> stageMs, Map<String, Double> gateScores) {

    /** Stage names in {@link #timingsMs}, in order. */
    public static final String[] STAGES = {"decode", "preprocess", "route", "infer", "total"};

    /** Whether an exit before the last stage answered. */
    public boolean exitedEarly(Manifest manifest) {
        return exit != null && !manifest.stages().isEmpty()
                && !exit.equals(manifest.stages().get(manifest.stages().size() - 1).name());
    }
}

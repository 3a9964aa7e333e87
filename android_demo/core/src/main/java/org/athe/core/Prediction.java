package org.athe.core;

import java.util.Map;

/**
 * What the dispatcher decided for one image (the Python runtime's {@code Prediction}).
 *
 * @param label        predicted class index
 * @param labelName    its name from the bundle's labels ({@code String.valueOf(label)} if none)
 * @param probability  softmax probability of {@code label}
 * @param level        the level that produced the logits
 * @param routerScores router probability per level, in level order (empty when the router did not run)
 * @param logits       the chosen level's logits
 * @param timingsMs    wall-clock per stage: {@code decode}, {@code preprocess}, {@code route},
 *                     {@code infer}, {@code total} (total also covers the glue between stages)
 */
public record Prediction(int label, String labelName, double probability, String level,
                         Map<String, Double> routerScores, float[] logits, Map<String, Double> timingsMs) {

    /** Stage names in {@link #timingsMs}, in order. */
    public static final String[] STAGES = {"decode", "preprocess", "route", "infer", "total"};
}

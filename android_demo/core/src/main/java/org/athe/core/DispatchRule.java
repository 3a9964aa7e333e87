package org.athe.core;

import java.util.List;
import java.util.Map;

/**
 * The dispatch rule shared by the Python dispatcher, the PWA and this module: levels are ordered
 * cheapest first; pick the first level whose router probability is {@code >= thresholds[level]};
 * the last (richest) level is the fallback and has no threshold.
 */
public final class DispatchRule {
    private DispatchRule() {
    }

    /**
     * {@code athe.runtime.manifest.choose_level}.
     *
     * @param scores     router output per level, in {@code levelNames} order (float32 router
     *                   outputs widened to double: the comparison is in double, as in Python)
     * @param levelNames levels cheapest first
     * @param thresholds per level except the last
     * @return the chosen level's name
     * @throws DispatchException fewer scores than thresholded levels, or a threshold missing
     */
    public static String chooseLevel(double[] scores, List<String> levelNames, Map<String, Double> thresholds) {
        if (levelNames.isEmpty()) {
            throw new DispatchException("no levels to choose from; a bundle needs at least one level");
        }
        if (scores.length < levelNames.size() - 1) {
            throw new DispatchException("the router gave " + scores.length + " scores for " + levelNames.size()
                    + " levels " + Py.repr(levelNames) + "; re-convert the bundle");
        }
        for (int i = 0; i < levelNames.size() - 1; i++) {
            String name = levelNames.get(i);
            Double threshold = thresholds.get(name);
            if (threshold == null) {
                throw new DispatchException("no threshold for level " + Py.str(name) + "; thresholds: "
                        + Py.repr(thresholds) + " (every level but the last needs one)");
            }
            if (scores[i] >= threshold) {
                return name;
            }
        }
        return levelNames.get(levelNames.size() - 1);
    }

    /** The top-1 class of a level's logits: index and softmax probability. */
    public record Top1(int label, double probability) {
    }

    /**
     * Argmax (first maximum on ties) and its softmax probability {@code 1 / sum(exp(z - max))},
     * computed in double from the float32 logits, as the Python dispatcher does.
     */
    public static Top1 softmaxTop1(float[] logits) {
        if (logits.length == 0) {
            throw new DispatchException("the level returned no logits; re-convert the bundle");
        }
        int best = 0;
        for (int i = 1; i < logits.length; i++) {
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        double max = logits[best];
        double sum = 0.0;
        for (float v : logits) {
            sum += Math.exp(v - max);
        }
        return new Top1(best, 1.0 / sum);
    }
}

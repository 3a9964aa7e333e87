package org.athe.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The manifest's {@code input} section: how an RGB image becomes the model input tensor.
 *
 * <p>Mirrors {@code athe.runtime.manifest.InputSpec}; {@link Preprocessor} reproduces the rule.
 *
 * @param rule         {@code resize_shorter_center_crop} (the only rule)
 * @param resizeSize   shorter side after the resize
 * @param cropSize     side of the square center crop
 * @param interpolation {@code bicubic}, {@code bilinear} or {@code nearest} (Pillow's filters)
 * @param mean         per-channel mean, RGB
 * @param std          per-channel standard deviation, RGB
 * @param layout       {@code NCHW} or {@code NHWC}
 * @param dtype        {@code float32}
 * @param scale        multiplier from uint8 to [0, 1] (1/255)
 * @param batchSize    batch dimension of the artifacts (1)
 */
public record InputSpec(String rule, int resizeSize, int cropSize, String interpolation, double[] mean,
                        double[] std, String layout, String dtype, double scale, int batchSize) {

    public static final String RULE = "resize_shorter_center_crop";
    private static final List<String> REQUIRED =
            Arrays.asList("rule", "resize_size", "crop_size", "interpolation", "mean", "std");
    private static final List<String> OPTIONAL = Arrays.asList("layout", "dtype", "scale", "batch_size");

    /**
     * Parse and validate a manifest {@code input} section.
     *
     * @param section the parsed JSON object
     * @param source  how to name the manifest in errors ({@code manifest}, a path)
     * @throws ManifestException a field is missing, unknown or of the wrong type
     */
    public static InputSpec fromJson(Object section, String source) {
        Map<String, Object> d = Manifest.require(section, REQUIRED, source + ": input");
        if (!RULE.equals(d.get("rule"))) {
            throw new ManifestException(source + ": input.rule " + Py.repr(d.get("rule")) + " unknown; expected '"
                    + RULE + "'");
        }
        for (String key : d.keySet()) {
            if (!REQUIRED.contains(key) && !OPTIONAL.contains(key)) {
                throw new ManifestException(source + ": input has an unexpected field " + Py.str(key)
                        + "; fields: " + Py.repr(allFields()) + " (re-run 'athe convert' with this athe version)");
            }
        }
        String where = source + ": input.";
        return new InputSpec(
                Manifest.string(d, "rule", where), Manifest.integer(d, "resize_size", where),
                Manifest.integer(d, "crop_size", where), Manifest.string(d, "interpolation", where),
                triple(d, "mean", where), triple(d, "std", where),
                d.containsKey("layout") ? Manifest.string(d, "layout", where) : "NCHW",
                d.containsKey("dtype") ? Manifest.string(d, "dtype", where) : "float32",
                d.containsKey("scale") ? Manifest.number(d, "scale", where) : 1.0 / 255.0,
                d.containsKey("batch_size") ? Manifest.integer(d, "batch_size", where) : 1);
    }

    private static List<String> allFields() {
        List<String> out = new ArrayList<>(REQUIRED);
        out.addAll(OPTIONAL);
        return out;
    }

    private static double[] triple(Map<String, Object> d, String key, String where) {
        Object value = d.get(key);
        if (value instanceof List && ((List<?>) value).size() == 3) {
            double[] out = new double[3];
            for (int i = 0; i < 3; i++) {
                Object v = ((List<?>) value).get(i);
                if (!(v instanceof Number) || v instanceof Boolean) {
                    break;
                }
                out[i] = ((Number) v).doubleValue();
                if (i == 2) {
                    return out;
                }
            }
        }
        throw new ManifestException(where + key + " must be 3 numbers (R, G, B), got " + Py.repr(value));
    }

    /** The section as a manifest writes it (field names and order as Python's {@code asdict}). */
    public Map<String, Object> toMap() {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("rule", rule);
        out.put("resize_size", resizeSize);
        out.put("crop_size", cropSize);
        out.put("interpolation", interpolation);
        out.put("mean", Arrays.asList(mean[0], mean[1], mean[2]));
        out.put("std", Arrays.asList(std[0], std[1], std[2]));
        out.put("layout", layout);
        out.put("dtype", dtype);
        out.put("scale", scale);
        out.put("batch_size", batchSize);
        return out;
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof InputSpec && toMap().equals(((InputSpec) other).toMap());
    }

    @Override
    public int hashCode() {
        return toMap().hashCode();
    }

    @Override
    public String toString() {
        return "InputSpec" + toMap();
    }
}

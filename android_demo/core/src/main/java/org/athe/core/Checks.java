package org.athe.core;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.regex.Pattern;

/**
 * The field validators of {@code athe.runtime.manifest} ({@code _require}, {@code _kind},
 * {@code _integer}, {@code _number}, {@code _input}, {@code _artifact}, {@code _level},
 * {@code _router}, {@code _gate}, {@code _stage}, {@code _check_chain}): the same checks in the
 * same order with the same messages, so {@link Manifest#fromJson} refuses what Python refuses,
 * word for word. Numbers keep their JSON text ({@link Json.Number}), so a message prints a value
 * as Python's {@code repr} does and integers beyond a long compare exactly.
 */
final class Checks {
    private Checks() {
    }

    static final String CONVERT = "re-run 'athe convert'";
    static final String GATE_FIX = "re-run 'athe train router' (it fits the exit gates)";
    static final int MAX_INPUT_SIZE = 4096;
    /** Calibration's "never take this level" router threshold ({@code routing.NEVER}). */
    static final double NEVER_THRESHOLD = 1e9;
    static final List<String> INTERPOLATIONS = List.of("bicubic", "bilinear", "nearest");
    static final List<String> LAYOUTS = List.of("NCHW", "NHWC");
    static final List<String> TOKEN_SELECTIONS = List.of("none", "in-graph");
    static final List<String> GATE_FEATURES = List.of("max_prob", "margin", "entropy", "cls");
    static final List<String> INPUT_FIELDS = List.of("rule", "resize_size", "crop_size", "interpolation", "mean",
            "std", "layout", "dtype", "scale", "batch_size");
    static final List<String> ARTIFACT_FIELDS = List.of("path", "sha256", "bytes", "precision", "parity", "delegation");
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    private static final Pattern SHA256 = Pattern.compile("[0-9a-fA-F]{64}");
    private static final BigInteger TWO_1000 = BigInteger.TWO.pow(1000);

    // -- kinds and messages --------------------------------------------------------------------
    /** {@code _kind}: what a JSON value is, for messages ({@code '12' (a string)}). */
    static String kind(Object value) {
        if (value == null) {
            return "null";
        }
        String k = value instanceof Boolean ? "a boolean" : value instanceof Number ? "a number"
                : value instanceof String ? "a string" : value instanceof List ? "a list" : "an object";
        String text = Py.repr(value);
        int n = text.codePointCount(0, text.length());
        if (n > 40) {
            text = text.substring(0, text.offsetByCodePoints(0, 37)) + "...";
        }
        return text + " (" + k + ")";
    }

    static ManifestException bad(String where, String want, Object value, String fix) {
        return new ManifestException(where + " must be " + want + ", got " + kind(value) + "; " + fix);
    }

    static ManifestException bad(String where, String want, Object value) {
        return bad(where, want, value, CONVERT);
    }

    /** Python's {@code f"{x:g}"} for the bounds in messages (the ones used: 0, 1, 100, 1e+09). */
    static String g(double x) {
        if (x == Math.rint(x) && Math.abs(x) < 1e6) {
            return String.valueOf((long) x);
        }
        String e = String.format(java.util.Locale.ROOT, "%.5e", x);
        String mantissa = e.substring(0, e.indexOf('e')).replaceAll("\\.?0+$", "");
        int exp = Integer.parseInt(e.substring(e.indexOf('e') + 1));
        if (exp < -4 || exp >= 6) {
            return mantissa + "e" + (exp < 0 ? "-" : "+") + String.format(java.util.Locale.ROOT, "%02d", Math.abs(exp));
        }
        return BigDecimal.valueOf(x).stripTrailingZeros().toPlainString();
    }

    // -- scalars -------------------------------------------------------------------------------
    @SuppressWarnings("unchecked")
    static Map<String, Object> require(Object value, List<String> keys, String where) {
        if (!(value instanceof Map)) {
            throw new ManifestException(where + ": expected an object, got " + kind(value) + "; " + CONVERT);
        }
        Map<String, Object> d = (Map<String, Object>) value;
        List<String> missing = new ArrayList<>();
        for (String key : keys) {
            if (!d.containsKey(key)) {
                missing.add(key);
            }
        }
        if (!missing.isEmpty()) {
            throw new ManifestException(where + ": missing field(s) " + Py.repr(missing)
                    + "; re-run 'athe convert' to write a complete manifest");
        }
        return d;
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> object(Object value, String where) {
        if (!(value instanceof Map)) {
            throw bad(where, "an object", value);
        }
        return (Map<String, Object>) value;
    }

    static String text(Object value, String where) {
        if (!(value instanceof String) || ((String) value).strip().isEmpty()) {
            throw bad(where, "a non-empty string", value);
        }
        return (String) value;
    }

    static boolean flag(Object value, String where) {
        if (!(value instanceof Boolean)) {
            throw bad(where, "true or false (a JSON boolean, not a string or number)", value);
        }
        return (Boolean) value;
    }

    /** A JSON integer (written without fraction or exponent) as a BigInteger, else null. */
    static BigInteger bigInteger(Object value) {
        if (value instanceof Json.Number && ((Json.Number) value).isIntegral()) {
            return new BigInteger(((Json.Number) value).text());
        }
        if (value instanceof Integer || value instanceof Long) {
            return BigInteger.valueOf(((Number) value).longValue());
        }
        return null;
    }

    static long integer(Object value, String where, long lo, Long hi, String fix) {
        BigInteger v = bigInteger(value);
        if (v == null || v.compareTo(BigInteger.valueOf(lo)) < 0 || (hi != null && v.compareTo(BigInteger.valueOf(hi)) > 0)) {
            String want = hi != null ? "an integer in [" + lo + ", " + hi + "]" : "an integer >= " + lo;
            throw bad(where, want, value, fix);
        }
        return v.longValue();
    }

    static long integer(Object value, String where, long lo, Long hi) {
        return integer(value, where, lo, hi, CONVERT);
    }

    /** {@code _finite}: the value as a finite double, null when it is not a finite JSON number. */
    static Double finite(Object value) {
        if (!(value instanceof Number)) {
            return null;
        }
        BigInteger big = bigInteger(value);
        if (big != null && big.abs().compareTo(TWO_1000) > 0) {
            return null;
        }
        double d = ((Number) value).doubleValue();
        return Double.isFinite(d) ? d : null;
    }

    static double number(Object value, String where, Double lo, Double hi, boolean loOpen, String fix) {
        Double n = finite(value);
        if (n == null || (lo != null && (loOpen ? n <= lo : n < lo)) || (hi != null && n > hi)) {
            String want = "a finite number";
            if (lo != null && hi != null) {
                want = "a finite number in " + (loOpen ? "(" : "[") + g(lo) + ", " + g(hi) + "]";
            } else if (lo != null) {
                want = "a finite number " + (loOpen ? ">" : ">=") + " " + g(lo);
            }
            throw bad(where, want, value, fix);
        }
        return n;
    }

    static double number(Object value, String where) {
        return number(value, where, null, null, false, CONVERT);
    }

    static Double optionalNumber(Object value, String where, double lo, double hi) {
        return value == null ? null : number(value, where, lo, hi, false, CONVERT);
    }

    static double[] numbers(Object value, String where, String fix) {
        if (!(value instanceof List)) {
            throw bad(where, "a list of numbers", value, fix);
        }
        List<?> list = (List<?>) value;
        double[] out = new double[list.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = number(list.get(i), where + "[" + i + "]", null, null, false, fix);
        }
        return out;
    }

    static String name(Object value, String where, String what) {
        if (!(value instanceof String) || !NAME.matcher((String) value).matches()) {
            throw bad(where, "a " + what + " name: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
                    value);
        }
        return (String) value;
    }

    static String ownerName(Object value, String where, String what) {
        String n = name(value, where, what);
        if (n.equals("router")) {
            throw new ManifestException(where + ": a " + what + " may not be named 'router' (that name is the router's "
                    + "artifacts); " + CONVERT + " with another name");
        }
        return n;
    }

    /** The names that appear more than once, sorted. */
    static List<String> repeated(List<String> names) {
        TreeSet<String> out = new TreeSet<>();
        LinkedHashSet<String> seen = new LinkedHashSet<>();
        for (String n : names) {
            if (!seen.add(n)) {
                out.add(n);
            }
        }
        return new ArrayList<>(out);
    }

    static List<String> labels(Object value, String where) {
        if (!(value instanceof List)) {
            throw bad(where, "a list of class-name strings (in the model's output order)", value);
        }
        List<?> list = (List<?>) value;
        List<String> out = new ArrayList<>();
        for (int i = 0; i < list.size(); i++) {
            Object label = list.get(i);
            if (!(label instanceof String) || ((String) label).strip().isEmpty()) {
                throw bad(where + "[" + i + "]", "a non-empty string (a class name)", label);
            }
            out.add((String) label);
        }
        List<String> rep = repeated(out);
        if (!rep.isEmpty()) {
            throw new ManifestException(where + ": " + Py.repr(rep) + " appear more than once; each model output needs "
                    + "its own class name; " + CONVERT);
        }
        return Collections.unmodifiableList(out);
    }

    static List<String> sortedUnknown(Map<String, Object> d, List<String> known) {
        TreeSet<String> out = new TreeSet<>(d.keySet());
        out.removeAll(known);
        return new ArrayList<>(out);
    }

    // -- sections ------------------------------------------------------------------------------
    /** {@code _input}. */
    static InputSpec input(Object value, String where) {
        Map<String, Object> d = require(value, List.of("rule", "resize_size", "crop_size", "interpolation", "mean", "std"),
                where);
        if (!InputSpec.RULE.equals(d.get("rule"))) {
            throw new ManifestException(where.substring(0, Math.max(0, where.lastIndexOf(": "))) + ": input.rule "
                    + Py.repr(d.get("rule")) + " unknown; expected '" + InputSpec.RULE + "'");
        }
        List<String> unknown = sortedUnknown(d, INPUT_FIELDS);
        if (!unknown.isEmpty()) {
            throw new ManifestException(where + ": unknown field(s) " + Py.repr(unknown)
                    + " (malformed, or written by a newer athe); " + CONVERT);
        }
        String sizeFix = "a side of at most " + MAX_INPUT_SIZE + " pixels bounds the resize buffer; " + CONVERT;
        int resize = (int) integer(d.get("resize_size"), where + ".resize_size", 1, (long) MAX_INPUT_SIZE, sizeFix);
        int crop = (int) integer(d.get("crop_size"), where + ".crop_size", 1, (long) MAX_INPUT_SIZE, sizeFix);
        Object interpolation = d.get("interpolation");
        if (!(interpolation instanceof String) || !INTERPOLATIONS.contains(interpolation)) {
            throw new ManifestException(where + ".interpolation: interpolation " + Py.repr(interpolation)
                    + " unknown; expected one of " + Py.repr(INTERPOLATIONS));
        }
        String channels = "3 finite numbers, one per RGB channel";
        if (!(d.get("mean") instanceof List) || ((List<?>) d.get("mean")).size() != 3) {
            throw bad(where + ".mean", channels, d.get("mean"));
        }
        if (!(d.get("std") instanceof List) || ((List<?>) d.get("std")).size() != 3) {
            throw bad(where + ".std", channels, d.get("std"));
        }
        double[] mean = new double[3];
        double[] std = new double[3];
        for (int i = 0; i < 3; i++) {
            mean[i] = number(((List<?>) d.get("mean")).get(i), where + ".mean[" + i + "]");
        }
        for (int i = 0; i < 3; i++) {
            std[i] = number(((List<?>) d.get("std")).get(i), where + ".std[" + i + "]", 0.0, null, true,
                    "a standard deviation of 0 divides by zero; " + CONVERT);
        }
        Object layout = d.containsKey("layout") ? d.get("layout") : "NCHW";
        if (!(layout instanceof String) || !LAYOUTS.contains(layout)) {
            throw new ManifestException(where + ".layout: " + Py.repr(layout) + " unknown; expected one of "
                    + Py.repr(LAYOUTS));
        }
        Object dtype = d.containsKey("dtype") ? d.get("dtype") : "float32";
        if (!"float32".equals(dtype)) {
            throw new ManifestException(where + ".dtype: " + Py.repr(dtype) + " unsupported; this runtime feeds float32 "
                    + "tensors");
        }
        double scale = number(d.containsKey("scale") ? d.get("scale") : 1.0 / 255.0, where + ".scale", 0.0, 1.0, true,
                "pixels are multiplied by it (1/255 for 8-bit images); " + CONVERT);
        int batch = (int) integer(d.containsKey("batch_size") ? d.get("batch_size") : 1, where + ".batch_size", 1, 4096L);
        return new InputSpec(InputSpec.RULE, resize, crop, (String) interpolation, mean, std, (String) layout, "float32",
                scale, batch);
    }

    /** {@code _artifact}. */
    static Artifact artifact(Object value, String where) {
        Map<String, Object> a = require(value, List.of("path", "sha256", "bytes"), where);
        List<String> unknown = sortedUnknown(a, ARTIFACT_FIELDS);
        if (!unknown.isEmpty()) {
            throw new ManifestException(where + ": unknown field(s) " + Py.repr(unknown)
                    + " (malformed, or written by a newer athe); " + CONVERT);
        }
        Object path = a.get("path");
        if (!(path instanceof String) || ((String) path).strip().isEmpty() || ((String) path).indexOf('\0') >= 0
                || path.equals(".") || path.equals("..")) {
            throw bad(where + ".path", "a file name relative to the bundle folder", path);
        }
        if (!Manifest.isRelativeInside((String) path)) {
            throw new ManifestException(where + ": path " + Py.repr(path) + " must be relative to the bundle folder");
        }
        Object sha = a.get("sha256");
        if (!(sha instanceof String) || !SHA256.matcher((String) sha).matches()) {
            throw bad(where + ".sha256", "the file's sha256 as 64 hex digits", sha);
        }
        long bytes = integer(a.get("bytes"), where + ".bytes", 1, 1L << 50);
        Object precision = a.containsKey("precision") ? a.get("precision") : "fp32";
        if (!(precision instanceof String) || !Manifest.PRECISIONS.contains(precision)) {
            throw new ManifestException(where + ".precision: " + Py.repr(precision) + " unknown; expected one of "
                    + Py.tuple(Manifest.PRECISIONS));
        }
        object(a.containsKey("parity") ? a.get("parity") : Collections.emptyMap(), where + ".parity");
        if (a.get("delegation") != null) {
            object(a.get("delegation"), where + ".delegation");
        }
        return new Artifact((String) path, (String) sha, bytes, (String) precision);
    }

    /** {@code _files}. */
    static Map<String, Artifact> files(Object value, String where) {
        if (!(value instanceof Map) || ((Map<?, ?>) value).isEmpty()) {
            throw new ManifestException(where + ": files must name at least one format");
        }
        Map<String, Artifact> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : object(value, where).entrySet()) {
            if (!Manifest.ALL_FORMATS.contains(e.getKey())) {
                throw new ManifestException(where + ": unknown format " + Py.str(e.getKey()) + "; expected one of "
                        + Py.tuple(Manifest.ALL_FORMATS));
            }
            out.put(e.getKey(), artifact(e.getValue(), where + "." + e.getKey()));
        }
        return Collections.unmodifiableMap(out);
    }

    /** {@code _level}. */
    static LevelSpec level(Object value, String where) {
        Map<String, Object> d = require(value, List.of("name", "keep", "heads", "fuse", "tokens_per_block", "macs", "files"),
                where);
        String n = ownerName(d.get("name"), where + ".name", "level");
        Object keep = d.get("keep");
        if (!(keep instanceof List)) {
            throw bad(where + ".keep", "a list of [block, ratio] pairs ([] keeps every token)", keep);
        }
        List<?> pairs = (List<?>) keep;
        for (int i = 0; i < pairs.size(); i++) {
            Object pair = pairs.get(i);
            if (!(pair instanceof List) || ((List<?>) pair).size() != 2) {
                throw bad(where + ".keep[" + i + "]", "a [block, ratio] pair", pair);
            }
            integer(((List<?>) pair).get(0), where + ".keep[" + i + "][0]", 0, 4096L);
            number(((List<?>) pair).get(1), where + ".keep[" + i + "][1]", 0.0, 1.0, true, CONVERT);
        }
        Object tokens = d.get("tokens_per_block");
        if (!(tokens instanceof List)) {
            throw bad(where + ".tokens_per_block", "a list of token counts", tokens);
        }
        int heads = (int) integer(d.get("heads"), where + ".heads", 1, 4096L);
        boolean fuse = flag(d.get("fuse"), where + ".fuse");
        List<?> counts = (List<?>) tokens;
        for (int i = 0; i < counts.size(); i++) {
            integer(counts.get(i), where + ".tokens_per_block[" + i + "]", 1, null);
        }
        long macs = integer(d.get("macs"), where + ".macs", 0, null);
        Map<String, Artifact> files = files(d.get("files"), where + ".files");
        optionalNumber(d.get("val_accuracy"), where + ".val_accuracy", 0.0, 100.0);
        return new LevelSpec(n, heads, fuse, macs, files);
    }

    /** {@code _unit}: a finite number in [0, 1] (an exit threshold). */
    static double unit(Object value, String where) {
        Double v = finite(value);
        if (v == null || !(v >= 0.0 && v <= 1.0)) {
            throw new ManifestException(where + ": " + Py.repr(value) + " must be a number in [0, 1]; re-run calibration");
        }
        return v;
    }

    /** {@code _router_threshold}: in [0, 1], or {@link #NEVER_THRESHOLD}. */
    static double routerThreshold(Object value, String where) {
        Double v = finite(value);
        if (v != null && v == NEVER_THRESHOLD) {
            return NEVER_THRESHOLD;
        }
        if (v == null || !(v >= 0.0 && v <= 1.0)) {
            throw new ManifestException(where + ": " + Py.repr(value) + " must be a number in [0, 1] (or "
                    + g(NEVER_THRESHOLD) + ": never take this level); re-run calibration");
        }
        return v;
    }

    /** {@code _router}. */
    static RouterSpec router(Object value, String where) {
        Map<String, Object> d = require(value, List.of("files", "outputs", "thresholds", "input_size", "macs"), where);
        Object outputs = d.get("outputs");
        if (!(outputs instanceof List) || !((List<?>) outputs).stream().allMatch(o -> o instanceof String)) {
            throw bad(where + ".outputs", "a list of level names", outputs);
        }
        Object raw = d.get("thresholds");
        if (!(raw instanceof Map)) {
            throw bad(where + ".thresholds", "an object {level: threshold}", raw, "re-run calibration");
        }
        Map<String, Double> thresholds = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : object(raw, where).entrySet()) {
            thresholds.put(e.getKey(), routerThreshold(e.getValue(), where + ".thresholds." + e.getKey()));
        }
        Map<String, Artifact> files = files(d.get("files"), where + ".files");
        int inputSize = (int) integer(d.get("input_size"), where + ".input_size", 1, (long) MAX_INPUT_SIZE);
        long macs = integer(d.get("macs"), where + ".macs", 0, null);
        Object target = d.containsKey("calibration_target") ? d.get("calibration_target") : Collections.emptyMap();
        object(target == null ? Collections.emptyMap() : target, where + ".calibration_target");
        optionalNumber(d.get("accuracy"), where + ".accuracy", 0.0, 100.0);
        @SuppressWarnings("unchecked")
        List<String> names = (List<String>) outputs;
        return new RouterSpec(files, List.copyOf(names), Collections.unmodifiableMap(thresholds), inputSize, macs);
    }

    /** {@code _gate}. */
    static GateSpec gate(Object value, String where) {
        Map<String, Object> d = require(value, List.of("kind"), where);
        if (!Manifest.GATE_KINDS.contains(d.get("kind"))) {
            throw new ManifestException(where + ".kind: " + Py.repr(d.get("kind")) + " unknown; expected one of "
                    + Py.tuple(Manifest.GATE_KINDS));
        }
        Object features = d.containsKey("features") ? d.get("features") : List.of();
        if (!(features instanceof List) || !GATE_FEATURES.containsAll((List<?>) features)) {
            throw bad(where + ".features", "a list of names from " + Py.tuple(GATE_FEATURES), features, GATE_FIX);
        }
        @SuppressWarnings("unchecked")
        List<String> names = List.copyOf((List<String>) features);
        if (new LinkedHashSet<>(names).size() != names.size() || (names.contains("cls")
                && !names.get(names.size() - 1).equals("cls"))) {
            throw new ManifestException(where + ".features: " + Py.repr(names) + " must name each feature once, 'cls' "
                    + "(the CLS token's values) last; " + GATE_FIX);
        }
        double[] mean = numbers(d.containsKey("mean") ? d.get("mean") : List.of(), where + ".mean", GATE_FIX);
        double[] std = numbers(d.containsKey("std") ? d.get("std") : List.of(), where + ".std", GATE_FIX);
        double[] weights = numbers(d.containsKey("weights") ? d.get("weights") : List.of(), where + ".weights", GATE_FIX);
        double bias = number(d.containsKey("bias") ? d.get("bias") : 0.0, where + ".bias", null, null, false, GATE_FIX);
        optionalNumber(d.get("auroc"), where + ".auroc", 0.0, 1.0);
        if ("logistic".equals(d.get("kind"))) {
            int n = weights.length;
            if (n == 0 || mean.length != n || std.length != n) {
                throw new ManifestException(where + ": weights, mean and std must have the same non-zero length (got "
                        + n + ", " + mean.length + ", " + std.length + "); " + GATE_FIX);
            }
            for (double s : std) {
                if (!(s > 0)) {
                    throw new ManifestException(where + ".std: every value must be > 0; " + GATE_FIX);
                }
            }
            long scalars = names.stream().filter(f -> !f.equals("cls")).count();
            if (names.isEmpty() || (names.contains("cls") ? n <= scalars : n != scalars)) {
                throw new ManifestException(where + ": " + n + " weights for features " + Py.repr(names) + " (one weight "
                        + "per softmax feature, plus one per CLS value with 'cls'); " + GATE_FIX);
            }
        }
        return new GateSpec((String) d.get("kind"), names, mean, std, weights, bias);
    }

    private static List<String> namesList(Object value, String where) {
        if (!(value instanceof List) || ((List<?>) value).isEmpty()
                || !((List<?>) value).stream().allMatch(o -> o instanceof String)) {
            throw bad(where, "a non-empty list of tensor names from " + Py.tuple(Manifest.STAGE_IO), value);
        }
        @SuppressWarnings("unchecked")
        List<String> out = List.copyOf((List<String>) value);
        return out;
    }

    /** {@code _stage}. */
    static StageSpec stage(Object value, String where, boolean last) {
        Map<String, Object> d = require(value, List.of("name", "blocks", "keep", "fuse", "heads", "tokens", "macs",
                "inputs", "outputs", "token_selection", "files"), where);
        Map<String, List<String>> io = new LinkedHashMap<>();
        for (String key : List.of("inputs", "outputs")) {
            List<String> names = namesList(d.get(key), where + "." + key);
            List<String> unknown = new ArrayList<>();
            for (String n : names) {
                if (!Manifest.STAGE_IO.contains(n)) {
                    unknown.add(n);
                }
            }
            if (!unknown.isEmpty()) {
                throw new ManifestException(where + "." + key + ": unknown tensor(s) " + Py.repr(unknown)
                        + "; expected names from " + Py.tuple(Manifest.STAGE_IO));
            }
            if (new LinkedHashSet<>(names).size() != names.size()) {
                throw new ManifestException(where + "." + key + ": " + Py.repr(names) + " names a tensor twice; " + CONVERT);
            }
            io.put(key, names);
        }
        List<String> outputs = io.get("outputs");
        if (!outputs.contains("logits")) {
            throw new ManifestException(where + ".outputs: " + Py.repr(outputs) + " lacks 'logits': every stage answers "
                    + "at its exit; " + CONVERT);
        }
        GateSpec gate = d.get("gate") == null ? null : gate(d.get("gate"), where + ".gate");
        Double threshold = d.get("threshold") == null ? null : unit(d.get("threshold"), where + ".threshold");
        if (!last && (gate == null || threshold == null)) {
            throw new ManifestException(where + ": every stage but the last needs a gate and a threshold; "
                    + "re-run 'athe convert' with a checkpoint that has gates");
        }
        if (gate != null && gate.features().contains("cls") && !outputs.contains("tokens")) {
            throw new ManifestException(where + ".gate.features: the gate reads the CLS token but the stage outputs "
                    + Py.repr(outputs) + " have no 'tokens'; " + CONVERT);
        }
        Object blocks = d.get("blocks");
        if (!(blocks instanceof List) || ((List<?>) blocks).size() != 2) {
            throw bad(where + ".blocks", "a [start, stop] pair of block indices", blocks);
        }
        int start = (int) integer(((List<?>) blocks).get(0), where + ".blocks[0]", 0, 4096L);
        int stop = (int) integer(((List<?>) blocks).get(1), where + ".blocks[1]", start + 1L, 4096L);
        Object selection = d.get("token_selection");
        if (!(selection instanceof String) || !TOKEN_SELECTIONS.contains(selection)) {
            throw new ManifestException(where + ".token_selection: " + Py.repr(selection) + " unknown; expected one of "
                    + Py.repr(TOKEN_SELECTIONS));
        }
        String n = ownerName(d.get("name"), where + ".name", "stage");
        double keep = number(d.get("keep"), where + ".keep", 0.0, 1.0, true, CONVERT);
        boolean fuse = flag(d.get("fuse"), where + ".fuse");
        int heads = (int) integer(d.get("heads"), where + ".heads", 1, 4096L);
        long tokens = integer(d.get("tokens"), where + ".tokens", 1, null);
        long macs = integer(d.get("macs"), where + ".macs", 0, null);
        Map<String, Artifact> files = files(d.get("files"), where + ".files");
        optionalNumber(d.get("val_accuracy"), where + ".val_accuracy", 0.0, 100.0);
        if (tokens > Integer.MAX_VALUE) {
            throw bad(where + ".tokens", "a 32-bit integer", d.get("tokens"));
        }
        return new StageSpec(n, new int[] {start, stop}, keep, fuse, heads, (int) tokens, macs, io.get("inputs"), outputs,
                (String) selection, files, gate, threshold);
    }

    /** {@code _check_chain}: each stage reads what the one before it gave (the first: the image), blocks in sequence. */
    static void checkChain(List<StageSpec> stages, String where) {
        List<String> available = List.of("image");
        StageSpec previous = null;
        for (int i = 0; i < stages.size(); i++) {
            StageSpec st = stages.get(i);
            List<String> missing = new ArrayList<>();
            for (String n : st.inputs()) {
                if (!available.contains(n)) {
                    missing.add(n);
                }
            }
            if (!missing.isEmpty()) {
                String given = previous == null ? "the image" : "stages[" + (i - 1) + "] outputs " + Py.repr(available);
                throw new ManifestException(where + "[" + i + "].inputs: " + Py.repr(missing) + " not available (" + given
                        + " only); " + CONVERT);
            }
            if (previous != null && st.blocks()[0] != previous.blocks()[1]) {
                throw new ManifestException(where + "[" + i + "].blocks: starts at block " + st.blocks()[0]
                        + " but stages[" + (i - 1) + "] stops at " + previous.blocks()[1]
                        + "; the chain runs the blocks in sequence; " + CONVERT);
            }
            available = st.outputs();
            previous = st;
        }
    }

    static List<String> copyOf(String... names) {
        return Collections.unmodifiableList(new ArrayList<>(Arrays.asList(names)));
    }
}

package org.athe.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * A bundle's {@code manifest.json}, parsed and validated exactly as
 * {@code athe.runtime.manifest.Manifest.from_dict} does (same checks, same order, same messages).
 *
 * <pre>{@code
 * Manifest m = Manifest.load(new File(bundleDir, "manifest.json"));
 * m.levelNames();   // [simple, complex, dense], cheapest first
 * m.thresholds();   // {simple=0.62, complex=0.55}
 * }</pre>
 */
public final class Manifest {

    public static final int SCHEMA_VERSION = 2;
    /** Deployment formats. */
    public static final List<String> FORMATS = Collections.unmodifiableList(Arrays.asList("tflite", "pte"));
    /** Every format a manifest may list ({@code pt2}: the PyTorch reference, not deployed). */
    public static final List<String> ALL_FORMATS =
            Collections.unmodifiableList(Arrays.asList("tflite", "pte", "pt2"));
    public static final List<String> PRECISIONS =
            Collections.unmodifiableList(Arrays.asList("fp32", "int8-dynamic", "int8-static"));
    public static final String FILE_NAME = "manifest.json";

    private static final List<String> TOP_FIELDS = Arrays.asList("variant", "created_with", "checkpoint",
            "random_weights", "precision", "input", "labels", "levels", "router");
    /** What a stage artifact can take and give, by name, in this order. */
    public static final List<String> STAGE_IO =
            Collections.unmodifiableList(Arrays.asList("image", "tokens", "scores", "logits"));
    public static final List<String> GATE_KINDS =
            Collections.unmodifiableList(Arrays.asList("logistic", "max_softmax"));

    private final String variant;
    private final String precision;
    private final boolean randomWeights;
    private final InputSpec input;
    private final List<String> labels;
    private final List<LevelSpec> levels;
    private final RouterSpec router;
    private final List<StageSpec> stages;
    private final Map<String, Object> createdWith;

    private Manifest(String variant, String precision, boolean randomWeights, InputSpec input, List<String> labels,
                     List<LevelSpec> levels, RouterSpec router, List<StageSpec> stages,
                     Map<String, Object> createdWith) {
        this.variant = variant;
        this.precision = precision;
        this.randomWeights = randomWeights;
        this.input = input;
        this.labels = labels;
        this.levels = levels;
        this.router = router;
        this.stages = stages;
        this.createdWith = createdWith;
    }

    // -- loading ---------------------------------------------------------------------------
    /** Read and validate {@code file} (a bundle's {@code manifest.json}). */
    public static Manifest load(File file) {
        String source = file.getPath();
        String text;
        try (InputStream in = new FileInputStream(file)) {
            text = readUtf8(in);
        } catch (FileNotFoundException e) {
            throw new ManifestException(Py.str(source) + " not found: a bundle folder needs manifest.json; "
                    + "re-run 'athe convert'", e);
        } catch (IOException e) {
            throw new ManifestException(Py.str(source) + " cannot be read (" + e.getMessage() + ")", e);
        }
        return parse(text, source);
    }

    /** Parse manifest text; {@code source} names it in errors (a path, or {@code manifest.json}). */
    public static Manifest parse(String text, String source) {
        Object data;
        try {
            data = Json.parse(text);
        } catch (Json.JsonException e) {
            throw new ManifestException(Py.str(source) + " is not valid JSON (" + e.getMessage()
                    + "); re-run 'athe convert'", e);
        }
        return fromJson(data, source);
    }

    /** Read all of {@code in} as UTF-8 (Android API 24 has no {@code InputStream.readAllBytes}). */
    public static String readUtf8(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[1 << 16];
        int n;
        while ((n = in.read(buffer)) > 0) {
            out.write(buffer, 0, n);
        }
        return new String(out.toByteArray(), StandardCharsets.UTF_8);
    }

    /**
     * Validate a parsed manifest; {@code source} prefixes every message, as in Python.
     *
     * @throws ManifestException naming the field and the fix
     */
    public static Manifest fromJson(Object data, String source) {
        if (!(data instanceof Map)) {
            throw new ManifestException(source + ": top level must be a JSON object");
        }
        Map<String, Object> d = Json.asObject(data, source);
        Object version = d.get("schema_version");
        if (!(version instanceof Number) || ((Number) version).doubleValue() != SCHEMA_VERSION) {
            throw new ManifestException(source + ": schema_version " + Py.repr(version) + " is not supported; "
                    + "this athe reads schema_version " + SCHEMA_VERSION + ": re-convert the bundle with this athe "
                    + "version or install the athe that made it");
        }
        require(d, TOP_FIELDS, source);
        String variant = Checks.text(d.get("variant"), source + ": variant");
        Map<String, Object> createdWith = Checks.object(d.get("created_with"), source + ": created_with");
        Checks.object(d.get("checkpoint"), source + ": checkpoint");
        boolean randomWeights = Checks.flag(d.get("random_weights"), source + ": random_weights");
        if (!(d.get("precision") instanceof String) || !PRECISIONS.contains(d.get("precision"))) {
            throw new ManifestException(source + ": precision " + Py.repr(d.get("precision")) + " unknown; expected one of "
                    + Py.tuple(PRECISIONS));
        }
        InputSpec input = Checks.input(d.get("input"), source + ": input");
        List<String> labels = Checks.labels(d.get("labels"), source + ": labels");
        Object levelsValue = d.get("levels");
        if (!(levelsValue instanceof List)) {
            throw new ManifestException(source + ": levels must be a list of level objects, got "
                    + Checks.kind(levelsValue) + "; " + Checks.CONVERT);
        }
        List<?> levelList = (List<?>) levelsValue;
        if (levelList.isEmpty()) {
            throw new ManifestException(source + ": levels is empty; a bundle needs at least one level");
        }
        List<LevelSpec> levels = new ArrayList<>();
        for (int i = 0; i < levelList.size(); i++) {
            levels.add(Checks.level(levelList.get(i), source + ": levels[" + i + "]"));
        }
        List<String> names = new ArrayList<>();
        for (LevelSpec lv : levels) {
            names.add(lv.name());
        }
        List<String> repeatedLevels = Checks.repeated(names);
        if (!repeatedLevels.isEmpty()) {
            throw new ManifestException(source + ": levels: level name(s) " + Py.repr(repeatedLevels) + " repeat ("
                    + Py.repr(names) + "); each level needs its own name; " + Checks.CONVERT);
        }
        RouterSpec router = d.get("router") == null ? null : Checks.router(d.get("router"), source + ": router");
        if (router != null) {
            if (!router.outputs().equals(names)) {
                throw new ManifestException(source + ": router.outputs " + Py.repr(router.outputs())
                        + " must equal the levels " + Py.repr(names));
            }
            List<String> thresholded = names.subList(0, names.size() - 1);
            List<String> missing = new ArrayList<>();
            for (String name : thresholded) {
                if (!router.thresholds().containsKey(name)) {
                    missing.add(name);
                }
            }
            if (!missing.isEmpty()) {
                throw new ManifestException(source + ": router.thresholds lacks " + Py.repr(missing)
                        + "; re-run calibration");
            }
            List<String> extra = new ArrayList<>();
            for (String name : router.thresholds().keySet()) {
                if (!thresholded.contains(name)) {
                    extra.add(name);
                }
            }
            if (!extra.isEmpty()) {
                throw new ManifestException(source + ": router.thresholds names " + Py.repr(extra) + ", which are not "
                        + "levels with a threshold (levels " + Py.repr(thresholded) + "; the richest, "
                        + Py.str(names.get(names.size() - 1)) + ", is the fallback and has none); re-run calibration");
            }
            if (router.inputSize() <= 0 || input.cropSize() % router.inputSize() != 0) {
                throw new ManifestException(source + ": router.input_size " + router.inputSize() + " does not divide "
                        + "input.crop_size " + input.cropSize() + " (the router pools the levels' tensor down to it); "
                        + Checks.CONVERT);
            }
        }
        Object rawStages = d.containsKey("stages") ? d.get("stages") : new ArrayList<>();
        if (!(rawStages instanceof List)) {
            throw new ManifestException(source + ": stages must be a list (empty for a bundle without exits)");
        }
        List<?> stageList = (List<?>) rawStages;
        List<StageSpec> stages = new ArrayList<>();
        for (int i = 0; i < stageList.size(); i++) {
            stages.add(Checks.stage(stageList.get(i), source + ": stages[" + i + "]", i == stageList.size() - 1));
        }
        List<String> stageNames = new ArrayList<>();
        for (StageSpec st : stages) {
            stageNames.add(st.name());
        }
        if (new TreeSet<>(stageNames).size() != stageNames.size()) {
            throw new ManifestException(source + ": stage names " + Py.repr(stageNames)
                    + " repeat; each stage needs its own name");
        }
        Checks.checkChain(stages, source + ": stages");
        if (d.get("calibration") != null) {
            Checks.object(d.get("calibration"), source + ": calibration");
        }
        return new Manifest(variant, (String) d.get("precision"), randomWeights, input, labels,
                Collections.unmodifiableList(levels), router, Collections.unmodifiableList(stages), createdWith);
    }

    /** Python's {@code not Path(p).is_absolute() and ".." not in Path(p).parts} (POSIX paths). */
    static boolean isRelativeInside(String path) {
        if (path.startsWith("/")) {
            return false;
        }
        for (String part : path.split("/")) {
            if (part.equals("..")) {
                return false;
            }
        }
        return true;
    }

    // -- field helpers (shared with InputSpec) -----------------------------------------------
    /** {@code value} as an object holding every key of {@code keys}, else Python's message. */
    static Map<String, Object> require(Object value, List<String> keys, String where) {
        return Checks.require(value, keys, where);
    }

    static String string(Map<String, Object> d, String key, String prefix) {
        Object v = d.get(key);
        if (!(v instanceof String)) {
            throw malformed(prefix + key, "a string", v);
        }
        return (String) v;
    }

    static int integer(Map<String, Object> d, String key, String prefix) {
        long v = longInteger(d, key, prefix);
        if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
            throw malformed(prefix + key, "a 32-bit integer", d.get(key));
        }
        return (int) v;
    }

    static long longInteger(Map<String, Object> d, String key, String prefix) {
        Object v = d.get(key);
        if (v instanceof Json.Number && ((Json.Number) v).isIntegral()) {
            return ((Json.Number) v).longValue();
        }
        if (v instanceof Number && !(v instanceof Json.Number) && ((Number) v).doubleValue() % 1 == 0) {
            return ((Number) v).longValue();
        }
        throw malformed(prefix + key, "an integer", v);
    }

    static double number(Map<String, Object> d, String key, String prefix) {
        Object v = d.get(key);
        if (!(v instanceof Number)) {
            throw malformed(prefix + key, "a number", v);
        }
        return ((Number) v).doubleValue();
    }

    private static ManifestException malformed(String where, String expected, Object got) {
        return new ManifestException(where + " is malformed: expected " + expected + ", got " + Py.repr(got)
                + "; re-run 'athe convert'");
    }

    // -- what the runtime reads ------------------------------------------------------------
    public String variant() {
        return variant;
    }

    public String precision() {
        return precision;
    }

    public boolean randomWeights() {
        return randomWeights;
    }

    public InputSpec input() {
        return input;
    }

    /** Class names, index = logit index. */
    public List<String> labels() {
        return labels;
    }

    /** Levels, cheapest first; the last is the richest (the router's fallback). */
    public List<LevelSpec> levels() {
        return levels;
    }

    /** The router, or null for a fixed-level bundle. */
    public RouterSpec router() {
        return router;
    }

    /** The {@code created_with} versions (athe, executorch, ai-edge-litert, ...). */
    public Map<String, Object> createdWith() {
        return createdWith;
    }

    public List<String> levelNames() {
        List<String> out = new ArrayList<>();
        for (LevelSpec lv : levels) {
            out.add(lv.name());
        }
        return Collections.unmodifiableList(out);
    }

    /** The exit chain's stages, in order (empty for a bundle without exits). */
    public List<StageSpec> stages() {
        return stages;
    }

    public List<String> stageNames() {
        List<String> out = new ArrayList<>();
        for (StageSpec st : stages) {
            out.add(st.name());
        }
        return Collections.unmodifiableList(out);
    }

    /** {@code Manifest.default_policy}: {@code exit} with a stage chain, else {@code router} (or the richest level). */
    public String defaultPolicy() {
        if (!stages.isEmpty()) {
            return "exit";
        }
        return router != null ? "router" : "fixed:" + levels.get(levels.size() - 1).name();
    }

    /** {@code {stage: threshold}} for every stage but the last. */
    public Map<String, Double> exitThresholds() {
        Map<String, Double> out = new LinkedHashMap<>();
        for (StageSpec st : stages.subList(0, Math.max(0, stages.size() - 1))) {
            if (st.threshold() != null) {
                out.put(st.name(), st.threshold());
            }
        }
        return Collections.unmodifiableMap(out);
    }

    /** The calibrated thresholds (every level but the last); empty without a router. */
    public Map<String, Double> thresholds() {
        return router == null ? Collections.emptyMap() : router.thresholds();
    }

    /** The level called {@code name}. */
    public LevelSpec level(String name) {
        for (LevelSpec lv : levels) {
            if (lv.name().equals(name)) {
                return lv;
            }
        }
        throw new ManifestException("bundle has no level " + Py.str(name) + "; levels: "
                + String.join(", ", levelNames()));
    }

    /** Formats every level, stage and the router have, sorted ({@code pt2} included when all have it). */
    public List<String> formats() {
        TreeSet<String> out = new TreeSet<>(ALL_FORMATS);
        for (LevelSpec lv : levels) {
            out.retainAll(lv.files().keySet());
        }
        for (StageSpec st : stages) {
            out.retainAll(st.files().keySet());
        }
        if (router != null) {
            out.retainAll(router.files().keySet());
        }
        return new ArrayList<>(out);
    }

    /**
     * Every file as {@code {owner: {format: artifact}}}: levels cheapest first, the stages as
     * {@code stage:<name>} in chain order, then {@code router}.
     */
    public Map<String, Map<String, Artifact>> artifacts() {
        Map<String, Map<String, Artifact>> out = new LinkedHashMap<>();
        for (LevelSpec lv : levels) {
            out.put(lv.name(), lv.files());
        }
        for (StageSpec st : stages) {
            out.put("stage:" + st.name(), st.files());
        }
        if (router != null) {
            out.put("router", router.files());
        }
        return out;
    }
}

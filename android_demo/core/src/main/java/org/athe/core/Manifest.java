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

    public static final int SCHEMA_VERSION = 1;
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
    private static final List<String> LEVEL_FIELDS =
            Arrays.asList("name", "keep", "heads", "fuse", "tokens_per_block", "macs", "files");
    private static final List<String> ROUTER_FIELDS =
            Arrays.asList("files", "outputs", "thresholds", "input_size", "macs");
    private static final List<String> ARTIFACT_FIELDS = Arrays.asList("path", "sha256", "bytes");
    private static final List<String> ARTIFACT_OPTIONAL = Arrays.asList("precision", "parity", "delegation");

    private final String variant;
    private final String precision;
    private final boolean randomWeights;
    private final InputSpec input;
    private final List<String> labels;
    private final List<LevelSpec> levels;
    private final RouterSpec router;
    private final Map<String, Object> createdWith;

    private Manifest(String variant, String precision, boolean randomWeights, InputSpec input, List<String> labels,
                     List<LevelSpec> levels, RouterSpec router, Map<String, Object> createdWith) {
        this.variant = variant;
        this.precision = precision;
        this.randomWeights = randomWeights;
        this.input = input;
        this.labels = labels;
        this.levels = levels;
        this.router = router;
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
        if (!PRECISIONS.contains(d.get("precision"))) {
            throw new ManifestException(source + ": precision " + Py.repr(d.get("precision")) + " unknown; expected one of "
                    + Py.tuple(PRECISIONS));
        }
        InputSpec input = InputSpec.fromJson(d.get("input"), source);
        Object levelsValue = d.get("levels");
        if (levelsValue == null || (levelsValue instanceof List && ((List<?>) levelsValue).isEmpty())) {
            throw new ManifestException(source + ": levels is empty; a bundle needs at least one level");
        }
        if (!(levelsValue instanceof List)) {
            throw malformed(source + ": levels", "a list of level objects", levelsValue);
        }
        List<LevelSpec> levels = new ArrayList<>();
        List<?> levelList = (List<?>) levelsValue;
        for (int i = 0; i < levelList.size(); i++) {
            levels.add(level(levelList.get(i), source + ": levels[" + i + "]"));
        }
        RouterSpec router = d.get("router") == null ? null : router(d.get("router"), source + ": router");
        List<String> names = new ArrayList<>();
        for (LevelSpec lv : levels) {
            names.add(lv.name());
        }
        if (router != null) {
            if (!router.outputs().equals(names)) {
                throw new ManifestException(source + ": router.outputs " + Py.repr(router.outputs())
                        + " must equal the levels " + Py.repr(names));
            }
            List<String> missing = new ArrayList<>();
            for (String name : names.subList(0, names.size() - 1)) {
                if (!router.thresholds().containsKey(name)) {
                    missing.add(name);
                }
            }
            if (!missing.isEmpty()) {
                throw new ManifestException(source + ": router.thresholds lacks " + Py.repr(missing)
                        + "; re-run calibration");
            }
        }
        List<String> labels = strings(d.get("labels"), source + ": labels");
        Object createdWith = d.get("created_with");
        return new Manifest(string(d, "variant", source + ": "), (String) d.get("precision"),
                Boolean.TRUE.equals(d.get("random_weights")), input, labels, Collections.unmodifiableList(levels),
                router, createdWith instanceof Map ? Json.asObject(createdWith, source) : Collections.emptyMap());
    }

    private static LevelSpec level(Object value, String where) {
        Map<String, Object> d = require(value, LEVEL_FIELDS, where);
        String prefix = where + ".";
        for (String key : Arrays.asList("keep", "tokens_per_block")) {
            if (!(d.get(key) instanceof List)) {
                throw malformed(prefix + key, "a list", d.get(key));
            }
        }
        if (!(d.get("fuse") instanceof Boolean)) {
            throw malformed(where + ".fuse", "true or false", d.get("fuse"));
        }
        return new LevelSpec(string(d, "name", prefix), integer(d, "heads", prefix), (Boolean) d.get("fuse"),
                longInteger(d, "macs", prefix), files(d.get("files"), where + ".files"));
    }

    private static RouterSpec router(Object value, String where) {
        Map<String, Object> d = require(value, ROUTER_FIELDS, where);
        String prefix = where + ".";
        Map<String, Artifact> files = files(d.get("files"), where + ".files");
        List<String> outputs = strings(d.get("outputs"), where + ".outputs");
        Object ths = d.get("thresholds");
        if (!(ths instanceof Map)) {
            throw malformed(where + ".thresholds", "an object {level: threshold}", ths);
        }
        Map<String, Double> thresholds = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : Json.asObject(ths, where).entrySet()) {
            if (!(e.getValue() instanceof Number)) {
                throw malformed(where + ".thresholds." + e.getKey(), "a number", e.getValue());
            }
            thresholds.put(e.getKey(), ((Number) e.getValue()).doubleValue());
        }
        return new RouterSpec(files, Collections.unmodifiableList(outputs), Collections.unmodifiableMap(thresholds),
                integer(d, "input_size", prefix), longInteger(d, "macs", prefix));
    }

    private static Map<String, Artifact> files(Object value, String where) {
        if (!(value instanceof Map) || ((Map<?, ?>) value).isEmpty()) {
            throw new ManifestException(where + ": files must name at least one format");
        }
        Map<String, Artifact> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : Json.asObject(value, where).entrySet()) {
            String fmt = e.getKey();
            if (!ALL_FORMATS.contains(fmt)) {
                throw new ManifestException(where + ": unknown format " + Py.str(fmt) + "; expected one of "
                        + Py.tuple(ALL_FORMATS));
            }
            String at = where + "." + fmt;
            Map<String, Object> a = require(e.getValue(), ARTIFACT_FIELDS, at);
            for (String key : a.keySet()) {
                if (!ARTIFACT_FIELDS.contains(key) && !ARTIFACT_OPTIONAL.contains(key)) {
                    throw new ManifestException(at + ": unexpected field " + Py.str(key)
                            + " (re-run 'athe convert' with this athe version)");
                }
            }
            String path = string(a, "path", at + ".");
            if (!isRelativeInside(path)) {
                throw new ManifestException(at + ": path " + Py.str(path) + " must be relative to the bundle folder");
            }
            String precision = a.containsKey("precision") ? string(a, "precision", at + ".") : "fp32";
            out.put(fmt, new Artifact(path, string(a, "sha256", at + "."), longInteger(a, "bytes", at + "."),
                    precision));
        }
        return Collections.unmodifiableMap(out);
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
        if (!(value instanceof Map)) {
            throw new ManifestException(where + ": expected an object");
        }
        Map<String, Object> d = Json.asObject(value, where);
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

    private static List<String> strings(Object value, String where) {
        if (!(value instanceof List)) {
            throw malformed(where, "a list of strings", value);
        }
        List<String> out = new ArrayList<>();
        for (Object v : (List<?>) value) {
            if (!(v instanceof String)) {
                throw malformed(where, "a list of strings", value);
            }
            out.add((String) v);
        }
        return Collections.unmodifiableList(out);
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

    /** Formats every level and the router have, sorted ({@code pt2} included when all have it). */
    public List<String> formats() {
        TreeSet<String> out = new TreeSet<>(ALL_FORMATS);
        for (LevelSpec lv : levels) {
            out.retainAll(lv.files().keySet());
        }
        if (router != null) {
            out.retainAll(router.files().keySet());
        }
        return new ArrayList<>(out);
    }

    /** Every file as {@code {owner: {format: artifact}}}, levels cheapest first, then {@code router}. */
    public Map<String, Map<String, Artifact>> artifacts() {
        Map<String, Map<String, Artifact>> out = new LinkedHashMap<>();
        for (LevelSpec lv : levels) {
            out.put(lv.name(), lv.files());
        }
        if (router != null) {
            out.put("router", router.files());
        }
        return out;
    }
}

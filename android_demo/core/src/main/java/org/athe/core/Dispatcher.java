package org.athe.core;

import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Route each image to one level of a bundle and run it: preprocess once, run the router, pick
 * the level ({@link DispatchRule#chooseLevel}), run it, take the softmax top-1. The phone
 * counterpart of {@code athe.runtime.dispatcher.Dispatcher} with the {@code router} and
 * {@code fixed:<level>} policies.
 *
 * <pre>{@code
 * Bundle bundle = Bundle.open(dir, "tflite");
 * try (Dispatcher d = Dispatcher.open(bundle, (owner, file) -> new LiteRtModel(file), "router")) {
 *     Prediction p = d.predict(rgb, width, height, decodeMs);
 * }
 * }</pre>
 *
 * <p>Not thread-safe (one interpreter per artifact); use one per thread.
 */
public final class Dispatcher implements AutoCloseable {

    /** Loads one verified artifact with a backend. */
    @FunctionalInterface
    public interface Loader {
        Model load(String owner, File file) throws Exception;
    }

    /** Cost of loading one artifact. */
    public record ArtifactLoad(String owner, String path, long fileBytes, double seconds) {
    }

    private final Manifest manifest;
    private final Preprocessor preprocessor;
    private final Model router;
    private final Map<String, Model> levels;
    private final String fixedLevel;
    private final Map<String, Double> thresholds;
    private final List<ArtifactLoad> loads;

    /**
     * @param manifest   the bundle's manifest
     * @param router     the router model, or null (then {@code policy} must be {@code fixed:<level>})
     * @param levels     a model per level name
     * @param policy     {@code router} or {@code fixed:<level>}
     * @param thresholds per-level threshold overrides merged onto the calibrated ones, or null
     */
    public Dispatcher(Manifest manifest, Model router, Map<String, Model> levels, String policy,
                      Map<String, Double> thresholds) {
        this(manifest, router, levels, policy, thresholds, Collections.emptyList());
    }

    private Dispatcher(Manifest manifest, Model router, Map<String, Model> levels, String policy,
                       Map<String, Double> thresholds, List<ArtifactLoad> loads) {
        this.manifest = manifest;
        this.preprocessor = new Preprocessor(manifest.input());
        this.router = router;
        this.levels = new LinkedHashMap<>(levels);
        this.loads = Collections.unmodifiableList(new ArrayList<>(loads));
        for (String name : manifest.levelNames()) {
            if (!levels.containsKey(name)) {
                throw new DispatchException("no model for level " + Py.str(name) + "; load every level of the bundle");
            }
        }
        this.fixedLevel = parsePolicy(policy, manifest.levelNames());
        if (fixedLevel == null && router == null) {
            throw new DispatchException("bundle has no router; use fixed:<level> with one of "
                    + String.join(", ", manifest.levelNames()));
        }
        this.thresholds = mergeThresholds(manifest, thresholds, fixedLevel);
    }

    /**
     * Load the router (if any) and every level of a verified bundle.
     *
     * @param policy {@code router}, or {@code fixed:<level>}; a bundle without a router needs the latter
     */
    public static Dispatcher open(Bundle bundle, Loader loader, String policy) throws Exception {
        Manifest m = bundle.manifest();
        List<ArtifactLoad> loads = new ArrayList<>();
        Map<String, Model> levels = new LinkedHashMap<>();
        Model router = null;
        try {
            if (m.router() != null) {
                router = load(bundle, loader, "router", loads);
            }
            for (String name : m.levelNames()) {
                levels.put(name, load(bundle, loader, name, loads));
            }
            return new Dispatcher(m, router, levels, policy, null, loads);
        } catch (Exception e) {
            try {
                closeAll(router, levels.values());
            } catch (Exception closing) {
                e.addSuppressed(closing);
            }
            throw e;
        }
    }

    private static Model load(Bundle bundle, Loader loader, String owner, List<ArtifactLoad> loads)
            throws Exception {
        File file = bundle.artifactFile(owner);
        long start = System.nanoTime();
        Model model = loader.load(owner, file);
        loads.add(new ArtifactLoad(owner, file.getPath(), file.length(), (System.nanoTime() - start) / 1e9));
        return model;
    }

    /** Returns the fixed level, or null for the router policy. */
    static String parsePolicy(String policy, List<String> levelNames) {
        String text = policy == null ? "router" : policy.trim();
        int colon = text.indexOf(':');
        String kind = (colon < 0 ? text : text.substring(0, colon)).trim().toLowerCase(java.util.Locale.ROOT);
        String arg = colon < 0 ? "" : text.substring(colon + 1).trim();
        if (kind.equals("router") && arg.isEmpty()) {
            return null;
        }
        if (kind.equals("fixed")) {
            if (levelNames.contains(arg)) {
                return arg;
            }
            throw new DispatchException("policy " + Py.str(text) + ": no level " + Py.str(arg) + "; levels: "
                    + String.join(", ", levelNames));
        }
        throw new DispatchException("unknown policy " + Py.str(text) + "; policies on the phone: router, "
                + "fixed:<level>");
    }

    private static Map<String, Double> mergeThresholds(Manifest m, Map<String, Double> override, String fixed) {
        Map<String, Double> merged = new LinkedHashMap<>(m.thresholds());
        if (override == null) {
            return merged;
        }
        if (fixed != null) {
            throw new DispatchException("thresholds only apply to the router policy, not fixed:" + fixed);
        }
        List<String> names = m.levelNames();
        List<String> allowed = names.subList(0, names.size() - 1);
        for (Map.Entry<String, Double> e : override.entrySet()) {
            if (!allowed.contains(e.getKey())) {
                throw new DispatchException("threshold for " + Py.str(e.getKey()) + ": only these levels have "
                        + "thresholds: " + String.join(", ", allowed) + " (the richest level is the fallback)");
            }
            if (e.getValue() == null || e.getValue().isNaN()) {
                throw new DispatchException("threshold for " + Py.str(e.getKey()) + " must be a number, got "
                        + e.getValue());
            }
            merged.put(e.getKey(), e.getValue());
        }
        return merged;
    }

    public Manifest manifest() {
        return manifest;
    }

    public Preprocessor preprocessor() {
        return preprocessor;
    }

    /** The thresholds in use (calibrated, with overrides). */
    public Map<String, Double> thresholds() {
        return Collections.unmodifiableMap(thresholds);
    }

    /** Load cost per artifact (empty when models were passed to the constructor). */
    public List<ArtifactLoad> loads() {
        return loads;
    }

    /**
     * Preprocess, route and run one decoded image.
     *
     * @param rgb      upright interleaved RGB, {@code width * height * 3} bytes
     * @param decodeMs how long the caller took to decode it (reported, and counted in {@code total})
     */
    public Prediction predict(byte[] rgb, int width, int height, double decodeMs) throws Exception {
        long start = System.nanoTime();
        float[] x = preprocessor.preprocess(rgb, width, height);
        long prepared = System.nanoTime();
        return dispatch(x, start, decodeMs, (prepared - start) / 1e6);
    }

    /** Route and run an already preprocessed tensor. */
    public Prediction predictTensor(float[] x) throws Exception {
        if (x.length != preprocessor.outputSize()) {
            throw new DispatchException("input has " + x.length + " values but the bundle's input spec gives "
                    + preprocessor.outputSize() + " (1x3x" + manifest.input().cropSize() + "x"
                    + manifest.input().cropSize() + ")");
        }
        return dispatch(x, System.nanoTime(), 0.0, 0.0);
    }

    private Prediction dispatch(float[] x, long start, double decodeMs, double preprocessMs) throws Exception {
        List<String> names = manifest.levelNames();
        Map<String, Double> scores = new LinkedHashMap<>();
        long t0 = System.nanoTime();
        String level;
        if (fixedLevel != null) {
            level = fixedLevel;
        } else {
            float[] raw = router.run(x);
            if (raw.length != names.size()) {
                throw new DispatchException("router artifact has " + raw.length + " outputs but the bundle has "
                        + names.size() + " levels; re-convert the bundle");
            }
            double[] widened = new double[raw.length];
            for (int i = 0; i < raw.length; i++) {
                widened[i] = raw[i];
                scores.put(names.get(i), widened[i]);
            }
            level = DispatchRule.chooseLevel(widened, names, thresholds);
        }
        long routed = System.nanoTime();
        float[] logits = levels.get(level).run(x);
        long inferred = System.nanoTime();
        List<String> labels = manifest.labels();
        if (!labels.isEmpty() && logits.length != labels.size()) {
            throw new DispatchException(level + " artifact has " + logits.length + " outputs but the bundle has "
                    + labels.size() + " labels; re-convert the bundle");
        }
        DispatchRule.Top1 top = DispatchRule.softmaxTop1(logits);
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("decode", decodeMs);
        timings.put("preprocess", preprocessMs);
        timings.put("route", (routed - t0) / 1e6);
        timings.put("infer", (inferred - routed) / 1e6);
        timings.put("total", decodeMs + (System.nanoTime() - start) / 1e6);
        String name = top.label() < labels.size() ? labels.get(top.label()) : String.valueOf(top.label());
        return new Prediction(top.label(), name, top.probability(), level, Collections.unmodifiableMap(scores),
                logits, Collections.unmodifiableMap(timings));
    }

    /** Close every model (the router and the levels). */
    @Override
    public void close() throws Exception {
        closeAll(router, levels.values());
    }

    private static void closeAll(Model router, Iterable<Model> levels) throws Exception {
        Exception first = null;
        List<Model> all = new ArrayList<>();
        if (router != null) {
            all.add(router);
        }
        for (Model m : levels) {
            all.add(m);
        }
        for (Model m : all) {
            try {
                m.close();
            } catch (Exception e) {
                if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }
}

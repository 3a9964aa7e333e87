package org.athe.core;

import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Classify each image with a bundle: preprocess once, then, by policy ({@link Policy}),
 * <ul>
 *   <li>{@code exit} (the default for bundles with stages): run the stage chain
 *       ({@link ExitChain}) and answer at the first exit whose gate score reaches its threshold;</li>
 *   <li>{@code exit:<stage>}: always answer at that stage's exit;</li>
 *   <li>{@code router} (the default otherwise): run the router, pick the level
 *       ({@link DispatchRule#chooseLevel}) and run it;</li>
 *   <li>{@code fixed:<level>}: always that level,</li>
 * </ul>
 * then take the softmax top-1. The phone counterpart of {@code athe.runtime.dispatcher.Dispatcher}.
 *
 * <pre>{@code
 * Bundle bundle = Bundle.open(dir, "tflite");
 * try (Dispatcher d = Dispatcher.open(bundle, (owner, file) -> new LiteRtModel(file), null)) {
 *     Prediction p = d.predict(rgb, width, height, decodeMs);   // p.exit(), p.gateScores(), p.stageMs()
 * }
 * }</pre>
 *
 * <p>Not thread-safe (one interpreter per artifact); use one per thread.
 */
public final class Dispatcher implements AutoCloseable {

    /** Loads one verified artifact with a backend ({@code owner}: a level, {@code router} or {@code stage:<name>}). */
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
    private final Map<String, Model> stages;
    private final Map<String, ExitGate> gates = new LinkedHashMap<>();
    private final Policy policy;
    private final Map<String, Double> thresholds;
    private final Map<String, Double> exitThresholds;
    private final List<ArtifactLoad> loads;

    /**
     * @param manifest   the bundle's manifest
     * @param router     the router model, or null (the bundle has none)
     * @param levels     a model per level name
     * @param stages     a model per stage name (empty for a bundle without stages)
     * @param policy     {@code exit}, {@code exit:<stage>}, {@code router} or {@code fixed:<level>};
     *                   null: the bundle's default ({@link Manifest#defaultPolicy()})
     * @param thresholds overrides merged onto the calibrated thresholds, or null: per stage for
     *                   {@code exit}, per level for {@code router}
     */
    public Dispatcher(Manifest manifest, Model router, Map<String, Model> levels, Map<String, Model> stages,
                      String policy, Map<String, Double> thresholds) {
        this(manifest, router, levels, stages, policy, thresholds, Collections.emptyList());
    }

    private Dispatcher(Manifest manifest, Model router, Map<String, Model> levels, Map<String, Model> stages,
                       String policy, Map<String, Double> thresholds, List<ArtifactLoad> loads) {
        this.manifest = manifest;
        this.preprocessor = new Preprocessor(manifest.input());
        this.router = router;
        this.levels = new LinkedHashMap<>(levels);
        this.stages = new LinkedHashMap<>(stages);
        this.loads = Collections.unmodifiableList(new ArrayList<>(loads));
        for (String name : manifest.levelNames()) {
            if (!levels.containsKey(name)) {
                throw new DispatchException("no model for level " + Py.str(name) + "; load every level of the bundle");
            }
        }
        for (String name : manifest.stageNames()) {
            if (!stages.containsKey(name)) {
                throw new DispatchException("no model for stage " + Py.str(name) + "; load every stage of the bundle");
            }
        }
        this.policy = Policy.parse(policy == null ? manifest.defaultPolicy() : policy, manifest.levelNames(),
                manifest.stageNames());
        if ("router".equals(this.policy.kind()) && router == null) {
            throw new DispatchException("bundle has no router; use " + (manifest.stages().isEmpty() ? ""
                    : "exit, exit:<stage> or ") + "fixed:<level> with one of " + String.join(", ", manifest.levelNames()));
        }
        for (StageSpec st : manifest.stages().subList(0, Math.max(0, manifest.stages().size() - 1))) {
            gates.put(st.name(), ExitGate.compile(st.gate()));
        }
        this.thresholds = mergeThresholds(manifest, thresholds, this.policy);
        this.exitThresholds = mergeExitThresholds(manifest, this.policy.chain() ? thresholds : null, this.policy);
    }

    /**
     * Load the router (if any), every level and every stage of a verified bundle (the Python
     * dispatcher's order), so any policy can run.
     *
     * @param policy see the constructor; null for the bundle's default
     */
    public static Dispatcher open(Bundle bundle, Loader loader, String policy) throws Exception {
        Manifest m = bundle.manifest();
        List<ArtifactLoad> loads = new ArrayList<>();
        List<Model> loaded = new ArrayList<>();
        Map<String, Model> levels = new LinkedHashMap<>();
        Map<String, Model> stages = new LinkedHashMap<>();
        Model router = null;
        try {
            if (m.router() != null) {
                router = load(bundle, loader, "router", loads, loaded);
            }
            for (String name : m.levelNames()) {
                levels.put(name, load(bundle, loader, name, loads, loaded));
            }
            for (String name : m.stageNames()) {
                stages.put(name, load(bundle, loader, "stage:" + name, loads, loaded));
            }
            return new Dispatcher(m, router, levels, stages, policy, null, loads);
        } catch (Exception e) {
            try {
                closeAll(loaded);
            } catch (Exception closing) {
                e.addSuppressed(closing);
            }
            throw e;
        }
    }

    private static Model load(Bundle bundle, Loader loader, String owner, List<ArtifactLoad> loads,
                              List<Model> loaded) throws Exception {
        File file = bundle.artifactFile(owner);
        long start = System.nanoTime();
        Model model = loader.load(owner, file);
        loaded.add(model);
        loads.add(new ArtifactLoad(owner, file.getPath(), file.length(), (System.nanoTime() - start) / 1e9));
        return model;
    }

    private static Map<String, Double> mergeThresholds(Manifest m, Map<String, Double> override, Policy policy) {
        Map<String, Double> merged = new LinkedHashMap<>(m.thresholds());
        if (override == null || policy.chain()) {
            return merged;
        }
        if (!"router".equals(policy.kind())) {
            throw new DispatchException("thresholds only apply to the router policy, not " + Py.str(policy.text()));
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
                        + Py.repr(e.getValue()));
            }
            merged.put(e.getKey(), e.getValue());
        }
        return merged;
    }

    /** {@code Dispatcher._merge_exit_thresholds}. */
    private static Map<String, Double> mergeExitThresholds(Manifest m, Map<String, Double> override, Policy policy) {
        Map<String, Double> merged = new LinkedHashMap<>(m.exitThresholds());
        if (override == null) {
            return merged;
        }
        if (!"exit".equals(policy.kind())) {
            throw new DispatchException("thresholds only apply to the exit and router policies, not "
                    + Py.str(policy.text()));
        }
        List<String> names = m.stageNames();
        List<String> allowed = names.subList(0, names.size() - 1);
        for (Map.Entry<String, Double> e : override.entrySet()) {
            if (!allowed.contains(e.getKey())) {
                throw new DispatchException("threshold for " + Py.str(e.getKey()) + ": only these stages have exit "
                        + "thresholds: " + String.join(", ", allowed) + " (the last stage always answers)");
            }
            Double v = e.getValue();
            if (v == null || !(v >= 0.0 && v <= 1.0)) {
                throw new DispatchException("threshold for " + Py.str(e.getKey()) + " must be a number in [0, 1] "
                        + "(a gate score), got " + Py.repr(v));
            }
            merged.put(e.getKey(), v);
        }
        return merged;
    }

    public Manifest manifest() {
        return manifest;
    }

    public Preprocessor preprocessor() {
        return preprocessor;
    }

    /** The policy in use. */
    public Policy policy() {
        return policy;
    }

    /** The router thresholds in use (calibrated, with overrides). */
    public Map<String, Double> thresholds() {
        return Collections.unmodifiableMap(thresholds);
    }

    /** The exit thresholds in use (per stage but the last; calibrated, with overrides). */
    public Map<String, Double> exitThresholds() {
        return Collections.unmodifiableMap(exitThresholds);
    }

    /** Load cost per artifact (empty when models were passed to the constructor). */
    public List<ArtifactLoad> loads() {
        return loads;
    }

    /**
     * Preprocess and classify one decoded image.
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

    /** Classify an already preprocessed tensor. */
    public Prediction predictTensor(float[] x) throws Exception {
        if (x.length != preprocessor.outputSize()) {
            throw new DispatchException("input has " + x.length + " values but the bundle's input spec gives "
                    + preprocessor.outputSize() + " (1x3x" + manifest.input().cropSize() + "x"
                    + manifest.input().cropSize() + ")");
        }
        return dispatch(x, System.nanoTime(), 0.0, 0.0);
    }

    private Prediction dispatch(float[] x, long start, double decodeMs, double preprocessMs) throws Exception {
        int bad = 0;
        for (float v : x) {
            bad += Float.isFinite(v) ? 0 : 1;
        }
        if (bad > 0) {
            throw new DispatchException("input tensor has " + bad + " NaN/inf value(s) of " + x.length
                    + "; refusing to predict on it");
        }
        if (policy.chain()) {
            ExitChain.Result r = ExitChain.run(manifest.stages(), (st, inputs) -> stages.get(st.name()).runMany(inputs),
                    x, policy.stage(), exitThresholds, gates);
            double infer = 0.0;
            for (double ms : r.stageMs().values()) {
                infer += ms;
            }
            return prediction(r.logits(), r.exit(), Collections.emptyMap(), timings(decodeMs, preprocessMs, r.gateMs(),
                    infer, start), r.exit(), r.stageMs(), r.gateScores());
        }
        List<String> names = manifest.levelNames();
        Map<String, Double> scores = new LinkedHashMap<>();
        long t0 = System.nanoTime();
        String level;
        if ("fixed".equals(policy.kind())) {
            level = policy.level();
        } else {
            float[] raw = ExitChain.finiteOutput(router.run(x), "router");
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
        float[] logits = ExitChain.finiteOutput(levels.get(level).run(x), "level " + level);
        long inferred = System.nanoTime();
        return prediction(logits, level, Collections.unmodifiableMap(scores), timings(decodeMs, preprocessMs,
                (routed - t0) / 1e6, (inferred - routed) / 1e6, start), null, Collections.emptyMap(),
                Collections.emptyMap());
    }

    private static Map<String, Double> timings(double decodeMs, double preprocessMs, double routeMs, double inferMs,
                                               long start) {
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("decode", decodeMs);
        timings.put("preprocess", preprocessMs);
        timings.put("route", routeMs);
        timings.put("infer", inferMs);
        timings.put("total", decodeMs + (System.nanoTime() - start) / 1e6);
        return Collections.unmodifiableMap(timings);
    }

    private Prediction prediction(float[] logits, String level, Map<String, Double> scores, Map<String, Double> timings,
                                  String exit, Map<String, Double> stageMs, Map<String, Double> gateScores) {
        List<String> labels = manifest.labels();
        if (!labels.isEmpty() && logits.length != labels.size()) {
            throw new DispatchException(level + " artifact has " + logits.length + " outputs but the bundle has "
                    + labels.size() + " labels; re-convert the bundle");
        }
        DispatchRule.Top1 top = DispatchRule.softmaxTop1(logits);
        String name = top.label() < labels.size() ? labels.get(top.label()) : String.valueOf(top.label());
        return new Prediction(top.label(), name, top.probability(), level, scores, logits, timings, exit, stageMs,
                gateScores);
    }

    /** Close every model (the router, the levels and the stages). */
    @Override
    public void close() throws Exception {
        List<Model> all = new ArrayList<>();
        if (router != null) {
            all.add(router);
        }
        all.addAll(levels.values());
        all.addAll(stages.values());
        closeAll(all);
    }

    private static void closeAll(List<Model> models) throws Exception {
        Exception first = null;
        for (Model m : models) {
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

package org.athe.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The exit chain ({@code athe.runtime.dispatcher.Dispatcher._run_chain}): run stage 1 on the
 * image; feed each stage the tensors its manifest {@code inputs} names from the previous stage's
 * outputs (token selection happens inside the stage artifacts, so tensors only pass through);
 * after every stage but the last score its gate and stop when {@code score >= threshold}; the
 * last stage always answers. With a stop stage ({@code exit:<stage>}) no gate is asked.
 */
public final class ExitChain {
    private ExitChain() {
    }

    /** Runs one stage artifact: flat float32 tensors in {@code stage.inputs()} / {@code stage.outputs()} order. */
    @FunctionalInterface
    public interface StageRunner {
        float[][] run(StageSpec stage, float[][] inputs) throws Exception;
    }

    /** What the chain did for one image. */
    public record Result(String exit, float[] logits, Map<String, Double> stageMs, Map<String, Double> gateScores,
                         double gateMs, List<String> ran) {
    }

    /**
     * @param stages     the manifest's stages, in chain order
     * @param runner     runs a stage artifact
     * @param x          the preprocessed image
     * @param stopAt     the stage that always answers ({@code exit:<stage>}), or null for the gates
     * @param thresholds exit threshold per stage but the last
     * @param gates      compiled gate per stage but the last
     */
    public static Result run(List<StageSpec> stages, StageRunner runner, float[] x, String stopAt,
                             Map<String, Double> thresholds, Map<String, ExitGate> gates) throws Exception {
        Map<String, float[]> feed = new LinkedHashMap<>();
        feed.put("image", x);
        Map<String, Double> stageMs = new LinkedHashMap<>();
        Map<String, Double> gateScores = new LinkedHashMap<>();
        List<String> ran = new ArrayList<>();
        double gateMs = 0.0;
        for (int i = 0; i < stages.size(); i++) {
            StageSpec st = stages.get(i);
            float[][] inputs = new float[st.inputs().size()][];
            List<String> missing = new ArrayList<>();
            for (int j = 0; j < inputs.length; j++) {
                inputs[j] = feed.get(st.inputs().get(j));
                if (inputs[j] == null) {
                    missing.add(st.inputs().get(j));
                }
            }
            if (!missing.isEmpty()) {
                String given = i == 0 ? "the first stage only gets the image"
                        : "stage " + stages.get(i - 1).name() + " gives " + Py.repr(new ArrayList<>(feed.keySet()));
                throw new DispatchException("stage " + st.name() + " takes " + Py.repr(missing) + " but " + given
                        + "; re-convert the bundle");
            }
            long t0 = System.nanoTime();
            float[][] outs = runner.run(st, inputs);
            stageMs.put(st.name(), (System.nanoTime() - t0) / 1e6);
            ran.add(st.name());
            if (outs.length != st.outputs().size()) {
                throw new DispatchException("stage artifact gave " + outs.length + " outputs, the manifest names "
                        + Py.repr(st.outputs()) + "; re-convert the bundle");
            }
            Map<String, float[]> named = new LinkedHashMap<>();
            for (int j = 0; j < outs.length; j++) {
                named.put(st.outputs().get(j), outs[j]);
            }
            float[] logits = finiteOutput(named.get("logits"), "stage " + st.name());
            if (i == stages.size() - 1 || st.name().equals(stopAt)) {
                return result(st.name(), logits, stageMs, gateScores, gateMs, ran);
            }
            if (stopAt == null) {
                long t1 = System.nanoTime();
                ExitGate gate = gates.get(st.name());
                float[] cls = null;
                if (gate.needsCls()) {
                    float[] tokens = named.get("tokens");
                    if (tokens == null) {
                        throw new DispatchException("this gate reads the CLS token; pass the stage's tokens");
                    }
                    if (st.tokens() <= 0 || tokens.length % st.tokens() != 0) {
                        throw new DispatchException("stage " + st.name() + " gave " + tokens.length
                                + " token values, not " + st.tokens() + " tokens; re-convert the bundle");
                    }
                    cls = Arrays.copyOfRange(tokens, 0, tokens.length / st.tokens()); // tokens[0, 0]: the CLS token
                }
                double score;
                try {
                    score = gate.score(logits, cls);
                } catch (DispatchException e) { // a CLS token of another width than the gate's weights
                    throw new DispatchException("stage " + st.name() + "'s exit gate does not fit its outputs ("
                            + e.getMessage() + "); re-convert the bundle");
                }
                if (!Double.isFinite(score)) {
                    throw new DispatchException("stage " + st.name() + "'s exit gate scored NaN/inf; re-convert the bundle");
                }
                gateScores.put(st.name(), score);
                boolean done = score >= thresholds.get(st.name());
                gateMs += (System.nanoTime() - t1) / 1e6;
                if (done) {
                    return result(st.name(), logits, stageMs, gateScores, gateMs, ran);
                }
            }
            feed = named;
        }
        throw new IllegalStateException("unreachable: the last stage always answers");
    }

    /** {@code _finite_output} of the Python dispatcher: a NaN or inf never becomes an answer. */
    public static float[] finiteOutput(float[] values, String owner) {
        boolean ok = values != null && values.length > 0;
        for (int i = 0; ok && i < values.length; i++) {
            ok = Float.isFinite(values[i]);
        }
        if (!ok) {
            throw new DispatchException(owner + " artifact returned NaN/inf (or no) values; the artifact or its input "
                    + "is broken: re-convert the bundle");
        }
        return values;
    }

    private static Result result(String exit, float[] logits, Map<String, Double> stageMs,
                                 Map<String, Double> gateScores, double gateMs, List<String> ran) {
        return new Result(exit, logits, Collections.unmodifiableMap(stageMs), Collections.unmodifiableMap(gateScores),
                gateMs, Collections.unmodifiableList(ran));
    }
}

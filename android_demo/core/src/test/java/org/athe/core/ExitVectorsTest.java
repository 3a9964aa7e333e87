package org.athe.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The exit chain on the shared vectors: gate scores ({@link ExitGate} = Python's CompiledGate),
 * the {@code >=} exit rule at and around thresholds, whole chains with stand-in stage artifacts
 * (which stages ran, what each was fed, the exit, the gate scores, the answer) and policy parsing.
 */
public class ExitVectorsTest {

    @SuppressWarnings("unchecked")
    private static Map<String, Object> asCase(Object[] row) {
        return (Map<String, Object>) row[1];
    }

    private static GateSpec gate(Object value) {
        Map<String, Object> g = Json.asObject(value, "gate");
        return new GateSpec((String) g.get("kind"), Vectors.strings(g.get("features")), Vectors.doubles(g.get("mean")),
                Vectors.doubles(g.get("std")), Vectors.doubles(g.get("weights")), ((Number) g.get("bias")).doubleValue());
    }

    @Test
    public void gateScoresEqualPython() {
        for (Object[] row : Vectors.cases("gate_score")) {
            Map<String, Object> c = asCase(row);
            float[] logits = Vectors.floats(c.get("logits"));
            float[] cls = c.get("cls") == null ? null : Vectors.floats(c.get("cls"));
            if (c.containsKey("error_contains")) {
                try {
                    ExitGate.compile(gate(c.get("gate"))).score(logits, cls);
                    fail(row[0] + ": scored; Python says " + c.get("error"));
                } catch (DispatchException e) {
                    assertTrue(row[0] + ": " + e.getMessage(), e.getMessage().contains((String) c.get("error_contains")));
                }
                continue;
            }
            double score = ExitGate.compile(gate(c.get("gate"))).score(logits, cls);
            assertEquals(row[0] + ": score", ((Number) c.get("score")).doubleValue(), score, 1e-12);
            assertTrue(row[0] + ": in [0, 1]", score >= 0.0 && score <= 1.0);
            assertArrayEquals(row[0] + ": softmax features", Vectors.doubles(c.get("features")),
                    ExitGate.softmaxFeatures(logits), 1e-12);
        }
    }

    @Test
    public void maxSoftmaxScoresAreBitForBit() {
        // max_softmax has no dot product: the same operations in the same order give the same double
        for (Object[] row : Vectors.cases("gate_score")) {
            Map<String, Object> c = asCase(row);
            Map<String, Object> g = Json.asObject(c.get("gate"), "gate");
            if (!"max_softmax".equals(g.get("kind"))) {
                continue;
            }
            assertEquals(row[0] + ": exact", ((Number) c.get("score")).doubleValue(),
                    ExitGate.compile(gate(g)).score(Vectors.floats(c.get("logits")), null), 0.0);
        }
    }

    @Test
    public void exitRuleAtAndAroundThresholds() throws Exception {
        for (Object[] row : Vectors.cases("exit_decisions")) {
            Map<String, Object> c = asCase(row);
            List<String> names = Vectors.strings(c.get("stage_names"));
            Map<String, Object> scores = Json.asObject(c.get("scores"), "scores");
            Map<String, Double> thresholds = new LinkedHashMap<>();
            for (Map.Entry<String, Object> e : Json.asObject(c.get("thresholds"), "thresholds").entrySet()) {
                thresholds.put(e.getKey(), ((Number) e.getValue()).doubleValue());
            }
            // the decision ExitChain makes: the first stage whose score is >= its threshold
            String exit = names.get(names.size() - 1);
            for (String n : names.subList(0, names.size() - 1)) {
                if (((Number) scores.get(n)).doubleValue() >= thresholds.get(n)) {
                    exit = n;
                    break;
                }
            }
            assertEquals(String.valueOf(row[0]), c.get("expected"), exit);
            // and the same rule is DispatchRule.chooseLevel (the options form Python's routing shares)
            double[] s = new double[names.size()];
            for (int i = 0; i < names.size() - 1; i++) {
                s[i] = ((Number) scores.get(names.get(i))).doubleValue();
            }
            assertEquals(String.valueOf(row[0]), c.get("expected"), DispatchRule.chooseLevel(s, names, thresholds));
        }
    }

    @Test
    public void wholeChainsEqualPython() throws Exception {
        for (Object[] row : Vectors.cases("chains")) {
            Map<String, Object> c = asCase(row);
            Map<String, Object> want = Json.asObject(c.get("expected"), "expected");
            Manifest m = Manifest.fromJson(c.get("manifest"), "manifest");
            float[] image = Vectors.floats(c.get("image"));
            Map<float[], List<String>> source = new IdentityHashMap<>();
            source.put(image, List.of("input", "image"));
            Map<String, Object> feeds = new LinkedHashMap<>();
            Map<String, Object> outputs = Json.asObject(c.get("outputs"), "outputs");
            ExitChain.StageRunner runner = (st, inputs) -> {
                List<Object> fed = new ArrayList<>();
                for (float[] in : inputs) {
                    fed.add(source.getOrDefault(in, List.of("unknown", String.valueOf(in.length))));
                }
                feeds.put(st.name(), fed);
                Map<String, Object> named = Json.asObject(outputs.get(st.name()), "outputs");
                float[][] out = new float[st.outputs().size()][];
                for (int j = 0; j < out.length; j++) {
                    out[j] = Vectors.floats(named.get(st.outputs().get(j)));
                    source.put(out[j], List.of(st.name(), st.outputs().get(j)));
                }
                return out;
            };
            Policy p = Policy.parse((String) c.get("policy"), m.levelNames(), m.stageNames());
            Map<String, Double> thresholds = new LinkedHashMap<>(m.exitThresholds());
            if (c.get("thresholds") != null) {
                for (Map.Entry<String, Object> e : Json.asObject(c.get("thresholds"), "th").entrySet()) {
                    thresholds.put(e.getKey(), ((Number) e.getValue()).doubleValue());
                }
            }
            Map<String, ExitGate> gates = new LinkedHashMap<>();
            for (StageSpec st : m.stages().subList(0, m.stages().size() - 1)) {
                gates.put(st.name(), ExitGate.compile(st.gate()));
            }
            ExitChain.Result r = ExitChain.run(m.stages(), runner, image, p.stage(), thresholds, gates);
            String at = String.valueOf(row[0]);
            assertEquals(at + ": exit", want.get("exit"), r.exit());
            assertEquals(at + ": stages run", want.get("ran"), r.ran());
            assertEquals(at + ": feeds", want.get("feeds"), feeds);
            Map<String, Object> scores = Json.asObject(want.get("gate_scores"), "gate_scores");
            assertEquals(at + ": gates asked", new ArrayList<>(scores.keySet()), new ArrayList<>(r.gateScores().keySet()));
            for (Map.Entry<String, Object> e : scores.entrySet()) {
                assertEquals(at + ": gate " + e.getKey(), ((Number) e.getValue()).doubleValue(),
                        r.gateScores().get(e.getKey()), 1e-12);
            }
            assertArrayEquals(at + ": logits", Vectors.floats(want.get("logits")), r.logits(), 0f);
            DispatchRule.Top1 top = DispatchRule.softmaxTop1(r.logits());
            assertEquals(at + ": label", ((Number) want.get("label")).intValue(), top.label());
            assertEquals(at + ": probability", ((Number) want.get("probability")).doubleValue(), top.probability(), 1e-12);
        }
    }

    @Test
    public void wholeChainsThroughTheDispatcher() throws Exception {
        // the same vectors, through Dispatcher with fake stage models (policy and threshold overrides)
        for (Object[] row : Vectors.cases("chains")) {
            Map<String, Object> c = asCase(row);
            Map<String, Object> want = Json.asObject(c.get("expected"), "expected");
            Manifest m = Manifest.fromJson(c.get("manifest"), "manifest");
            Map<String, Object> outputs = Json.asObject(c.get("outputs"), "outputs");
            Map<String, Model> stages = new LinkedHashMap<>();
            for (StageSpec st : m.stages()) {
                Map<String, Object> named = Json.asObject(outputs.get(st.name()), "outputs");
                stages.put(st.name(), new Model() {
                    @Override
                    public float[] run(float[] input) {
                        throw new AssertionError("stages run through runMany");
                    }

                    @Override
                    public float[][] runMany(float[][] inputs) {
                        float[][] out = new float[st.outputs().size()][];
                        for (int j = 0; j < out.length; j++) {
                            out[j] = Vectors.floats(named.get(st.outputs().get(j)));
                        }
                        return out;
                    }
                });
            }
            Map<String, Model> levels = new LinkedHashMap<>();
            levels.put("only", input -> new float[] {0f, 0f, 0f});
            Map<String, Double> override = null;
            if (c.get("thresholds") != null) {
                override = new LinkedHashMap<>();
                for (Map.Entry<String, Object> e : Json.asObject(c.get("thresholds"), "th").entrySet()) {
                    override.put(e.getKey(), ((Number) e.getValue()).doubleValue());
                }
            }
            String policy = (String) c.get("policy");
            Dispatcher d = new Dispatcher(m, null, levels, stages, "exit".equals(policy) ? null : policy, override);
            // the stand-ins ignore their input: a zero tensor of the vector manifest's 3x32x32 input
            Prediction p = d.predictTensor(new float[3 * 32 * 32]);
            String at = String.valueOf(row[0]);
            assertEquals(at, want.get("exit"), p.exit());
            assertEquals(at, want.get("exit"), p.level());
            assertEquals(at, Json.asObject(want.get("gate_scores"), "g").keySet(), p.gateScores().keySet());
            assertEquals(at, want.get("ran"), new ArrayList<>(p.stageMs().keySet()));
            assertArrayEquals(at, Vectors.floats(want.get("logits")), p.logits(), 0f);
            assertEquals(at, ((Number) want.get("label")).intValue(), p.label());
            assertTrue(at, p.routerScores().isEmpty());
            assertEquals(at, Arrays.asList(Prediction.STAGES), new ArrayList<>(p.timingsMs().keySet()));
        }
    }

    @Test
    public void policiesParseAsInPython() {
        for (Object[] row : Vectors.cases("policies")) {
            Map<String, Object> c = asCase(row);
            List<String> levels = Vectors.strings(c.get("level_names"));
            List<String> stages = Vectors.strings(c.get("stage_names"));
            String text = (String) c.get("policy");
            String at = String.valueOf(row[0]);
            if (c.containsKey("error_contains")) {
                try {
                    Policy.parse(text, levels, stages);
                    fail(at + ": accepted; Python says " + c.get("error"));
                } catch (DispatchException e) {
                    assertTrue(at + ": '" + e.getMessage() + "'", e.getMessage().contains((String) c.get("error_contains")));
                }
                continue;
            }
            Map<String, Object> want = Json.asObject(c.get("expected"), "expected");
            if (!Boolean.TRUE.equals(want.get("phone"))) {
                try {
                    Policy.parse(text, levels, stages);
                    fail(at + ": the phone does not run " + text);
                } catch (DispatchException e) {
                    assertTrue(e.getMessage(), e.getMessage().contains("not available on the phone"));
                }
                continue;
            }
            Policy p = Policy.parse(text, levels, stages);
            assertEquals(at, want.get("kind"), p.kind());
            assertEquals(at, want.get("stage"), p.stage());
            assertEquals(at, want.get("level"), p.level());
        }
    }
}

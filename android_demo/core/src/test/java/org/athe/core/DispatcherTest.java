package org.athe.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The dispatcher with fake models: hand-set router outputs, both branches, every error. */
public class DispatcherTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    /** Returns a fixed output and records who ran. */
    private static final class FakeModel implements Model {
        final String owner;
        final float[] output;
        final List<String> calls;
        boolean closed;

        FakeModel(String owner, float[] output, List<String> calls) {
            this.owner = owner;
            this.output = output;
            this.calls = calls;
        }

        @Override
        public float[] run(float[] input) {
            assertEquals(3 * 32 * 32, input.length);
            calls.add(owner);
            return output.clone();
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    private final List<String> calls = new ArrayList<>();
    private final Manifest manifest = Manifest.fromJson(TestBundles.manifest(), "manifest");

    private Map<String, Model> levels() {
        Map<String, Model> out = new LinkedHashMap<>();
        out.put("simple", new FakeModel("simple", new float[] {5f, 0f, 0f}, calls));
        out.put("complex", new FakeModel("complex", new float[] {0f, 5f, 0f}, calls));
        out.put("dense", new FakeModel("dense", new float[] {0f, 0f, 5f}, calls));
        return out;
    }

    /** A stage stand-in: fixed outputs per name, records who ran and how many inputs it got. */
    private static final class FakeStage implements Model {
        final String name;
        final float[][] outputs;
        final List<String> calls;
        boolean closed;

        FakeStage(String name, List<String> calls, float[]... outputs) {
            this.name = name;
            this.outputs = outputs;
            this.calls = calls;
        }

        @Override
        public float[] run(float[] input) {
            throw new AssertionError("stages run through runMany");
        }

        @Override
        public float[][] runMany(float[][] inputs) {
            calls.add(name + "/" + inputs.length);
            return outputs;
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    /** The vector manifest's chain: s1 image -> tokens (5x4), scores (4), logits; s2 -> tokens (3x4), logits; s3 -> logits. */
    private Map<String, Model> stages(float[] s1, float[] s2, float[] s3) {
        Map<String, Model> out = new LinkedHashMap<>();
        float[] tokens5 = new float[20];
        tokens5[0] = 1f; // the CLS token: 1, 0, 0, 0
        out.put("s1", new FakeStage("s1", calls, tokens5, new float[] {0.25f, 0.25f, 0.25f, 0.25f}, s1));
        out.put("s2", new FakeStage("s2", calls, new float[12], s2));
        out.put("s3", new FakeStage("s3", calls, s3));
        return out;
    }

    private Map<String, Model> stages() {
        return stages(new float[] {0f, 0f, 0f}, new float[] {0f, 0f, 0f}, new float[] {0f, 0f, 0f});
    }

    private static byte[] grey(int w, int h) {
        byte[] rgb = new byte[w * h * 3];
        Arrays.fill(rgb, (byte) 128);
        return rgb;
    }

    @Test
    public void routerPicksTheCheapestPassingLevel() throws Exception {
        // thresholds in the vector manifest: simple 0.62, complex 0.55
        FakeModel router = new FakeModel("router", new float[] {0.9f, 0.1f, 0.1f}, calls);
        Dispatcher d = new Dispatcher(manifest, router, levels(), stages(), "router", null);
        Prediction p = d.predict(grey(40, 30), 40, 30, 1.5);
        assertEquals("simple", p.level());
        assertEquals(Arrays.asList("router", "simple"), calls);
        assertEquals(0, p.label());
        assertEquals("cat", p.labelName());
        assertEquals(1.0 / (1 + 2 * Math.exp(-5)), p.probability(), 1e-12);
        assertEquals(Arrays.asList("simple", "complex", "dense"), List.copyOf(p.routerScores().keySet()));
        assertEquals(0.9f, p.routerScores().get("simple"), 0.0);
        assertEquals(Arrays.asList(Prediction.STAGES), List.copyOf(p.timingsMs().keySet()));
        assertEquals(1.5, p.timingsMs().get("decode"), 0.0);
        assertTrue(p.timingsMs().get("total") >= 1.5);
    }

    @Test
    public void everyThresholdFailingFallsBackToTheRichestLevel() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {0.1f, 0.1f, 0.9f}, calls);
        Prediction p = new Dispatcher(manifest, router, levels(), stages(), "router", null).predictTensor(new float[3072]);
        assertEquals("dense", p.level());
        assertEquals(2, p.label());
        assertEquals("ship", p.labelName());
    }

    @Test
    public void thresholdOverridesApply() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {0.9f, 0.6f, 0f}, calls);
        Map<String, Double> ths = new LinkedHashMap<>();
        ths.put("simple", 0.95);
        Dispatcher d = new Dispatcher(manifest, router, levels(), stages(), "router", ths);
        assertEquals("complex", d.predictTensor(new float[3072]).level());
        assertEquals(0.95, d.thresholds().get("simple"), 0.0);
        assertEquals(0.55, d.thresholds().get("complex"), 0.0);
    }

    @Test
    public void fixedPolicySkipsTheRouter() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {1f, 1f, 1f}, calls);
        Prediction p = new Dispatcher(manifest, router, levels(), stages(), "fixed:complex", null).predictTensor(new float[3072]);
        assertEquals("complex", p.level());
        assertEquals(List.of("complex"), calls);
        assertTrue(p.routerScores().isEmpty());
    }

    @Test
    public void badSettingsAreRefusedWithTheFix() {
        FakeModel router = new FakeModel("router", new float[] {1f, 1f, 1f}, calls);
        String[][] cases = {
            {"fixed:medium", "no level 'medium'; levels: simple, complex, dense"},
            {"oracle", "policy 'oracle' is not available on the phone"},
            {"random:0.5", "is not available on the phone"},
            {"exit:s9", "policy 'exit:s9': no stage 's9'; stages: s1, s2, s3."},
            {"medium", "unknown policy 'medium'"},
        };
        for (String[] c : cases) {
            try {
                new Dispatcher(manifest, router, levels(), stages(), c[0], null);
                fail("accepted " + c[0]);
            } catch (DispatchException e) {
                assertTrue(e.getMessage(), e.getMessage().contains(c[1]));
            }
        }
        try {
            new Dispatcher(manifest, null, levels(), stages(), "router", null);
            fail("router policy without a router");
        } catch (DispatchException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("bundle has no router; use exit, exit:<stage> or fixed:<level>"));
        }
        Map<String, Double> ths = new LinkedHashMap<>();
        ths.put("dense", 0.5);
        try {
            new Dispatcher(manifest, router, levels(), stages(), "router", ths);
            fail("threshold for the fallback level");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("the richest level is the fallback"));
        }
    }

    @Test
    public void wrongModelOutputsAreRefused() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {1f, 1f}, calls);
        try {
            new Dispatcher(manifest, router, levels(), stages(), "router", null).predictTensor(new float[3072]);
            fail("router with 2 outputs for 3 levels");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("router artifact has 2 outputs but the bundle has 3 levels"));
        }
        Map<String, Model> lv = levels();
        lv.put("dense", new FakeModel("dense", new float[] {0f, 1f}, calls));
        try {
            new Dispatcher(manifest, null, lv, stages(), "fixed:dense", null).predictTensor(new float[3072]);
            fail("2 logits for 3 labels");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("dense artifact has 2 outputs but the bundle has 3 labels"));
        }
        try {
            new Dispatcher(manifest, null, lv, stages(), "fixed:dense", null).predictTensor(new float[10]);
            fail("wrong input size");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("input has 10 values"));
        }
    }

    @Test
    public void openLoadsEveryArtifactAndCloseClosesThem() throws Exception {
        Bundle bundle = Bundle.open(TestBundles.write(tmp.newFolder("b"), TestBundles.manifest()), "pte");
        List<Model> loaded = new ArrayList<>();
        List<String> owners = new ArrayList<>();
        Dispatcher d = Dispatcher.open(bundle, (owner, file) -> {
            String stem = owner.startsWith("stage:") ? "stage-" + owner.substring(6) : owner;
            assertEquals(stem + ".pte", file.getName());
            owners.add(owner);
            Model m;
            if (owner.startsWith("stage:")) {
                m = stages().get(owner.substring(6));
            } else {
                float[] out = "router".equals(owner) ? new float[] {0f, 0.6f, 0f} : new float[] {1f, 2f, 3f};
                m = new FakeModel(owner, out, calls);
            }
            loaded.add(m);
            return m;
        }, "router");
        assertEquals(Arrays.asList("router", "simple", "complex", "dense", "stage:s1", "stage:s2", "stage:s3"),
                d.loads().stream().map(Dispatcher.ArtifactLoad::owner).toList());
        assertEquals(owners, d.loads().stream().map(Dispatcher.ArtifactLoad::owner).toList());
        Prediction p = d.predict(grey(33, 32), 33, 32, 0.0);
        assertEquals("complex", p.level());
        assertArrayEquals(new float[] {1f, 2f, 3f}, p.logits(), 0f);
        d.close();
        for (Model m : loaded) {
            assertTrue(m + " closed", m instanceof FakeModel ? ((FakeModel) m).closed : ((FakeStage) m).closed);
        }
    }

    @Test
    public void theDefaultPolicyOfABundleWithStagesIsExit() throws Exception {
        // s1: max_prob of [4, 0, -1] is high, but s1's logistic gate (threshold 0.7) decides; s2 max_softmax 0.6
        Dispatcher d = new Dispatcher(manifest, null, levels(), stages(new float[] {0f, 0f, 0f},
                new float[] {0f, 6f, 0f}, new float[] {0f, 0f, 6f}), null, null);
        assertEquals("exit", d.policy().kind());
        Prediction p = d.predictTensor(new float[3072]);
        // s1 uniform logits: max_prob 1/3, margin 0, entropy ln 3 -> the logistic gate says no
        assertEquals("s2", p.exit());
        assertEquals("s2", p.level());
        assertEquals(1, p.label());
        assertEquals(Arrays.asList("s1/1", "s2/2"), calls);
        assertEquals(Arrays.asList("s1", "s2"), new ArrayList<>(p.stageMs().keySet()));
        assertEquals(Arrays.asList("s1", "s2"), new ArrayList<>(p.gateScores().keySet()));
        assertTrue(p.gateScores().get("s1") < 0.7);
        assertTrue(p.gateScores().get("s2") >= 0.6);
        assertTrue(p.exitedEarly(manifest));
        assertTrue(p.routerScores().isEmpty());
        double infer = p.stageMs().get("s1") + p.stageMs().get("s2");
        assertEquals(infer, p.timingsMs().get("infer"), 1e-9);
    }

    @Test
    public void everyGateFailingRunsTheWholeChain() throws Exception {
        Map<String, Model> st = stages();
        Prediction p = new Dispatcher(manifest, null, levels(), st, "exit", null).predictTensor(new float[3072]);
        assertEquals("s3", p.exit());
        assertEquals(Arrays.asList("s1/1", "s2/2", "s3/1"), calls);
        assertEquals(Arrays.asList("s1", "s2"), new ArrayList<>(p.gateScores().keySet()));
        assertTrue(!p.exitedEarly(manifest));
    }

    @Test
    public void exitThresholdOverridesApplyAndAreChecked() throws Exception {
        Map<String, Double> ths = new LinkedHashMap<>();
        ths.put("s1", 0.0);
        Dispatcher d = new Dispatcher(manifest, null, levels(), stages(), "exit", ths);
        assertEquals(0.0, d.exitThresholds().get("s1"), 0.0);
        assertEquals(0.6, d.exitThresholds().get("s2"), 0.0);
        assertEquals("s1", d.predictTensor(new float[3072]).exit());
        String[][] bad = {{"s3", "only these stages have exit thresholds: s1, s2 (the last stage always answers)"},
            {"s1", "must be a number in [0, 1] (a gate score), got 1.5"}};
        for (String[] c : bad) {
            Map<String, Double> t = new LinkedHashMap<>();
            t.put(c[0], c[0].equals("s1") ? 1.5 : 0.5);
            try {
                new Dispatcher(manifest, null, levels(), stages(), "exit", t);
                fail("accepted " + t);
            } catch (DispatchException e) {
                assertTrue(e.getMessage(), e.getMessage().contains(c[1]));
            }
        }
        try {
            new Dispatcher(manifest, null, levels(), stages(), "exit:s2", ths);
            fail("thresholds with a fixed exit");
        } catch (DispatchException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("thresholds only apply to the exit and router policies, not 'exit:s2'"));
        }
    }

    @Test
    public void fixedExitAsksNoGate() throws Exception {
        Prediction p = new Dispatcher(manifest, null, levels(), stages(new float[] {9f, 0f, 0f},
                new float[] {0f, 0f, 0f}, new float[] {0f, 0f, 0f}), "exit:s2", null).predictTensor(new float[3072]);
        assertEquals("s2", p.exit());
        assertTrue(p.gateScores().isEmpty());
        assertEquals(Arrays.asList("s1/1", "s2/2"), calls);
        p = new Dispatcher(manifest, null, levels(), stages(), "exit:s1", null).predictTensor(new float[3072]);
        assertEquals("s1", p.exit());
    }

    @Test
    public void nonFiniteInputsOutputsAndGateScoresAreRefusedAsInPython() throws Exception {
        float[] x = new float[3072];
        x[7] = Float.NaN;
        String[][] cases = {
            {"exit", "input tensor has 1 NaN/inf value(s) of 3072; refusing to predict on it"},
        };
        try {
            new Dispatcher(manifest, null, levels(), stages(), cases[0][0], null).predictTensor(x);
            fail("predicted on NaN");
        } catch (DispatchException e) {
            assertEquals(cases[0][1], e.getMessage());
        }
        Map<String, Model> st = stages(new float[] {0f, Float.POSITIVE_INFINITY, 0f}, new float[3], new float[3]);
        try {
            new Dispatcher(manifest, null, levels(), st, "exit", null).predictTensor(new float[3072]);
            fail("answered with inf logits");
        } catch (DispatchException e) {
            assertEquals("stage s1 artifact returned NaN/inf (or no) values; the artifact or its input is broken: "
                    + "re-convert the bundle", e.getMessage());
        }
        Map<String, Model> lv = levels();
        lv.put("dense", new FakeModel("dense", new float[] {Float.NaN, 0f, 0f}, calls));
        try {
            new Dispatcher(manifest, null, lv, stages(), "fixed:dense", null).predictTensor(new float[3072]);
            fail("answered with NaN logits");
        } catch (DispatchException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("level dense artifact returned NaN/inf"));
        }
        // a CLS token of another width than s1's logistic gate reads (4 values)
        Map<String, Model> wide = stages();
        wide.put("s1", new FakeStage("s1", calls, new float[25], new float[4], new float[3]));
        try {
            new Dispatcher(manifest, null, levels(), wide, "exit", null).predictTensor(new float[3072]);
            fail("scored a CLS token of the wrong width");
        } catch (DispatchException e) {
            assertEquals("stage s1's exit gate does not fit its outputs (the gate reads 4 CLS values but the stage's "
                    + "CLS token has 5; re-convert the bundle); re-convert the bundle", e.getMessage());
        }
    }

    @Test
    public void aMissingStageModelAndAStageWithoutRunManyAreRefused() throws Exception {
        Map<String, Model> st = stages();
        st.remove("s2");
        try {
            new Dispatcher(manifest, null, levels(), st, "exit", null);
            fail("opened without s2");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("no model for stage 's2'; load every stage of the bundle"));
        }
        st = stages();
        st.put("s2", new FakeModel("s2", new float[3], calls)); // a one-input Model: s2 takes tokens and scores
        try {
            new Dispatcher(manifest, null, levels(), st, "exit:s3", null).predictTensor(new float[3072]);
            fail("ran a two-input stage with Model.run");
        } catch (UnsupportedOperationException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("this stage takes 2 (implement Model.runMany)"));
        }
        st = stages();
        st.put("s1", new FakeStage("s1", calls, new float[3])); // gives 1 output, the manifest names 3
        try {
            new Dispatcher(manifest, null, levels(), st, "exit", null).predictTensor(new float[3072]);
            fail("accepted a stage with too few outputs");
        } catch (DispatchException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("stage artifact gave 1 outputs, the manifest names "
                    + "['tokens', 'scores', 'logits']; re-convert the bundle"));
        }
    }

    @Test
    public void aFailedLoadClosesWhatWasLoaded() throws Exception {
        Bundle bundle = Bundle.open(TestBundles.write(tmp.newFolder("b"), TestBundles.manifest()), "tflite");
        List<FakeModel> loaded = new ArrayList<>();
        try {
            Dispatcher.open(bundle, (owner, file) -> {
                if ("dense".equals(owner)) {
                    throw new IllegalStateException("cannot load " + file.getName());
                }
                FakeModel m = new FakeModel(owner, new float[3], calls);
                loaded.add(m);
                return m;
            }, "router");
            fail("opened with a failing loader");
        } catch (IllegalStateException e) {
            assertEquals("cannot load dense.tflite", e.getMessage());
        }
        assertEquals(3, loaded.size());
        for (FakeModel m : loaded) {
            assertTrue(m.closed);
        }
    }

    @Test
    public void manifestWithoutRouterNeedsAFixedLevel() {
        Map<String, Object> m = TestBundles.manifest();
        m.put("router", null);
        Manifest noRouter = Manifest.fromJson(m, "manifest");
        assertTrue(noRouter.thresholds().isEmpty());
        try {
            new Dispatcher(noRouter, null, levels(), stages(), "router", null);
            fail("router policy on a bundle without a router");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("bundle has no router"));
        }
    }
}

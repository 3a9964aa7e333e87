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

    private static byte[] grey(int w, int h) {
        byte[] rgb = new byte[w * h * 3];
        Arrays.fill(rgb, (byte) 128);
        return rgb;
    }

    @Test
    public void routerPicksTheCheapestPassingLevel() throws Exception {
        // thresholds in the vector manifest: simple 0.62, complex 0.55
        FakeModel router = new FakeModel("router", new float[] {0.9f, 0.1f, 0.1f}, calls);
        Dispatcher d = new Dispatcher(manifest, router, levels(), "router", null);
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
        Prediction p = new Dispatcher(manifest, router, levels(), "router", null).predictTensor(new float[3072]);
        assertEquals("dense", p.level());
        assertEquals(2, p.label());
        assertEquals("ship", p.labelName());
    }

    @Test
    public void thresholdOverridesApply() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {0.9f, 0.6f, 0f}, calls);
        Map<String, Double> ths = new LinkedHashMap<>();
        ths.put("simple", 0.95);
        Dispatcher d = new Dispatcher(manifest, router, levels(), "router", ths);
        assertEquals("complex", d.predictTensor(new float[3072]).level());
        assertEquals(0.95, d.thresholds().get("simple"), 0.0);
        assertEquals(0.55, d.thresholds().get("complex"), 0.0);
    }

    @Test
    public void fixedPolicySkipsTheRouter() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {1f, 1f, 1f}, calls);
        Prediction p = new Dispatcher(manifest, router, levels(), "fixed:complex", null).predictTensor(new float[3072]);
        assertEquals("complex", p.level());
        assertEquals(List.of("complex"), calls);
        assertTrue(p.routerScores().isEmpty());
    }

    @Test
    public void badSettingsAreRefusedWithTheFix() {
        FakeModel router = new FakeModel("router", new float[] {1f, 1f, 1f}, calls);
        String[][] cases = {
            {"fixed:medium", "no level 'medium'; levels: simple, complex, dense"},
            {"oracle", "unknown policy 'oracle'"},
        };
        for (String[] c : cases) {
            try {
                new Dispatcher(manifest, router, levels(), c[0], null);
                fail("accepted " + c[0]);
            } catch (DispatchException e) {
                assertTrue(e.getMessage(), e.getMessage().contains(c[1]));
            }
        }
        try {
            new Dispatcher(manifest, null, levels(), "router", null);
            fail("router policy without a router");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("use fixed:<level>"));
        }
        Map<String, Double> ths = new LinkedHashMap<>();
        ths.put("dense", 0.5);
        try {
            new Dispatcher(manifest, router, levels(), "router", ths);
            fail("threshold for the fallback level");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("the richest level is the fallback"));
        }
    }

    @Test
    public void wrongModelOutputsAreRefused() throws Exception {
        FakeModel router = new FakeModel("router", new float[] {1f, 1f}, calls);
        try {
            new Dispatcher(manifest, router, levels(), "router", null).predictTensor(new float[3072]);
            fail("router with 2 outputs for 3 levels");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("router artifact has 2 outputs but the bundle has 3 levels"));
        }
        Map<String, Model> lv = levels();
        lv.put("dense", new FakeModel("dense", new float[] {0f, 1f}, calls));
        try {
            new Dispatcher(manifest, null, lv, "fixed:dense", null).predictTensor(new float[3072]);
            fail("2 logits for 3 labels");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("dense artifact has 2 outputs but the bundle has 3 labels"));
        }
        try {
            new Dispatcher(manifest, null, lv, "fixed:dense", null).predictTensor(new float[10]);
            fail("wrong input size");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("input has 10 values"));
        }
    }

    @Test
    public void openLoadsEveryArtifactAndCloseClosesThem() throws Exception {
        Bundle bundle = Bundle.open(TestBundles.write(tmp.newFolder("b"), TestBundles.manifest()), "pte");
        List<FakeModel> loaded = new ArrayList<>();
        Dispatcher d = Dispatcher.open(bundle, (owner, file) -> {
            assertEquals(owner + ".pte", file.getName());
            float[] out = "router".equals(owner) ? new float[] {0f, 0.6f, 0f} : new float[] {1f, 2f, 3f};
            FakeModel m = new FakeModel(owner, out, calls);
            loaded.add(m);
            return m;
        }, "router");
        assertEquals(Arrays.asList("router", "simple", "complex", "dense"),
                d.loads().stream().map(Dispatcher.ArtifactLoad::owner).toList());
        Prediction p = d.predict(grey(33, 32), 33, 32, 0.0);
        assertEquals("complex", p.level());
        assertArrayEquals(new float[] {1f, 2f, 3f}, p.logits(), 0f);
        d.close();
        for (FakeModel m : loaded) {
            assertTrue(m.owner + " closed", m.closed);
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
            new Dispatcher(noRouter, null, levels(), "router", null);
            fail("router policy on a bundle without a router");
        } catch (DispatchException e) {
            assertTrue(e.getMessage().contains("bundle has no router"));
        }
    }
}

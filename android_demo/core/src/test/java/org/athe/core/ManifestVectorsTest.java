package org.athe.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/** Manifest parsing equals the Python loader: parsed fields (stages and gates included), and the same refusals. */
@RunWith(Parameterized.class)
public class ManifestVectorsTest {
    private final String name;
    private final Map<String, Object> c;

    public ManifestVectorsTest(String name, Map<String, Object> c) {
        this.name = name;
        this.c = c;
    }

    @Parameters(name = "{0}")
    public static Collection<Object[]> cases() {
        return Vectors.cases("manifests");
    }

    private Manifest parse() {
        return c.containsKey("text") ? Manifest.parse((String) c.get("text"), "manifest.json")
                : Manifest.fromJson(c.get("manifest"), "manifest");
    }

    @Test
    public void matchesPython() {
        if (c.containsKey("error_contains")) {
            String contains = (String) c.get("error_contains");
            try {
                parse();
                fail(name + ": accepted; Python says: " + c.get("error"));
            } catch (ManifestException e) {
                assertTrue("'" + e.getMessage() + "' lacks '" + contains + "' (Python: " + c.get("error") + ")",
                        e.getMessage().contains(contains));
                if (Boolean.TRUE.equals(c.get("exact"))) {
                    assertEquals("the whole message, as Python's", c.get("error"), e.getMessage());
                }
            }
            return;
        }
        Map<String, Object> want = Json.asObject(c.get("expected"), "expected");
        Manifest m = parse();
        assertEquals(want.get("variant"), m.variant());
        assertEquals(want.get("precision"), m.precision());
        assertEquals(want.get("level_names"), m.levelNames());
        assertEquals(want.get("has_router"), m.router() != null);
        assertEquals(want.get("router_outputs"), m.router() == null ? List.of() : m.router().outputs());
        assertEquals(Vectors.normalize(want.get("thresholds")), Vectors.normalize(m.thresholds()));
        assertEquals(want.get("labels"), m.labels());
        assertEquals(Vectors.normalize(want.get("input")), Vectors.normalize(m.input().toMap()));
        assertEquals(Vectors.normalize(want.get("input_shape")),
                Vectors.normalize(new Preprocessor(m.input()).outputShape()));
        assertEquals(want.get("formats"), m.formats());
        Map<String, Object> files = new LinkedHashMap<>();
        for (Map.Entry<String, Map<String, Artifact>> owner : m.artifacts().entrySet()) {
            Map<String, Object> paths = new LinkedHashMap<>();
            for (Map.Entry<String, Artifact> e : owner.getValue().entrySet()) {
                paths.put(e.getKey(), e.getValue().path());
            }
            files.put(owner.getKey(), paths);
        }
        assertEquals(want.get("files"), files);
        assertEquals(new ArrayList<>(Json.asObject(want.get("files"), "files").keySet()),
                new ArrayList<>(m.artifacts().keySet()));
        // schema 2: the exit chain
        assertEquals(((Number) want.get("schema_version")).intValue(), Manifest.SCHEMA_VERSION);
        assertEquals(want.get("stage_names"), m.stageNames());
        assertEquals(want.get("default_policy"), m.defaultPolicy());
        assertEquals(Vectors.normalize(want.get("exit_thresholds")), Vectors.normalize(m.exitThresholds()));
        List<Object> stages = Json.asArray(want.get("stages"), "stages");
        assertEquals(stages.size(), m.stages().size());
        for (int i = 0; i < stages.size(); i++) {
            Map<String, Object> ws = Json.asObject(stages.get(i), "stage");
            StageSpec st = m.stages().get(i);
            assertEquals(ws.get("name"), st.name());
            assertEquals(ws.get("inputs"), st.inputs());
            assertEquals(ws.get("outputs"), st.outputs());
            assertEquals(((Number) ws.get("tokens")).intValue(), st.tokens());
            assertEquals(ws.get("token_selection"), st.tokenSelection());
            assertEquals(Vectors.normalize(ws.get("threshold")), Vectors.normalize(st.threshold()));
            if (ws.get("gate") == null) {
                assertNull(st.gate());
                continue;
            }
            Map<String, Object> g = Json.asObject(ws.get("gate"), "gate");
            assertEquals(g.get("kind"), st.gate().kind());
            assertEquals(g.get("features"), st.gate().features());
            assertArrayEquals(Vectors.doubles(g.get("mean")), st.gate().mean(), 0.0);
            assertArrayEquals(Vectors.doubles(g.get("std")), st.gate().std(), 0.0);
            assertArrayEquals(Vectors.doubles(g.get("weights")), st.gate().weights(), 0.0);
            assertEquals(((Number) g.get("bias")).doubleValue(), st.gate().bias(), 0.0);
        }
    }
}

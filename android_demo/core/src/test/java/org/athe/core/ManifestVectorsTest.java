package org.athe.core;

import static org.junit.Assert.assertEquals;
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

/** Manifest parsing equals the Python loader: parsed fields, and the same refusals. */
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
    }
}

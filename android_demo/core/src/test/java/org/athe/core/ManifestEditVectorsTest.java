package org.athe.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/**
 * One manifest field wrong at a time (the vectors' {@code manifest_edits}, after
 * tests/test_hostile.py): refused with Python's message word for word, or accepted.
 */
@RunWith(Parameterized.class)
public class ManifestEditVectorsTest {
    private final String name;
    private final Map<String, Object> c;

    public ManifestEditVectorsTest(String name, Map<String, Object> c) {
        this.name = name;
        this.c = c;
    }

    @Parameters(name = "{0}")
    public static Collection<Object[]> cases() {
        return Vectors.cases("manifest_edits");
    }

    /** make_vectors.apply_edits: ["put", "a.0.b", value] or ["drop", "a.0.b"] on a copy of the base. */
    @SuppressWarnings("unchecked")
    static Object applyEdits(Object base, List<Object> edits) {
        Object d = Json.parse(TestBundles.toJson(base));
        for (Object e : edits) {
            List<Object> edit = Json.asArray(e, "edit");
            String[] keys = ((String) edit.get(1)).split("\\.");
            Object node = d;
            for (int i = 0; i < keys.length - 1; i++) {
                node = node instanceof List ? ((List<Object>) node).get(Integer.parseInt(keys[i]))
                        : ((Map<String, Object>) node).get(keys[i]);
            }
            String last = keys[keys.length - 1];
            Object value = "put".equals(edit.get(0)) ? Json.parse(TestBundles.toJson(edit.get(2))) : null;
            if (node instanceof List) {
                List<Object> list = (List<Object>) node;
                if ("put".equals(edit.get(0))) {
                    list.set(Integer.parseInt(last), value);
                } else {
                    list.remove(Integer.parseInt(last));
                }
            } else if ("put".equals(edit.get(0))) {
                ((Map<String, Object>) node).put(last, value);
            } else {
                ((Map<String, Object>) node).remove(last);
            }
        }
        return d;
    }

    @Test
    public void matchesPython() {
        Object manifest = applyEdits(Vectors.all().get("manifest_edit_base"), Json.asArray(c.get("edits"), "edits"));
        if (!c.containsKey("error")) {
            Map<String, Object> want = Json.asObject(c.get("expected"), "expected");
            Manifest m = Manifest.fromJson(manifest, "manifest");
            assertEquals(want.get("level_names"), m.levelNames());
            assertEquals(want.get("stage_names"), m.stageNames());
            return;
        }
        try {
            Manifest.fromJson(manifest, "manifest");
            fail(name + ": accepted; Python says: " + c.get("error"));
        } catch (ManifestException e) {
            assertTrue("'" + e.getMessage() + "' lacks '" + c.get("error_contains") + "'",
                    e.getMessage().contains((String) c.get("error_contains")));
            if (Boolean.TRUE.equals(c.get("exact"))) {
                assertEquals("the whole message, as Python's", c.get("error"), e.getMessage());
            }
        }
    }
}

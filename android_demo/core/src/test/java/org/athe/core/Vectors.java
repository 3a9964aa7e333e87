package org.athe.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The shared vectors ({@code android_demo/vectors/vectors.json}), parsed once. */
final class Vectors {
    private static Map<String, Object> all;

    private Vectors() {
    }

    static synchronized Map<String, Object> all() {
        if (all == null) {
            File file = new File(System.getProperty("athe.vectors", "../vectors/vectors.json"));
            try (InputStream in = new FileInputStream(file)) {
                all = Json.asObject(Json.parse(Manifest.readUtf8(in)), file.getPath());
            } catch (IOException e) {
                throw new IllegalStateException("cannot read the shared vectors " + file.getAbsolutePath()
                        + "; run android_demo/vectors/make_vectors.py", e);
            }
        }
        return all;
    }

    /** One section's cases as JUnit {@code Parameterized} rows: {name, case}. */
    static List<Object[]> cases(String section) {
        List<Object[]> rows = new ArrayList<>();
        for (Object c : Json.asArray(all().get(section), section)) {
            Map<String, Object> m = Json.asObject(c, section);
            rows.add(new Object[] {m.get("name"), m});
        }
        if (rows.isEmpty()) {
            throw new IllegalStateException("vectors.json has no " + section + " cases");
        }
        return rows;
    }

    static byte[] bytes(Object list) {
        List<Object> values = Json.asArray(list, "bytes");
        byte[] out = new byte[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) ((Number) values.get(i)).intValue();
        }
        return out;
    }

    static float[] floats(Object list) {
        List<Object> values = Json.asArray(list, "floats");
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ((Number) values.get(i)).floatValue();
        }
        return out;
    }

    static double[] doubles(Object list) {
        List<Object> values = Json.asArray(list, "doubles");
        double[] out = new double[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ((Number) values.get(i)).doubleValue();
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    static List<String> strings(Object list) {
        return (List<String>) (List<?>) Json.asArray(list, "strings");
    }

    /** JSON-ish value with every number as a Double, for comparing parsed and expected data. */
    static Object normalize(Object value) {
        if (value instanceof Number) {
            return ((Number) value).doubleValue();
        }
        if (value instanceof Map) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                out.put((String) e.getKey(), normalize(e.getValue()));
            }
            return out;
        }
        if (value instanceof List) {
            List<Object> out = new ArrayList<>();
            for (Object v : (List<?>) value) {
                out.add(normalize(v));
            }
            return out;
        }
        if (value instanceof long[]) {
            List<Object> out = new ArrayList<>();
            for (long v : (long[]) value) {
                out.add((double) v);
            }
            return out;
        }
        return value;
    }
}

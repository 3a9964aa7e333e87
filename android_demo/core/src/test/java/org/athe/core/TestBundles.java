package org.athe.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

/** Bundle folders for tests: the shared vectors' valid manifest with real files behind it. */
final class TestBundles {
    private TestBundles() {
    }

    /** The first valid manifest of the vectors (3 levels, tflite + pte, router, 3 stages), as a mutable map. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> manifest() {
        for (Object[] row : Vectors.cases("manifests")) {
            Map<String, Object> c = (Map<String, Object>) row[1];
            if (c.containsKey("expected")) {
                // re-parse for a private copy
                return Json.asObject(Json.parse(toJson(c.get("manifest"))), "manifest");
            }
        }
        throw new IllegalStateException("no valid manifest in the vectors");
    }

    /** Write placeholder artifacts and a manifest whose sizes and digests match them. */
    static File write(File folder, Map<String, Object> manifest) throws IOException {
        if (!folder.isDirectory() && !folder.mkdirs()) {
            throw new IOException("cannot create " + folder);
        }
        for (Object lv : Json.asArray(manifest.get("levels"), "levels")) {
            writeFiles(folder, Json.asObject(Json.asObject(lv, "level").get("files"), "files"));
        }
        if (manifest.get("stages") != null) {
            for (Object st : Json.asArray(manifest.get("stages"), "stages")) {
                writeFiles(folder, Json.asObject(Json.asObject(st, "stage").get("files"), "files"));
            }
        }
        if (manifest.get("router") != null) {
            writeFiles(folder, Json.asObject(Json.asObject(manifest.get("router"), "router").get("files"), "files"));
        }
        write(new File(folder, Manifest.FILE_NAME), toJson(manifest).getBytes(StandardCharsets.UTF_8));
        return folder;
    }

    private static void writeFiles(File folder, Map<String, Object> files) throws IOException {
        for (Object value : files.values()) {
            Map<String, Object> a = Json.asObject(value, "artifact");
            String path = (String) a.get("path");
            byte[] content = (path + " placeholder bytes").getBytes(StandardCharsets.UTF_8);
            File file = new File(folder, path);
            write(file, content);
            a.put("sha256", Bundle.sha256(file));
            a.put("bytes", content.length);
        }
    }

    static void write(File file, byte[] content) throws IOException {
        try (OutputStream out = new FileOutputStream(file)) {
            out.write(content);
        }
    }

    /** A minimal JSON writer for parsed values (strings, numbers, booleans, null, lists, maps). */
    static String toJson(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof String) {
            StringBuilder out = new StringBuilder("\"");
            for (char c : ((String) value).toCharArray()) {
                if (c == '"' || c == '\\') {
                    out.append('\\').append(c);
                } else if (c < 0x20) {
                    out.append(String.format("\\u%04x", (int) c));
                } else {
                    out.append(c);
                }
            }
            return out.append('"').toString();
        }
        if (value instanceof Map) {
            StringBuilder out = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                if (out.length() > 1) {
                    out.append(',');
                }
                out.append(toJson(e.getKey())).append(':').append(toJson(e.getValue()));
            }
            return out.append('}').toString();
        }
        if (value instanceof List) {
            StringBuilder out = new StringBuilder("[");
            for (Object v : (List<?>) value) {
                if (out.length() > 1) {
                    out.append(',');
                }
                out.append(toJson(v));
            }
            return out.append(']').toString();
        }
        return value.toString();
    }
}

package org.athe.core;

import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * Python's {@code repr} for the values in error messages, so the Java messages read exactly
 * like the Python runtime's ({@code missing field(s) ['labels']}).
 */
final class Py {
    private Py() {
    }

    /** {@code repr(value)} for parsed JSON values and Java collections. */
    static String repr(Object value) {
        if (value == null) {
            return "None";
        }
        if (value instanceof String) {
            return str((String) value);
        }
        if (value instanceof Boolean) {
            return (Boolean) value ? "True" : "False";
        }
        if (value instanceof Map) {
            StringBuilder out = new StringBuilder("{");
            Iterator<? extends Map.Entry<?, ?>> it = ((Map<?, ?>) value).entrySet().iterator();
            while (it.hasNext()) {
                Map.Entry<?, ?> e = it.next();
                out.append(repr(e.getKey())).append(": ").append(repr(e.getValue()));
                if (it.hasNext()) {
                    out.append(", ");
                }
            }
            return out.append('}').toString();
        }
        if (value instanceof List) {
            return sequence((List<?>) value, "[", "]");
        }
        return value.toString();
    }

    /** {@code repr(tuple(items))}. */
    static String tuple(List<?> items) {
        return items.size() == 1 ? "(" + repr(items.get(0)) + ",)" : sequence(items, "(", ")");
    }

    private static String sequence(List<?> items, String open, String close) {
        StringBuilder out = new StringBuilder(open);
        for (int i = 0; i < items.size(); i++) {
            if (i > 0) {
                out.append(", ");
            }
            out.append(repr(items.get(i)));
        }
        return out.append(close).toString();
    }

    /** {@code repr(text)}: single quotes unless the text holds a single quote and no double quote. */
    static String str(String text) {
        char quote = text.indexOf('\'') >= 0 && text.indexOf('"') < 0 ? '"' : '\'';
        StringBuilder out = new StringBuilder().append(quote);
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c == quote || c == '\\') {
                out.append('\\').append(c);
            } else if (c == '\n') {
                out.append("\\n");
            } else if (c == '\r') {
                out.append("\\r");
            } else if (c == '\t') {
                out.append("\\t");
            } else if (c < 0x20 || c == 0x7f) {
                out.append(String.format("\\x%02x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append(quote).toString();
    }
}

package org.athe.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small strict JSON (RFC 8259) reader: enough for a bundle manifest and the test vectors.
 *
 * <p>Objects become {@link LinkedHashMap} (key order kept, a repeated key keeps its last value,
 * as Python's {@code json} does), arrays {@link ArrayList}, strings {@link String}, {@code true}
 * / {@code false} {@link Boolean}, {@code null} Java {@code null}, and numbers {@link Number}
 * objects that keep their text, so {@link Number#floatValue()} parses the decimal straight to
 * the nearest float32 (no rounding through double).
 *
 * <pre>{@code
 * Map<String, Object> m = Json.asObject(Json.parse("{\"a\": [1, 2.5]}"), "doc");
 * }</pre>
 */
public final class Json {

    /** Deepest nesting accepted; a manifest is 6 levels deep. */
    public static final int MAX_DEPTH = 256;

    private final String text;
    private int pos;

    private Json(String text) {
        this.text = text;
    }

    /** Invalid JSON; the message gives line, column and what was expected. */
    public static final class JsonException extends IllegalArgumentException {
        JsonException(String message) {
            super(message);
        }
    }

    /** A JSON number that keeps its decimal text. */
    public static final class Number extends java.lang.Number {
        private static final long serialVersionUID = 1L;
        private final String text;

        Number(String text) {
            this.text = text;
        }

        /** The number as written in the document. */
        public String text() {
            return text;
        }

        /** True when written without a fraction or exponent ({@code 3}, not {@code 3.0}). */
        public boolean isIntegral() {
            return text.indexOf('.') < 0 && text.indexOf('e') < 0 && text.indexOf('E') < 0;
        }

        @Override
        public int intValue() {
            return (int) longValue();
        }

        @Override
        public long longValue() {
            if (isIntegral()) {
                try {
                    return Long.parseLong(text);
                } catch (NumberFormatException e) {
                    // larger than a long: fall through to the double value
                }
            }
            return (long) doubleValue();
        }

        @Override
        public float floatValue() {
            return Float.parseFloat(text);
        }

        @Override
        public double doubleValue() {
            return Double.parseDouble(text);
        }

        @Override
        public String toString() {
            return text;
        }

        @Override
        public boolean equals(Object other) {
            return other instanceof Number && ((Number) other).doubleValue() == doubleValue();
        }

        @Override
        public int hashCode() {
            return Double.hashCode(doubleValue());
        }
    }

    /**
     * Parse one JSON document.
     *
     * @throws JsonException the text is not exactly one valid JSON value
     */
    public static Object parse(String text) {
        Json reader = new Json(text);
        reader.skipSpace();
        Object value = reader.value(0);
        reader.skipSpace();
        if (reader.pos != text.length()) {
            throw reader.error("extra data after the JSON value");
        }
        return value;
    }

    /** {@code value} as an object, or a {@link ClassCastException}-free error naming {@code where}. */
    @SuppressWarnings("unchecked")
    public static Map<String, Object> asObject(Object value, String where) {
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException(where + ": expected a JSON object, got " + typeName(value));
        }
        return (Map<String, Object>) value;
    }

    /** {@code value} as an array. */
    @SuppressWarnings("unchecked")
    public static List<Object> asArray(Object value, String where) {
        if (!(value instanceof List)) {
            throw new IllegalArgumentException(where + ": expected a JSON array, got " + typeName(value));
        }
        return (List<Object>) value;
    }

    /** The JSON type name of a parsed value, for messages. */
    public static String typeName(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Map) {
            return "an object";
        }
        if (value instanceof List) {
            return "an array";
        }
        if (value instanceof String) {
            return "a string";
        }
        if (value instanceof Boolean) {
            return "a boolean";
        }
        return "a number";
    }

    // -- the reader ------------------------------------------------------------------------
    private Object value(int depth) {
        if (depth > MAX_DEPTH) {
            throw error("nested deeper than " + MAX_DEPTH + " levels");
        }
        if (pos >= text.length()) {
            throw error("expecting a value, got the end of the text");
        }
        char c = text.charAt(pos);
        switch (c) {
            case '{':
                return object(depth);
            case '[':
                return array(depth);
            case '"':
                return string();
            case 't':
                literal("true");
                return Boolean.TRUE;
            case 'f':
                literal("false");
                return Boolean.FALSE;
            case 'n':
                literal("null");
                return null;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    return number();
                }
                throw error("expecting a value, got " + describe(c));
        }
    }

    private Map<String, Object> object(int depth) {
        Map<String, Object> out = new LinkedHashMap<>();
        pos++; // '{'
        skipSpace();
        if (peek() == '}') {
            pos++;
            return out;
        }
        while (true) {
            skipSpace();
            if (peek() != '"') {
                throw error("expecting a property name in double quotes");
            }
            String key = string();
            skipSpace();
            expect(':');
            skipSpace();
            out.put(key, value(depth + 1));
            skipSpace();
            char c = peek();
            if (c == ',') {
                pos++;
                continue;
            }
            if (c == '}') {
                pos++;
                return out;
            }
            throw error("expecting ',' or '}' in an object");
        }
    }

    private List<Object> array(int depth) {
        List<Object> out = new ArrayList<>();
        pos++; // '['
        skipSpace();
        if (peek() == ']') {
            pos++;
            return out;
        }
        while (true) {
            skipSpace();
            out.add(value(depth + 1));
            skipSpace();
            char c = peek();
            if (c == ',') {
                pos++;
                continue;
            }
            if (c == ']') {
                pos++;
                return out;
            }
            throw error("expecting ',' or ']' in an array");
        }
    }

    private String string() {
        pos++; // opening quote
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                throw error("unterminated string");
            }
            char c = text.charAt(pos++);
            if (c == '"') {
                return out.toString();
            }
            if (c < 0x20) {
                pos--;
                throw error("control character " + describe(c) + " inside a string (escape it)");
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            if (pos >= text.length()) {
                throw error("unterminated escape");
            }
            char e = text.charAt(pos++);
            switch (e) {
                case '"':
                case '\\':
                case '/':
                    out.append(e);
                    break;
                case 'b':
                    out.append('\b');
                    break;
                case 'f':
                    out.append('\f');
                    break;
                case 'n':
                    out.append('\n');
                    break;
                case 'r':
                    out.append('\r');
                    break;
                case 't':
                    out.append('\t');
                    break;
                case 'u':
                    out.append(unicodeEscape());
                    break;
                default:
                    pos--;
                    throw error("invalid escape \\" + e);
            }
        }
    }

    private char unicodeEscape() {
        if (pos + 4 > text.length()) {
            throw error("truncated \\u escape");
        }
        int code = 0;
        for (int i = 0; i < 4; i++) {
            int digit = Character.digit(text.charAt(pos + i), 16);
            if (digit < 0) {
                throw error("invalid \\u escape");
            }
            code = code * 16 + digit;
        }
        pos += 4;
        return (char) code;
    }

    private Number number() {
        int start = pos;
        if (peek() == '-') {
            pos++;
        }
        if (peek() == '0') {
            pos++;
        } else if (isDigit(peek())) {
            while (isDigit(peek())) {
                pos++;
            }
        } else {
            throw error("invalid number");
        }
        if (peek() == '.') {
            pos++;
            if (!isDigit(peek())) {
                throw error("invalid number: digits must follow '.'");
            }
            while (isDigit(peek())) {
                pos++;
            }
        }
        if (peek() == 'e' || peek() == 'E') {
            pos++;
            if (peek() == '+' || peek() == '-') {
                pos++;
            }
            if (!isDigit(peek())) {
                throw error("invalid number: digits must follow the exponent");
            }
            while (isDigit(peek())) {
                pos++;
            }
        }
        return new Number(text.substring(start, pos));
    }

    private void literal(String word) {
        if (!text.startsWith(word, pos)) {
            throw error("expecting a value");
        }
        pos += word.length();
    }

    private void expect(char c) {
        if (peek() != c) {
            throw error("expecting '" + c + "'");
        }
        pos++;
    }

    private char peek() {
        return pos < text.length() ? text.charAt(pos) : '\0';
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }

    private void skipSpace() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    private static String describe(char c) {
        return c < 0x20 || c > 0x7e ? String.format("U+%04X", (int) c) : "'" + c + "'";
    }

    private JsonException error(String what) {
        int line = 1;
        int column = 1;
        for (int i = 0; i < Math.min(pos, text.length()); i++) {
            if (text.charAt(i) == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
        return new JsonException(what + ": line " + line + " column " + column + " (char " + pos + ")");
    }
}

package org.athe.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class JsonTest {

    @Test
    public void parsesEveryValueKind() {
        Map<String, Object> m = Json.asObject(Json.parse(
                " {\"s\": \"a\\\"b\\\\c\\n\\u00e9\\/\", \"n\": -1.5e3, \"i\": 42, \"t\": true, \"f\": false,"
                        + " \"z\": null, \"a\": [1, [], {}], \"o\": {\"k\": \"v\"}} "), "doc");
        assertEquals("a\"b\\c\n\u00e9/", m.get("s"));
        assertEquals(-1500.0, ((Number) m.get("n")).doubleValue(), 0.0);
        assertEquals(42L, ((Number) m.get("i")).longValue());
        assertTrue(((Json.Number) m.get("i")).isIntegral());
        assertFalse(((Json.Number) m.get("n")).isIntegral());
        assertEquals(Boolean.TRUE, m.get("t"));
        assertEquals(Boolean.FALSE, m.get("f"));
        assertTrue(m.containsKey("z"));
        assertNull(m.get("z"));
        assertEquals(3, Json.asArray(m.get("a"), "a").size());
        assertEquals("v", Json.asObject(m.get("o"), "o").get("k"));
        assertEquals(Arrays.asList("s", "n", "i", "t", "f", "z", "a", "o"), List.copyOf(m.keySet()));
    }

    @Test
    public void numbersKeepTheirTextSoFloat32IsExact() {
        Json.Number n = (Json.Number) Json.parse("0.1");
        assertEquals("0.1", n.text());
        assertEquals(0.1f, n.floatValue(), 0.0f);
        assertEquals(0.1, n.doubleValue(), 0.0);
    }

    @Test
    public void repeatedKeyKeepsTheLastValueLikePython() {
        assertEquals("2", ((Json.Number) Json.asObject(Json.parse("{\"a\":1,\"a\":2}"), "d").get("a")).text());
    }

    @Test
    public void refusesInvalidJsonNamingTheLineAndColumn() {
        String[][] cases = {
            {"", "expecting a value"},
            {"{not json", "expecting a property name"},
            {"[1, 2", "expecting ',' or ']'"},
            {"{\"a\": 1,}", "expecting a property name"},
            {"[1,]", "expecting a value"},
            {"\"abc", "unterminated string"},
            {"\"a\\x\"", "invalid escape"},
            {"\"\\u12zz\"", "invalid \\u escape"},
            {"\"\\u12", "truncated \\u escape"},
            {"01", "extra data"},
            {"1.", "digits must follow '.'"},
            {"1e", "digits must follow the exponent"},
            {"-", "invalid number"},
            {"NaN", "expecting a value"},
            {"tru", "expecting a value"},
            {"{\"a\": 1} x", "extra data"},
            {"\"tab\there\"", "control character"},
            {"{\n  \"a\": ?}", "line 2 column 8"},
        };
        for (String[] c : cases) {
            try {
                Json.parse(c[0]);
                fail("accepted " + c[0]);
            } catch (Json.JsonException e) {
                assertTrue(c[0] + " -> " + e.getMessage(), e.getMessage().contains(c[1]));
            }
        }
    }

    @Test
    public void refusesNestingDeeperThanTheLimit() {
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i <= Json.MAX_DEPTH + 1; i++) {
            deep.append('[');
        }
        try {
            Json.parse(deep.toString());
            fail("accepted deep nesting");
        } catch (Json.JsonException e) {
            assertTrue(e.getMessage().contains("nested deeper"));
        }
    }

    @Test
    public void pythonReprOfMessagesValues() {
        assertEquals("['a', 'b']", Py.repr(Arrays.asList("a", "b")));
        assertEquals("('fp32',)", Py.tuple(List.of("fp32")));
        assertEquals("None", Py.repr(null));
        assertEquals("\"it's\"", Py.str("it's"));
        assertEquals("'a\\nb'", Py.str("a\nb"));
    }
}

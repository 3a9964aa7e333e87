package org.athe.core;

import static org.junit.Assert.assertEquals;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/** {@link DispatchRule#chooseLevel} equals Python's {@code choose_level} on every shared vector. */
@RunWith(Parameterized.class)
public class ChooseLevelVectorsTest {
    private final Map<String, Object> c;

    public ChooseLevelVectorsTest(String name, Map<String, Object> c) {
        this.c = c;
    }

    @Parameters(name = "{0}")
    public static Collection<Object[]> cases() {
        return Vectors.cases("choose_level");
    }

    @Test
    public void levelEqualsPython() {
        Map<String, Double> thresholds = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : Json.asObject(c.get("thresholds"), "thresholds").entrySet()) {
            thresholds.put(e.getKey(), ((Number) e.getValue()).doubleValue());
        }
        String level = DispatchRule.chooseLevel(Vectors.doubles(c.get("scores")),
                Vectors.strings(c.get("level_names")), thresholds);
        assertEquals(c.get("expected"), level);
    }
}

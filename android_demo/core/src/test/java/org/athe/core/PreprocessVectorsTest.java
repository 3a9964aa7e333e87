package org.athe.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.Collection;
import java.util.Map;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/** Resize, crop and normalisation equal the Python runtime (Pillow) on every shared vector. */
@RunWith(Parameterized.class)
public class PreprocessVectorsTest {
    private final Map<String, Object> c;
    private final Preprocessor pre;
    private final int width;
    private final int height;
    private final byte[] rgb;

    public PreprocessVectorsTest(String name, Map<String, Object> c) {
        this.c = c;
        this.pre = new Preprocessor(InputSpec.fromJson(c.get("spec"), "vector"));
        this.width = ((Number) c.get("width")).intValue();
        this.height = ((Number) c.get("height")).intValue();
        this.rgb = Vectors.bytes(c.get("rgb"));
    }

    @Parameters(name = "{0}")
    public static Collection<Object[]> cases() {
        return Vectors.cases("preprocess");
    }

    @Test
    public void resizedSizeAndPixelsEqualPillow() {
        int[] size = Preprocessor.resizedSize(width, height, pre.spec().resizeSize());
        assertEquals(((Number) c.get("resized_width")).intValue(), size[0]);
        assertEquals(((Number) c.get("resized_height")).intValue(), size[1]);
        byte[] want = Vectors.bytes(c.get("resized_rgb"));
        byte[] got = pre.resize(rgb, width, height);
        assertEquals(want.length, got.length);
        for (int i = 0; i < want.length; i++) {
            if (want[i] != got[i]) {
                int pixel = i / 3;
                throw new AssertionError("resized pixel (x=" + pixel % size[0] + ", y=" + pixel / size[0] + ") channel "
                        + i % 3 + ": Pillow " + (want[i] & 0xFF) + ", Java " + (got[i] & 0xFF));
            }
        }
    }

    @Test
    public void tensorMatchesWithin1e6() {
        float[] want = Vectors.floats(c.get("expected"));
        float[] got = pre.preprocess(rgb, width, height);
        assertEquals(Vectors.normalize(c.get("shape")), Vectors.normalize(pre.outputShape()));
        assertEquals(want.length, got.length);
        double worst = 0;
        for (int i = 0; i < want.length; i++) {
            worst = Math.max(worst, Math.abs(want[i] - got[i]));
        }
        assertTrue("max |diff| " + worst + " > 1e-6", worst <= 1e-6);
    }

    @Test
    public void tensorIsBitExact() {
        assertArrayEquals(Vectors.floats(c.get("expected")), pre.preprocess(rgb, width, height), 0.0f);
    }
}

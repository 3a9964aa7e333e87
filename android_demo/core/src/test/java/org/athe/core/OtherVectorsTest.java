package org.athe.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Map;
import org.junit.Test;

/** The smaller vector sections: softmax top-1, RGBA compositing, refused input specs. */
public class OtherVectorsTest {

    @Test
    public void softmaxTop1EqualsTheDispatcher() {
        for (Object[] row : Vectors.cases("softmax_top1")) {
            @SuppressWarnings("unchecked")
            Map<String, Object> c = (Map<String, Object>) row[1];
            DispatchRule.Top1 top = DispatchRule.softmaxTop1(Vectors.floats(c.get("logits")));
            assertEquals(row[0] + ": label", ((Number) c.get("label")).intValue(), top.label());
            assertEquals(row[0] + ": probability", ((Number) c.get("probability")).doubleValue(), top.probability(),
                    1e-12);
        }
    }

    @Test
    public void rgbaIsCompositedOnBlackLikePillow() {
        for (Object[] row : Vectors.cases("rgba_to_rgb")) {
            @SuppressWarnings("unchecked")
            Map<String, Object> c = (Map<String, Object>) row[1];
            byte[] rgba = Vectors.bytes(c.get("rgba"));
            int[] argb = new int[rgba.length / 4];
            for (int i = 0; i < argb.length; i++) {
                argb[i] = (rgba[i * 4 + 3] & 0xFF) << 24 | (rgba[i * 4] & 0xFF) << 16 | (rgba[i * 4 + 1] & 0xFF) << 8
                        | (rgba[i * 4 + 2] & 0xFF);
            }
            assertArrayEquals(String.valueOf(row[0]), Vectors.bytes(c.get("expected_rgb")),
                    Preprocessor.rgbFromArgb(argb));
        }
    }

    @Test
    public void exifOrientationMatchesThePythonDecoder() {
        for (Object[] row : Vectors.cases("exif_orientation")) {
            @SuppressWarnings("unchecked")
            Map<String, Object> c = (Map<String, Object>) row[1];
            byte[] rgb = Vectors.bytes(c.get("rgb"));
            int[] argb = new int[rgb.length / 3];
            for (int i = 0; i < argb.length; i++) {
                argb[i] = 0xFF000000 | (rgb[i * 3] & 0xFF) << 16 | (rgb[i * 3 + 1] & 0xFF) << 8 | (rgb[i * 3 + 2] & 0xFF);
            }
            ExifOrientation.Upright up = ExifOrientation.apply(argb, ((Number) c.get("width")).intValue(),
                    ((Number) c.get("height")).intValue(), ((Number) c.get("orientation")).intValue());
            assertEquals(row[0] + ": width", ((Number) c.get("expected_width")).intValue(), up.width());
            assertEquals(row[0] + ": height", ((Number) c.get("expected_height")).intValue(), up.height());
            assertArrayEquals(String.valueOf(row[0]), Vectors.bytes(c.get("expected_rgb")),
                    Preprocessor.rgbFromArgb(up.pixels()));
        }
    }

    @Test
    public void refusedSpecsAreRefusedWithPythonsMessage() {
        for (Object[] row : Vectors.cases("preprocess_errors")) {
            @SuppressWarnings("unchecked")
            Map<String, Object> c = (Map<String, Object>) row[1];
            String contains = (String) c.get("error_contains");
            try {
                new Preprocessor(InputSpec.fromJson(c.get("spec"), "vector"));
                fail(row[0] + ": accepted");
            } catch (IllegalArgumentException e) {
                assertTrue(row[0] + ": '" + e.getMessage() + "' lacks '" + contains + "'",
                        e.getMessage().contains(contains));
            }
        }
    }
}

package org.athe.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotSame;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Random;
import org.junit.Test;

/** Properties of the resize beyond the shared vectors (which pin it to Pillow). */
public class PillowResizeTest {

    private static byte[] noise(int w, int h, long seed) {
        byte[] out = new byte[w * h * 3];
        new Random(seed).nextBytes(out);
        return out;
    }

    @Test
    public void sameSizeIsACopy() {
        byte[] img = noise(5, 4, 1);
        for (PillowResize.Filter f : PillowResize.Filter.values()) {
            byte[] out = PillowResize.resize(img, 5, 4, 5, 4, f);
            assertArrayEquals(img, out);
            assertNotSame(img, out);
        }
    }

    @Test
    public void flatColourStaysFlat() {
        byte[] img = new byte[17 * 11 * 3];
        for (int i = 0; i < img.length; i += 3) {
            img[i] = (byte) 200;
            img[i + 1] = 7;
            img[i + 2] = (byte) 255;
        }
        for (PillowResize.Filter f : PillowResize.Filter.values()) {
            for (int[] size : new int[][] {{4, 3}, {40, 25}, {17, 5}, {3, 30}}) {
                byte[] out = PillowResize.resize(img, 17, 11, size[0], size[1], f);
                for (int i = 0; i < out.length; i += 3) {
                    assertEquals(f + " " + size[0] + "x" + size[1], 200, out[i] & 0xFF);
                    assertEquals(7, out[i + 1] & 0xFF);
                    assertEquals(255, out[i + 2] & 0xFF);
                }
            }
        }
    }

    @Test
    public void largeDownscaleStaysInRange() {
        // A 600x450 "photo" to 32 on the shorter side: kernel support grows to ~28 source pixels.
        byte[] img = noise(600, 450, 2);
        byte[] out = PillowResize.resize(img, 600, 450, 42, 32, PillowResize.Filter.BICUBIC);
        assertEquals(42 * 32 * 3, out.length);
        long sum = 0;
        for (byte b : out) {
            sum += b & 0xFF;
        }
        double mean = sum / (double) out.length;
        assertTrue("mean of uniform noise should stay near 127.5, got " + mean, Math.abs(mean - 127.5) < 3);
    }

    @Test
    public void refusesBadArguments() {
        byte[] img = noise(3, 3, 3);
        int[][] bad = {{3, 2, 4, 4}, {0, 3, 4, 4}, {3, 3, 0, 4}, {3, 3, 4, -1}};
        for (int[] b : bad) {
            try {
                PillowResize.resize(img, b[0], b[1], b[2], b[3], PillowResize.Filter.BILINEAR);
                fail("accepted " + java.util.Arrays.toString(b));
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("RGB buffer") || e.getMessage().contains("> 0")
                        || e.getMessage().contains("no pixels"));
            }
        }
        try {
            PillowResize.Filter.fromName("lanczos");
            fail("accepted lanczos");
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().contains("interpolation 'lanczos' unknown"));
        }
    }

    @Test
    public void centerCropPadsLikeTorchvision() {
        // 1x1 white pixel into a 4x4 crop: padding (4-1)//2 = 1 before, 2 after.
        byte[] px = {(byte) 255, (byte) 255, (byte) 255};
        byte[] out = Preprocessor.centerCrop(px, 1, 1, 4);
        for (int y = 0; y < 4; y++) {
            for (int x = 0; x < 4; x++) {
                int want = (x == 1 && y == 1) ? 255 : 0;
                assertEquals("(" + x + "," + y + ")", want, out[(y * 4 + x) * 3] & 0xFF);
            }
        }
    }
}

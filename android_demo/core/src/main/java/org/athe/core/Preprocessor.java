package org.athe.core;

/**
 * A bundle's {@link InputSpec} as a function: decoded RGB pixels to the model input tensor,
 * identical to {@code athe.runtime.preprocess.Preprocessor.preprocess} (and so to training's
 * eval transform).
 *
 * <ol>
 *   <li>resize so the shorter side is {@code resize_size} (longer side
 *       {@code floor(resize * long / short)}) with Pillow's filter, bit-exact ({@link PillowResize});
 *       no resize when the size already matches;</li>
 *   <li>center-crop {@code crop_size} like torchvision's {@code CenterCrop}: offsets
 *       {@code round((size - crop) / 2)} rounding half to even, zero padding
 *       ({@code (crop - size) / 2} before, the rest after) when the image is smaller;</li>
 *   <li>{@code (v / (1 / scale) - mean) / std} in float32, one lookup table per channel;</li>
 *   <li>NCHW (or NHWC) float32, batch 1.</li>
 * </ol>
 *
 * <p>Decoding (EXIF orientation, alpha) is the caller's: pass upright RGB, e.g. from
 * {@link #rgbFromArgb}. A Preprocessor is immutable and thread-safe.
 */
public final class Preprocessor {

    private final InputSpec spec;
    private final PillowResize.Filter filter;
    private final float[][] lut = new float[3][256];

    /**
     * @throws IllegalArgumentException a rule, interpolation, layout or dtype this runtime does not implement
     */
    public Preprocessor(InputSpec spec) {
        if (!InputSpec.RULE.equals(spec.rule())) {
            throw new IllegalArgumentException("input rule " + Py.str(spec.rule()) + " unknown; this runtime implements '"
                    + InputSpec.RULE + "'");
        }
        this.filter = PillowResize.Filter.fromName(spec.interpolation());
        if (!("NCHW".equals(spec.layout()) || "NHWC".equals(spec.layout())) || !"float32".equals(spec.dtype())) {
            throw new IllegalArgumentException("input layout/dtype " + spec.layout() + "/" + spec.dtype()
                    + " unsupported; expected NCHW or NHWC float32");
        }
        this.spec = spec;
        // The same float32 operations as numpy in the Python runtime: levels / float32(1/scale),
        // minus float32(mean), divided by float32(std).
        float divisor = (float) (1.0 / spec.scale());
        for (int c = 0; c < 3; c++) {
            float mean = (float) spec.mean()[c];
            float std = (float) spec.std()[c];
            for (int v = 0; v < 256; v++) {
                float level = (float) v / divisor;
                lut[c][v] = (level - mean) / std;
            }
        }
    }

    public InputSpec spec() {
        return spec;
    }

    /** {@code [1, 3, crop, crop]} for NCHW, {@code [1, crop, crop, 3]} for NHWC. */
    public long[] outputShape() {
        long c = spec.cropSize();
        return "NCHW".equals(spec.layout()) ? new long[] {1, 3, c, c} : new long[] {1, c, c, 3};
    }

    /** Elements of the output tensor ({@code 3 * crop * crop}). */
    public int outputSize() {
        return 3 * spec.cropSize() * spec.cropSize();
    }

    /**
     * RGB pixels to the normalised float32 input tensor.
     *
     * @param rgb    interleaved upright RGB, {@code width * height * 3} bytes, row-major
     * @param width  image width
     * @param height image height
     * @return {@link #outputSize()} floats in {@code spec.layout()} order
     */
    public float[] preprocess(byte[] rgb, int width, int height) {
        int[] size = resizedSize(width, height, spec.resizeSize());
        byte[] resized = resize(rgb, width, height);
        byte[] crop = centerCrop(resized, size[0], size[1], spec.cropSize());
        return normalize(crop);
    }

    /** Step 1 alone (for debugging against the vectors' {@code resized_rgb}). */
    public byte[] resize(byte[] rgb, int width, int height) {
        PillowResize.checkImage(rgb, width, height);
        int[] size = resizedSize(width, height, spec.resizeSize());
        if (size[0] == width && size[1] == height) {
            return rgb;
        }
        return PillowResize.resize(rgb, width, height, size[0], size[1], filter);
    }

    /** Steps 3 and 4 on a {@code crop x crop} RGB image. */
    public float[] normalize(byte[] cropRgb) {
        int c = spec.cropSize();
        int plane = c * c;
        float[] out = new float[3 * plane];
        boolean nchw = "NCHW".equals(spec.layout());
        for (int i = 0; i < plane; i++) {
            for (int ch = 0; ch < 3; ch++) {
                float v = lut[ch][cropRgb[i * 3 + ch] & 0xFF];
                out[nchw ? ch * plane + i : i * 3 + ch] = v;
            }
        }
        return out;
    }

    /**
     * {@code {width, height}} after resizing the shorter side to {@code resizeSize} (torchvision's
     * rule: the longer side is {@code (int) (resize * long / short)} in double).
     */
    public static int[] resizedSize(int width, int height, int resizeSize) {
        int shortSide = Math.min(width, height);
        int longSide = Math.max(width, height);
        int newLong = (int) (resizeSize * (double) longSide / shortSide);
        return width <= height ? new int[] {resizeSize, newLong} : new int[] {newLong, resizeSize};
    }

    /** torchvision's {@code CenterCrop} on interleaved RGB: pad with zeros if smaller, then crop. */
    public static byte[] centerCrop(byte[] rgb, int width, int height, int crop) {
        int padTop = crop > height ? (crop - height) / 2 : 0;
        int padLeft = crop > width ? (crop - width) / 2 : 0;
        int paddedH = Math.max(height, crop);
        int paddedW = Math.max(width, crop);
        int top = (int) Math.rint((paddedH - crop) / 2.0); // Python round(): half to even
        int left = (int) Math.rint((paddedW - crop) / 2.0);
        byte[] out = new byte[crop * crop * 3];
        for (int y = 0; y < crop; y++) {
            int sy = y + top - padTop; // row in the unpadded image
            if (sy < 0 || sy >= height) {
                continue;
            }
            for (int x = 0; x < crop; x++) {
                int sx = x + left - padLeft;
                if (sx >= 0 && sx < width) {
                    System.arraycopy(rgb, (sy * width + sx) * 3, out, (y * crop + x) * 3, 3);
                }
            }
        }
        return out;
    }

    /**
     * Android {@code Bitmap.getPixels} colours (non-premultiplied ARGB ints) to RGB bytes, with
     * transparency composited on opaque black exactly as the Python runtime decodes RGBA
     * (Pillow's {@code alpha_composite} rounding).
     */
    public static byte[] rgbFromArgb(int[] argb) {
        byte[] out = new byte[argb.length * 3];
        for (int i = 0; i < argb.length; i++) {
            int p = argb[i];
            int a = p >>> 24;
            int o = i * 3;
            if (a == 255) {
                out[o] = (byte) (p >> 16);
                out[o + 1] = (byte) (p >> 8);
                out[o + 2] = (byte) p;
            } else {
                out[o] = (byte) overBlack((p >> 16) & 0xFF, a);
                out[o + 1] = (byte) overBlack((p >> 8) & 0xFF, a);
                out[o + 2] = (byte) overBlack(p & 0xFF, a);
            }
        }
        return out;
    }

    /** Pillow's {@code ImagingAlphaComposite} of one channel over opaque black (7-bit precision). */
    static int overBlack(int value, int alpha) {
        final int bits = 7;
        int outa255 = alpha * 255 + 255 * (255 - alpha);
        int coef1 = (int) ((long) alpha * 255 * 255 * (1 << bits) / outa255);
        int tmp = value * coef1 + (0x80 << bits);
        return (((tmp >> 8) + tmp) >> 8) >> bits;
    }
}

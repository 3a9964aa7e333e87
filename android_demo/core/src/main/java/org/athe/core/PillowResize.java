package org.athe.core;

/**
 * {@code PIL.Image.resize(size, filter)} on 8-bit RGB, bit for bit (Pillow 13, no
 * {@code reducing_gap}, whole image as the box).
 *
 * <p>BICUBIC and BILINEAR follow Pillow's {@code libImaging/Resample.c}: a separable convolution
 * whose support grows with the downscale factor ({@code support * max(in/out, 1)}), per-output
 * coefficients normalised to sum 1 in double and then rounded half away from zero to 22-bit
 * fixed point; each pass accumulates in int32 starting at {@code 1 << 21} and clips to 0..255
 * (so the second pass reads the rounded output of the first). The passes run horizontal first,
 * except (Pillow &ge; 13) when the height shrinks by more than twice what the width shrinks:
 * {@code H - h > 0 && H - h > 2 * (W - w)} runs the vertical pass first. A dimension that does not
 * change gets no pass.
 *
 * <p>NEAREST is not a convolution in Pillow: it is the affine "scale" transform of
 * {@code libImaging/Geometry.c}. Source positions start at {@code step / 2} and are accumulated
 * by repeated addition of {@code step = in / out} in double, then truncated.
 *
 * <p>Pixels are interleaved RGB bytes, row-major: {@code rgb[(y * width + x) * 3 + channel]}.
 */
public final class PillowResize {

    /** Pillow's resampling filters that an {@link InputSpec} may name. */
    public enum Filter {
        NEAREST(0.0), BILINEAR(1.0), BICUBIC(2.0);

        final double support;

        Filter(double support) {
            this.support = support;
        }

        /** The filter for a manifest's {@code interpolation} string. */
        public static Filter fromName(String name) {
            switch (name) {
                case "nearest":
                    return NEAREST;
                case "bilinear":
                    return BILINEAR;
                case "bicubic":
                    return BICUBIC;
                default:
                    throw new IllegalArgumentException("interpolation " + Py.str(name)
                            + " unknown; expected one of ['bicubic', 'bilinear', 'nearest']");
            }
        }

        double weight(double x) {
            if (x < 0.0) {
                x = -x;
            }
            if (this == BILINEAR) {
                return x < 1.0 ? 1.0 - x : 0.0;
            }
            final double a = -0.5; // Pillow's bicubic constant
            if (x < 1.0) {
                return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
            }
            if (x < 2.0) {
                return (((x - 5) * x + 8) * x - 4) * a;
            }
            return 0.0;
        }
    }

    private static final int PRECISION_BITS = 32 - 8 - 2;

    private PillowResize() {
    }

    /**
     * Resize an RGB image.
     *
     * @param rgb    interleaved RGB, {@code width * height * 3} bytes
     * @param width  source width
     * @param height source height
     * @param outW   target width (&ge; 1)
     * @param outH   target height (&ge; 1)
     * @param filter Pillow's filter
     * @return a new {@code outW * outH * 3} byte array
     */
    public static byte[] resize(byte[] rgb, int width, int height, int outW, int outH, Filter filter) {
        checkImage(rgb, width, height);
        if (outW < 1 || outH < 1) {
            throw new IllegalArgumentException("height and width must be > 0, got " + outW + "x" + outH);
        }
        if (outW == width && outH == height) {
            return rgb.clone();
        }
        if (filter == Filter.NEAREST) {
            return nearest(rgb, width, height, outW, outH);
        }
        boolean needHorizontal = outW != width;
        boolean needVertical = outH != height;
        boolean horizontalFirst = !((height - outH) > 0 && (height - outH) > (width - outW) * 2);
        if (horizontalFirst) {
            byte[] out = rgb;
            int rows = height;
            Coefficients vertical = needVertical ? Coefficients.of(height, outH, filter) : null;
            if (needHorizontal) {
                // Only the source rows the vertical pass reads, as Pillow does.
                int first = vertical == null ? 0 : vertical.firstSource();
                rows = vertical == null ? height : vertical.lastSource() - first;
                out = horizontal(rgb, width, first, rows, Coefficients.of(width, outW, filter));
                if (vertical != null) {
                    vertical.shift(-first);
                }
            }
            return vertical == null ? out : vertical(out, outW, vertical);
        }
        byte[] out = vertical(rgb, width, Coefficients.of(height, outH, filter));
        return needHorizontal ? horizontal(out, width, 0, outH, Coefficients.of(width, outW, filter)) : out;
    }

    static void checkImage(byte[] rgb, int width, int height) {
        if (width < 1 || height < 1) {
            throw new IllegalArgumentException("image has no pixels (" + width + "x" + height + ")");
        }
        if (rgb.length != (long) width * height * 3) {
            throw new IllegalArgumentException("RGB buffer holds " + rgb.length + " bytes but a " + width + "x"
                    + height + " RGB image needs " + (long) width * height * 3);
        }
    }

    /** Per-output source window and fixed-point weights of one axis. */
    private static final class Coefficients {
        final int ksize;
        final int[] start; // first source index per output
        final int[] count; // source pixels used per output
        final int[] weights; // [out * ksize + i], 22-bit fixed point

        private Coefficients(int outSize, int ksize) {
            this.ksize = ksize;
            this.start = new int[outSize];
            this.count = new int[outSize];
            this.weights = new int[outSize * ksize];
        }

        /** Pillow's {@code precompute_coeffs} + {@code normalize_coeffs_8bpc}. */
        static Coefficients of(int inSize, int outSize, Filter filter) {
            double scale = (double) inSize / outSize;
            double filterscale = Math.max(scale, 1.0);
            double support = filter.support * filterscale;
            int ksize = (int) Math.ceil(support) * 2 + 1;
            Coefficients c = new Coefficients(outSize, ksize);
            double[] k = new double[ksize];
            for (int xx = 0; xx < outSize; xx++) {
                double center = (xx + 0.5) * scale;
                double ss = 1.0 / filterscale;
                int xmin = (int) (center - support + 0.5);
                if (xmin < 0) {
                    xmin = 0;
                }
                int xmax = (int) (center + support + 0.5);
                if (xmax > inSize) {
                    xmax = inSize;
                }
                xmax -= xmin;
                double ww = 0.0;
                for (int x = 0; x < xmax; x++) {
                    double w = filter.weight((x + xmin - center + 0.5) * ss);
                    k[x] = w;
                    ww += w;
                }
                for (int x = 0; x < xmax; x++) {
                    double w = ww != 0.0 ? k[x] / ww : k[x];
                    c.weights[xx * ksize + x] = w < 0
                            ? (int) (-0.5 + w * (1 << PRECISION_BITS))
                            : (int) (0.5 + w * (1 << PRECISION_BITS));
                }
                c.start[xx] = xmin;
                c.count[xx] = xmax;
            }
            return c;
        }

        int firstSource() {
            return start[0];
        }

        int lastSource() {
            int n = start.length - 1;
            return start[n] + count[n];
        }

        void shift(int delta) {
            for (int i = 0; i < start.length; i++) {
                start[i] += delta;
            }
        }
    }

    private static int clip8(int acc) {
        int v = acc >> PRECISION_BITS;
        return v < 0 ? 0 : Math.min(v, 255);
    }

    /** Horizontal pass over source rows {@code [firstRow, firstRow + rows)}. */
    private static byte[] horizontal(byte[] in, int inW, int firstRow, int rows, Coefficients c) {
        int outW = c.start.length;
        byte[] out = new byte[outW * rows * 3];
        for (int yy = 0; yy < rows; yy++) {
            int rowBase = (yy + firstRow) * inW * 3;
            for (int xx = 0; xx < outW; xx++) {
                int xmin = c.start[xx];
                int n = c.count[xx];
                int kBase = xx * c.ksize;
                int r = 1 << (PRECISION_BITS - 1);
                int g = r;
                int b = r;
                for (int x = 0; x < n; x++) {
                    int k = c.weights[kBase + x];
                    int p = rowBase + (x + xmin) * 3;
                    r += (in[p] & 0xFF) * k;
                    g += (in[p + 1] & 0xFF) * k;
                    b += (in[p + 2] & 0xFF) * k;
                }
                int o = (yy * outW + xx) * 3;
                out[o] = (byte) clip8(r);
                out[o + 1] = (byte) clip8(g);
                out[o + 2] = (byte) clip8(b);
            }
        }
        return out;
    }

    /** Vertical pass: every column of {@code in} (width {@code w}). */
    private static byte[] vertical(byte[] in, int w, Coefficients c) {
        int outH = c.start.length;
        byte[] out = new byte[w * outH * 3];
        for (int yy = 0; yy < outH; yy++) {
            int ymin = c.start[yy];
            int n = c.count[yy];
            int kBase = yy * c.ksize;
            for (int xx = 0; xx < w; xx++) {
                int r = 1 << (PRECISION_BITS - 1);
                int g = r;
                int b = r;
                for (int y = 0; y < n; y++) {
                    int k = c.weights[kBase + y];
                    int p = ((y + ymin) * w + xx) * 3;
                    r += (in[p] & 0xFF) * k;
                    g += (in[p + 1] & 0xFF) * k;
                    b += (in[p + 2] & 0xFF) * k;
                }
                int o = (yy * w + xx) * 3;
                out[o] = (byte) clip8(r);
                out[o + 1] = (byte) clip8(g);
                out[o + 2] = (byte) clip8(b);
            }
        }
        return out;
    }

    /** Pillow's {@code ImagingScaleAffine}: accumulated source positions, zero fill outside. */
    private static byte[] nearest(byte[] in, int w, int h, int outW, int outH) {
        double stepX = (double) w / outW;
        double stepY = (double) h / outH;
        int[] xin = new int[outW];
        int xmin = outW;
        int xmax = 0;
        double xo = stepX * 0.5;
        for (int x = 0; x < outW; x++) {
            int xi = xo < 0.0 ? -1 : (int) xo;
            if (xi >= 0 && xi < w) {
                xmax = x + 1;
                if (x < xmin) {
                    xmin = x;
                }
                xin[x] = xi;
            }
            xo += stepX;
        }
        byte[] out = new byte[outW * outH * 3]; // zero-filled, as Pillow's fill=1
        double yo = stepY * 0.5;
        for (int y = 0; y < outH; y++) {
            int yi = yo < 0.0 ? -1 : (int) yo;
            if (yi >= 0 && yi < h) {
                for (int x = xmin; x < xmax; x++) {
                    System.arraycopy(in, (yi * w + xin[x]) * 3, out, (y * outW + x) * 3, 3);
                }
            }
            yo += stepY;
        }
        return out;
    }
}

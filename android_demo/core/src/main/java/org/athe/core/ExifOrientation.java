package org.athe.core;

/**
 * The EXIF orientation tag (1-8) applied to decoded pixels, as the Python runtime's decoder does
 * with {@code ImageOps.exif_transpose}: an exact pixel permutation (no resampling).
 *
 * <p>Android's {@code BitmapFactory} ignores the tag; read it with {@code ExifInterface} and
 * apply it here before {@link Preprocessor#rgbFromArgb}. Works on any int-per-pixel buffer.
 */
public final class ExifOrientation {
    private ExifOrientation() {
    }

    /** Upright pixels and their size (width and height swap for orientations 5 to 8). */
    public record Upright(int[] pixels, int width, int height) {
    }

    /**
     * @param pixels      row-major, {@code width * height}
     * @param orientation the EXIF value; 1, 0 or an unknown value leaves the image as it is
     */
    public static Upright apply(int[] pixels, int width, int height, int orientation) {
        if (pixels.length != width * height) {
            throw new IllegalArgumentException("pixel buffer holds " + pixels.length + " values for a " + width + "x"
                    + height + " image");
        }
        if (orientation < 2 || orientation > 8) {
            return new Upright(pixels, width, height);
        }
        boolean swap = orientation >= 5;
        int outW = swap ? height : width;
        int outH = swap ? width : height;
        int[] out = new int[pixels.length];
        for (int y = 0; y < outH; y++) {
            for (int x = 0; x < outW; x++) {
                int sx;
                int sy;
                switch (orientation) {
                    case 2: // mirror left-right
                        sx = width - 1 - x;
                        sy = y;
                        break;
                    case 3: // rotate 180
                        sx = width - 1 - x;
                        sy = height - 1 - y;
                        break;
                    case 4: // mirror top-bottom
                        sx = x;
                        sy = height - 1 - y;
                        break;
                    case 5: // transpose
                        sx = y;
                        sy = x;
                        break;
                    case 6: // rotate 90 clockwise
                        sx = y;
                        sy = height - 1 - x;
                        break;
                    case 7: // transverse
                        sx = width - 1 - y;
                        sy = height - 1 - x;
                        break;
                    default: // 8: rotate 90 counter-clockwise
                        sx = width - 1 - y;
                        sy = x;
                        break;
                }
                out[y * outW + x] = pixels[sy * width + sx];
            }
        }
        return new Upright(out, outW, outH);
    }
}

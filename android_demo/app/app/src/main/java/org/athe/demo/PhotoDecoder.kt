package org.athe.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.net.Uri
import android.os.SystemClock
import androidx.exifinterface.media.ExifInterface
import java.io.IOException
import org.athe.core.ExifOrientation
import org.athe.core.Preprocessor

/** A decoded photo: upright RGB for the core's preprocessing, and a small bitmap to show. */
class DecodedPhoto(val rgb: ByteArray, val width: Int, val height: Int, val decodeMs: Double, val preview: Bitmap)

/**
 * Decode an image the way the Python runtime does before preprocessing: full resolution,
 * ARGB_8888, EXIF orientation applied as an exact pixel permutation, alpha composited on black.
 * (JPEG decoders differ slightly between Pillow's libjpeg-turbo and Android's; from the decoded
 * pixels on, preprocessing is bit-exact with Python.)
 */
object PhotoDecoder {
    /** Refuse more pixels than this, as the Python runtime does (decompression bombs). */
    const val MAX_PIXELS = 80_000_000L
    private const val PREVIEW_SIDE = 768

    fun decode(resolver: ContentResolver, uri: Uri): DecodedPhoto {
        val start = SystemClock.elapsedRealtimeNanos()
        val orientation = resolver.openInputStream(uri)?.use {
            ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
        } ?: throw IOException("cannot open $uri")

        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) {
            throw IOException("not a recognised image format")
        }
        val pixelsInFile = bounds.outWidth.toLong() * bounds.outHeight
        if (pixelsInFile > MAX_PIXELS) {
            throw IOException("image refused: ${bounds.outWidth}x${bounds.outHeight} exceeds the " +
                "${MAX_PIXELS / 1_000_000} MP limit")
        }
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
        }
        var bitmap = resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IOException("the image cannot be decoded")
        if (bitmap.config != Bitmap.Config.ARGB_8888) { // e.g. 16-bit PNG decoded as RGBA_F16
            bitmap = bitmap.copy(Bitmap.Config.ARGB_8888, false)
        }
        val w = bitmap.width
        val h = bitmap.height
        val preview = previewOf(bitmap, orientation)
        val argb = IntArray(w * h)
        bitmap.getPixels(argb, 0, w, 0, 0, w, h) // non-premultiplied ARGB
        if (preview !== bitmap) { // createBitmap returns the source itself for an identity matrix
            bitmap.recycle()
        }
        val upright = ExifOrientation.apply(argb, w, h, orientation)
        val rgb = Preprocessor.rgbFromArgb(upright.pixels())
        val ms = (SystemClock.elapsedRealtimeNanos() - start) / 1e6
        return DecodedPhoto(rgb, upright.width(), upright.height(), ms, preview)
    }

    /** A display copy, at most [PREVIEW_SIDE] pixels, turned upright (looks only; not used for inference). */
    private fun previewOf(bitmap: Bitmap, orientation: Int): Bitmap {
        val scale = minOf(1f, PREVIEW_SIDE.toFloat() / maxOf(bitmap.width, bitmap.height))
        val m = Matrix().apply {
            postScale(scale, scale)
            when (orientation) {
                ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> postScale(-1f, 1f)
                ExifInterface.ORIENTATION_ROTATE_180 -> postRotate(180f)
                ExifInterface.ORIENTATION_FLIP_VERTICAL -> postScale(1f, -1f)
                ExifInterface.ORIENTATION_TRANSPOSE -> { postRotate(90f); postScale(-1f, 1f) }
                ExifInterface.ORIENTATION_ROTATE_90 -> postRotate(90f)
                ExifInterface.ORIENTATION_TRANSVERSE -> { postRotate(90f); postScale(1f, -1f) }
                ExifInterface.ORIENTATION_ROTATE_270 -> postRotate(270f)
            }
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, true)
    }
}

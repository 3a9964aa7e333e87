"""Image preprocessing with numpy + Pillow only, identical to the training eval transform.

The rule (``InputSpec.rule == "resize_shorter_center_crop"``) is what
``athe.training.transforms.eval_transform`` does with torchvision on a PIL image:

1. decode and convert to RGB (EXIF orientation applied; RGBA/LA/P composited on black;
   16-bit grayscale divided by 257; CMYK and the rest through ``Image.convert("RGB")``,
   as ``athe.training.data`` decodes training images);
2. resize so the shorter side is ``resize_size`` (longer side ``int(resize * long / short)``)
   with PIL's ``interpolation`` filter; no resize when the size already matches;
3. center-crop ``crop_size`` (top = ``int(round((h - crop) / 2.0))``; zero padding when the
   image is smaller, as torchvision's ``CenterCrop``);
4. divide by 255, subtract ``mean``, divide by ``std``; float32 ``[1, 3, crop, crop]`` (NCHW).

Decoding and preprocessing are separate steps so a runner can time them separately::

    >>> from athe.runtime.preprocess import Preprocessor
    >>> pre = Preprocessor(bundle.input)
    >>> rgb = pre.decode("cat.jpg")        # PIL RGB image, or ImageError
    >>> x = pre.preprocess(rgb)             # float32 [1, 3, 32, 32]
    >>> x = pre("cat.jpg")                  # both

Bad input (missing, empty or non-regular file, a file over ``MAX_IMAGE_BYTES``, garbage bytes,
a truncated image, float pixels, more pixels than ``max_pixels`` decoded *or after the resize*:
a 1x2,000,000 strip is refused before its resize buffer is allocated) raises ``ImageError``
naming the input and the problem; nothing else escapes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .manifest import InputSpec, validate_input_spec
from .readers import MAX_IMAGE_BYTES, ReadError, read_regular_file

#: Default refusal limit in pixels (width x height) for one image: 80 MP.
MAX_PIXELS = 80_000_000

ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image | np.ndarray

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


_ORIENTATION = 0x0112  # EXIF tag


class ImageError(ValueError):
    """An input that is not a usable image; the message names the input and the problem."""


def describe(image: object) -> str:
    """A short name for an input, for error messages."""
    if isinstance(image, (str, Path)):
        return repr(str(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<{len(image)} bytes>"
    if isinstance(image, Image.Image):
        return f"<PIL image {image.width}x{image.height} {image.mode}>"
    if isinstance(image, np.ndarray):
        return f"<array {tuple(image.shape)} {image.dtype}>"
    return f"<{type(image).__name__}>"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, exactly as training decodes (``athe.training.data._to_rgb``)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((arr / 257.0).clip(0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def decode(image: ImageInput, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Any supported input -> a loaded RGB PIL image with EXIF orientation applied.

    Args:
        image: a file path, encoded bytes, a PIL image, or a uint8 array ``[H, W]``,
            ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        name: how to name the input in errors (default: the path or a short description).

    Raises:
        ImageError: unreadable, empty, truncated, too large, or an unsupported array.
    """
    label = name or describe(image)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if isinstance(image, np.ndarray):
        img = _from_array(image, label, max_pixels)
        _check_pixels(img, max_pixels, label)
        return to_rgb(img)
    if isinstance(image, Image.Image):
        _check_pixels(image, max_pixels, label)
        _check_mode(image, label)
        try:
            image.load()
            return to_rgb(_upright(image, in_place=False))
        except Exception as exc:  # a lazily-opened PIL image can still fail to decode here
            raise ImageError(f"image {label} cannot be decoded: {_reason(exc)}") from exc
    if isinstance(image, (str, Path)):
        data = _read_file(Path(image), label)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        raise ImageError(f"cannot read an image from {label}: pass a path, bytes, a PIL image or "
                         "a uint8 HxWxC array")
    if not data:
        raise ImageError(f"image {label} is empty (0 bytes)")
    return _decode_bytes(data, max_pixels, label)


def _read_file(path: Path, label: str) -> bytes:
    """The file's bytes: a regular file of at most ``MAX_IMAGE_BYTES`` (never blocks on a FIFO)."""
    try:
        return read_regular_file(path, MAX_IMAGE_BYTES, what="image")
    except FileNotFoundError:
        raise ImageError(f"image {label} not found") from None
    except ReadError as exc:
        if path.is_dir():
            raise ImageError(f"image {label} is a directory, not an image file") from None
        raise ImageError(str(exc)) from None


def _decode_bytes(data: bytes, max_pixels: int, label: str) -> Image.Image:
    # No warnings.catch_warnings here (it is not thread-safe): Pillow's DecompressionBombWarning
    # only fires above Image.MAX_IMAGE_PIXELS (89 MP), which the default limit already refuses,
    # and where warnings are errors it lands in the except below like any other failure.
    try:
        img = Image.open(io.BytesIO(data))
        _check_pixels(img, max_pixels, label)  # from the header, before decoding pixels
        _check_mode(img, label)
        img.load()
        return to_rgb(_upright(img, in_place=True))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {label} refused: {exc}") from exc
    except Exception as exc:  # Pillow's parsers raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(f"image {label} cannot be decoded: {_reason(exc)}") from exc


def _upright(img: Image.Image, in_place: bool) -> Image.Image:
    """Apply the EXIF orientation (``ImageOps.exif_transpose``); never mutates a caller's image."""
    if img.getexif().get(_ORIENTATION, 1) in (1, None):
        return img
    if in_place:
        ImageOps.exif_transpose(img, in_place=True)
        return img
    return ImageOps.exif_transpose(img)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "truncated" in text:
        return f"the file is truncated ({text})"
    if type(exc).__name__ == "UnidentifiedImageError":
        return "not a recognised image format (garbage or unsupported bytes)"
    return f"{type(exc).__name__}: {text}"


def _check_pixels(img: Image.Image, max_pixels: int, label: str) -> None:
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"image {label} has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"image {label} refused: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the "
                         f"{max_pixels / 1e6:g} MP limit (possible decompression bomb); "
                         "downscale it or raise max_pixels")


def _check_mode(img: Image.Image, label: str) -> None:
    """Refuse float pixels: their scale is unknown and ``convert("RGB")`` would clip silently."""
    if img.mode in ("F", "I;32F", "RGBF") or img.mode.startswith("F;"):
        raise ImageError(f"image {label} has floating-point pixels (mode {img.mode}); the runtime reads "
                         "8-bit images (and 16-bit grayscale): convert it to 8-bit first")


def _from_array(arr: np.ndarray, label: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageError(f"array input {label} must be uint8 (0..255); convert it explicitly, "
                         "the runtime does not guess a scale")
    if arr.ndim in (2, 3) and (arr.shape[0] < 1 or arr.shape[1] < 1):
        raise ImageError(f"image {label} has no pixels ({arr.shape[1] if arr.ndim > 1 else 0}x{arr.shape[0]})")
    if arr.ndim in (2, 3) and arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageError(f"image {label} refused: {arr.shape[1]}x{arr.shape[0]} = "
                         f"{arr.shape[0] * arr.shape[1] / 1e6:.1f} MP exceeds the {max_pixels / 1e6:g} MP limit; "
                         "downscale it or raise max_pixels")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), mode="L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr), mode="RGB" if arr.shape[2] == 3 else "RGBA")
    raise ImageError(f"array input {label} must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA)")


def resized_size(width: int, height: int, resize_size: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``resize_size`` (torchvision's rule)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize_size, int(resize_size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
    """Center crop ``[H, W, C]`` to ``[crop, crop, C]`` exactly like torchvision's ``CenterCrop``."""
    h, w = arr.shape[:2]
    if crop > h or crop > w:
        top_pad = (crop - h) // 2 if crop > h else 0
        left_pad = (crop - w) // 2 if crop > w else 0
        bottom_pad = (crop - h + 1) // 2 if crop > h else 0
        right_pad = (crop - w + 1) // 2 if crop > w else 0
        arr = np.pad(arr, ((top_pad, bottom_pad), (left_pad, right_pad), (0, 0)))
        h, w = arr.shape[:2]
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return arr[top:top + crop, left:left + crop]


class Preprocessor:
    """The bundle's ``InputSpec`` as a callable: input -> float32 ``[1, 3, crop, crop]``.

    Args:
        spec: the manifest's input spec.
        max_pixels: decompression-bomb limit for ``decode``.
    """

    def __init__(self, spec: InputSpec, max_pixels: int = MAX_PIXELS) -> None:
        if not isinstance(spec, InputSpec):
            raise ValueError(f"Preprocessor needs an InputSpec (bundle.input), got {type(spec).__name__}")
        if spec.rule != "resize_shorter_center_crop":
            raise ValueError(f"input rule {spec.rule!r} unknown; this runtime implements 'resize_shorter_center_crop'")
        if spec.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation {spec.interpolation!r} unknown; expected one of {sorted(_RESAMPLE)}")
        if spec.layout not in ("NCHW", "NHWC") or spec.dtype != "float32":
            raise ValueError(f"input layout/dtype {spec.layout}/{spec.dtype} unsupported; expected NCHW or NHWC float32")
        spec = validate_input_spec(spec)  # sizes bounded, mean/std/scale finite, std > 0 (ManifestError)
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.spec, self.max_pixels = spec, max_pixels
        self._resample = _RESAMPLE[spec.interpolation]
        # One float32 value per (channel, uint8 level), computed with the same float32 ops as
        # ToTensor + Normalize ((v / 255 - mean) / std), so a lookup is bit-identical to the
        # arithmetic and ~4x faster on a 224x224 crop.
        levels = np.arange(256, dtype=np.float32)[None, :] / np.float32(1.0 / spec.scale)
        mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
        std = np.asarray(spec.std, dtype=np.float32)[:, None]
        self._lut = np.ascontiguousarray((levels - mean) / std)  # [3, 256]

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        c = self.spec.crop_size
        return (1, 3, c, c) if self.spec.layout == "NCHW" else (1, c, c, 3)

    def decode(self, image: ImageInput, name: str | None = None) -> Image.Image:
        """See ``decode``: input -> loaded RGB PIL image (or ``ImageError``)."""
        return decode(image, max_pixels=self.max_pixels, name=name)

    def preprocess(self, rgb: Image.Image) -> np.ndarray:
        """RGB PIL image -> normalised float32 ``[1, 3, crop, crop]`` (``[1, crop, crop, 3]`` for NHWC)."""
        if not isinstance(rgb, Image.Image):
            raise ImageError(f"preprocess expects the PIL image decode() returns, got {describe(rgb)}")
        if rgb.mode != "RGB":
            raise ImageError(f"preprocess expects an RGB image from decode(), got mode {rgb.mode}")
        _check_pixels(rgb, self.max_pixels, describe(rgb))
        size = resized_size(rgb.width, rgb.height, self.spec.resize_size)
        if size[0] * size[1] > self.max_pixels:  # before the resize buffer is allocated
            raise ImageError(f"image {rgb.width}x{rgb.height} refused: resizing its shorter side to "
                             f"{self.spec.resize_size} gives {size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.1f} MP, "
                             f"more than the {self.max_pixels / 1e6:g} MP limit (an extreme aspect ratio); "
                             "crop it closer to square first")
        if size != rgb.size:
            rgb = rgb.resize(size, self._resample)
        arr = center_crop(np.asarray(rgb), self.spec.crop_size)  # [crop, crop, 3] uint8
        c = self.spec.crop_size
        if self.spec.layout == "NHWC":
            return np.stack([self._lut[i][arr[:, :, i]] for i in range(3)], axis=-1)[None]
        out = np.empty((1, 3, c, c), dtype=np.float32)
        for i in range(3):
            np.take(self._lut[i], arr[:, :, i], out=out[0, i])
        return out

    def __call__(self, image: ImageInput, name: str | None = None) -> np.ndarray:
        rgb = self.decode(image, name=name)
        try:
            return self.preprocess(rgb)
        except ImageError as exc:
            raise ImageError(f"{exc} ({name or describe(image)})") from None


def preprocess(image: ImageInput, spec: InputSpec, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One-shot ``decode`` + preprocessing: input -> float32 ``[1, 3, crop, crop]``."""
    return Preprocessor(spec, max_pixels)(image)

"""Runtime preprocessing: parity with the training eval transform, every mode, every bad input.

Images are made in memory or read from the shared CIFAR-10 archive; none is written into the
repository.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from athe.runtime.manifest import InputSpec
from athe.runtime.preprocess import (
    ImageError,
    Preprocessor,
    center_crop,
    decode,
    preprocess,
    resized_size,
)
from athe.variants import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess

ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train.tar.gz"
TOL = 1.0 / 255.0


def spec_of(pre: Preprocess) -> InputSpec:
    d = pre.to_dict()
    return InputSpec(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


CIFAR = Preprocess(crop_size=32, resize_size=32, mean=CIFAR_MEAN, std=CIFAR_STD, interpolation="bicubic")
DEIT = Preprocess(crop_size=224, resize_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")


def jpeg_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def photo(size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR)


def cifar_jpegs(n: int = 20) -> list[tuple[str, bytes]]:
    if not ARCHIVE.exists():
        pytest.skip(f"{ARCHIVE} not present")
    out = []
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                out.append((member.name, tar.extractfile(member).read()))
                if len(out) == n:
                    break
    return out


# -- parity with training ----------------------------------------------------------------------
def reference(img: Image.Image, pre: Preprocess) -> np.ndarray:
    transforms = pytest.importorskip("athe.training.transforms")
    return transforms.eval_transform(pre)(img).numpy()[None]


def test_parity_with_eval_transform_on_real_jpegs():
    pre = Preprocessor(spec_of(CIFAR))
    for name, data in cifar_jpegs(20):
        ours = pre(data, name=name)
        ref = reference(Image.open(io.BytesIO(data)).convert("RGB"), CIFAR)
        assert ours.shape == ref.shape == (1, 3, 32, 32) and ours.dtype == np.float32
        assert np.abs(ours - ref).max() <= TOL, name


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_parity_with_resize_and_crop_on_a_photo(interpolation):
    skdata = pytest.importorskip("skimage.data")
    img = Image.fromarray(skdata.chelsea())  # 451x300
    pre_cfg = Preprocess(crop_size=224, resize_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         interpolation=interpolation)
    ours = preprocess(jpeg_bytes(img), spec_of(pre_cfg))
    ref = reference(Image.open(io.BytesIO(jpeg_bytes(img))).convert("RGB"), pre_cfg)
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("size", [(300, 451), (257, 256), (100, 40), (20, 20), (225, 1000)])
def test_parity_on_odd_sizes_including_smaller_than_the_crop(size):
    img = photo(size, seed=sum(size))
    ours = Preprocessor(spec_of(DEIT)).preprocess(img)
    assert np.abs(ours - reference(img, DEIT)).max() <= TOL


def test_resize_and_crop_geometry_matches_torchvision():
    assert resized_size(451, 300, 256) == (384, 256)
    assert resized_size(300, 451, 256) == (256, 384)
    arr = np.arange(7 * 5).reshape(7, 5, 1)
    # torchvision: top = int(round((7 - 4) / 2.0)) = 2 (round half to even), left = round(0.5) = 0
    assert center_crop(arr, 4)[0, 0, 0] == arr[2, 0, 0]
    assert center_crop(np.ones((2, 3, 1)), 4).shape == (4, 4, 1)  # zero-padded like CenterCrop


# -- input kinds and modes ---------------------------------------------------------------------
def test_every_input_kind_gives_the_same_tensor(tmp_path):
    img = photo((40, 36))
    data = png_bytes(img)
    path = tmp_path / "img.png"
    path.write_bytes(data)
    pre = Preprocessor(spec_of(CIFAR))
    want = pre(data)
    for item in (path, str(path), bytearray(data), img, np.asarray(img)):
        np.testing.assert_array_equal(pre(item), want)


def _composited(img: Image.Image) -> np.ndarray:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    return (rgba[..., :3] * rgba[..., 3:] / 255.0).round()


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "CMYK", "I;16", "1"])
def test_every_mode_decodes_to_rgb(mode):
    base = photo((48, 40))
    if mode == "I;16":
        arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr16)
        assert img.mode == "I;16"
        data = png_bytes(img)
        rgb = decode(data)
        assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
        np.testing.assert_array_equal(np.asarray(rgb)[..., 0], np.asarray(base.convert("L")))
    elif mode in ("RGBA", "LA"):
        img = base.convert(mode)
        alpha = Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1)))
        img.putalpha(alpha)
        rgb = decode(png_bytes(img))
        assert np.abs(np.asarray(rgb, dtype=np.float64) - _composited(img)).max() <= 1  # on black
    elif mode == "P":
        img = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.info["transparency"] = 0
        rgb = decode(png_bytes(img))
        want = _composited(Image.open(io.BytesIO(png_bytes(img))))
        assert np.abs(np.asarray(rgb, dtype=np.float64) - want).max() <= 1
    elif mode == "CMYK":
        img = base.convert("CMYK")
        rgb = decode(jpeg_bytes(img))
        assert np.abs(np.asarray(rgb, dtype=np.int16) - np.asarray(base, dtype=np.int16)).mean() < 12
    else:
        img = base.convert(mode)
        rgb = decode(png_bytes(img))
        np.testing.assert_array_equal(np.asarray(rgb)[..., 1], np.asarray(img.convert("L")))
    assert rgb.mode == "RGB" and rgb.size == (48, 40)
    assert Preprocessor(spec_of(CIFAR)).preprocess(rgb).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("orientation,transpose", [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
])
def test_exif_orientation_is_applied(orientation, transpose):
    img = Image.fromarray(np.kron(np.array([[0, 255], [128, 64]], dtype=np.uint8),
                                  np.ones((20, 30), dtype=np.uint8))).convert("RGB")  # 60x40
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg_bytes(img, exif=exif.tobytes())
    rgb = decode(data)
    want = img.transpose(transpose)
    assert rgb.size == want.size
    assert np.abs(np.asarray(rgb, dtype=np.int16) - np.asarray(want, dtype=np.int16)).mean() < 3
    # a PIL image with EXIF is turned upright too, and the caller's image is not modified
    opened = Image.open(io.BytesIO(data))
    assert decode(opened).size == want.size and opened.size == img.size


def test_array_inputs():
    assert decode(np.zeros((10, 12), np.uint8)).size == (12, 10)
    assert decode(np.zeros((10, 12, 1), np.uint8)).mode == "RGB"
    assert decode(np.zeros((10, 12, 4), np.uint8)).mode == "RGB"
    with pytest.raises(ImageError, match="must be uint8"):
        decode(np.zeros((10, 12, 3), np.float32))
    with pytest.raises(ImageError, match="HxW, HxWx1, HxWx3"):
        decode(np.zeros((10, 12, 2), np.uint8))


# -- bad inputs --------------------------------------------------------------------------------
def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg.* is empty \(0 bytes\)"):
        decode(empty)
    with pytest.raises(ImageError, match="is empty"):
        decode(b"")
    with pytest.raises(ImageError, match=r"missing\.jpg.* not found"):
        decode(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        decode(tmp_path)
    with pytest.raises(ImageError, match="has no pixels"):
        decode(np.zeros((0, 5, 3), np.uint8))


def test_truncated_jpeg_and_png():
    img = photo((256, 192))
    for data in (jpeg_bytes(img), png_bytes(img)):
        with pytest.raises(ImageError, match="truncated"):
            decode(data[: len(data) // 2], name="half.img")


@pytest.mark.parametrize("data", [b"\x00" * 100, b"hello, not an image", b"\xff\xd8\xff" + b"\x00" * 64,
                                  b"\x89PNG\r\n\x1a\n" + b"garbage" * 10])
def test_garbage_bytes(data):
    with pytest.raises(ImageError, match="cannot be decoded"):
        decode(data)


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    data = png_bytes(Image.new("L", (400, 300)))
    with pytest.raises(ImageError, match=r"400x300 = 0\.1 MP exceeds the 0\.1 MP limit"):
        decode(data, max_pixels=100_000, name="bomb.png")
    with pytest.raises(ImageError, match="exceeds"):
        Preprocessor(spec_of(CIFAR), max_pixels=1000)(np.zeros((100, 100, 3), np.uint8))
    # Pillow's own global limit (DecompressionBombError) is turned into an ImageError as well
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageError, match="refused"):
        decode(data)
    # between 1x and 2x Pillow's limit it only warns; where warnings are errors: ImageError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="DecompressionBombWarning"):
            decode(data)


def test_unsupported_input_type():
    with pytest.raises(ImageError, match="pass a path, bytes, a PIL image"):
        decode(12345)  # type: ignore[arg-type]


def test_preprocessor_refuses_specs_it_does_not_implement():
    with pytest.raises(ValueError, match="interpolation 'lanczos' unknown"):
        Preprocessor(InputSpec("resize_shorter_center_crop", 32, 32, "lanczos", (0, 0, 0), (1, 1, 1)))


def test_runtime_imports_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'executorch', 'timm'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import athe.runtime, athe.runtime.benchmark\n"
        "from athe.runtime import load_backend, BackendError\n"
        "try:\n"
        "    load_backend('executorch')\n"
        "except BackendError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "needs torch + executorch: pip install 'athe[convert]'" in out.stdout


def test_nhwc_layout_is_the_transpose_of_nchw():
    nchw = Preprocessor(spec_of(DEIT))(photo((300, 260)))
    spec = InputSpec(**{**vars(spec_of(DEIT)), "layout": "NHWC"})
    nhwc = Preprocessor(spec)(photo((300, 260)))
    assert nhwc.shape == (1, 224, 224, 3) and nhwc.dtype == np.float32
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))

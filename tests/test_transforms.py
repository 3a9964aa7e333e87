"""The batched TrivialAugment against Pillow's own ops, image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from athe.training.train import TrainConfig
from athe.training.transforms import (
    TRIVIAL_OPS,
    apply_trivial_ops,
    trivial_augment_batch,
    unit_batch,
)


def _images(n: int = 4, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    # smooth-ish content (a gradient plus noise) so sharpness and contrast have something to do
    ramp = np.linspace(0, 200, size)[None, :, None] + np.linspace(0, 40, size)[:, None, None]
    return np.clip(ramp[None] + rng.integers(0, 56, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _run(arr: np.ndarray, name: str, mag: float, sign: float = 1.0) -> np.ndarray:
    n = len(arr)
    out = apply_trivial_ops(unit_batch(torch.from_numpy(arr)), torch.full((n,), TRIVIAL_OPS.index(name)),
                            torch.full((n,), mag), torch.full((n,), sign))
    return (out.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.int16)


@pytest.mark.parametrize("name,sign,pil", [
    ("brightness", 1.0, lambda im, f: ImageEnhance.Brightness(im).enhance(f)),
    ("brightness", -1.0, lambda im, f: ImageEnhance.Brightness(im).enhance(f)),
    ("color", -1.0, lambda im, f: ImageEnhance.Color(im).enhance(f)),
    ("contrast", 1.0, lambda im, f: ImageEnhance.Contrast(im).enhance(f)),
    ("sharpness", 1.0, lambda im, f: ImageEnhance.Sharpness(im).enhance(f)),
    ("sharpness", -1.0, lambda im, f: ImageEnhance.Sharpness(im).enhance(f)),
])
def test_enhance_ops_match_pillow(name, sign, pil):
    arr, mag = _images(), 0.6
    got = _run(arr, name, mag, sign)
    factor = 1.0 + 0.9 * mag * sign
    for a, g in zip(arr, got, strict=True):
        want = np.asarray(pil(Image.fromarray(a), factor)).astype(np.int16)
        # Pillow rounds its grey image and its blend to 8 bits; here the maths stays in float
        assert np.abs(g - want).max() <= 3, name


def test_posterize_solarize_autocontrast_match_pillow():
    arr = _images()
    for g, a in zip(_run(arr, "posterize", 1.0), arr, strict=True):  # 4 bits kept
        assert np.array_equal(g, np.asarray(ImageOps.posterize(Image.fromarray(a), 4)))
    for g, a in zip(_run(arr, "solarize", 0.5), arr, strict=True):
        want = np.asarray(ImageOps.solarize(Image.fromarray(a), threshold=128)).astype(np.int16)
        assert np.abs(g - want).max() <= 1
    for g, a in zip(_run(arr, "autocontrast", 0.3), arr, strict=True):
        want = np.asarray(ImageOps.autocontrast(Image.fromarray(a))).astype(np.int16)
        assert np.abs(g - want).max() <= 1


def test_identity_and_zero_strength_leave_images_alone():
    arr = _images()
    x = unit_batch(torch.from_numpy(arr))
    for name in TRIVIAL_OPS:
        out = apply_trivial_ops(x, torch.full((4,), TRIVIAL_OPS.index(name)), torch.zeros(4), torch.ones(4))
        tol = 0 if name in ("identity", "posterize", "solarize", "brightness", "color", "contrast") else 1e-5
        if name == "autocontrast":
            continue  # has no strength: it always stretches
        assert torch.allclose(out, x, atol=tol), name


def test_geometric_ops_move_content_the_right_amount():
    x = torch.zeros(2, 3, 20, 20)
    x[:, :, 10, 10] = 1.0  # one bright pixel a little right and below the centre
    out = apply_trivial_ops(x, torch.full((2,), TRIVIAL_OPS.index("translate_x")),
                            torch.ones(2), torch.tensor([1.0, -1.0]))
    for img, shift in zip(out, (-6, 6), strict=True):  # 0.3 x 20 px; + samples from the right
        ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
        assert ys.tolist() == [10] and xs.tolist() == [10 + shift]
    flat = torch.full((1, 3, 20, 20), 0.5)
    rot = apply_trivial_ops(flat, torch.tensor([TRIVIAL_OPS.index("rotate")]), torch.ones(1), torch.ones(1))
    assert torch.allclose(rot[0, :, 8:12, 8:12], flat[0, :, 8:12, 8:12])  # centre stays
    assert rot[0, :, 0, 0].max() == 0.0  # a 30-degree turn brings black into the corners


def test_batch_draws_are_seeded_and_use_every_op():
    x = unit_batch(torch.from_numpy(np.repeat(_images(1), 512, axis=0)))
    a = trivial_augment_batch(x, torch.Generator().manual_seed(5))
    b = trivial_augment_batch(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0.0 and a.max() <= 1.0
    changed = (a - x).abs().flatten(1).amax(1) > 0
    assert 0.8 < changed.float().mean() < 0.98  # identity (1 op in 13) and weak draws stay close


def test_unknown_augment_refused():
    with pytest.raises(ValueError, match="augment='randaug': use one of crop_flip, trivial"):
        TrainConfig(variant="athe-mini", data="d", out="o", epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0,
                    warmup_epochs=0.0, label_smoothing=0.0, distill_weight=1.0, val_size=0, router_size=0,
                    split_seed=0, augment="randaug")

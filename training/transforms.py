"""Train and eval transforms, built from the variant's ``Preprocess`` (the manifest's source).

The eval transform is the reference the runtime's numpy/Pillow preprocessing must reproduce
(``athe.runtime.preprocess``): resize shorter side (PIL), center crop, /255, normalise.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from athe.training.data import ImageSet
from athe.variants import Preprocess

_INTERP = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
           "nearest": T.InterpolationMode.NEAREST}


def eval_transform(pre: Preprocess) -> T.Compose:
    """PIL RGB image -> normalised ``[3, crop, crop]`` float tensor."""
    return T.Compose([
        T.Resize(pre.resize_size, interpolation=_INTERP[pre.interpolation]),
        T.CenterCrop(pre.crop_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def train_transform(pre: Preprocess) -> T.Compose:
    """PIL path augmentation for large images: random resized crop, flip, RandAugment."""
    return T.Compose([
        T.RandomResizedCrop(pre.crop_size, scale=(0.25, 1.0), interpolation=_INTERP[pre.interpolation]),
        T.RandomHorizontalFlip(),
        T.RandAugment(num_ops=2, magnitude=9),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def is_array_ready(images: ImageSet, pre: Preprocess) -> bool:
    """True when the images are decoded at exactly the crop size (no resize needed)."""
    return (images.array is not None and images.array.shape[1:3] == (pre.crop_size, pre.crop_size)
            and pre.resize_size == pre.crop_size)


def normalize_batch(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> normalised float ``[B, 3, H, W]`` (same math as ``eval_transform``)."""
    return normalize_unit(unit_batch(batch), pre)


def unit_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` in [0, 1]."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def normalize_unit(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Float ``[B, 3, H, W]`` in [0, 1] -> normalised with the preprocess's mean and std."""
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()  # NCHW memory, whatever the source layout


def augment_batch(batch: torch.Tensor, generator: torch.Generator, pad: int = 4,
                  erase_prob: float = 0.25) -> torch.Tensor:
    """Random crop with reflect padding, horizontal flip and random erasing, on a whole batch.

    Args:
        batch: normalised ``[B, 3, H, W]``.
        generator: CPU generator (makes resumed epochs reproduce exactly).
    """
    B, C, H, W = batch.shape
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    flip = torch.rand(B, generator=generator) < 0.5
    rows = (dy.view(B, 1) + torch.arange(H).view(1, H)).to(batch.device)  # [B, H]
    cols = (dx.view(B, 1) + torch.arange(W).view(1, W))
    cols = torch.where(flip.view(B, 1), cols.flip(1), cols).to(batch.device)  # [B, W]
    out = padded[torch.arange(B, device=batch.device).view(B, 1, 1, 1),
                 torch.arange(C, device=batch.device).view(1, C, 1, 1),
                 rows.view(B, 1, H, 1), cols.view(B, 1, 1, W)]
    if erase_prob > 0:
        erase = torch.rand(B, generator=generator) < erase_prob
        eh = torch.randint(H // 4, H // 2 + 1, (B,), generator=generator)
        ew = torch.randint(W // 4, W // 2 + 1, (B,), generator=generator)
        ey = (torch.rand(B, generator=generator) * (H - eh + 1)).long()
        ex = (torch.rand(B, generator=generator) * (W - ew + 1)).long()
        yy = torch.arange(H).view(1, H, 1)
        xx = torch.arange(W).view(1, 1, W)
        mask = ((yy >= ey.view(B, 1, 1)) & (yy < (ey + eh).view(B, 1, 1))
                & (xx >= ex.view(B, 1, 1)) & (xx < (ex + ew).view(B, 1, 1)) & erase.view(B, 1, 1))
        out = out.masked_fill(mask.unsqueeze(1).to(batch.device), 0.0)
    return out


def train_batch(raw: torch.Tensor, pre: Preprocess, generator: torch.Generator,
                augment: str = "crop_flip", erase_prob: float = 0.25) -> torch.Tensor:
    """The array path's training batch: uint8 ``[B, H, W, 3]`` -> augmented, normalised NCHW.

    ``augment`` is one of ``athe.variants.AUGMENTS``: ``trivial`` runs TrivialAugment on the
    [0, 1] images before the crop/flip/erasing.
    """
    if augment == "trivial":
        x = normalize_unit(trivial_augment_batch(unit_batch(raw), generator), pre)
    else:
        x = normalize_batch(raw, pre)
    return augment_batch(x, generator, erase_prob=erase_prob)


class PilDataset(torch.utils.data.Dataset):
    """An ``ImageSet`` through PIL transforms (for images that need resizing)."""

    def __init__(self, images: ImageSet, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img: Image.Image = self.images.image(i)
        return self.transform(img), int(self.images.labels[i])


def eval_tensor(images: ImageSet, pre: Preprocess, indices: np.ndarray | None = None) -> torch.Tensor:
    """Eval-preprocessed ``[N, 3, S, S]`` for (a subset of) an image set held as an array."""
    idx = np.arange(len(images)) if indices is None else indices
    if is_array_ready(images, pre):
        assert images.array is not None
        return normalize_batch(torch.from_numpy(images.array[idx]), pre)
    tf = eval_transform(pre)
    return torch.stack([tf(images.image(int(i))) for i in idx])


#: The ops ``trivial_augment_batch`` draws from, one per image, each with a magnitude drawn
#: uniformly in [0, 1] (TrivialAugment, Müller & Hutter 2021, with RandAugment's ranges).
TRIVIAL_OPS = ("identity", "autocontrast", "brightness", "color", "contrast", "sharpness",
               "posterize", "solarize", "rotate", "shear_x", "shear_y", "translate_x",
               "translate_y")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: ``b + factor * (a - b)`` per image (factor ``[B]``), clamped to [0, 1]."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp_(0.0, 1.0)


def trivial_augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugment on a whole batch: each image gets one random op at a random strength.

    Every op is computed for the batch at once (the images are 32x32, so this costs less than
    a per-image loop's dispatch) and each image keeps its own op's result. Equalize is left out
    (a per-image histogram has no batched form that is worth its cost here).

    Args:
        x: ``[B, 3, H, W]`` float images in [0, 1] (not yet normalised).
        generator: CPU generator (resumed epochs reproduce exactly).

    Returns:
        ``[B, 3, H, W]`` in [0, 1]; an image drawn ``identity`` is returned bit for bit.
    """
    B = x.shape[0]
    op = torch.randint(0, len(TRIVIAL_OPS), (B,), generator=generator)
    mag = torch.rand(B, generator=generator)
    sign = torch.where(torch.rand(B, generator=generator) < 0.5, -1.0, 1.0)
    return apply_trivial_ops(x, op, mag, sign)


def apply_trivial_ops(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor,
                      sign: torch.Tensor) -> torch.Tensor:
    """Image ``i`` of ``x`` through op ``TRIVIAL_OPS[op[i]]`` at strength ``mag[i]`` in [0, 1].

    ``sign[i]`` (+-1) picks the direction of the signed ops (enhance factors ``1 +- 0.9 mag``,
    rotation ``+-30 mag`` degrees, shear ``+-0.3 mag``, translation ``+-0.3 mag`` of the side).
    """
    B, C, H, W = x.shape
    op, mag, sign = op.to(x.device), mag.to(x.device).float(), sign.to(x.device).float()
    out = x.clone()

    def take(name: str, value: torch.Tensor) -> None:
        sel = (op == TRIVIAL_OPS.index(name)).view(B, 1, 1, 1)
        out.copy_(torch.where(sel, value, out))

    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # PIL's "L"
    factor = 1.0 + 0.9 * mag * sign  # enhance factors in [0.1, 1.9]
    take("brightness", _blend(x, torch.zeros_like(x), factor))
    take("color", _blend(x, gray.expand_as(x), factor))
    take("contrast", _blend(x, gray.mean((1, 2, 3), keepdim=True).expand_as(x), factor))
    smooth = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
    blurred = torch.nn.functional.conv2d(x, smooth.expand(C, 1, 3, 3).contiguous(), padding=1, groups=C)
    blurred[..., 0, :], blurred[..., -1, :] = x[..., 0, :], x[..., -1, :]  # PIL keeps the border
    blurred[..., :, 0], blurred[..., :, -1] = x[..., :, 0], x[..., :, -1]
    take("sharpness", _blend(x, blurred, factor))
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    take("autocontrast", torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x))
    bits = (8 - (4 * mag).round()).view(B, 1, 1, 1)  # keep 8..4 bits
    step = torch.pow(2.0, 8 - bits)
    take("posterize", torch.floor(torch.round(x * 255.0) / step) * step / 255.0)
    threshold = (1.0 - mag).view(B, 1, 1, 1)  # 1 (no change) .. 0 (invert all but black)
    take("solarize", torch.where(x > threshold, 1.0 - x, x))

    geo = torch.isin(op, torch.tensor([TRIVIAL_OPS.index(g) for g in _GEOMETRIC], device=x.device))
    if geo.any():
        theta = torch.zeros(B, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        s = mag * sign
        angle = s * (30.0 * torch.pi / 180.0)
        rot = op == TRIVIAL_OPS.index("rotate")
        theta[rot, 0, 0], theta[rot, 0, 1] = torch.cos(angle[rot]), -torch.sin(angle[rot])
        theta[rot, 1, 0], theta[rot, 1, 1] = torch.sin(angle[rot]), torch.cos(angle[rot])
        # (row, column, scale) of each op's theta entry; affine_grid works in [-1, 1]
        # coordinates, so a shift of 0.3 of the side is 0.6 there.
        for name, (r, c, scale) in {"shear_x": (0, 1, 0.3), "shear_y": (1, 0, 0.3),
                                    "translate_x": (0, 2, 0.6), "translate_y": (1, 2, 0.6)}.items():
            sel = op == TRIVIAL_OPS.index(name)
            theta[sel, r, c] = scale * s[sel]
        grid = torch.nn.functional.affine_grid(theta[geo], [int(geo.sum()), C, H, W], align_corners=False)
        warped = torch.nn.functional.grid_sample(x[geo], grid, mode="bilinear", padding_mode="zeros",
                                                 align_corners=False)
        out[geo] = warped
    return out

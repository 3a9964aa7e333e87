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
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
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

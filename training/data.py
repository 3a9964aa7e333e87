"""Datasets from local files: ImageFolder directories and archives, CIFAR-10/100 on disk.

Small images (all the same size, no resize needed, e.g. CIFAR) are decoded once into one uint8
array ``[N, H, W, 3]`` and cached as ``.npy`` beside a JSON index (``~/.cache/athe`` or
``$ATHE_CACHE``), so an epoch never waits on JPEG decoding; augmentation then runs on whole
batches. Larger images stay encoded in memory or on disk and go through PIL transforms.

Example::

    >>> from athe.training.data import load_imageset, make_split
    >>> images = load_imageset("../shared/data/cifar10-train.tar.gz")
    >>> images.array.shape, len(images.classes)
    ((50000, 32, 32, 3), 10)
    >>> split = make_split(len(images), val_size=5000, router_size=5000, seed=0)
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from athe.runtime import readers  # one reader per input kind for training, runner, eval, benchmark
from athe.runtime.manifest import sha256_file
from athe.runtime.preprocess import to_rgb as _to_rgb  # one RGB rule for training and runtime

_logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad or missing data, with the path and the fix in the message."""


@dataclass
class ImageSet:
    """A labelled set of images held in memory.

    Attributes:
        classes: class names; label ``i`` is ``classes[i]``.
        labels: ``[N]`` int64.
        names: source name of each image (path inside the folder or archive).
        array: ``[N, H, W, 3]`` uint8 when every image has the same size, else None.
        encoded: the encoded bytes of each image when ``array`` is None.
        skipped: ``(name, reason)`` for every file that could not be used.
    """

    classes: list[str]
    labels: np.ndarray
    names: list[str]
    array: np.ndarray | None = None
    encoded: list[bytes] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""
        if self.array is not None:
            return Image.fromarray(self.array[i])
        assert self.encoded is not None
        return _to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(self.encoded[i]))))

    def subset(self, indices: np.ndarray) -> ImageSet:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            classes=self.classes, labels=self.labels[idx], names=[self.names[i] for i in idx],
            array=self.array[idx] if self.array is not None else None,
            encoded=[self.encoded[i] for i in idx] if self.encoded is not None else None,
            skipped=self.skipped, source=self.source,
        )


def _decode(name: str, data: bytes) -> tuple[Image.Image | None, str | None]:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img)), None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _iter_archive(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(class, name, bytes)`` of the images in class folders of an archive (``…/CLASS/IMAGE``)."""
    for name, data in readers.iter_tar_images(path):
        cls = readers.tar_class(name)
        if cls:
            yield cls, name, data


def _iter_folder(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(class, name, bytes)`` of the images of an ImageFolder directory (``ROOT/CLASS/…/IMAGE``)."""
    listing = readers.list_folder(path)
    by_class = listing.by_class()
    for cls in listing.class_dirs:
        if cls not in by_class:
            raise DataError(f"class folder {str(path / cls)!r} has no images; remove it or add images")
        for name in by_class[cls]:
            yield cls, name, listing.path(name).read_bytes()


def _cache_dir() -> Path:
    return Path(os.environ.get("ATHE_CACHE", Path.home() / ".cache" / "athe"))


def _file_key(path: Path) -> str:
    """The cache key of an archive: its content's sha256 (a changed archive is never served
    from a stale cache, a copied or touched one still is)."""
    return sha256_file(path)[:16]


def load_imagefolder(path: str | Path, *, cache: bool = True) -> ImageSet:
    """An ImageFolder directory or ``.tar``/``.tar.gz`` archive (``<root>/<class>/<file>``).

    Unreadable files are skipped and listed in ``ImageSet.skipped`` (and logged with their
    path). Decoded arrays of same-size images are cached under ``$ATHE_CACHE``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist; pass an ImageFolder directory or .tar(.gz) archive")
    key = _file_key(path) if path.is_file() else None
    cache_base = _cache_dir() / f"{path.name}-{key}" if key else None
    if cache and cache_base is not None and cache_base.with_suffix(".json").exists():
        meta = json.loads(cache_base.with_suffix(".json").read_text())
        return ImageSet(
            classes=meta["classes"], labels=np.load(cache_base.with_suffix(".labels.npy")),
            names=meta["names"], array=np.load(cache_base.with_suffix(".npy")),
            skipped=[tuple(s) for s in meta["skipped"]], source=str(path),
        )
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise DataError(f"{str(path)!r} is not a tar archive; pass a folder or a .tar/.tar.gz ImageFolder archive")
        items = _iter_archive(path)
    else:
        items = _iter_folder(path)
    raw = list(items)
    if not raw:
        raise DataError(f"no images found in {str(path)!r}; expected <root>/<class>/<image> files")
    classes = sorted({c for c, _, _ in raw})
    cls_index = {c: i for i, c in enumerate(classes)}
    images, labels, names, encoded, skipped = [], [], [], [], []
    for cls, name, data in sorted(raw, key=lambda r: r[1]):
        img, err = _decode(name, data)
        if img is None:
            _logger.warning("skipping unreadable image %s (%s)", name, err)
            skipped.append((name, err or "unreadable"))
            continue
        images.append(img)
        labels.append(cls_index[cls])
        names.append(name)
        encoded.append(data)
    sizes = {im.size for im in images}
    label_arr = np.asarray(labels, dtype=np.int64)
    empty = [c for i, c in enumerate(classes) if not (label_arr == i).any()]
    if empty:
        raise DataError(f"class(es) {empty} in {str(path)!r} have no readable images; fix or remove them")
    if len(sizes) == 1 and max(next(iter(sizes))) <= 96:
        array = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
        result = ImageSet(classes, label_arr, names, array=array, skipped=skipped, source=str(path))
        if cache and cache_base is not None:
            cache_base.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache_base.with_suffix(".npy"), array)
            np.save(cache_base.with_suffix(".labels.npy"), label_arr)
            cache_base.with_suffix(".json").write_text(json.dumps(
                {"classes": classes, "names": names, "skipped": skipped, "source": str(path)}))
        return result
    return ImageSet(classes, label_arr, names, encoded=encoded, skipped=skipped, source=str(path))


def load_cifar(root: str | Path, which: str = "cifar10", *, train: bool = True,
               download: bool = False) -> ImageSet:
    """CIFAR-10/100 in torchvision's on-disk format (``root/cifar-10-batches-py``, …), read by
    ``athe.runtime.readers`` (the reader ``athe eval`` uses); torchvision only downloads it, and
    only when ``download`` is set."""
    layout = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[which]
    if download:
        from torchvision import datasets

        {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[which](str(root), train=train, download=True)
    split = "train" if train else "test"
    try:
        part = readers.read_cifar(Path(root) / layout, layout, split)
    except (readers.ReadError, OSError) as exc:
        raise DataError(
            f"{which} not found under {str(root)!r} ({exc}); pass --download to fetch it, or "
            f"point --data at a folder holding {layout}"
        ) from None
    return ImageSet(
        classes=list(part.class_names), labels=np.asarray(part.targets, dtype=np.int64),
        names=[f"{which}/{split}/{i}" for i in range(len(part))],
        array=np.asarray(part.images, dtype=np.uint8), source=str(root),
    )


def load_imageset(path: str | Path, dataset: str = "auto", *, download: bool = False,
                  train: bool = True) -> ImageSet:
    """Load any supported dataset: ``auto`` picks CIFAR for torchvision folders, else ImageFolder."""
    path = Path(path)
    if dataset == "auto":
        if (path / "cifar-10-batches-py").is_dir():
            dataset = "cifar10"
        elif (path / "cifar-100-python").is_dir():
            dataset = "cifar100"
        else:
            dataset = "imagefolder"
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(path, dataset, train=train, download=download)
    if dataset in ("imagefolder", "imagefolder-archive", "imagenet"):
        return load_imagefolder(path)
    raise DataError(f"unknown dataset kind {dataset!r}; use auto, cifar10, cifar100 or imagefolder")


def make_split(n: int, val_size: int, router_size: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic ``train`` / ``router`` / ``val`` index split of ``n`` items by ``seed``."""
    if val_size + router_size >= n:
        raise DataError(f"val_size {val_size} + router_size {router_size} leaves no training images out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return {
        "val": np.sort(perm[:val_size]),
        "router": np.sort(perm[val_size:val_size + router_size]),
        "train": np.sort(perm[val_size + router_size:]),
    }


def check_labels(images: ImageSet, num_classes: int, variant_name: str) -> None:
    """Refuse data with more classes than the variant's classifier has outputs."""
    if len(images.classes) > num_classes:
        raise DataError(
            f"{images.source!r} has {len(images.classes)} classes but variant {variant_name!r} "
            f"has {num_classes} outputs; pick a variant for this dataset"
        )

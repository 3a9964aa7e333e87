"""Image sources for the runner: ``(name, image, label)`` samples in a deterministic order.

``open_inputs(spec, labels)`` reads what ``--input`` names:

============================  =======================================================  ========
``--input``                   what it is                                               labels
============================  =======================================================  ========
a folder of images            plain images at the top level (``*.jpg``, ``*.png``, …)  none
a folder of class folders     ImageFolder: ``ROOT/CLASS/…/IMAGE``                      folder names
a CIFAR folder                ``cifar-10-batches-py`` / ``cifar-100-python`` pickles     from ``meta``
                              (or a folder holding one of them)
``*.tar`` / ``*.tar.gz``      an ImageFolder archive (``…/CLASS/IMAGE``), streamed       folder names
                              with :mod:`tarfile`, never extracted to disk
one image file                that image                                               none
``camera`` / ``camera:N``     ``--limit`` frames (default 30) from camera N            none
============================  =======================================================  ========

Class names map onto the bundle's labels *by name* (exact match); a class the bundle does not
know is an error that lists them. The image of a sample is what the dispatcher takes: encoded
bytes (folders, archives: read into memory up front, so that the runner's ``decode`` stage times
decoding, not the disk), a path (folders larger than ``max_preload_bytes``), or a uint8
``[H, W, 3]`` RGB array (CIFAR, camera). Order: names sorted as strings (CIFAR: file then row;
camera: capture order), or a seeded permutation of it (``shuffle=SEED``), then the first ``limit``.

Files are read by :mod:`athe.runtime.readers` (the readers training and the benchmark use too:
the same images, names, classes and order): hidden files and ``__MACOSX`` are skipped, and CIFAR
pickles go through a restricted unpickler that only rebuilds numpy arrays (a pickle can run
code; this one refuses anything else).

Example::

    >>> from athe.pi_runner.inputs import open_inputs
    >>> source = open_inputs("../shared/data/cifar10-train.tar.gz", labels=bundle.labels,
    ...                      limit=100, shuffle=0)
    >>> source.kind, len(source), source.labelled
    ('tar', 100, True)
    >>> name, image, label = next(iter(source))     # ('train/cat/0123.jpg', b'\\xff\\xd8…', 3)
"""

from __future__ import annotations

import difflib
import importlib.util
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from athe.runtime import readers
from athe.runtime.preprocess import ImageInput
from athe.runtime.readers import IMAGE_SUFFIXES, TAR_SUFFIXES, ReadError, find_cifar

#: Folders larger than this are passed as paths (read from disk inside ``decode``).
MAX_PRELOAD_BYTES = 512 * 1024 * 1024
#: Frames captured from a camera when ``limit`` is not given.
DEFAULT_CAMERA_FRAMES = 30

#: ``(name, image for the dispatcher, label index into the bundle's labels or None)``.
Sample = tuple[str, ImageInput, int | None]


class InputError(ValueError):
    """An ``--input`` that cannot be read; the message says what was expected."""


@dataclass
class ImageSource:
    """The samples of one ``--input``, ready to iterate as often as needed (one per repeat).

    Attributes:
        kind: ``folder``, ``imagefolder``, ``cifar``, ``tar``, ``image`` or ``camera``.
        location: the path, or ``camera:N``.
        samples: ``(name, image, label)`` in run order.
        labelled: True when every sample has a label (accuracy can be reported).
        class_names: the dataset's class names (ImageFolder, CIFAR, tar), None otherwise.
        notes: things the user should know (subset coverage, images passed as paths, …).
    """

    kind: str
    location: str
    samples: list[Sample]
    labelled: bool
    class_names: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def in_memory_bytes(self) -> int:
        """Bytes of encoded images and arrays held in memory (paths count 0)."""
        total = 0
        for _, image, _ in self.samples:
            if isinstance(image, (bytes, bytearray)):
                total += len(image)
            elif isinstance(image, np.ndarray):
                total += image.nbytes
        return total

    def describe(self) -> str:
        """One line: kind, location, count, labels."""
        labels = f"labelled ({len(self.class_names or ())} classes)" if self.labelled else "no labels"
        return f"{self.kind} {self.location}: {len(self)} images, {labels}"

    def info(self) -> dict[str, Any]:
        """Fields for the summary (not the samples)."""
        return {"kind": self.kind, "location": self.location, "count": len(self),
                "labelled": self.labelled, "class_names": self.class_names,
                "in_memory_bytes": self.in_memory_bytes, "notes": list(self.notes)}


# -- order, labels ---------------------------------------------------------------------------
def select_order(count: int, limit: int | None, shuffle: int | None) -> list[int]:
    """Indices to take from ``count`` items in natural order: a seeded permutation, then ``limit``.

    Raises:
        InputError: ``limit`` below 1.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    order = (np.random.default_rng(shuffle).permutation(count).tolist() if shuffle is not None
             else list(range(count)))
    return order if limit is None else order[:limit]


def class_to_label(class_names: Sequence[str], labels: Sequence[str], where: str) -> dict[str, int]:
    """Map dataset class names onto the bundle's label indices, by exact name.

    Raises:
        InputError: a class the bundle does not know, listing every such class and the labels.
    """
    index = {name: i for i, name in enumerate(labels)}
    unknown = [c for c in class_names if c not in index]
    if unknown:
        hints = []
        for name in unknown[:5]:
            close = difflib.get_close_matches(name, list(labels), n=1)
            if close:
                hints.append(f"{name!r} -> {close[0]!r}?")
        split_like = {"train", "val", "valid", "validation", "test"} & set(unknown)
        raise InputError(
            f"{where}: class folder(s) {unknown[:20]}{' …' if len(unknown) > 20 else ''} are not "
            f"labels of the bundle (its {len(labels)} labels: {', '.join(list(labels)[:20])}"
            f"{' …' if len(labels) > 20 else ''})"
            + (f"; close: {', '.join(hints)}" if hints else "")
            + ("; this looks like the parent of split folders: point --input at one split"
               if split_like else "")
            + "; or pass --no-labels to run without accuracy"
        )
    return {c: index[c] for c in class_names}


def display_name(name: str) -> str:
    """A file name that can be printed and written as UTF-8 (undecodable bytes as ``\\xNN``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def skipped_note(skipped: Sequence[str], where: str) -> list[str]:
    """One note counting the files an input skips (not images, or not regular files), by suffix."""
    if not skipped:
        return []
    counts: dict[str, int] = {}
    for name in skipped:
        suffix = PurePosixPath(name).suffix.lower() or "(no suffix)"
        counts[suffix] = counts.get(suffix, 0) + 1
    kinds = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return [f"SKIPPED {len(skipped)} file(s) in {where} that are not images ({', '.join(IMAGE_SUFFIXES)}) "
            f"or not regular files: {kinds}; first: {display_name(skipped[0])!r}"]


def _coverage_note(labels: Sequence[int | None], classes: int, limit: int | None,
                   shuffle: int | None) -> list[str]:
    if limit is None or shuffle is not None or classes < 2:
        return []
    seen = len({lb for lb in labels if lb is not None})
    if seen >= classes:
        return []
    return [f"--limit {limit} without --shuffle takes the first images in sorted order: they "
            f"cover {seen} of {classes} classes; add --shuffle SEED for a mixed subset"]


# -- folders ---------------------------------------------------------------------------------
def _load_files(files: list[Path], max_preload_bytes: int,
                notes: list[str]) -> list[ImageInput]:
    total = sum(f.stat().st_size for f in files)
    if total > max_preload_bytes:
        notes.append(f"{total / 2**20:.0f} MiB of images is more than the {max_preload_bytes / 2**20:.0f} "
                     "MiB preload limit: images are read from disk inside the decode stage")
        return list(files)
    return [f.read_bytes() for f in files]


def folder_source(root: Path, labels: Sequence[str], limit: int | None = None,
                  shuffle: int | None = None, ignore_labels: bool = False,
                  max_preload_bytes: int = MAX_PRELOAD_BYTES) -> ImageSource:
    """A plain image folder (images at the top level) or an ImageFolder dataset (class folders).

    Raises:
        InputError: no images, or both top-level images and class folders, or unknown classes.
    """
    try:
        listing = readers.list_folder(root)
    except ReadError as exc:
        raise InputError(str(exc)) from exc
    top, nested = listing.top, listing.nested
    notes: list[str] = []
    skipped = skipped_note(listing.skipped, str(root))
    if top and nested:
        raise InputError(f"{root} has images at the top level and in sub-folders: give a folder "
                         "of images, or an ImageFolder dataset (ROOT/CLASS/IMAGE), not both")
    if not top and not nested:
        raise InputError(f"{root} has no images ({', '.join(IMAGE_SUFFIXES)}), at the top level or "
                         "in class folders")
    if top:
        chosen = [top[i] for i in select_order(len(top), limit, shuffle)]
        images = _load_files([listing.path(n) for n in chosen], max_preload_bytes, notes)
        return ImageSource("folder", str(root), [(display_name(n), im, None) for n, im in zip(chosen, images, strict=True)],
                           labelled=False, notes=[*notes, *skipped])
    class_names = tuple(sorted({listing.class_of(n) for n in nested}))
    names = [nested[i] for i in select_order(len(nested), limit, shuffle)]
    images = _load_files([listing.path(n) for n in names], max_preload_bytes, notes)
    if ignore_labels or not labels:
        if not labels and not ignore_labels:
            notes.append("the bundle has no label names: accuracy is not reported")
        return ImageSource("imagefolder", str(root), [(display_name(n), im, None) for n, im in zip(names, images, strict=True)],
                           labelled=False, class_names=class_names, notes=[*notes, *skipped])
    mapping = class_to_label(class_names, labels, str(root))
    samples: list[Sample] = [(display_name(n), im, mapping[listing.class_of(n)])
                             for n, im in zip(names, images, strict=True)]
    notes += _coverage_note([s[2] for s in samples], len(class_names), limit, shuffle)
    return ImageSource("imagefolder", str(root), samples, labelled=True, class_names=class_names,
                       notes=[*notes, *skipped])


# -- CIFAR pickles ---------------------------------------------------------------------------
def cifar_source(folder: Path, layout: str, labels: Sequence[str], split: str = "test",
                 limit: int | None = None, shuffle: int | None = None,
                 ignore_labels: bool = False) -> ImageSource:
    """A CIFAR-10/100 python folder; images are uint8 ``[32, 32, 3]`` RGB arrays.

    Raises:
        InputError: unknown split, missing batch files, malformed pickles, unknown classes.
    """
    try:
        part = readers.read_cifar(folder, layout, split)
    except ReadError as exc:
        raise InputError(str(exc)) from exc
    class_names, images, targets, names = part.class_names, part.images, part.targets, part.names
    order = select_order(len(names), limit, shuffle)
    notes: list[str] = []
    location = f"{folder} ({split})"
    if ignore_labels or not labels:
        return ImageSource("cifar", location, [(names[i], np.ascontiguousarray(images[i]), None) for i in order],
                           labelled=False, class_names=class_names, notes=notes)
    mapping = class_to_label(class_names, labels, str(folder))
    samples: list[Sample] = [(names[i], np.ascontiguousarray(images[i]), mapping[class_names[targets[i]]])
                             for i in order]
    notes += _coverage_note([s[2] for s in samples], len(class_names), limit, shuffle)
    return ImageSource("cifar", location, samples, labelled=True, class_names=class_names, notes=notes)


# -- tar archives ----------------------------------------------------------------------------
def tar_source(path: Path, labels: Sequence[str], limit: int | None = None,
               shuffle: int | None = None, ignore_labels: bool = False) -> ImageSource:
    """An ImageFolder archive (``…/CLASS/IMAGE``, any leading folders), streamed twice.

    The first pass lists image members, the second reads the bytes of the chosen ones into
    memory; nothing is written to disk. Images at the archive root have no class: such an
    archive is read unlabelled.

    Raises:
        InputError: not a readable archive, no images, unknown class folders.
    """
    try:
        listing = readers.list_tar(path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable tar archive ({type(exc).__name__}: {exc})") from exc
    all_names = sorted(listing.images)
    if not all_names:
        raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); an ImageFolder "
                         "archive holds …/CLASS/IMAGE (a CIFAR python archive must be extracted first)")
    chosen = [all_names[i] for i in select_order(len(all_names), limit, shuffle)]
    try:
        data = readers.read_tar_members(path, chosen)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path}: reading the archive failed ({type(exc).__name__}: {exc})") from exc
    classes = {n: readers.tar_class(n) for n in all_names}
    labelled = not ignore_labels and bool(labels) and all(classes.values())
    class_names = tuple(sorted(set(classes.values()) - {""})) or None
    notes: list[str] = []
    skipped = skipped_note(listing.skipped, str(path))
    if not labelled:
        if not ignore_labels and not labels:
            notes.append("the bundle has no label names: accuracy is not reported")
        elif not ignore_labels:
            notes.append("some images sit at the archive root (no class folder): read unlabelled")
        return ImageSource("tar", str(path), [(n, data[n], None) for n in chosen], labelled=False,
                           class_names=class_names, notes=[*notes, *skipped])
    assert class_names is not None
    mapping = class_to_label(class_names, labels, str(path))
    samples: list[Sample] = [(n, data[n], mapping[classes[n]]) for n in chosen]
    notes += _coverage_note([s[2] for s in samples], len(class_names), limit, shuffle)
    return ImageSource("tar", str(path), samples, labelled=True, class_names=class_names, notes=[*notes, *skipped])


# -- camera ----------------------------------------------------------------------------------
CAMERA_INSTALL_HINT = ("camera input needs Picamera2 (Raspberry Pi camera: sudo apt install "
                       "python3-picamera2, and create the venv with --system-site-packages) or "
                       "OpenCV (USB webcam: pip install opencv-python-headless); neither is importable")


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def camera_backend() -> str:
    """``picamera2`` when importable, else ``opencv``.

    Raises:
        InputError: neither is importable (one line naming both install options).
    """
    if _importable("picamera2"):
        return "picamera2"
    if _importable("cv2"):
        return "opencv"
    raise InputError(CAMERA_INSTALL_HINT)


def capture_frames(index: int, frames: int, size: tuple[int, int] = (640, 480),
                   settle_s: float = 1.0) -> tuple[str, list[np.ndarray]]:
    """Capture ``frames`` RGB uint8 ``[H, W, 3]`` frames from camera ``index``.

    Returns:
        ``(backend, frames)``.

    Raises:
        InputError: no camera library, or the camera cannot be opened or read.
    """
    backend = camera_backend()
    if backend == "picamera2":
        from picamera2 import Picamera2

        camera = Picamera2(camera_num=index)
        try:
            # libcamera's "BGR888" is laid out [R, G, B] in memory (its "RGB888" is [B, G, R]).
            camera.configure(camera.create_still_configuration(main={"format": "BGR888", "size": size}))
            camera.start()
            time.sleep(settle_s)  # auto exposure and white balance
            shots = [np.ascontiguousarray(camera.capture_array("main")[:, :, :3]) for _ in range(frames)]
        finally:
            camera.close()
        return backend, shots
    import cv2

    capture = cv2.VideoCapture(index)
    try:
        if not capture.isOpened():
            raise InputError(f"OpenCV cannot open camera {index}: is it connected, and is this user "
                             "in the 'video' group?")
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        shots = []
        for i in range(frames):
            ok, frame = capture.read()
            if not ok or frame is None:
                raise InputError(f"OpenCV camera {index} returned no frame after {i} frames")
            shots.append(np.ascontiguousarray(frame[:, :, 2::-1]))  # BGR -> RGB
    finally:
        capture.release()
    return backend, shots


def camera_source(spec: str, limit: int | None = None, shuffle: int | None = None) -> ImageSource:
    """``camera`` or ``camera:N``: capture ``limit`` frames (default 30) up front, unlabelled.

    The frames are captured before the run so every repeat sees the same images and capture
    time is not counted as a model stage.

    Raises:
        InputError: a bad camera index, ``shuffle`` given, or no camera library.
    """
    _, _, arg = spec.partition(":")
    try:
        index = int(arg) if arg else 0
    except ValueError:
        raise InputError(f"camera input {spec!r}: write camera or camera:N with N a number") from None
    if shuffle is not None:
        raise InputError("--shuffle does not apply to a camera: frames are used in capture order")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    frames = limit or DEFAULT_CAMERA_FRAMES
    backend, shots = capture_frames(index, frames)
    return ImageSource("camera", f"camera:{index}",
                       [(f"camera{index}-frame{i:05d}", shot, None) for i, shot in enumerate(shots)],
                       labelled=False, notes=[f"{frames} frames captured with {backend} before the run"])


# -- dispatch on --input ---------------------------------------------------------------------
def open_inputs(spec: str | Path, labels: Sequence[str] = (), *, limit: int | None = None,
                shuffle: int | None = None, split: str = "test", ignore_labels: bool = False,
                max_preload_bytes: int = MAX_PRELOAD_BYTES) -> ImageSource:
    """Open what ``--input`` names (see the module docstring).

    Args:
        spec: a path or ``camera[:N]``.
        labels: the bundle's labels (class names map onto them by name).
        limit: take at most this many images (after ordering).
        shuffle: seed of a permutation of the sorted order; None keeps the sorted order.
        split: CIFAR split, ``test`` or ``train``.
        ignore_labels: read class folders but report no labels (no accuracy).
        max_preload_bytes: image folders larger than this are passed as paths.

    Raises:
        InputError: a missing path, an unreadable or empty source, or unknown class names.
    """
    text = str(spec)
    path = Path(text)
    if (text == "camera" or text.startswith("camera:")) and not path.exists():
        return camera_source(text, limit, shuffle)
    if not path.exists():
        raise InputError(f"input {text!r} not found; give an image folder, an ImageFolder dataset, "
                         "a CIFAR folder, a .tar/.tar.gz archive, an image, or camera[:N]")
    if not path.is_file() and not path.is_dir():
        raise InputError(f"input {text!r} is neither a regular file nor a folder (a FIFO, a device such as "
                         "/dev/null, a socket): refusing to read it")
    if path.is_file():
        if path.name.lower().endswith(TAR_SUFFIXES) or (not readers.is_image(path.name) and tarfile.is_tarfile(path)):
            return tar_source(path, labels, limit, shuffle, ignore_labels)
        if readers.is_image(path.name):
            select_order(1, limit, shuffle)  # validates limit
            try:
                data = readers.read_regular_file(path, readers.MAX_IMAGE_BYTES, what="image")
            except ReadError as exc:
                raise InputError(str(exc)) from exc
            return ImageSource("image", text, [(display_name(path.name), data, None)], labelled=False)
        raise InputError(f"input {text!r} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a "
                         "tar archive")
    cifar = find_cifar(path)
    if cifar is not None:
        return cifar_source(cifar[0], cifar[1], labels, split, limit, shuffle, ignore_labels)
    return folder_source(path, labels, limit, shuffle, ignore_labels, max_preload_bytes)

"""One reader per input kind: image folders, ImageFolder folders, tar archives, CIFAR pickles.

Standard library and numpy only (no torch, no Pillow: images stay encoded). Every room reads
files through here: ``athe.training.data`` (training sets), ``athe.pi_runner.inputs`` (what
``athe run --input`` and ``athe eval --data`` name) and ``athe.runtime.benchmark``
(``--images``). One rule for all of them, so a training run's image indices mean the same
images when ``athe eval --split-from`` reads them back:

==========================  ================================================================
what                        rule
==========================  ================================================================
an image                    a name ending in one of ``IMAGE_SUFFIXES`` (any case)
hidden                      a path part starting with ``.`` or named ``__MACOSX``: never read
order                       image names (posix, relative to the folder or archive member
                            names) sorted as strings
a folder's class            the first folder under the root (``ROOT/CLASS/…/IMAGE``)
an archive member's class   the folder holding it (``…/CLASS/IMAGE``, any leading folders);
                            ``""`` for images at the archive root
CIFAR                       ``cifar-10-batches-py`` / ``cifar-100-python`` python pickles,
                            unpickled by a restricted unpickler that only rebuilds numpy
                            arrays, lists and dicts (a pickle can run code; this one refuses)
==========================  ================================================================

Every read is bounded: ``read_regular_file`` refuses what is not a regular file (a FIFO would
block forever, ``/dev/zero`` never ends) and anything larger than the limit it is given; an
archive member larger than ``MAX_IMAGE_BYTES`` is refused; a truncated or corrupt archive (a
member cut short, a bad header checksum, no end-of-archive marker) is an error, never a shorter
list of images. Listings say what they skipped (``FolderListing.skipped``,
``TarListing.skipped``): visible files that are not images or not regular files.

Errors are ``ReadError`` with the path and what was expected; each room re-raises them as its
own error type (``InputError``, ``DataError``) with the same message.

Example::

    >>> from athe.runtime.readers import list_folder, read_cifar, find_cifar
    >>> listing = list_folder("data/val")               # ImageFolder: val/cat/0.png, …
    >>> listing.nested[:2], listing.class_of(listing.nested[0])
    (('cat/0.png', 'cat/1.png'), 'cat')
    >>> folder, layout = find_cifar(Path("data"))       # data/cifar-10-batches-py
    >>> part = read_cifar(folder, layout, "test")
    >>> part.images.shape, part.class_names[:2]
    ((10000, 32, 32, 3), ('airplane', 'automobile'))
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import pickle
import stat
import tarfile
from collections.abc import Collection, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: File name endings read as images (lower case; matched case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
#: Archive name endings read with :mod:`tarfile`.
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: CIFAR splits, by their folder's file names (``CIFAR_LAYOUTS``).
CIFAR_SPLITS = ("test", "train")
#: The largest image file or archive member read (bytes); larger is refused, not read.
MAX_IMAGE_BYTES = 256 * 2**20


class ReadError(ValueError):
    """A file or folder that cannot be read as the kind asked for; the message says why."""


# -- bounded reads ---------------------------------------------------------------------------
def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device (like /dev/null or /dev/zero)"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat_regular(path: Path, what: str) -> os.stat_result:
    """``os.stat`` of a regular file, else ``ReadError`` (``FileNotFoundError`` when missing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReadError(f"{what} {str(path)!r} is a symlink loop") from None
        raise ReadError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL byte
        raise ReadError(f"{what} {str(path)!r} is not a usable path ({exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ReadError(f"{what} {str(path)!r} is {_kind_of(st.st_mode)}, not a regular file: refusing "
                        "to read it")
    return st


def check_regular_file(path: str | Path, what: str = "file") -> int:
    """The size of ``path`` when it is a regular file (symlinks followed).

    Raises:
        FileNotFoundError: it does not exist.
        ReadError: a directory, FIFO, device, socket, symlink loop or unreadable path.
    """
    return _stat_regular(Path(path), what).st_size


def read_regular_file(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, never blocking on a FIFO.

    Raises:
        FileNotFoundError: it does not exist.
        ReadError: not a regular file, larger than ``max_bytes``, or unreadable; the message
            names ``what`` and the path.
    """
    path = Path(path)
    size = _stat_regular(path, what).st_size
    if size > max_bytes:
        raise ReadError(f"{what} {str(path)!r} is {size:,} bytes, more than the {max_bytes:,}-byte limit: "
                        "refusing to read it")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ReadError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after the stat above
            raise ReadError(f"{what} {str(path)!r} is not a regular file: refusing to read it")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ReadError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ReadError(f"{what} {str(path)!r} grew past the {max_bytes:,}-byte limit while being read")
    return data


def is_image(name: str) -> bool:
    """True when ``name`` ends in one of ``IMAGE_SUFFIXES`` (any case)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_hidden(parts: Sequence[str]) -> bool:
    """True when a path part is hidden (``.name``) or macOS archive junk (``__MACOSX``)."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


# -- folders ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FolderListing:
    """The visible images under one folder (nothing read yet).

    Attributes:
        root: the folder.
        top: image names directly in ``root``, sorted.
        nested: posix names relative to ``root`` of the images in sub-folders (any depth),
            sorted as strings.
        class_dirs: the visible sub-folders of ``root``, sorted (with or without images).
        skipped: posix names of the visible files that are not read: not an image name
            (``.gif``, ``.txt``, …) or not a regular file (a FIFO, a device, a broken link).
    """

    root: Path
    top: tuple[str, ...]
    nested: tuple[str, ...]
    class_dirs: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def path(self, name: str) -> Path:
        """The file of image ``name``."""
        return self.root / name

    @staticmethod
    def class_of(name: str) -> str:
        """The ImageFolder class of a nested image: its first folder under the root."""
        return name.split("/", 1)[0]

    def by_class(self) -> dict[str, list[str]]:
        """Nested image names per class folder, in order (classes without images absent)."""
        out: dict[str, list[str]] = {}
        for name in self.nested:
            out.setdefault(self.class_of(name), []).append(name)
        return out


def list_folder(root: str | Path) -> FolderListing:
    """List the images of a folder: the top level and, recursively, its visible sub-folders.

    Raises:
        ReadError: ``root`` is not a directory (a file, a FIFO, a device) or cannot be listed.
    """
    root = Path(root)
    try:
        mode = os.stat(root).st_mode
    except OSError as exc:
        raise ReadError(f"{str(root)!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise ReadError(f"{str(root)!r} is {_kind_of(mode)}, not a folder of images")
    try:
        entries = [p.relative_to(root) for p in root.rglob("*")]
    except OSError as exc:
        raise ReadError(f"{str(root)!r} cannot be listed: {exc.strerror or exc}") from None
    top: list[str] = []
    nested: list[str] = []
    skipped: list[str] = []
    for rel in entries:
        if is_hidden(rel.parts):
            continue
        path = root / rel
        if path.is_dir():
            continue
        if is_image(rel.name) and path.is_file():
            (top if len(rel.parts) == 1 else nested).append(rel.as_posix())
        else:
            skipped.append(rel.as_posix())
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_hidden([p.name]))
    return FolderListing(root, tuple(sorted(top)), tuple(sorted(nested)), tuple(class_dirs),
                         tuple(sorted(skipped)))


# -- tar archives ----------------------------------------------------------------------------
def tar_class(name: str) -> str:
    """The ImageFolder class of an archive member: the folder holding it (``""`` at the root)."""
    return PurePosixPath(name).parent.name


def _is_image_member(member: tarfile.TarInfo) -> bool:
    return member.isfile() and is_image(member.name) and not is_hidden(PurePosixPath(member.name).parts)


class _CheckedTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose header parsing calls a cut or corrupt archive an error.

    :mod:`tarfile` ends the member list silently at a truncated or zero-length header or a bad
    checksum after the first member (a truncated ``.tar.gz`` reads as its first N images);
    only the all-zero end-of-archive block is a proper end here.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _CheckedTarInfo:
        if len(buf) == 0:
            raise tarfile.ReadError("truncated: the archive ends without its end-of-archive marker "
                                    "(an interrupted download or copy?)")
        if len(buf) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"truncated: a member header is cut short ({len(buf)} of "
                                    f"{tarfile.BLOCKSIZE} bytes)")
        try:
            return super().frombuf(buf, encoding, errors)
        except _EOF_HEADER:  # the all-zero end-of-archive block: the proper end
            raise
        except _INVALID_HEADER as exc:
            raise tarfile.ReadError(f"corrupt: a member header is damaged ({exc})") from None


#: tarfile's header errors (not in its ``__all__``, nor in typeshed).
_EOF_HEADER: type[Exception] = getattr(tarfile, "EOFHeaderError")  # noqa: B009
_INVALID_HEADER: type[Exception] = getattr(tarfile, "InvalidHeaderError")  # noqa: B009


def _open_tar(path: str | Path) -> tarfile.TarFile:
    path = Path(path)
    try:
        check_regular_file(path, "archive")
    except ReadError as exc:
        raise tarfile.ReadError(str(exc)) from None
    return tarfile.open(path, "r|*", tarinfo=_CheckedTarInfo)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_IMAGE_BYTES:
        raise tarfile.ReadError(f"member {member.name!r} is {member.size:,} bytes, more than the "
                                f"{MAX_IMAGE_BYTES:,}-byte image limit")
    handle: IO[bytes] | None = tar.extractfile(member)
    assert handle is not None  # a regular file always has a handle
    data = handle.read()
    if len(data) != member.size:
        raise tarfile.ReadError(f"truncated: member {member.name!r} has {len(data)} of its {member.size} bytes")
    return data


@dataclass(frozen=True)
class TarListing:
    """The visible members of an archive (nothing read yet).

    Attributes:
        images: names of the image members, in archive order.
        skipped: names of the visible regular members that are not images (``.gif``, ``.txt``).
    """

    images: tuple[str, ...]
    skipped: tuple[str, ...]


def list_tar(path: str | Path) -> TarListing:
    """Image and skipped member names of an archive (one streamed pass to its end marker).

    Raises:
        tarfile.TarError: not a regular file, not an archive, truncated or corrupt.
        OSError, EOFError: the archive cannot be read.
    """
    images: list[str] = []
    skipped: list[str] = []
    with _open_tar(path) as tar:
        for member in tar:
            if _is_image_member(member):
                images.append(member.name)
            elif member.isfile() and not is_hidden(PurePosixPath(member.name).parts):
                skipped.append(member.name)
    return TarListing(tuple(images), tuple(skipped))


def tar_image_names(path: str | Path) -> list[str]:
    """Names of the visible image members of an archive, in archive order (one streamed pass).

    Raises:
        tarfile.TarError, OSError, EOFError: not a readable archive, truncated or corrupt.
    """
    return list(list_tar(path).images)


def read_tar_members(path: str | Path, names: Collection[str]) -> dict[str, bytes]:
    """The bytes of the members ``names`` (one streamed pass, stops once all are read).

    Raises:
        tarfile.TarError, OSError, EOFError: the archive cannot be read, is truncated or corrupt,
        or a wanted member is missing or larger than ``MAX_IMAGE_BYTES``.
    """
    wanted = set(names)
    data: dict[str, bytes] = {}
    if not wanted:
        return data
    with _open_tar(path) as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                data[member.name] = _read_member(tar, member)
                if len(data) == len(wanted):
                    break
    missing = sorted(wanted - set(data))
    if missing:
        raise tarfile.ReadError(f"{len(missing)} member(s) not found on the second pass (first: {missing[0]!r}); "
                                "the archive changed while being read")
    return data


def iter_tar_images(path: str | Path) -> Generator[tuple[str, bytes], None, None]:
    """``(name, bytes)`` of every visible image member, in archive order (one streamed pass).

    Raises:
        tarfile.TarError, OSError, EOFError: the archive cannot be read, is truncated or corrupt.
    """
    with _open_tar(path) as tar:
        for member in tar:
            if _is_image_member(member):
                yield member.name, _read_member(tar, member)


# -- CIFAR pickles ---------------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: refuses every other global.

    ``_codecs.encode`` (str -> bytes) is how protocol-2 pickles written by Python 3 store bytes.
    """

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR pickle holds "
                                         "only numpy arrays, lists and dicts")
        if module.startswith("numpy.core.") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 moved numpy.core
        return getattr(importlib.import_module(module), name)


def unpickle_arrays(path: Path) -> dict[Any, Any]:
    """A CIFAR python pickle (a dict) through the restricted unpickler.

    Raises:
        ReadError: not a pickle, a pickle of anything but arrays, lists and dicts, or no dict.
    """
    try:
        check_regular_file(path, "CIFAR pickle")
    except FileNotFoundError:
        raise ReadError(f"{path} is missing") from None
    try:
        with open(path, "rb") as handle:
            data = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ReadError(f"{path} is not a CIFAR python pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ReadError(f"{path} is not a CIFAR python pickle (holds a {type(data).__name__}, not a dict)")
    return data


def _field(data: dict[Any, Any], key: str, path: Path) -> Any:
    for k in (key, key.encode()):
        if k in data:
            return data[k]
    raise ReadError(f"{path} has no {key!r} entry: not a CIFAR python pickle")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: folder name -> (meta file, label-names key, labels key, files per split)
CIFAR_LAYOUTS: dict[str, tuple[str, str, str, dict[str, tuple[str, ...]]]] = {
    "cifar-10-batches-py": ("batches.meta", "label_names", "labels",
                            {"test": ("test_batch",),
                             "train": tuple(f"data_batch_{i}" for i in range(1, 6))}),
    "cifar-100-python": ("meta", "fine_label_names", "fine_labels",
                         {"test": ("test",), "train": ("train",)}),
}


def find_cifar(path: Path) -> tuple[Path, str] | None:
    """``(folder, layout)`` when ``path`` is, or directly holds, a CIFAR python folder."""
    for folder in (path, *(path / name for name in CIFAR_LAYOUTS)):
        for layout, (meta, _names, _labels, splits) in CIFAR_LAYOUTS.items():
            batches = [folder / f for files in splits.values() for f in files]
            if (folder / meta).is_file() and any(b.is_file() for b in batches):
                return folder, layout
    return None


@dataclass(frozen=True)
class CifarPart:
    """One split of a CIFAR python folder, in file then row order.

    Attributes:
        class_names: the label names from the meta file; ``targets`` index them.
        images: uint8 ``[N, 32, 32, 3]`` RGB.
        targets: ``N`` class indices (fine labels for CIFAR-100).
        names: ``<batch file>/<file name>`` per image (``<batch file>/<row:05d>`` without names).
    """

    class_names: tuple[str, ...]
    images: np.ndarray
    targets: list[int]
    names: list[str]

    def __len__(self) -> int:
        return len(self.targets)


def read_cifar(folder: Path, layout: str, split: str = "test") -> CifarPart:
    """Read split ``split`` (``test`` or ``train``) of the CIFAR folder ``find_cifar`` found.

    Raises:
        ReadError: unknown split, missing batch files, malformed pickles, label indices
        outside the class names.
    """
    import numpy as np

    if split not in CIFAR_SPLITS:
        raise ReadError(f"CIFAR split {split!r} unknown; splits: {', '.join(CIFAR_SPLITS)}")
    meta_name, names_key, labels_key, splits = CIFAR_LAYOUTS[layout]
    meta_path = folder / meta_name
    class_names = tuple(_text(n) for n in _field(unpickle_arrays(meta_path), names_key, meta_path))
    arrays, targets, names = [], [], []
    for file_name in splits[split]:
        path = folder / file_name
        if not path.is_file():
            raise ReadError(f"{path} is missing: the {split} split of {layout} needs "
                            f"{', '.join(splits[split])}")
        batch = unpickle_arrays(path)
        data = np.asarray(_field(batch, "data", path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ReadError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
        batch_labels = list(_field(batch, labels_key, path))
        if len(batch_labels) != len(data):
            raise ReadError(f"{path}: {len(data)} images but {len(batch_labels)} labels")
        try:
            files = [_text(f) for f in _field(batch, "filenames", path)]
        except ReadError:
            files = [f"{i:05d}" for i in range(len(data))]
        arrays.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # [N, 32, 32, 3] RGB
        targets += [int(t) for t in batch_labels]
        names += [f"{file_name}/{f}" for f in files]
    images = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    bad = sorted({t for t in targets if not 0 <= t < len(class_names)})
    if bad:
        raise ReadError(f"{folder}: label indices {bad[:10]} outside the {len(class_names)} class names")
    return CifarPart(class_names, images, targets, names)

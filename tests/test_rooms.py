"""The house rules (issue 12): the device-side rooms import without training, convert or torch,
and every room reads files through the one set of readers (``athe.runtime.readers``).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from athe.pi_runner.inputs import InputError, open_inputs
from athe.runtime import readers
from athe.runtime.benchmark import read_images
from athe.training.data import DataError, load_cifar, load_imagefolder

REPO = Path(__file__).resolve().parents[1]
DEVICE_ROOMS = ("athe.runtime", "athe.pi_runner", "athe.evaluate")
BLOCKED = ("athe.training", "athe.convert", "torch")

# In a fresh interpreter: a meta-path finder refuses the blocked packages (and everything under
# them), then every module of the device rooms is imported; prints what failed, as JSON.
_WALK = """
import importlib, json, pkgutil, sys, traceback

BLOCKED = {blocked!r}

class Blocked:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is blocked: the device rooms must not import it")
        return None

sys.meta_path.insert(0, Blocked)
for name in BLOCKED:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{{name}} imported although blocked")

seen, failed = [], {{}}
for room in {rooms!r}:
    package = importlib.import_module(room)
    seen.append(room)
    walk = pkgutil.walk_packages(package.__path__, room + ".", onerror=lambda n: failed.setdefault(n, "walk"))
    for info in walk:
        seen.append(info.name)
        try:
            importlib.import_module(info.name)
        except BaseException:
            failed[info.name] = traceback.format_exc(limit=-3)
leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
print(json.dumps({{"seen": seen, "failed": failed, "leaked": leaked}}))
"""


def test_device_rooms_import_without_training_convert_or_torch() -> None:
    code = _WALK.format(blocked=BLOCKED, rooms=DEVICE_ROOMS)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, "\n".join(f"{k}:\n{v}" for k, v in report["failed"].items())
    assert report["leaked"] == []
    seen = set(report["seen"])
    # the walk reached every room, sub-packages included (a walk that finds nothing proves nothing)
    for module in ("athe.runtime.readers", "athe.runtime.benchmark", "athe.runtime.dispatcher",
                   "athe.pi_runner.inputs", "athe.pi_runner.runner", "athe.pi_runner.__main__",
                   "athe.pi_runner.meters", "athe.pi_runner.meters.pmic", "athe.evaluate.measure",
                   "athe.evaluate.cli"):
        assert module in seen, module
    for room in DEVICE_ROOMS:  # every .py file of the room's folder was imported
        folder = Path(__import__(room, fromlist=["_"]).__path__[0])
        files = {".".join((room, *p.relative_to(folder).with_suffix("").parts)).removesuffix(".__init__")
                 for p in folder.rglob("*.py")}
        assert files <= seen, sorted(files - seen)


def test_image_suffixes_are_defined_once() -> None:
    pattern = re.compile(r"^\s*IMAGE_SUFFIXES\s*[:=]", re.M)
    defined = [p.relative_to(REPO).as_posix()
               for folder in ("athe", "training", "convert", "runtime", "pi_runner", "evaluate")
               for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert defined == ["runtime/readers.py"]


# -- one reader, the same images in every room -------------------------------------------------
def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (value, 255 - value, 7)).save(buf, format="PNG")
    return buf.getvalue()


def test_imagefolder_reads_the_same_in_training_runner_eval_and_benchmark(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # "a" and "a-b": sorted as strings, a-b/… comes before a/… ('-' < '/'), as training numbers them
    files = ["a/0.png", "a/1.JPG", "a-b/0.png", "b/deep/0.png", "b/1.png"]
    for i, name in enumerate(files):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(10 * i))
    (root / "a" / ".hidden.png").write_bytes(b"junk")        # hidden: never read
    (root / "__MACOSX" / "a").mkdir(parents=True)
    (root / "__MACOSX" / "a" / "0.png").write_bytes(b"junk")  # archive junk: never read
    (root / "a" / "notes.txt").write_text("not an image")
    expected = sorted(files)
    assert expected[:2] == ["a-b/0.png", "a/0.png"]

    listing = readers.list_folder(root)
    assert listing.top == () and list(listing.nested) == expected
    assert listing.class_dirs == ("a", "a-b", "b") and listing.class_of("b/deep/0.png") == "b"

    trained = load_imagefolder(root, cache=False)
    assert trained.names == expected and trained.classes == ["a", "a-b", "b"]
    assert trained.labels.tolist() == [1, 0, 0, 2, 2]
    source = open_inputs(root, ["b", "a-b", "a"])
    assert [s[0] for s in source] == expected
    assert [source.class_names[trained.labels[i]] for i in range(len(expected))] == \
        [("b", "a-b", "a")[s[2]] for s in source]
    assert read_images(root, 100) == [(root / n).read_bytes() for n in expected]
    assert read_images(root, 2) == [(root / n).read_bytes() for n in expected[:2]]

    (root / "empty").mkdir()  # training refuses a class folder without images; the runner skips it
    with pytest.raises(DataError, match="empty.*has no images"):
        load_imagefolder(root, cache=False)
    assert [s[0] for s in open_inputs(root, ["b", "a-b", "a"])] == expected


def test_archive_reads_the_same_in_training_runner_and_benchmark(tmp_path: Path) -> None:
    members = {"root/cat/1.png": _png(1), "root/dog/0.png": _png(2), "root/cat/0.png": _png(3),
               "root/cat/._0.png": b"AppleDouble", "__MACOSX/root/cat/x.png": b"junk",
               "root/README.txt": b"hello"}
    path = tmp_path / "d.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    images = ["root/cat/1.png", "root/dog/0.png", "root/cat/0.png"]  # archive order
    assert readers.tar_image_names(path) == images
    assert [n for n, _ in readers.iter_tar_images(path)] == images
    assert readers.read_tar_members(path, ["root/dog/0.png"]) == {"root/dog/0.png": members["root/dog/0.png"]}
    assert [readers.tar_class(n) for n in images] == ["cat", "dog", "cat"] and readers.tar_class("x.png") == ""

    trained = load_imagefolder(path, cache=False)
    source = open_inputs(path, ["dog", "cat"])
    assert trained.names == [s[0] for s in source] == sorted(images)
    assert [trained.classes[i] for i in trained.labels] == [("dog", "cat")[s[2]] for s in source]
    assert read_images(path, 2) == [members[n] for n in images[:2]]


def _cifar10(folder: Path) -> Path:
    folder.mkdir(parents=True)
    names = [f"class{i}" for i in range(10)]  # str keys and names (bytes: tests/test_pi_runner.py)

    def dump(name: str, obj: object) -> None:
        with open(folder / name, "wb") as handle:
            pickle.dump(obj, handle, protocol=2)

    dump("batches.meta", {"label_names": names})
    rng = np.random.default_rng(0)
    for k, file in enumerate(["test_batch", *(f"data_batch_{i}" for i in range(1, 6))]):
        n = 3 + k
        dump(file, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "labels": [(k + i) % 10 for i in range(n)],
                    "filenames": [f"{file}_{i}.png" for i in range(n)]})
    return folder


def test_cifar_pickles_read_the_same_in_training_and_eval(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path / "cifar-10-batches-py")
    assert readers.find_cifar(tmp_path) == (folder, "cifar-10-batches-py")
    part = readers.read_cifar(folder, "cifar-10-batches-py", "train")
    assert len(part) == 4 + 5 + 6 + 7 + 8 and part.images.shape == (30, 32, 32, 3)
    assert part.names[:2] == ["data_batch_1/data_batch_1_0.png", "data_batch_1/data_batch_1_1.png"]

    trained = load_cifar(tmp_path, "cifar10", train=True)
    # --split-from indexes CIFAR's train split in the order training numbered it
    source = open_inputs(tmp_path, [f"class{i}" for i in range(10)], split="train")
    assert len(source) == len(trained)
    assert [s[2] for s in source] == trained.labels.tolist()
    assert trained.array is not None
    np.testing.assert_array_equal(np.stack([s[1] for s in source]), trained.array)
    test = load_cifar(tmp_path, "cifar10", train=False)
    assert len(test) == 3 and test.names[0] == "cifar10/test/0"

    with pytest.raises(DataError, match="pass --download"):
        load_cifar(tmp_path / "nowhere", "cifar10")
    with pytest.raises(readers.ReadError, match="split 'val' unknown"):
        readers.read_cifar(folder, "cifar-10-batches-py", "val")
    (folder / "data_batch_3").unlink()
    with pytest.raises(InputError, match="data_batch_3 is missing"):
        open_inputs(tmp_path, [f"class{i}" for i in range(10)], split="train")


def test_cifar_reader_matches_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader and torchvision's CIFAR10 (what training used before) see the same arrays."""
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    # our fixture files are not the real ones: skip torchvision's md5 checks
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    _cifar10(tmp_path / "cifar-10-batches-py")
    for train in (True, False):
        ours, theirs = load_cifar(tmp_path, "cifar10", train=train), cifar.CIFAR10(str(tmp_path), train=train)
        assert ours.classes == list(theirs.classes)
        assert ours.labels.tolist() == list(theirs.targets)
        assert ours.array is not None
        np.testing.assert_array_equal(ours.array, theirs.data)

"""The on-device runner: input sources, run_bundle end to end, energy, interrupts, compare, CLI.

End-to-end tests run a tiny bundle converted by the real converter (``converted_bundle`` in
conftest, minutes) on LiteRT. To iterate quickly, point ``ATHE_PI_TEST_BUNDLE`` at an already
converted tiny bundle folder; it is copied, never written to.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console

from athe.cli import cli
from athe.pi_runner import inputs as pin
from athe.pi_runner.inputs import InputError, open_inputs
from athe.pi_runner.report import read_jsonl

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixtures --------------------------------------------------------------------------------
def _png(color: tuple[int, int, int], size: tuple[int, int] = (40, 36)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _color(i: int) -> tuple[int, int, int]:
    return (37 * i % 256, 91 * i % 256, 53 * i % 256)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i in (3, 0, 2, 1):  # written out of order
        (root / f"img{i}.png").write_bytes(_png(_color(i)))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(_png((1, 2, 3)))
    return root


def make_imagefolder(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i:03d}.png").write_bytes(_png(_color(i + 10 * len(name))))
    return root


@pytest.fixture(scope="session")
def bundle_src(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("ai_edge_litert")
    dev = os.environ.get("ATHE_PI_TEST_BUNDLE")
    if dev:
        return Path(dev)
    return request.getfixturevalue("converted_bundle")


@pytest.fixture(scope="session")
def bundle(bundle_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("pi_bundle") / "tiny"
    shutil.copytree(bundle_src, dst)
    return dst


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 8 images over 3 CIFAR-10 classes."""
    return make_imagefolder(tmp_path_factory.mktemp("data") / "val", {"cat": 3, "dog": 3, "ship": 2})


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


# -- input sources ---------------------------------------------------------------------------
def test_plain_folder_sorted_unlabelled_limit_shuffle(image_folder: Path) -> None:
    source = open_inputs(image_folder, CIFAR10)
    assert source.kind == "folder" and not source.labelled
    assert [s[0] for s in source] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    name, image, label = source.samples[2]
    assert label is None and isinstance(image, bytes)
    assert Image.open(io.BytesIO(image)).getpixel((0, 0)) == _color(2)

    assert [s[0] for s in open_inputs(image_folder, limit=2)] == ["img0.png", "img1.png"]
    a = [s[0] for s in open_inputs(image_folder, shuffle=7)]
    assert a == [s[0] for s in open_inputs(image_folder, shuffle=7)]
    assert sorted(a) == [s[0] for s in source]
    assert [s[0] for s in open_inputs(image_folder, shuffle=7, limit=2)] == a[:2]

    paths = open_inputs(image_folder, max_preload_bytes=1)
    assert all(isinstance(s[1], Path) for s in paths) and "preload" in paths.notes[0]
    with pytest.raises(InputError, match="at least 1"):
        open_inputs(image_folder, limit=0)


def test_imagefolder_labels_by_name(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "val", {"ship": 2, "cat": 3})
    labels = tuple(reversed(CIFAR10))  # the bundle's order, not the folder's
    source = open_inputs(root, labels)
    assert source.kind == "imagefolder" and source.labelled
    assert source.class_names == ("cat", "ship")
    assert [(s[0], s[2]) for s in source] == (
        [(f"cat/{i:03d}.png", labels.index("cat")) for i in range(3)]
        + [(f"ship/{i:03d}.png", labels.index("ship")) for i in range(2)])
    limited = open_inputs(root, labels, limit=2)
    assert any("--shuffle" in note for note in limited.notes)  # covers 1 of 2 classes
    assert not open_inputs(root, labels, ignore_labels=True).labelled


def test_imagefolder_unknown_classes_listed(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", {"cat": 1, "kitten": 1, "shipp": 1})
    with pytest.raises(InputError) as err:
        open_inputs(root, CIFAR10)
    message = str(err.value)
    assert "['kitten', 'shipp']" in message and "'shipp' -> 'ship'?" in message
    assert "--no-labels" in message
    splits = make_imagefolder(tmp_path / "splits", {"train": 1, "val": 1})
    with pytest.raises(InputError, match="point --input at one split"):
        open_inputs(splits, CIFAR10)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        open_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_inputs(tmp_path / "empty")
    mixed = make_imagefolder(tmp_path / "mixed", {"cat": 1})
    (mixed / "top.png").write_bytes(_png((0, 0, 0)))
    with pytest.raises(InputError, match="not both"):
        open_inputs(mixed, CIFAR10)


def _cifar_batch(n: int, offset: int, labels_key: bytes, classes: int) -> dict[bytes, object]:
    data = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        r, g, b = _color(i + offset)
        data[i, :1024], data[i, 1024:2048], data[i, 2048:] = r, g, b  # R, G, B planes
    return {b"data": data, labels_key: [(i + offset) % classes for i in range(n)],
            b"filenames": [f"img_{i + offset:04d}.png".encode() for i in range(n)],
            b"batch_label": b"test"}


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10],
                                    b"num_cases_per_batch": 4})
    _dump(folder / "test_batch", _cifar_batch(4, 0, b"labels", 10))
    for k in range(1, 6):
        _dump(folder / f"data_batch_{k}", _cifar_batch(3, 100 * k, b"labels", 10))
    return folder


def test_cifar10_pickles(cifar10_dir: Path) -> None:
    labels = tuple(reversed(CIFAR10))
    for spec in (cifar10_dir, cifar10_dir.parent):  # the folder, or the folder holding it
        source = open_inputs(spec, labels)
        assert source.kind == "cifar" and source.labelled and len(source) == 4
    assert source.samples[1][0] == "test_batch/img_0001.png"
    for i, (_, image, label) in enumerate(source):
        assert isinstance(image, np.ndarray) and image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert tuple(image[5, 7]) == _color(i)
        assert label == labels.index(CIFAR10[i % 10])
    train = open_inputs(cifar10_dir, labels, split="train")
    assert len(train) == 15 and train.samples[3][0] == "data_batch_2/img_0200.png"
    assert len(open_inputs(cifar10_dir, labels, split="train", limit=5, shuffle=1)) == 5


def test_cifar100_and_malicious_pickle(tmp_path: Path) -> None:
    fine = [f"class{i:02d}" for i in range(100)]
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(folder / "meta", {b"fine_label_names": [f.encode() for f in fine],
                            b"coarse_label_names": [b"x"] * 20})
    batch = _cifar_batch(5, 40, b"fine_labels", 100)
    batch[b"coarse_labels"] = [0] * 5
    _dump(folder / "test", batch)
    source = open_inputs(tmp_path, fine)
    assert [s[2] for s in source] == [40, 41, 42, 43, 44]

    class Evil:
        def __reduce__(self):  # a pickle that would call a function on load
            return (os.getcwd, ())

    _dump(folder / "test", {b"data": Evil()})
    with pytest.raises(InputError, match="refusing to load"):
        open_inputs(tmp_path, fine)


def _make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_archive_streamed(tmp_path: Path) -> None:
    members = {f"train/{cls}/{i}.png": _png(_color(i + 5 * k))
               for k, cls in enumerate(("ship", "cat")) for i in range(3)}
    members["train/cat/._0.png"] = b"AppleDouble junk"
    members["README.txt"] = b"hello"
    archive = _make_tar(tmp_path / "data.tar.gz", members)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    source = open_inputs(archive, CIFAR10)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted
    assert source.kind == "tar" and source.labelled and source.class_names == ("cat", "ship")
    assert [s[0] for s in source] == sorted(n for n in members if n.endswith(".png") and "._" not in n)
    for name, image, label in source:
        assert image == members[name]
        assert label == CIFAR10.index(name.split("/")[1])
    shuffled = open_inputs(archive, CIFAR10, shuffle=3, limit=4)
    assert [s[0] for s in shuffled] == [s[0] for s in open_inputs(archive, CIFAR10, shuffle=3, limit=4)]
    assert len(shuffled) == 4 and set(s[0] for s in shuffled) <= set(members)

    bad = _make_tar(tmp_path / "bad.tar.gz", {"x/kitten/0.png": _png((0, 0, 0))})
    with pytest.raises(InputError, match="kitten"):
        open_inputs(bad, CIFAR10)
    flat = _make_tar(tmp_path / "flat.tar", {"0.png": _png((0, 0, 0))})
    assert not open_inputs(flat, CIFAR10).labelled
    none = _make_tar(tmp_path / "none.tar.gz", {"a.txt": b"x"})
    with pytest.raises(InputError, match="holds no images"):
        open_inputs(none, CIFAR10)
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="not a readable tar archive"):
        open_inputs(tmp_path / "broken.tar.gz", CIFAR10)


def test_camera_missing_libraries_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pin, "_importable", lambda module: False)
    for spec in ("camera", "camera:1"):
        with pytest.raises(InputError) as err:
            open_inputs(spec)
        message = str(err.value)
        assert "\n" not in message
        assert "picamera2" in message.lower() and "opencv-python-headless" in message
    with pytest.raises(InputError, match="camera:N"):
        open_inputs("camera:front")


def test_camera_opencv_frames_are_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeCapture:
        def __init__(self, index: int) -> None:
            self.index, self.released = index, False

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return True

        def set(self, prop: int, value: float) -> bool:
            return True

        def read(self) -> tuple[bool, np.ndarray]:
            frame = np.zeros((48, 64, 3), dtype=np.uint8)
            frame[..., 0] = 200  # OpenCV frames are BGR: this is blue
            return True, frame

        def release(self) -> None:
            self.released = True

    fake = types.SimpleNamespace(VideoCapture=FakeCapture, CAP_PROP_FRAME_WIDTH=3,
                                 CAP_PROP_FRAME_HEIGHT=4)
    monkeypatch.setitem(sys.modules, "cv2", fake)
    monkeypatch.setattr(pin, "_importable", lambda module: module == "cv2")
    source = open_inputs("camera:2", limit=3)
    assert source.kind == "camera" and len(source) == 3 and not source.labelled
    assert source.samples[0][0] == "camera2-frame00000"
    assert tuple(source.samples[0][1][0, 0]) == (0, 0, 200)  # RGB: blue last
    with pytest.raises(InputError, match="--shuffle"):
        open_inputs("camera", shuffle=1)


def test_pi_runner_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import athe.pi_runner, athe.pi_runner.inputs, athe.pi_runner.runner, athe.pi_runner.compare\n"
            "import athe.pi_runner.cli\n"
            "import athe.pi_runner.__main__\n"
            "from click.testing import CliRunner; from athe.cli import cli\n"
            "r = CliRunner().invoke(cli, ['run', '--help']); assert r.exit_code == 0, r.output\n"
            "assert 'compare' in r.output and 'measure' in r.output\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- run_bundle end to end -------------------------------------------------------------------
def _valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.width > 300 and img.height > 200


@pytest.mark.slow
def test_run_bundle_end_to_end_estimate(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    from athe.pi_runner.runner import LEVEL_PASSES_JSONL, run_bundle

    out = tmp_path / "run"
    repeat, n = 3, 8
    result = run_bundle(bundle, dataset, out=out, threads=1, policy="random:simple=0.4,complex=0.3",
                        warmup=2, repeat=repeat, energy="estimate:2.0", progress=False,
                        console=quiet())
    s = json.loads((out / "summary.json").read_text())
    assert s == result.summary | {"written_at": s["written_at"], "complete": True,
                                  "incomplete_reason": None}
    rows = read_jsonl(out / "per_image.jsonl")
    assert len(rows) == n * repeat == s["rows"] == s["expected_rows"] == s["count"]
    assert s["complete"] is True and s["repeats_completed"] == repeat
    assert [(r["repeat"], r["index"]) for r in rows] == [(r, i) for r in range(repeat) for i in range(n)]
    for row in rows:
        t = row["stages_ms"]
        assert set(t) == {"decode", "preprocess", "route", "infer", "total"}
        assert t["total"] >= t["infer"] > 0 and row["label"] is not None

    # summary numbers agree with the rows
    latency = s["latency_ms"]
    levels = [r["level"] for r in rows]
    assert latency["overall"]["count"] == len(rows)
    assert sum(v["count"] for k, v in latency.items() if k != "overall") == len(rows)
    for level, fraction in s["routed_fraction"].items():
        assert fraction == pytest.approx(levels.count(level) / len(rows))
        if levels.count(level):
            totals = [r["stages_ms"]["total"] for r in rows if r["level"] == level]
            assert latency[level]["p50_ms"] == pytest.approx(float(np.percentile(totals, 50)))
    assert latency["overall"]["mean_ms"] == pytest.approx(np.mean([r["stages_ms"]["total"] for r in rows]))
    assert s["accuracy"]["correct"] == sum(r["correct"] for r in rows)
    assert s["accuracy"]["labelled"] == len(rows)
    with open(out / "per_image.csv") as handle:
        assert len(handle.read().strip().splitlines()) == len(rows) + 1

    # environment, load, system
    assert s["bundle"]["manifest_sha256"] == s["environment"]["bundle_manifest_sha256"]
    assert len(s["bundle"]["manifest_sha256"]) == 64
    assert s["random_weights"] is False and s["settings"]["threads"] == 1
    assert s["bundle"]["load"]["models_load_s"] > 0 and s["peak_rss_bytes"] > 10_000_000
    # router + every level + every stage of the chain, all preloaded
    owners = [a["owner"] for a in s["bundle"]["load"]["artifacts"]]
    assert owners == ["router", "simple", "complex", "dense", "stage:s1", "stage:s2", "stage:s3"]
    assert "throttled" in s["system"] and s["system"]["after"]["cores"] >= 1

    # energy: a labelled estimate everywhere; J/image = 2 W x the pass's wall time per image
    e = s["energy"]
    assert e["enabled"] and e["is_estimate"] and e["method"] == "estimate" and e["idle"] is None
    assert set(e["per_run"]) == {"random:simple=0.4,complex=0.3", "fixed:simple", "fixed:complex",
                                 "fixed:dense"}
    for name, energy in e["per_run"].items():
        assert energy["is_estimate"] is True and energy["valid"] and energy["net_j_per_image"] is None
        assert all(r["is_estimate"] for r in e["readings"][name])
        for j, seconds in zip(energy["gross_j_per_image"], s["wall"]["pass_seconds"][name], strict=True):
            assert j == pytest.approx(2.0 * seconds / n, rel=0.05)
    main = e["per_run"][e["main"]]
    for r, j in enumerate(main["gross_j_per_image"]):
        mean_s = np.mean([row["stages_ms"]["total"] for row in rows if row["repeat"] == r]) / 1e3
        assert 0.99 * 2.0 * mean_s <= j <= 1.5 * 2.0 * mean_s
    side = read_jsonl(out / LEVEL_PASSES_JSONL)
    assert len(side) == 3 * n * repeat
    assert {r["run"] for r in side} == {"fixed:simple", "fixed:complex", "fixed:dense"}
    assert all(r["level"] == r["run"].split(":")[1] for r in side)
    assert s["level_passes"]["fixed:dense"]["count"] == n * repeat

    for key in ("latency_cdf", "routed_fraction", "energy"):
        _valid_png(result.files[key])
    assert set(result.files) >= {"jsonl", "summary", "csv", "level_passes"}


@pytest.mark.slow
def test_run_bundle_csv_meter(bundle: Path, image_folder: Path, tmp_path: Path) -> None:
    from athe.pi_runner.runner import run_bundle

    log = tmp_path / "usb_meter.csv"
    now = time.time()
    times = np.arange(now - 5.0, now + 600.0, 0.05)
    log.write_text("timestamp,volts,amps\n" + "".join(f"{t:.3f},5.0,0.6\n" for t in times))
    out = tmp_path / "run"
    result = run_bundle(bundle, image_folder, out=out, threads=1, policy="fixed:dense", warmup=1,
                        repeat=3, energy=f"csv:{log}", idle_seconds=0.3, level_energy=False,
                        progress=False, console=quiet())
    e = result.summary["energy"]
    assert e["method"] == "csv" and e["is_estimate"] is False and e["valid"]
    assert e["idle"]["mean_watts"] == pytest.approx(3.0)
    run = e["per_run"]["fixed:dense"]
    for j, seconds in zip(run["gross_j_per_image"], result.summary["wall"]["pass_seconds"]["fixed:dense"],
                          strict=True):
        assert j == pytest.approx(3.0 * seconds / 4, rel=0.05, abs=2e-4)
    assert run["net_mean"] == pytest.approx(0.0, abs=1e-6)  # constant 3 W: nothing above idle
    assert not (out / "level_passes.jsonl").exists()
    assert result.summary["routed_fraction"] == {"simple": 0.0, "complex": 0.0, "dense": 1.0}


@pytest.mark.slow
def test_meter_failing_mid_run_marks_energy_invalid(bundle: Path, image_folder: Path,
                                                    tmp_path: Path) -> None:
    from athe.pi_runner.meters import EnergyMeter, EnergyReading
    from athe.pi_runner.runner import run_bundle

    class FlakyMeter(EnergyMeter):
        """1 W exactly; the third window fails as a vanished sensor would."""

        method = "fake"

        def __init__(self) -> None:
            self.windows, self.start = 0, 0.0

        def begin(self) -> None:
            self.start = time.monotonic()

        def end(self) -> EnergyReading:
            self.windows += 1
            seconds = time.monotonic() - self.start
            if self.windows == 3:
                return EnergyReading.invalid("fake", "sensor vanished", seconds)
            return EnergyReading(joules=seconds, seconds=seconds, mean_watts=1.0, samples=2,
                                 method="fake")

        def describe(self) -> str:
            return "fake 1 W meter"

    result = run_bundle(bundle, image_folder, out=tmp_path / "run", threads=1, warmup=1, repeat=3,
                        policy="router", energy=FlakyMeter(), idle_seconds=0.05, level_energy=False,
                        progress=False, console=quiet())
    e = result.summary["energy"]
    run = e["per_run"]["router"]
    assert e["valid"] is False and run["valid"] is False
    assert "repeat 1: sensor vanished" in run["invalid_reason"]
    assert run["gross_j_per_image"][1] is None and run["gross_mean"] is None  # NaN, never 0
    assert run["gross_j_per_image"][0] > 0 and run["net_j_per_image"][0] == pytest.approx(0, abs=1e-9)


@pytest.mark.slow
def test_interrupt_keeps_rows_and_marks_summary_incomplete(bundle: Path, dataset: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "athe.pi_runner", str(bundle), "--input", str(dataset),
           "--repeat", "100000", "--warmup", "1", "--threads", "1", "--energy", "none",
           "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows_file = out / "per_image.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if rows_file.exists() and rows_file.read_text().count("\n") >= 40:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    rows = read_jsonl(rows_file)
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] is False and s["incomplete_reason"].startswith("KeyboardInterrupt")
    assert s["rows"] == len(rows) == s["count"] >= 40
    assert s["expected_rows"] == 8 * 100000
    assert s["latency_ms"]["overall"]["count"] == len(rows)
    with open(out / "per_image.csv") as handle:
        assert len(handle.read().strip().splitlines()) == len(rows) + 1


# -- compare ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_bundles_and_policies_prints_ratios(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "tiny-b"
    shutil.copytree(bundle, other)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, [
        "run", "compare", str(bundle), str(other), "--policies", "router,fixed:dense",
        "--input", str(dataset), "--repeat", "2", "--warmup", "1", "--threads", "1",
        "--energy", "none", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    names = ["tiny router", "tiny fixed:dense", "tiny-b router", "tiny-b fixed:dense"]
    for name in names:
        assert name in result.output
    assert "× mean" in result.output and "1.00×" in result.output and "Δ top-1" in result.output
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["baseline"] == "tiny router"
    assert s["rows"] == 4 * 8 * 2 == s["expected_rows"]
    assert s["ratios"]["tiny router"]["mean_ratio"] == 1.0
    assert s["ratios"]["tiny router"]["top1_delta"] == 0.0
    rows = read_jsonl(out / "per_image.jsonl")
    first = [r["run"] for r in rows[:8]]  # image 0 and 1 of repeat 0: order rotates per image
    assert sorted(first[:4]) == sorted(names) and first[:4] != first[4:]
    for name in names:
        mine = [r for r in rows if r["run"] == name]
        assert len(mine) == 16
        ratio = np.mean([r["stages_ms"]["total"] for r in mine]) / np.mean(
            [r["stages_ms"]["total"] for r in rows if r["run"] == "tiny router"])
        assert s["ratios"][name]["mean_ratio"] == pytest.approx(ratio)
    # the same bundle with the same policy gives the same decisions
    assert ([r["pred"] for r in rows if r["run"] == "tiny fixed:dense"]
            == [r["pred"] for r in rows if r["run"] == "tiny-b fixed:dense"])
    _valid_png(out / "latency_cdf.png")


@pytest.mark.slow
def test_compare_policies_with_energy(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    from athe.pi_runner.compare import compare_runs

    console = quiet()
    result = compare_runs([bundle], dataset, out=tmp_path / "cmp", policies=["fixed:simple", "fixed:dense"],
                          threads=1, warmup=1, repeat=3, energy="estimate:2.0", progress=False,
                          console=console)
    ratios = result.summary["ratios"]
    assert set(ratios) == {"fixed:simple", "fixed:dense"}
    assert ratios["fixed:simple"]["j_ratio"] == 1.0 and ratios["fixed:dense"]["is_estimate"]
    assert math.isfinite(ratios["fixed:dense"]["j_ratio"])
    assert len(read_jsonl(tmp_path / "cmp" / "energy_passes.jsonl")) == 2 * 8 * 3
    assert "× J" in console.file.getvalue() and "MODEL ESTIMATE" in console.file.getvalue()
    _valid_png(result.files["energy"])


# -- CLI -------------------------------------------------------------------------------------
def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *args])
    return result.exit_code, result.output


def test_cli_help_and_errors_without_a_bundle(tmp_path: Path, image_folder: Path) -> None:
    code, output = _run()
    assert code == 0 and "compare" in output and "athe run BUNDLE --input PATH" in output
    code, output = _run(str(tmp_path / "missing"), "--input", str(image_folder), "--energy", "none")
    assert code == 1 and "not found" in output and "Traceback" not in output
    code, output = _run("measure", str(tmp_path / "missing"))
    assert code == 2 and "--input" in output
    code, output = _run(str(tmp_path / "x"), "--input", str(image_folder), "--energy", "pmc")
    assert code == 1 and "unknown energy meter 'pmc'" in output and "'pmic'" in output
    code, output = _run(str(tmp_path / "x"), "--input", str(image_folder), "--energy", "estimate:2",
                        "--repeat", "2")
    assert code == 1 and "--repeat 3" in output
    code, output = _run(str(tmp_path / "x"), "--input", str(image_folder), "--backend", "tflite")
    assert code == 2 and "litert" in output
    code, output = _run("compare", str(tmp_path / "x"), "--input", str(image_folder))
    assert code == 1 and "at least two candidates" in output


@pytest.mark.slow
def test_cli_errors_with_a_bundle(bundle: Path, image_folder: Path, tmp_path: Path) -> None:
    code, output = _run(str(bundle), "--input", str(image_folder), "--policy", "fastest",
                        "--energy", "none", "--out", str(tmp_path / "a"))
    assert code == 1 and "unknown policy 'fastest'" in output and "fixed:<level>" in output
    code, output = _run(str(bundle), "--input", str(image_folder), "--policy", "fixed:dens",
                        "--energy", "none", "--out", str(tmp_path / "b"))
    assert code == 1 and "Did you mean 'dense'" in output
    code, output = _run(str(bundle), "--input", str(image_folder), "--policy", "oracle",
                        "--energy", "none", "--out", str(tmp_path / "o"))
    assert code == 1 and "oracle policy needs labelled images" in output
    assert not (tmp_path / "o").exists()  # refused before anything was written
    code, output = _run(str(bundle), "--input", str(tmp_path / "nope"), "--energy", "none",
                        "--out", str(tmp_path / "c"))
    assert code == 1 and "input" in output and "not found" in output
    code, output = _run(str(bundle), "--input", str(image_folder), "--energy", "none",
                        "--repeat", "1", "--warmup", "0", "--no-progress", "--out", str(tmp_path / "d"))
    assert code == 0, output
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["rows"] == 4
    code, output = _run(str(bundle), "--input", str(image_folder), "--energy", "none",
                        "--out", str(tmp_path / "d"))
    assert code == 1 and "pick a new --out folder" in output


@pytest.mark.slow
def test_full_path_run_feeds_budget_calibration(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    """`athe run --policy exit:s3` rows carry every stage's ms, which the gate calibration reads."""
    from athe.pi_runner.runner import run_bundle
    from athe.training.gates_train import stage_latency_ms

    out = tmp_path / "full"
    run_bundle(bundle, dataset, out=out, threads=1, policy="exit:s3", warmup=1, repeat=1,
               energy="none", progress=False, console=quiet())
    rows = read_jsonl(out / "per_image.jsonl")
    assert all(set(r["stage_ms"]) == {"s1", "s2", "s3"} and r["gate_scores"] == {} for r in rows)
    ms = stage_latency_ms(out, ["s1", "s2", "s3"])
    for name in ("s1", "s2", "s3"):
        assert ms[name] == pytest.approx(np.mean([r["stage_ms"][name] for r in rows])) and ms[name] > 0
    exit_out = tmp_path / "exit"
    run_bundle(bundle, dataset, out=exit_out, threads=1, policy="exit", warmup=1, repeat=1,
               energy="none", progress=False, console=quiet())
    for r in read_jsonl(exit_out / "per_image.jsonl"):  # the gates asked before the exit taken
        stages = list(r["stage_ms"])
        assert r["level"] == stages[-1] and list(r["gate_scores"]) == [s for s in stages if s != "s3"]

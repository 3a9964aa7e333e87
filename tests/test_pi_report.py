"""Latency statistics and report writers (athe.pi_runner.stats, athe.pi_runner.report)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from athe.pi_runner import report as rp
from athe.pi_runner import stats as st
from athe.pi_runner.meters import EnergyReading, PerImageEnergy
from athe.pi_runner.system import compare_snapshots, snapshot


@pytest.fixture
def latencies() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    simple = rng.gamma(4.0, 0.002, size=300)
    complex_ = 0.02 + rng.gamma(4.0, 0.003, size=100)
    levels = ["simple"] * 300 + ["complex"] * 100
    order = rng.permutation(400)
    return np.concatenate([simple, complex_])[order], [levels[i] for i in order]


def expected_summary(seconds: np.ndarray) -> dict[str, float]:
    ms = seconds * 1000.0
    return {
        "count": ms.size, "mean_ms": ms.mean(), "std_ms": ms.std(ddof=1), "min_ms": ms.min(),
        "p50_ms": np.percentile(ms, 50), "p90_ms": np.percentile(ms, 90),
        "p99_ms": np.percentile(ms, 99), "max_ms": ms.max(),
        "throughput_per_s": ms.size / seconds.sum(),
    }


def test_summary_matches_numpy(latencies: tuple[np.ndarray, list[str]]) -> None:
    seconds, levels = latencies
    summaries = st.summarize_by_level(seconds, levels, level_names=["simple", "complex"])
    assert list(summaries) == ["simple", "complex", "overall"]
    names = np.array(levels)
    for level, subset in [("simple", seconds[names == "simple"]),
                          ("complex", seconds[names == "complex"]), ("overall", seconds)]:
        got = summaries[level].__dict__
        for key, value in expected_summary(subset).items():
            assert got[key] == pytest.approx(value, rel=1e-12), (level, key)


def test_summary_edge_cases() -> None:
    one = st.summarize_latency([0.004])
    assert one.count == 1 and one.p99_ms == pytest.approx(4.0) and math.isnan(one.std_ms)
    assert one.throughput_per_s == pytest.approx(250.0)
    with pytest.raises(ValueError, match="non-empty"):
        st.summarize_latency([])
    with pytest.raises(ValueError, match="finite"):
        st.summarize_latency([0.1, -0.2])
    with pytest.raises(ValueError, match="one level per image"):
        st.summarize_by_level([0.1, 0.2], ["a"])
    with pytest.raises(ValueError, match="overall"):
        st.summarize_by_level([0.1], ["overall"])


def test_routed_fraction() -> None:
    levels = ["simple", "simple", "complex", "simple"]
    assert st.routed_fraction(levels) == {"simple": 0.75, "complex": 0.25}
    assert st.routed_fraction(levels, ["simple", "complex", "dense"]) == {
        "simple": 0.75, "complex": 0.25, "dense": 0.0}
    with pytest.raises(ValueError, match="not in level_names"):
        st.routed_fraction(levels, ["simple"])


# --------------------------------------------------------------------------------------------
# files


def row(i: int) -> dict:
    return {"image": f"img_{i}.png", "level": "simple" if i % 3 else "complex",
            "stages": {"preprocess_s": 0.001 * i, "infer_s": 0.01 + 0.001 * i},
            "correct": i % 2 == 0, "energy_j": math.nan if i == 1 else 0.1 * i}


def test_interrupt_keeps_rows_and_writes_partial_summary(tmp_path: Path) -> None:
    def summarize(rows: list[dict]) -> dict:
        return {"images": len(rows), "mean_infer_s": float(np.mean(
            [r["stages"]["infer_s"] for r in rows]))}

    with pytest.raises(KeyboardInterrupt):
        with rp.RunRecorder(tmp_path, summarize=summarize) as recorder:
            for i in range(10):
                recorder.add_row(row(i))
                if i == 3:
                    raise KeyboardInterrupt
    rows = rp.read_jsonl(tmp_path / rp.PER_IMAGE_JSONL)
    assert [r["image"] for r in rows] == [f"img_{i}.png" for i in range(4)]
    assert rows[2]["stages"]["infer_s"] == pytest.approx(0.012)
    assert rows[1]["energy_j"] is None  # NaN is written as null, never as a number
    summary = json.loads((tmp_path / rp.SUMMARY_JSON).read_text())
    assert summary["complete"] is False
    assert summary["incomplete_reason"].startswith("KeyboardInterrupt")
    assert summary["images"] == summary["rows"] == 4
    assert summary["mean_infer_s"] == pytest.approx(0.0115)
    with open(tmp_path / rp.PER_IMAGE_CSV, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and float(table[3]["stages.infer_s"]) == pytest.approx(0.013)
    assert table[1]["energy_j"] == "" and table[0]["correct"] == "True"
    with pytest.raises(FileExistsError, match="new --out"):
        rp.RunRecorder(tmp_path)


def test_complete_run(tmp_path: Path) -> None:
    with rp.RunRecorder(tmp_path / "out") as recorder:
        for i in range(3):
            recorder.add_row(row(i))
        paths = recorder.finish({"backend": "litert", "p50_ms": 12.5, "bad": math.inf})
    summary = json.loads(paths["summary"].read_text())
    assert summary["complete"] is True and summary["incomplete_reason"] is None
    assert summary["rows"] == 3 and summary["p50_ms"] == 12.5 and summary["bad"] is None


def test_summary_holds_dataclasses_and_environment(tmp_path: Path) -> None:
    root = tmp_path / "fake-root"
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("50000\n")
    snap = snapshot(root, vcgencmd=str(tmp_path / "no-vcgencmd"))
    invalid = EnergyReading.invalid("pmic", "meter vanished", seconds=2.0)
    path = rp.write_summary(tmp_path / "s.json", {
        "environment": rp.environment_info(), "system": compare_snapshots(snap, snap),
        "energy": invalid, "latency": st.summarize_latency([0.01, 0.02])}, complete=True)
    data = json.loads(path.read_text())
    assert data["environment"]["packages"]["numpy"] == np.__version__
    assert data["system"]["after"]["temperatures_c"] == {"thermal_zone0": 50.0}
    assert data["energy"]["joules"] is None and data["energy"]["valid"] is False
    assert data["latency"]["p50_ms"] == pytest.approx(15.0)


def test_jsonl_survives_a_killed_process(tmp_path: Path) -> None:
    """Rows are flushed one by one: SIGKILL after three rows (no close, no atexit) keeps all."""
    path = tmp_path / "rows.jsonl"
    code = (
        "import os, signal, sys\n"
        "from athe.pi_runner.report import JsonlWriter\n"
        f"writer = JsonlWriter({str(path)!r})\n"
        "for i in range(3):\n"
        "    writer.write({'i': i, 'latency_s': 0.01 * i})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == -9, result.stderr
    assert rp.read_jsonl(path) == [{"i": i, "latency_s": 0.01 * i} for i in range(3)]


def test_truncated_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    with rp.JsonlWriter(path) as writer:
        writer.write({"i": 0})
        with pytest.raises(TypeError, match="convert it"):
            writer.write({"i": object()})  # fails before writing: no half line
        writer.write({"i": 1})
    with open(path, "a") as handle:
        handle.write('{"i": 2, "lat')  # the process died mid-write
    with pytest.warns(UserWarning, match="cut off"):
        assert rp.read_jsonl(path) == [{"i": 0}, {"i": 1}]
    path.write_text('{"i": 0}\nnot json\n{"i": 1}\n')
    with pytest.raises(ValueError, match=":2: not a JSON row"):
        rp.read_jsonl(path)


# --------------------------------------------------------------------------------------------
# plots and table


def energy(values: list[float], estimate: bool = False) -> PerImageEnergy:
    return PerImageEnergy("pmic", estimate, (100,) * len(values), tuple(v + 0.1 for v in values),
                          tuple(values), 2.0, True, None)


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 128).mean() > 0.005  # something dark was drawn: axes, lines, text


def test_plots(tmp_path: Path, latencies: tuple[np.ndarray, list[str]]) -> None:
    seconds, levels = latencies
    names = np.array(levels)
    by_level = {"simple": seconds[names == "simple"], "complex": seconds[names == "complex"],
                "overall": seconds}
    invalid = PerImageEnergy("pmic", False, (100,) * 3, (math.nan,) * 3, (math.nan,) * 3, 2.0,
                             False, "repeat 0: meter vanished")
    paths = [
        rp.plot_latency_cdf(by_level, tmp_path / rp.LATENCY_CDF_PNG),
        rp.plot_routed_fraction(st.routed_fraction(levels, ["simple", "complex", "dense"]),
                                tmp_path / rp.ROUTED_FRACTION_PNG),
        rp.plot_energy_per_image({"simple": energy([0.21, 0.23, 0.22]),
                                  "complex": energy([0.52, 0.55, 0.50]), "dense": invalid},
                                 tmp_path / rp.ENERGY_PNG),
    ]
    for path in paths:
        assert_png(path)
    with pytest.raises(ValueError, match="'net' or 'gross'"):
        rp.plot_energy_per_image({}, tmp_path / "x.png", kind="both")


def test_table(latencies: tuple[np.ndarray, list[str]]) -> None:
    seconds, levels = latencies
    summaries = st.summarize_by_level(seconds, levels)
    console = Console(record=True, width=140)
    rp.print_latency_table(summaries, routed=st.routed_fraction(levels),
                           energy={"simple": energy([0.2, 0.21, 0.19], estimate=True)},
                           console=console)
    text = console.export_text()
    assert f"{summaries['complex'].p50_ms:.2f}" in text
    assert "75.0%" in text and "0.2 ± 0.01 est" in text and "overall" in text

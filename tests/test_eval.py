"""``athe eval`` (athe.evaluate): every row and verdict on a hand-computed case.

The synthetic case (10 images, levels a < b < c) is small enough that every number is worked
out by hand in the comments; the end-to-end test runs the CLI on the conftest tiny bundle
(converted by the real converter, random weights) with PIL-made images (never CIFAR files).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from athe.evaluate import analysis as ev
from athe.evaluate import measure as me
from athe.evaluate import output as eo
from athe.runtime import routing
from athe.runtime.split import val_halves

NAMES = ("a", "b", "c")

# image:      0  1  2  3  4  5  6  7  8  9
CORRECT = np.array([
    [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1],
    [0, 1, 1], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 0, 0],
], dtype=bool)  # top-1: a 4/10 = 40 %, b 6/10 = 60 %, c 8/10 = 80 %
PROBS = np.array([
    # P(a right), P(b right), P(c right)       routed at thresholds a=0.5, b=0.5
    [0.9, 0.8, 0.9], [0.9, 0.8, 0.9], [0.9, 0.8, 0.9],  # 0-2 -> a (right)
    [0.4, 0.6, 0.9],  # 3 -> b (wrong; a would have been right)
    [0.2, 0.8, 0.9], [0.2, 0.8, 0.9],  # 4, 5 -> b (right)
    [0.1, 0.3, 0.9],  # 6 -> c (right)
    [0.6, 0.3, 0.9],  # 7 -> a (wrong)
    [0.1, 0.7, 0.2],  # 8 -> b (right)
    [0.1, 0.2, 0.2],  # 9 -> c (wrong; nothing is right)
])
THRESHOLDS = {"a": 0.5, "b": 0.5}
LEVEL_MS = (1.0, 2.0, 4.0)  # every image; + 0.5 ms preprocess; router 0.5 ms
COSTS = ev.Costs(level_macs=(1e6, 2e6, 4e6), router_macs=1e5, level_energy_j=(0.1, 0.2, 0.4),
                 router_energy_j=0.01)


def synthetic() -> ev.Measurements:
    n = len(CORRECT)
    return ev.Measurements(level_names=NAMES, correct=CORRECT, level_ms=np.tile(LEVEL_MS, (n, 1)),
                           preprocess_ms=np.full(n, 0.5), router_probs=PROBS, router_ms=np.full(n, 0.5))


@pytest.fixture(scope="module")
def result() -> ev.EvalResult:
    return ev.evaluate(synthetic(), COSTS, THRESHOLDS, dense_index=2, seeds=20, grid=11)


def test_rows_in_order(result):
    assert [r.name for r in result.rows] == ["dense", "static:a", "static:b", "static:c", "always-cheapest",
                                             "always-richest", "random", "oracle", "athe"]


def test_static_rows(result):
    # static level j: every image at j; latency 0.5 preprocess + level ms; no router
    for name, acc, lat, macs, joules in (("static:a", 40.0, 1.5, 1e6, 0.1), ("static:b", 60.0, 2.5, 2e6, 0.2),
                                         ("static:c", 80.0, 4.5, 4e6, 0.4), ("dense", 80.0, 4.5, 4e6, 0.4),
                                         ("always-cheapest", 40.0, 1.5, 1e6, 0.1),
                                         ("always-richest", 80.0, 4.5, 4e6, 0.4)):
        r = result.row(name)
        assert r.accuracy == pytest.approx(acc) and r.mean_macs == pytest.approx(macs)
        assert (r.latency_mean_ms, r.latency_p50_ms, r.latency_p90_ms) == pytest.approx((lat, lat, lat))
        assert r.router_share == 0.0 and not r.routed and r.energy_j == pytest.approx(joules)
    assert result.row("static:b").fraction == {"a": 0.0, "b": 1.0, "c": 0.0}
    assert result.row("static:b").group_accuracy == {"a": None, "b": pytest.approx(60.0), "c": None}


def test_athe_row(result):
    r = result.row("athe")
    # choice [a a a b b b c a b c]: right on 0,1,2,4,5,8,6 = 7/10
    assert r.routed and r.accuracy == pytest.approx(70.0)
    assert r.fraction == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.2})
    # a: {0,1,2 right, 7 wrong} 3/4; b: {3 wrong, 4,5,8 right} 3/4; c: {6 right, 9 wrong} 1/2
    assert r.group_accuracy == pytest.approx({"a": 75.0, "b": 75.0, "c": 50.0})
    # per image 0.5 pre + 0.5 router + level: a 2.0 (x4), b 3.0 (x4), c 5.0 (x2) -> mean 30/10 = 3.0
    # sorted [2,2,2,2,3,3,3,3,5,5]: p50 at rank 4.5 -> 3.0; p90 at rank 8.1 -> 5.0
    assert (r.latency_mean_ms, r.latency_p50_ms, r.latency_p90_ms) == pytest.approx((3.0, 3.0, 5.0))
    assert r.router_share == pytest.approx(5.0 / 30.0)  # 10 x 0.5 ms of 30 ms
    assert r.mean_macs == pytest.approx(0.4 * 1e6 + 0.4 * 2e6 + 0.2 * 4e6 + 1e5)  # 2.1e6
    assert r.energy_j == pytest.approx(0.4 * 0.1 + 0.4 * 0.2 + 0.2 * 0.4 + 0.01)  # 0.21 J
    assert r.energy_note is None


def test_oracle_row(result):
    r = result.row("oracle")
    # oracle: a for 0-3, b for 4,5,8, c for 6,7 and 9 (none right -> richest): right on 9/10
    assert not r.routed and r.accuracy == pytest.approx(90.0)
    assert r.fraction == pytest.approx({"a": 0.4, "b": 0.3, "c": 0.3})
    assert r.group_accuracy == pytest.approx({"a": 100.0, "b": 100.0, "c": 200.0 / 3})
    assert r.latency_mean_ms == pytest.approx((4 * 1.5 + 3 * 2.5 + 3 * 4.5) / 10)  # 2.7
    assert r.mean_macs == pytest.approx((4 * 1e6 + 3 * 2e6 + 3 * 4e6) / 10)  # 2.2e6
    assert r.energy_j == pytest.approx(0.4 * 0.1 + 0.3 * 0.2 + 0.3 * 0.4)  # 0.22
    np.testing.assert_array_equal(ev.oracle_choice(CORRECT), [0, 0, 0, 0, 1, 1, 2, 2, 1, 2])


def test_random_row(result):
    r = result.row("random")
    # ATHE's fractions (0.4, 0.4, 0.2) -> exactly 4, 4, 2 images per seed; no router.
    # Expected top-1 = 0.4*40 + 0.4*60 + 0.2*80 = 56 %; latency 0.4*1.5 + 0.4*2.5 + 0.2*4.5 = 2.5 ms
    assert r.expected == pytest.approx({"accuracy": 56.0, "latency_mean_ms": 2.5, "mean_macs": 2.0e6})
    assert r.fraction == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.2}) and r.seeds == 20
    # latency is constant per level, so every seed's mean latency is exactly 2.5 ms
    assert r.latency_mean_ms == pytest.approx(2.5) and r.latency_mean_std_ms == pytest.approx(0.0)
    assert r.mean_macs == pytest.approx(2.0e6) and r.router_share == 0.0 and not r.routed
    assert r.energy_j == pytest.approx(0.4 * 0.1 + 0.4 * 0.2 + 0.2 * 0.4)  # 0.20, no router
    assert r.accuracy_std > 0 and abs(r.accuracy - 56.0) < 3 * r.accuracy_std
    many = ev.random_rows(synthetic(), COSTS, [0.4, 0.4, 0.2], seeds=400)
    assert many.accuracy == pytest.approx(56.0, abs=1.0)  # the seed mean converges to the expectation


def test_exact_counts():
    assert ev.exact_counts([0.4, 0.4, 0.2], 10).tolist() == [4, 4, 2]
    assert ev.exact_counts([1 / 3, 1 / 3, 1 / 3], 10).tolist() == [4, 3, 3]  # largest remainder, first wins
    assert ev.exact_counts([0.25, 0.75], 3).tolist() == [1, 2]  # 0.75 vs 2.25: remainders .75 > .25


def test_verdicts(result):
    dense, static, random, oracle = result.verdicts
    # dense: latency 3.0 / 4.5 = 0.667x (> 0.5) at 70 - 80 = -10 pt -> NOT MET
    assert dense.name == "athe_vs_dense" and dense.met is False and dense.status == "NOT MET"
    assert dense.numbers["latency_ratio"] == pytest.approx(2 / 3)
    assert dense.numbers["accuracy_delta_pt"] == pytest.approx(-10.0)
    assert dense.numbers["macs_ratio"] == pytest.approx(2.1 / 4.0)
    # static line (1.5, 40) (2.5, 60) (4.5, 80) at 3.0 ms: 60 + 0.5/2 * 20 = 65 -> +5 pt -> MET
    assert static.met is True and static.numbers["static_accuracy_at_latency"] == pytest.approx(65.0)
    assert static.numbers["accuracy_diff_pt"] == pytest.approx(5.0) and not static.numbers["outside_range"]
    # at equal MACs: (1M, 40) (2M, 60) (4M, 80) at 2.1M: 60 + 0.1/2 * 20 = 61 -> +9 pt
    assert static.numbers["accuracy_diff_at_macs_pt"] == pytest.approx(9.0)
    # random mix of cheapest (1.5, 40) and richest (4.5, 80) at 3.0 ms: share 0.5 -> 60 % -> +10 pt -> MET
    assert random.met is True and random.numbers["random_accuracy_at_latency"] == pytest.approx(60.0)
    assert random.numbers["cheapest_share"] == pytest.approx(0.5)
    assert random.numbers["accuracy_diff_pt"] == pytest.approx(10.0)
    # oracle 90 % vs ATHE 70 %: gap 20 pt (> 0.5) -> NOT MET
    assert oracle.met is False and oracle.numbers["gap_pt"] == pytest.approx(20.0)


def test_verdict_targets_met_when_they_are():
    # A router that matches the oracle on a case where the cheap level is mostly right.
    correct = np.array([[1, 1]] * 8 + [[0, 1]] * 2, dtype=bool)  # cheap 80 %, rich 100 %
    probs = np.array([[0.9, 1.0]] * 8 + [[0.1, 1.0]] * 2)
    m = ev.Measurements(("s", "d"), correct, np.tile((1.0, 10.0), (10, 1)), np.zeros(10), probs, np.zeros(10))
    res = ev.evaluate(m, ev.Costs((1.0, 10.0)), {"s": 0.5}, dense_index=1, seeds=3, grid=5)
    # ATHE: 8 x 1 ms + 2 x 10 ms = 2.8 ms (0.28x dense 10 ms) at 100 % (= dense): MET
    assert res.verdict("athe_vs_dense").met is True
    assert res.verdict("athe_vs_dense").numbers["latency_ratio"] == pytest.approx(0.28)
    assert res.verdict("athe_vs_oracle").met is True  # gap 0
    # static/random line (1, 80) - (10, 100) at 2.8: 80 + 1.8/9 * 20 = 84 -> +16 pt
    assert res.verdict("athe_vs_random").numbers["accuracy_diff_pt"] == pytest.approx(16.0)


def test_router_stats(result):
    s = result.router
    # p >= 0.5 vs correctness: a wrong on 3 (0.4, right) and 7 (0.6, wrong) -> 80 %; b wrong on 3 -> 90 %;
    # c: 0.9 where right (0-7), 0.2 where wrong (8, 9) -> 100 %
    assert s["accuracy_at_0.5"] == pytest.approx({"a": 80.0, "b": 90.0, "c": 100.0})
    assert s["accuracy_at_threshold"] == pytest.approx({"a": 80.0, "b": 90.0})
    assert s["positive_rate"] == pytest.approx({"a": 40.0, "b": 60.0, "c": 80.0})
    # routed [a a a b b b c a b c] vs oracle [a a a a b b c c b c]: differs on 3 and 7
    assert s["oracle_agreement"] == pytest.approx(80.0) and s["mean_ms"] == pytest.approx(0.5)


def test_interpolation_by_hand():
    assert ev.interpolate([(1.0, 10.0), (3.0, 30.0)], 2.0) == (pytest.approx(20.0), False)
    assert ev.interpolate([(3.0, 30.0), (1.0, 10.0)], 1.5) == (pytest.approx(15.0), False)  # unsorted input
    assert ev.interpolate([(1.0, 10.0), (3.0, 30.0)], 0.5) == (10.0, True)  # below: nearest end, flagged
    assert ev.interpolate([(1.0, 10.0), (3.0, 30.0)], 4.0) == (30.0, True)
    # a dominated static level (2 ms, 30 %) is left out of the static line: at 2 ms, 40 + 1/2 * 20 = 50
    rows = [ev.Row(f"static:{n}", "", False, acc, {}, {}, 0.0, lat, lat, lat, 0.0)
            for n, lat, acc in (("x", 1.0, 40.0), ("y", 2.0, 30.0), ("z", 3.0, 60.0))]
    athe = ev.Row("athe", "", True, 55.0, {}, {}, 0.0, 2.0, 2.0, 2.0, 0.0)
    v = ev.verdict_vs_static(athe, rows)
    assert v.numbers["static_accuracy_at_latency"] == pytest.approx(50.0) and v.met is True
    assert v.numbers["static_line"] == [(1.0, 40.0), (3.0, 60.0)]


def test_percentiles_with_varied_latency():
    m = ev.Measurements(("x",), np.ones((5, 1), bool), np.array([[1.0], [2.0], [3.0], [4.0], [10.0]]),
                        np.zeros(5))
    r = ev.row_for_choice("static:x", "", m, ev.Costs((1.0,)), np.zeros(5, dtype=np.int64), routed=False)
    # mean 20/5 = 4; p50 = 3; p90 at rank 3.6: 4 + 0.6 * (10 - 4) = 7.6
    assert (r.latency_mean_ms, r.latency_p50_ms, r.latency_p90_ms) == pytest.approx((4.0, 3.0, 7.6))


def test_sweep_two_levels_by_hand():
    # P(cheap right) = [0.1, 0.4, 0.7, 0.9]; grid 4 -> quantiles are exactly these values, + inf.
    correct = np.array([[0, 1], [1, 0], [0, 1], [1, 1]], dtype=bool)
    m = ev.Measurements(("s", "r"), correct, np.tile((1.0, 3.0), (4, 1)), np.zeros(4),
                        np.array([[0.1, 1], [0.4, 1], [0.7, 1], [0.9, 1]]), np.ones(4))
    points = ev.sweep_thresholds(m, ev.Costs((1.0, 3.0)), grid=4)
    got = [(round(p.thresholds["s"], 9), round(p.accuracy, 9), round(p.latency_mean_ms, 9), round(p.mean_macs, 9),
            p.pareto_latency, p.pareto_macs) for p in points]
    # t: accuracy, latency (1 ms router + 1 or 3 ms), MACs (1 or 3), on the front (latency, MACs)
    assert got == [
        (0.1, 50.0, 2.0, 1.0, True, True),  # all cheap: 1, 3 right
        (0.4, 75.0, 2.5, 1.5, True, True),  # 1,2,3 cheap; 0 rich: 0, 1, 3 right
        (0.7, 50.0, 3.0, 2.0, False, False),  # 2,3 cheap; 0,1 rich: 0, 3 right
        (0.9, 75.0, 3.5, 2.5, False, False),  # 3 cheap: 0, 2, 3 right (not better than 2.5 ms)
        (np.inf, 75.0, 4.0, 3.0, False, False),  # all rich
    ]


def test_sweep_three_levels_front(result):
    front = sorted((p.latency_mean_ms, p.accuracy) for p in result.sweep if p.pareto_latency)
    accs = [a for _, a in front]
    assert accs == sorted(accs) and len(set(accs)) == len(accs)  # strictly better as it costs more
    for p in result.sweep:  # no point is at most as slow as a front point and more accurate
        assert not any(p.latency_mean_ms <= lat and p.accuracy > acc for lat, acc in front)
        assert p.accuracy <= result.row("oracle").accuracy
    lookup = {(round(p.latency_mean_ms, 9), p.accuracy) for p in result.sweep}
    assert (2.0, 40.0) in lookup  # all at a: 0.5 + 0.5 + 1
    assert (5.0, 80.0) in lookup  # all at c (thresholds inf): 0.5 + 0.5 + 4


def test_energy_without_router_energy_is_flagged():
    costs = ev.Costs(COSTS.level_macs, COSTS.router_macs, COSTS.level_energy_j, None)
    r = ev.evaluate(synthetic(), costs, THRESHOLDS, 2, seeds=2, grid=3).row("athe")
    assert r.energy_j == pytest.approx(0.20) and "router energy not given" in r.energy_note
    none = ev.evaluate(synthetic(), ev.Costs(COSTS.level_macs), THRESHOLDS, 2, seeds=2, grid=3)
    assert all(row.energy_j is None for row in none.rows)


def test_no_router_bundle():
    m = synthetic()
    m = ev.Measurements(m.level_names, m.correct, m.level_ms, m.preprocess_ms)
    res = ev.evaluate(m, COSTS, None, dense_index=2)
    assert [r.name for r in res.rows] == ["dense", "static:a", "static:b", "static:c", "always-cheapest",
                                          "always-richest", "oracle"]
    assert res.sweep == [] and res.router is None and {v.status for v in res.verdicts} == {"N/A"}


def test_dense_level_index():
    assert ev.dense_level_index([((1, 0.5),), (), ()], [2, 3, 3]) == 2
    assert ev.dense_level_index([(), ()], [2, 3]) == 1  # all tokens but fewer heads is not dense
    assert ev.dense_level_index([((1, 0.5),), ((1, 0.7),)], [3, 3]) is None


def test_bad_inputs_say_the_fix(tmp_path):
    with pytest.raises(ev.EvalError, match="give one per level"):
        ev.evaluate(synthetic(), COSTS, {"a": 0.5})
    (tmp_path / "e.json").write_text(json.dumps({"a": 1.0, "bb": 2.0, "c": 3.0}))
    with pytest.raises(ev.EvalError, match="Did you mean 'b'"):
        me.load_energy_json(tmp_path / "e.json", NAMES)
    (tmp_path / "e.json").write_text(json.dumps({"a": 1.0, "b": "x", "c": 3.0}))
    with pytest.raises(ev.EvalError, match="finite number"):
        me.load_energy_json(tmp_path / "e.json", NAMES)
    archive = make_archive(tmp_path / "d.tar.gz", ["cta", "dog"], 1)
    with pytest.raises(ev.EvalError, match="'cta' -> 'cat'"):
        me.load_eval_images(archive, ["cat", "dog"])
    with pytest.raises(ev.EvalError, match="at least 1"):
        me.load_eval_images(archive, ["cta", "dog"], limit=0)


def test_outputs_written(result, tmp_path):
    result = dataclasses.replace(result, info={"variant": "synthetic"})
    files = eo.write_outputs(result, synthetic(), tmp_path)
    data = json.loads((tmp_path / eo.EVAL_JSON).read_text())
    assert [v["status"] for v in data["verdicts"]] == ["NOT MET", "MET", "MET", "NOT MET"]
    assert data["rows"][-1]["name"] == "athe" and data["rows"][-1]["accuracy"] == pytest.approx(70.0)
    with open(tmp_path / eo.ROWS_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [r.name for r in result.rows] and "fraction.a" in rows[0]
    with open(tmp_path / eo.SWEEP_CSV) as fh:
        assert len(list(csv.DictReader(fh))) == len(result.sweep)
    assert Image.open(files["pareto_png"]).size[0] > 1000
    back = ev.Measurements.load(files["measurements"])
    np.testing.assert_array_equal(back.correct, CORRECT)
    np.testing.assert_allclose(back.router_probs, PROBS)


# -- measuring ---------------------------------------------------------------------------------


class _Model:
    def __init__(self, output: list[float]) -> None:
        self.output = np.asarray([output], dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.output.copy()


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_measure_with_fake_models():
    from athe.runtime.manifest import InputSpec
    from athe.runtime.preprocess import Preprocessor

    spec = InputSpec("resize_shorter_center_crop", 8, 8, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    dispatcher = SimpleNamespace(
        level_names=["s", "d"],
        levels={"s": _Model([1.0, 0.0]), "d": _Model([0.0, 1.0])},  # s says cat, d says dog
        router=_Model([0.7, 1.0]), preprocessor=Preprocessor(spec))
    images = [me.LabelledImage("cat/0.png", _png((255, 0, 0)), 0),
              me.LabelledImage("dog/bad.png", b"not an image", 1),
              me.LabelledImage("dog/1.png", _png((0, 0, 255)), 1)]
    m, skipped = me.measure(dispatcher, images, warmup=1)
    assert [s[0] for s in skipped] == ["dog/bad.png"] and m.names == ["cat/0.png", "dog/1.png"]
    np.testing.assert_array_equal(m.correct, [[True, False], [False, True]])
    np.testing.assert_allclose(m.router_probs, [[0.7, 1.0], [0.7, 1.0]])
    assert m.level_ms.shape == (2, 2) and (m.level_ms > 0).all() and (m.preprocess_ms > 0).all()
    assert m.decode_ms is not None and m.decode_ms.shape == (2,) and (m.decode_ms > 0).all()


# -- data and end to end -----------------------------------------------------------------------


def make_archive(path: Path, classes: list[str], per_class: int, seed: int = 0) -> Path:
    """An ImageFolder .tar.gz of random-noise PNGs (``val/<class>/<i>.png``)."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        for cls in classes:
            for i in range(per_class):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
                info = tarfile.TarInfo(f"val/{cls}/{i:03d}.png")
                info.size = buf.tell()
                tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def test_image_order_matches_training_loader(tmp_path):
    # --split-from indexes images in the order athe.training.data numbered them
    from athe.training.data import load_imagefolder

    archive = make_archive(tmp_path / "d.tar.gz", ["dog", "cat"], 3)
    images, _ = me.load_eval_images(archive, ["cat", "dog"])
    trained = load_imagefolder(archive, cache=False)
    assert [im.name for im in images] == trained.names
    assert [im.label for im in images] == trained.labels.tolist()
    limited, info = me.load_eval_images(archive, ["cat", "dog"], limit=4)
    assert len(limited) == 4 and info["limit"] == {"limit": 4, "seed": 0}


def test_split_from_takes_the_test_half(tmp_path):
    archive = make_archive(tmp_path / "d.tar.gz", ["cat", "dog"], 4)
    run = tmp_path / "run"
    run.mkdir()
    val = [0, 2, 3, 5, 6, 7]
    record = {"seed": 3, "classes": ["cat", "dog"], "val": val, "router": [1], "train": [4], "skipped": []}
    names = [im.name for im in me.load_eval_images(archive, ["cat", "dog"])[0]]
    # the halves router training stored are read back (these differ from what seed 3 would cut)
    (run / "split.json").write_text(json.dumps({**record, "calib": [0, 2, 3], "test": [5, 6, 7]}))
    images, info = me.load_eval_images(archive, ["cat", "dog"], split_from=run)
    assert [im.name for im in images] == [names[i] for i in [5, 6, 7]]
    assert info["split"]["test"] == 3 and info["split"]["halves"] == "stored"
    # a run written before the halves were stored: cut by the function router training uses
    (run / "split.json").write_text(json.dumps(record))
    images, info = me.load_eval_images(archive, ["cat", "dog"], split_from=run)
    _, test = val_halves(val, 3)
    assert [im.name for im in images] == [names[i] for i in test]
    assert info["split"]["test"] == 3 and info["split"]["halves"].startswith("derived")
    (run / "split.json").write_text(json.dumps({"seed": 3, "classes": ["cat", "cow"], "val": val}))
    with pytest.raises(ev.EvalError, match="differ"):
        me.load_eval_images(archive, ["cat", "dog"], split_from=run)


@pytest.fixture
def random_weights_bundle(converted_bundle: Path, tmp_path: Path) -> Path:
    """The conftest tiny bundle (seeded random weights), its manifest saying so as
    ``athe convert --random-weights`` writes it (the artifacts, and their hashes, unchanged)."""
    pytest.importorskip("ai_edge_litert")
    bundle = tmp_path / "tiny"
    shutil.copytree(converted_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["random_weights"] = True
    manifest["checkpoint"] = {**manifest["checkpoint"], "random_weights": True}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, random_weights_bundle):
    from click.testing import CliRunner

    from athe.evaluate.cli import eval_command

    labels = json.loads((random_weights_bundle / "manifest.json").read_text())["labels"]
    archive = make_archive(tmp_path / "val.tar.gz", labels[:3], 4)
    energy = tmp_path / "energy.json"
    energy.write_text(json.dumps({"simple": 0.01, "complex": 0.02, "dense": 0.03, "router": 0.001}))
    out = tmp_path / "out"
    res = CliRunner().invoke(eval_command, [
        "--bundle", str(random_weights_bundle), "--data", str(archive), "--backend", "litert", "--threads", "1",
        "--limit", "10", "--out", str(out), "--seeds", "3", "--grid", "6", "--warmup", "1",
        "--energy-per-level-json", str(energy)], terminal_width=160)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "RANDOM WEIGHTS" in res.output and "ATHE vs dense" in res.output
    data = json.loads((out / eo.EVAL_JSON).read_text())
    assert data["n_images"] == 10 and data["warnings"] and data["backend"]["backend"] == "litert"
    assert {v["status"] for v in data["verdicts"]} <= {"MET", "NOT MET"}
    # the rows are what the raw measurements say
    m = ev.Measurements.load(out / eo.MEASUREMENTS_NPZ)
    rows = {r["name"]: r for r in data["rows"]}
    for j, name in enumerate(m.level_names):
        assert rows[f"static:{name}"]["accuracy"] == pytest.approx(100.0 * m.correct[:, j].mean())
        assert rows[f"static:{name}"]["latency_mean_ms"] == pytest.approx(
            (m.preprocess_ms + m.level_ms[:, j]).mean())
    choice = routing.route(m.router_probs, [data["router"]["thresholds"][n] for n in m.level_names[:-1]])
    assert rows["athe"]["fraction"]["simple"] == pytest.approx((choice == 0).mean())
    assert rows["athe"]["energy_j"] == pytest.approx(np.array([0.01, 0.02, 0.03])[choice].mean() + 0.001)
    with open(out / eo.SWEEP_CSV) as fh:
        assert len(list(csv.DictReader(fh))) == data["sweep"]["points"] > 0
    assert Image.open(out / eo.PARETO_PNG).size[0] > 1000


def test_exit_rows_and_verdict_by_hand():
    """Two stages, four images: each row's latency is preprocess + the stages run + the gates
    asked (the file decode stays out and only enters the verdict's with-decode ratio)."""
    from athe.evaluate.exits import GATE_ROW, ExitMeasurements, exit_rows, exit_verdicts

    em = ExitMeasurements(
        stage_names=("s1", "s2"),
        correct=np.array([[True, True], [False, True], [True, True], [False, False]]),
        stage_ms=np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]),
        preprocess_ms=np.full(4, 0.1), decode_ms=np.full(4, 5.0),
        gate_scores={"max_softmax": np.array([[0.9, 1.0], [0.2, 1.0], [0.8, 1.0], [0.1, 1.0]])},
        gate_ms={"max_softmax": np.full((4, 1), 0.05)})
    rows = {r.name: r for r in exit_rows(em, [10.0, 20.0], "max_softmax", {"max_softmax": {"s1": 0.5}}, seeds=3)}
    assert rows["exit:s1"].latency_mean_ms == pytest.approx(1.1) and rows["exit:s1"].accuracy == 50.0
    assert rows["exit:s2"].latency_mean_ms == pytest.approx(3.1) and rows["exit:s2"].accuracy == 75.0
    gate = rows[GATE_ROW]  # images 0 and 2 leave at s1, 1 and 3 go on; every image asked one gate
    assert gate.fraction == {"s1": 0.5, "s2": 0.5} and gate.accuracy == 75.0
    assert gate.latency_mean_ms == pytest.approx(0.1 + 0.05 + 1.0 + 0.5 * 2.0)
    assert gate.mean_macs == pytest.approx(0.5 * 10 + 0.5 * 30)
    assert rows["oracle-exit"].accuracy == 75.0 and rows["oracle-exit"].fraction == {"s1": 0.5, "s2": 0.5}
    assert rows["random-exits"].fraction == gate.fraction
    verdict = exit_verdicts(list(rows.values()), [], em.stage_names, decode_ms=5.0)[0]
    assert verdict.numbers["latency_ratio"] == pytest.approx(2.15 / 3.1)
    assert verdict.numbers["latency_ratio_with_decode"] == pytest.approx(7.15 / 8.1)
    assert verdict.status == "NOT MET" and "with the 5.000 ms file decode" in verdict.text

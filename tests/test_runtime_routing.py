"""athe.runtime.routing and athe.runtime.split: the routing maths, exact on hand-made cases."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from athe.runtime import routing as rt
from athe.runtime.split import stored_val_halves, val_halves, with_val_halves

# 6 images, options s < m < d (levels, or exits of a chain)
SCORES = np.array([
    [0.9, 0.9, 0.0],  # 0 -> s at (0.5, 0.5)
    [0.5, 0.1, 0.0],  # 1 -> s (exactly at the threshold passes)
    [0.4, 0.7, 0.0],  # 2 -> m
    [0.1, 0.5, 0.0],  # 3 -> m
    [0.2, 0.2, 0.0],  # 4 -> d
    [0.3, 0.4, 0.0],  # 5 -> d
])
CORRECT = np.array([[1, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=bool)
NAMES = ["s", "m", "d"]


def test_route_by_hand_and_equal_to_choose_level():
    assert rt.route(SCORES, [0.5, 0.5]).tolist() == [0, 0, 1, 1, 2, 2]
    assert rt.route(SCORES, [np.inf, np.inf]).tolist() == [2] * 6
    assert rt.route(SCORES, [0.0, 0.0]).tolist() == [0] * 6
    rng = np.random.default_rng(0)
    scores = rng.choice([0.1, 0.3, 0.5, 0.7], size=(200, 3))  # many exact ties with the thresholds
    for ths in ([0.5, 0.3], [0.3, 0.7], [0.7, 0.1]):
        expected = [NAMES.index(rt.choose_level(list(row), NAMES, dict(zip(NAMES, ths, strict=False))))
                    for row in scores]
        assert rt.route(scores, ths).tolist() == expected
    with pytest.raises(ValueError, match="one per option but the last"):
        rt.route(SCORES, [0.5])


def test_oracle_outcome_and_score_accuracy():
    assert rt.oracle_choice(CORRECT).tolist() == [0, 1, 1, 2, 2, 0]
    choice = np.array([0, 0, 1, 1, 2, 2])
    # right on 0, 2, 4 (1 wrong at s, 3 wrong at m, 5 wrong at d): 50 %; cost (1+1+2+2+4+4)/6
    assert rt.route_outcome(CORRECT, [1.0, 2.0, 4.0], choice) == (pytest.approx(50.0), pytest.approx(14 / 6))
    per_image = np.tile([1.0, 2.0, 4.0], (6, 1)) + np.arange(6)[:, None]  # image i costs +i
    assert rt.route_outcome(CORRECT, per_image, choice)[1] == pytest.approx((14 + 15) / 6)
    # s: (>=0.5) = [1,1,0,0,0,0] vs [1,0,0,0,0,1] -> 4/6; m: [1,0,1,1,0,0] vs [1,1,1,0,0,1] -> 3/6
    np.testing.assert_allclose(rt.score_accuracy(SCORES, CORRECT, [0.5, 0.5]), [400 / 6, 300 / 6])
    with pytest.raises(ValueError, match=r"\[3\] per option or \[6, 3\]"):
        rt.route_outcome(CORRECT, [1.0, 2.0], choice)


def test_threshold_candidates_and_axes():
    col = np.array([0.1, 0.4, 0.7, 0.9])
    np.testing.assert_allclose(rt.threshold_candidates(col, 4), [0.1, 0.4, 0.7, 0.9, np.inf])  # exact quantiles
    np.testing.assert_allclose(rt.threshold_candidates(col, 2), [0.1, 0.9, np.inf])
    np.testing.assert_allclose(rt.threshold_candidates(np.full(5, 0.3), 11), [0.3, np.inf])  # unique
    axes = rt.candidate_axes(SCORES, grid=41, max_points=9)  # 2 thresholds: grid lowered to 3
    assert [len(a) for a in axes] == [4, 4]
    np.testing.assert_allclose(axes[0], [0.1, 0.35, 0.9, np.inf])
    assert len(rt.candidate_axes(SCORES[:, :2], grid=41, max_points=9)[0]) == 10  # 1 threshold: grid 9, + inf


def test_threshold_sweep_yields_each_outcome_once():
    scores = np.array([[0.1, 1], [0.4, 1], [0.7, 1], [0.9, 1]])
    got = [(t, c.tolist()) for t, c in rt.threshold_sweep(scores, grid=4)]
    assert got == [((0.1,), [0, 0, 0, 0]), ((0.4,), [1, 0, 0, 0]), ((0.7,), [1, 1, 0, 0]),
                   ((0.9,), [1, 1, 1, 0]), ((np.inf,), [1, 1, 1, 1])]
    outcomes = [c.tobytes() for _, c in rt.threshold_sweep(SCORES, grid=7)]
    assert len(outcomes) == len(set(outcomes))
    every = {rt.route(SCORES, ths).tobytes() for ths in itertools.product(*rt.candidate_axes(SCORES, 7))}
    assert set(outcomes) == every


def test_calibrate_to_delta_by_hand():
    # grid 6 on 6 images: the candidates are exactly each column's scores (+ inf).
    # Everything at d: 5/6 right (83.3 %), cost 4. delta 0 -> the cheapest routing at 5/6:
    # s >= 0.9, m >= 0.4: 0 -> s (right), 2, 3, 5 -> m (2, 5 right, 3 wrong), 1, 4 -> d (right)
    # = 5/6 at (1 + 3 * 2 + 2 * 4) / 6 = 15/6; every other 5/6 routing costs more (s >= 0.9 with
    # m >= 0.5: 3.17; s never, m >= 0.4: 2.67; ...), and anything cheaper is at most 4/6.
    cal = rt.calibrate(SCORES, CORRECT, NAMES, [1.0, 2.0, 4.0], delta=0.0, grid=6)
    assert cal.met and cal.accuracy == pytest.approx(500 / 6) and cal.mean_cost == pytest.approx(15 / 6)
    assert cal.thresholds == pytest.approx({"s": 0.9, "m": 0.4})
    assert cal.routed_fraction == pytest.approx({"s": 1 / 6, "m": 3 / 6, "d": 2 / 6})
    assert cal.reference_accuracy == pytest.approx(500 / 6) and cal.reference_cost == 4.0
    assert cal.level_accuracy == pytest.approx({"s": 200 / 6, "m": 400 / 6, "d": 500 / 6})
    assert cal.target == {"delta": 0.0} and cal.n == 6
    # delta 100: anything goes, so the cheapest routing: everything at s (cost 1)
    loose = rt.calibrate(SCORES, CORRECT, NAMES, [1.0, 2.0, 4.0], delta=100.0, grid=6)
    assert loose.mean_cost == 1.0 and loose.routed_fraction["s"] == 1.0


def test_calibrate_to_budget_and_unmet_target():
    # budget 2.0 (mean cost <= 2): no 5/6 routing is that cheap (the cheapest costs 2.5, above);
    # 4/6 routings within it: s >= 0.3 with m >= 0.5 (cost 2.0), s >= 0.4 with m >= 0.4 (2.0),
    # s never with m >= 0.1 (2.0) and s >= 0.9 with m >= 0.1: 0 -> s, the rest -> m, right on
    # 0, 1, 2, 5 at (1 + 5 * 2) / 6 = 11/6, the cheapest of them.
    cal = rt.calibrate(SCORES, CORRECT, NAMES, [1.0, 2.0, 4.0], budget=2.0, grid=6)
    assert cal.met and cal.accuracy == pytest.approx(400 / 6) and cal.mean_cost == pytest.approx(11 / 6)
    assert cal.thresholds == pytest.approx({"s": 0.9, "m": 0.1}) and cal.target == {"budget": 2.0}
    # per-image costs: image 0 is free at s, so the same routing costs (0 + 10) / 6
    per_image = np.tile([1.0, 2.0, 4.0], (6, 1))
    per_image[0, 0] = 0.0
    assert rt.calibrate(SCORES, CORRECT, NAMES, per_image, budget=2.0, grid=6).mean_cost == pytest.approx(10 / 6)
    # a budget below every option's cost: nothing meets it -> everything at the last option
    none = rt.calibrate(SCORES, CORRECT, NAMES, [1.0, 2.0, 4.0], budget=0.5, grid=6)
    assert not none.met and none.routed_fraction["d"] == 1.0
    assert none.thresholds == {"s": rt.NEVER, "m": rt.NEVER}
    json.dumps(none.to_dict())  # +inf is written as a number


def test_calibrate_matches_a_brute_force_search():
    rng = np.random.default_rng(3)
    n = 60
    correct = rng.random((n, 3)) < [0.5, 0.7, 0.85]
    scores = np.clip(correct + rng.normal(0, 0.6, (n, 3)), 0, 1)
    costs = np.array([1.0, 1.7, 4.0])
    for kw in ({"delta": 2.0}, {"delta": 0.0}, {"budget": 2.5}):
        cal = rt.calibrate(scores, correct, NAMES, costs, grid=9, **kw)
        results = []
        for ths in itertools.product(*rt.candidate_axes(scores, 9)):
            acc, cost = rt.route_outcome(correct, costs, rt.route(scores, ths))
            if "budget" in kw and cost <= kw["budget"]:
                results.append((-acc, cost))
            if "delta" in kw and acc >= 100.0 * correct[:, -1].mean() - kw["delta"] - 1e-9:
                results.append((cost, -acc))
        key = (-cal.accuracy, cal.mean_cost) if "budget" in kw else (cal.mean_cost, -cal.accuracy)
        assert key == pytest.approx(min(results))


def test_calibrate_exit_gate_form():
    # An exit chain: 3 exits, cost of reaching exit j = 1, 2, 3 stages (per image: the chain
    # runs 0..j); gate scores per exit, stop at the first exit whose score >= its threshold.
    gate = np.array([[0.95, 0.9, 0], [0.2, 0.8, 0], [0.6, 0.3, 0], [0.1, 0.2, 0]])
    right = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=bool)
    cal = rt.calibrate(gate, right, ["exit1", "exit2", "final"], [1.0, 2.0, 3.0], delta=0.0, grid=5)
    # 100 % needs 2 and 3 at the final exit; 0 at exit 1 and 1 at exit 2: cost (1 + 2 + 3 + 3)/4
    assert cal.accuracy == 100.0 and cal.mean_cost == pytest.approx(9 / 4)
    assert cal.routed_fraction == pytest.approx({"exit1": 0.25, "exit2": 0.25, "final": 0.5})


def test_threshold_vector_names_the_missing():
    assert rt.threshold_vector({"m": 0.2, "s": 0.1}, NAMES) == [0.1, 0.2]
    with pytest.raises(KeyError, match=r"lack level\(s\) \['m'\]"):
        rt.threshold_vector({"s": 0.1}, NAMES)


# -- the calib/test halves of a run's val split ---------------------------------------------------
def test_val_halves_decided_once():
    val = list(range(100, 111))
    calib, test = val_halves(val, seed=5)
    assert len(calib) == 5 and len(test) == 6 and sorted([*calib, *test]) == val
    assert list(calib) == sorted(calib) and list(test) == sorted(test)
    order = np.random.default_rng(5 + 7).permutation(11)  # the cut existing runs were made with
    assert test.tolist() == sorted(np.asarray(val)[order[5:]].tolist())
    record = with_val_halves({"seed": 5, "val": val, "counts": {"val": 11}})
    assert record["calib"] == calib.tolist() and record["counts"] == {"val": 11, "calib": 5, "test": 6}
    stored = {**record, "test": [100]}  # what is stored wins over what would be derived
    assert stored_val_halves(stored)[1].tolist() == [100] and stored_val_halves(stored)[2] is True
    assert stored_val_halves({"seed": 5, "val": val})[1].tolist() == test.tolist()


def test_router_training_stores_the_halves_eval_reads(tmp_path):
    pytest.importorskip("torch")
    from athe.evaluate.measure import split_test_indices
    from athe.training.router_train import store_val_halves

    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"seed": 2, "classes": ["a", "b"], "val": [3, 4, 5, 6, 7],
                                      "router": [1], "train": [0, 2], "counts": {"val": 5}}))
    record = store_val_halves(split_file)
    on_disk = json.loads(split_file.read_text())
    assert on_disk == record and on_disk["calib"] == val_halves([3, 4, 5, 6, 7], 2)[0].tolist()
    test, _, info = split_test_indices(split_file, ["a", "b"])
    assert test.tolist() == on_disk["test"] and info["halves"] == "stored"
    on_disk["test"] = [7]  # stored once: a second router run keeps them
    split_file.write_text(json.dumps(on_disk))
    assert store_val_halves(split_file)["test"] == [7]


def test_routing_and_eval_import_without_torch_training_or_convert():
    code = ("import sys\n"
            "for m in ('torch', 'athe.training', 'athe.convert'): sys.modules[m] = None\n"
            "import athe.runtime.routing, athe.runtime.split, athe.runtime.stats\n"
            "import athe.evaluate.analysis, athe.evaluate.measure, athe.evaluate.output, athe.evaluate.cli\n"
            "from click.testing import CliRunner; from athe.cli import cli\n"
            "r = CliRunner().invoke(cli, ['eval', '--help']); assert r.exit_code == 0, r.output\n"
            "assert '--split-from' in r.output\n")
    subprocess.run([sys.executable, "-c", code], check=True)

"""Exit gates: features, logistic fit, AUROC and calibration on synthetic cases (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from athe.runtime.gates import auroc, fit_logistic, gate_features, gate_score, softmax_features
from athe.runtime.manifest import GateSpec
from athe.runtime.routing import calibrate, route


def test_softmax_features_by_hand():
    f = softmax_features(np.log(np.array([[0.7, 0.2, 0.1]])))
    entropy = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert f[0] == pytest.approx([0.7, 0.5, entropy])


def test_auroc_exact_on_known_cases():
    assert auroc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.5
    # one positive ranked below one negative out of 2 x 2 pairs
    assert auroc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0])) == 0.75


def test_logistic_gate_learns_the_signal_and_scores_like_the_formula():
    rng = np.random.default_rng(0)
    cls = rng.normal(size=(4000, 8))
    logits = rng.normal(size=(4000, 5))
    right = cls[:, 3] + 0.3 * rng.normal(size=4000) > 0  # only the CLS dimension 3 matters
    feats = ("max_prob", "margin", "entropy", "cls")
    mean, std, w, b = fit_logistic(gate_features(feats, logits, cls), right)
    assert np.argmax(np.abs(w)) == 3 + 3
    gate = GateSpec(kind="logistic", features=feats, mean=tuple(mean), std=tuple(std),
                    weights=tuple(w), bias=b)
    s = gate_score(gate, logits, cls)
    z = ((gate_features(feats, logits, cls) - mean) / std) @ w + b
    assert np.allclose(s, 1 / (1 + np.exp(-z)))
    assert auroc(s, right) > 0.95
    assert gate_score(GateSpec(kind="max_softmax"), logits)[0] == pytest.approx(softmax_features(logits)[0, 0])


def test_exit_calibration_exact_on_a_synthetic_chain():
    """Three exits, costs 1/2/3: the cheapest thresholds within delta are found exactly."""
    scores = np.array([[0.9, 0.9, 1], [0.8, 0.2, 1], [0.1, 0.7, 1], [0.2, 0.1, 1]])
    correct = np.array([[1, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1]], bool)
    cal = calibrate(scores, correct, ["s1", "s2", "s3"], costs=[1, 2, 3], delta=0.0, grid=5)
    choice = route(scores, [cal.thresholds["s1"], cal.thresholds["s2"]])
    assert choice.tolist() == [0, 1, 1, 2]  # image 1 must not exit at s1 (wrong there)
    assert cal.accuracy == 100.0 and cal.mean_cost == pytest.approx((1 + 2 + 2 + 3) / 4)


def test_compiled_gate_equals_gate_score():
    from athe.runtime.gates import CompiledGate

    rng = np.random.default_rng(1)
    logits, cls = rng.normal(size=(50, 10)) * 3, rng.normal(size=(50, 16))
    feats = ("max_prob", "margin", "entropy", "cls")
    right = rng.random(50) < 0.6
    mean, std, w, b = fit_logistic(gate_features(feats, logits, cls), right)
    for gate in (GateSpec(kind="logistic", features=feats, mean=tuple(mean), std=tuple(std),
                          weights=tuple(w), bias=b),
                 GateSpec(kind="logistic", features=("entropy", "max_prob"), mean=(1.0, 0.5),
                          std=(0.5, 0.2), weights=(-1.0, 2.0), bias=0.1),
                 GateSpec(kind="max_softmax")):
        ref = gate_score(gate, logits, cls)
        fast = CompiledGate(gate)
        got = [fast.score(logits[i], cls[i]) for i in range(50)]
        assert np.allclose(got, ref, atol=1e-12)
    # past PYTHON_SOFTMAX_MAX classes the score is computed with numpy: the same numbers
    from athe.runtime.gates import PYTHON_SOFTMAX_MAX

    many = rng.normal(size=(5, PYTHON_SOFTMAX_MAX + 1)) * 3
    gate = GateSpec(kind="logistic", features=("entropy", "max_prob", "margin"), mean=(1.0, 0.5, 0.2),
                    std=(0.5, 0.2, 0.1), weights=(-1.0, 2.0, 0.5), bias=0.1)
    for g in (gate, GateSpec(kind="max_softmax")):
        assert np.allclose([CompiledGate(g).score(v) for v in many], gate_score(g, many), atol=1e-12)


def test_confidence_margin_rejects_thresholds_that_meet_delta_only_by_luck():
    """Exit 0 is wrong on 1 of 100 images where the last exit is right (loss 1.0 pt = delta):
    the point estimate takes exit 0 for all; with z = 1.645 the loss's upper bound (1 + 1.645 *
    SE) exceeds delta, so the image with the low score goes on."""
    n = 100
    correct = np.ones((n, 2), bool)
    correct[0, 0] = False
    scores = np.ones((n, 2))
    scores[0, 0] = 0.1  # the wrong image has the lowest gate score
    plain = calibrate(scores, correct, ["s1", "s2"], costs=[1, 2], delta=1.0, grid=101)
    assert plain.routed_fraction["s1"] == 1.0 and plain.accuracy == 99.0
    safe = calibrate(scores, correct, ["s1", "s2"], costs=[1, 2], delta=1.0, grid=101, confidence_z=1.645)
    assert safe.routed_fraction["s1"] == pytest.approx(0.99) and safe.accuracy == 100.0

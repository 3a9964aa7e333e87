"""Threshold calibration for the router (pure numpy: also used by ``athe eval``).

Given router probabilities ``P [N, L]`` and per-level correctness ``C [N, L]`` on a validation
split, choose one threshold per level except the last so that routed accuracy stays within
``delta`` points of the richest level at the lowest mean cost, or so that mean cost stays
under a budget at the highest accuracy. Costs are MACs or measured latencies per level.

Example::

    >>> import numpy as np
    >>> from athe.training.calibrate import calibrate
    >>> P = np.array([[0.9, 1.0], [0.2, 1.0]]); C = np.array([[1, 1], [0, 1]], bool)
    >>> calibrate(P, C, ["simple", "dense"], costs=[1.0, 2.0], delta=0.0).thresholds
    {'simple': 0.9}
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np


def route(probs: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Level index per image: first level whose probability passes its threshold, else the last.

    Args:
        probs: ``[N, L]`` router probabilities.
        thresholds: ``L - 1`` thresholds (the last level is the fallback).
    """
    n, L = probs.shape
    choice = np.full(n, L - 1, dtype=np.int64)
    undecided = np.ones(n, dtype=bool)
    for j, t in enumerate(thresholds):
        hit = undecided & (probs[:, j] >= t)
        choice[hit] = j
        undecided &= ~hit
    return choice


@dataclass
class Calibration:
    thresholds: dict[str, float]
    accuracy: float  # routed top-1 (%)
    reference_accuracy: float  # richest level's top-1 (%)
    mean_cost: float
    reference_cost: float
    routed_fraction: dict[str, float]
    level_accuracy: dict[str, float]
    target: dict
    met: bool
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_thresholds(probs: np.ndarray, correct: np.ndarray, costs: np.ndarray,
                        thresholds: list[float]) -> tuple[float, float, np.ndarray]:
    """``(accuracy %, mean cost, choice [N])`` of routing with ``thresholds``."""
    choice = route(probs, thresholds)
    acc = 100.0 * correct[np.arange(len(choice)), choice].mean()
    return float(acc), float(costs[choice].mean()), choice


def _candidates(col: np.ndarray, n: int) -> np.ndarray:
    qs = np.unique(np.quantile(col, np.linspace(0.0, 1.0, n)))
    return np.concatenate([qs, [np.inf]])  # inf = never take this level


def calibrate(probs: np.ndarray, correct: np.ndarray, level_names: list[str], costs: list[float],
              delta: float = 1.0, budget: float | None = None, grid: int = 41) -> Calibration:
    """Choose thresholds (grid over per-level probability quantiles, exhaustive).

    Args:
        probs: ``[N, L]`` router probabilities, levels cheapest first.
        correct: ``[N, L]`` bool, level ``j`` classifies image ``i`` correctly.
        level_names: ``L`` names.
        costs: ``L`` per-image costs (MACs or ms).
        delta: allowed accuracy loss in points vs the richest level (ignored with ``budget``).
        budget: if set, maximise accuracy subject to mean cost ``<= budget``.
        grid: candidate thresholds per level.
    """
    probs = np.asarray(probs, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    cost_arr = np.asarray(costs, dtype=np.float64)
    L = probs.shape[1]
    if correct.shape != probs.shape or len(level_names) != L or len(cost_arr) != L:
        raise ValueError("probs, correct, level_names and costs must agree on the number of levels")
    ref_acc = 100.0 * correct[:, -1].mean()
    best: tuple | None = None
    for ths in itertools.product(*[_candidates(probs[:, j], grid) for j in range(L - 1)]):
        acc, cost, _ = evaluate_thresholds(probs, correct, cost_arr, list(ths))
        ok = cost <= budget if budget is not None else acc >= ref_acc - delta - 1e-9
        if not ok:
            continue
        key = (-acc, cost) if budget is not None else (cost, -acc)
        if best is None or key < best[0]:
            best = (key, ths, acc, cost)
    met = best is not None
    if best is None:  # nothing meets the target: fall back to always-richest, say so
        ths = tuple([np.inf] * (L - 1))
        acc, cost, _ = evaluate_thresholds(probs, correct, cost_arr, list(ths))
        best = ((0, 0), ths, acc, cost)
    _, ths, acc, cost = best
    choice = route(probs, list(ths))
    return Calibration(
        thresholds={level_names[j]: float(min(t, 1e9)) for j, t in enumerate(ths)},
        accuracy=acc, reference_accuracy=float(ref_acc), mean_cost=cost,
        reference_cost=float(cost_arr[-1]),
        routed_fraction={n: float((choice == j).mean()) for j, n in enumerate(level_names)},
        level_accuracy={n: float(100.0 * correct[:, j].mean()) for j, n in enumerate(level_names)},
        target={"budget": budget} if budget is not None else {"delta": delta},
        met=met, n=len(probs),
    )

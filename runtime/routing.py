"""Routing maths in one place (numpy only, torch-free): the rule, its vectorised form, threshold
candidates and calibration. Router training (``athe.training``), ``athe eval`` and the dispatcher
all call these functions.

The form is generic, so that any "cheapest first, stop when confident" policy can use it:

* ``K`` *options*, cheapest first: a bundle's levels (the router policy) or, later, a chain's
  exits (an exit-gate policy). The last option is the fallback and has no threshold.
* ``scores [N, K]``: per image, a score per option (the router's probability that the level is
  right; an exit gate's score). The last column is never compared.
* ``correct [N, K]``: per image, whether each option classifies it correctly.
* ``costs``: per option ``[K]`` (MACs, ms, J; for exits the cost of reaching that exit), or per
  image and option ``[N, K]`` (measured latencies).

The rule (``route``; ``choose_level`` is its one-image form, the bundle contract shared with the
phone demo): take the first option ``j < K - 1`` whose score is ``>= thresholds[j]``, else the
last option. ``calibrate`` picks the thresholds on a calibration set, to an accuracy target
(within ``delta`` points of the last option, at the lowest mean cost) or to a budget (mean cost
``<= budget``, at the highest accuracy), exhaustively over per-option score quantiles.

Example::

    >>> import numpy as np
    >>> from athe.runtime.routing import calibrate, route
    >>> scores = np.array([[0.9, 1.0], [0.2, 1.0]]); correct = np.array([[1, 1], [0, 1]], bool)
    >>> route(scores, [0.5]).tolist()
    [0, 1]
    >>> calibrate(scores, correct, ["simple", "dense"], costs=[1.0, 2.0], delta=0.0, grid=2).thresholds
    {'simple': 0.9}
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .manifest import choose_level

__all__ = [
    "Calibration", "calibrate", "candidate_axes", "choose_level", "oracle_choice", "route",
    "route_outcome", "score_accuracy", "threshold_candidates", "threshold_sweep", "threshold_vector",
]

#: A threshold of +inf (the option is never taken) is written as this number in JSON records.
NEVER = 1e9


def threshold_vector(thresholds: Mapping[str, float], option_names: Sequence[str]) -> list[float]:
    """Thresholds in option order (every option but the last).

    Raises:
        KeyError: an option other than the last has no threshold (the message names them).
    """
    missing = [n for n in option_names[:-1] if n not in thresholds]
    if missing:
        raise KeyError(f"thresholds lack level(s) {missing}; give one per level except the last "
                       f"({', '.join(option_names[:-1])})")
    return [float(thresholds[n]) for n in option_names[:-1]]


def route(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """``[N]`` option index per image: the first option whose score passes its threshold, else the last.

    Args:
        scores: ``[N, K]`` per-option scores.
        thresholds: ``K - 1`` thresholds (the last option is the fallback).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n, k = scores.shape
    if len(thresholds) != k - 1:
        raise ValueError(f"{len(thresholds)} thresholds for {k} options; give one per option but the last")
    choice = np.full(n, k - 1, dtype=np.int64)
    undecided = np.ones(n, dtype=bool)
    for j, t in enumerate(thresholds):
        hit = undecided & (scores[:, j] >= t)
        choice[hit] = j
        undecided &= ~hit
    return choice


def oracle_choice(correct: np.ndarray) -> np.ndarray:
    """``[N]`` cheapest option that is right per image, else the last."""
    correct = np.asarray(correct, dtype=bool)
    return np.where(correct.any(axis=1), np.argmax(correct, axis=1), correct.shape[1] - 1).astype(np.int64)


def _cost_matrix(costs: Sequence[float] | np.ndarray, n: int, k: int) -> np.ndarray:
    arr = np.asarray(costs, dtype=np.float64)
    if arr.shape == (k,):
        return np.broadcast_to(arr, (n, k))
    if arr.shape == (n, k):
        return arr
    raise ValueError(f"costs must be [{k}] per option or [{n}, {k}] per image and option, got {arr.shape}")


def route_outcome(correct: np.ndarray, costs: Sequence[float] | np.ndarray,
                  choice: np.ndarray) -> tuple[float, float]:
    """``(accuracy %, mean cost)`` of sending image ``i`` to option ``choice[i]``."""
    correct = np.asarray(correct, dtype=bool)
    n, k = correct.shape
    idx = np.arange(n)
    cost = _cost_matrix(costs, n, k)[idx, choice]
    return float(100.0 * correct[idx, choice].mean()), float(cost.mean())


def score_accuracy(scores: np.ndarray, correct: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per option, % of images where ``score >= threshold`` agrees with "the option is right".

    ``thresholds`` may cover every option (e.g. ``0.5`` each, as router training reports it) or
    the first ``len(thresholds)`` options.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    t = np.asarray(thresholds, dtype=np.float64)
    k = len(t)
    return 100.0 * ((scores[:, :k] >= t) == correct[:, :k]).mean(axis=0)


def threshold_candidates(scores: np.ndarray, grid: int) -> np.ndarray:
    """Candidate thresholds of one option: unique quantiles of its scores at ``grid`` evenly
    spaced levels, plus +inf. The 0-quantile sends every image there; +inf sends none."""
    qs = np.unique(np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0.0, 1.0, grid)))
    return np.concatenate([qs, [np.inf]])


def candidate_axes(scores: np.ndarray, grid: int = 41, max_points: int | None = None) -> list[np.ndarray]:
    """Candidate thresholds per option but the last.

    Args:
        grid: quantile levels per option; with ``max_points``, lowered (to at least 2) so that
            ``grid ** (K - 1) <= max_points``.
    """
    k = np.asarray(scores).shape[1]
    if max_points is not None:
        grid = max(2, min(grid, int(max_points ** (1.0 / max(1, k - 1)))))
    return [threshold_candidates(np.asarray(scores)[:, j], grid) for j in range(k - 1)]


def threshold_sweep(scores: np.ndarray, grid: int = 41, max_points: int | None = None
                    ) -> Iterator[tuple[tuple[float, ...], np.ndarray]]:
    """Every distinct routing outcome over the product of the candidate axes.

    Yields:
        ``(thresholds, choice [N])`` once per distinct ``choice``, with the first thresholds (in
        product order, cheapest option's axis slowest) that produce it.
    """
    seen: set[bytes] = set()
    for ths in itertools.product(*candidate_axes(scores, grid, max_points)):
        choice = route(scores, ths)
        key = choice.tobytes()
        if key not in seen:
            seen.add(key)
            yield tuple(float(t) for t in ths), choice


@dataclass
class Calibration:
    """Thresholds chosen on a calibration set and what they give there.

    Attributes:
        thresholds: per option but the last (+inf, "never", written as ``NEVER``).
        accuracy: routed top-1 (%); ``reference_accuracy``: the last option's.
        mean_cost: routed mean cost; ``reference_cost``: the last option's.
        routed_fraction / level_accuracy: per option, share of images sent there / its top-1 (%).
        target: ``{"delta": d}`` or ``{"budget": b}``.
        met: the target was met (else the thresholds send everything to the last option).
        n: images.
    """

    thresholds: dict[str, float]
    accuracy: float
    reference_accuracy: float
    mean_cost: float
    reference_cost: float
    routed_fraction: dict[str, float]
    level_accuracy: dict[str, float]
    target: dict
    met: bool
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(scores: np.ndarray, correct: np.ndarray, option_names: Sequence[str],
              costs: Sequence[float] | np.ndarray, delta: float = 1.0, budget: float | None = None,
              grid: int = 41, confidence_z: float = 0.0) -> Calibration:
    """Choose thresholds (exhaustive over every option's score quantiles).

    Args:
        scores: ``[N, K]`` per-option scores, options cheapest first.
        correct: ``[N, K]`` bool, option ``j`` classifies image ``i`` correctly.
        option_names: ``K`` names.
        costs: ``[K]`` per option or ``[N, K]`` per image and option.
        delta: allowed accuracy loss in points vs the last option (ignored with ``budget``):
            the cheapest thresholds whose accuracy is ``>= reference - delta``.
        budget: if set, the most accurate thresholds whose mean cost is ``<= budget``.
        grid: candidate thresholds per option.
        confidence_z: with ``delta``, require the accuracy loss to stay within ``delta`` by
            ``confidence_z`` standard errors of the per-image paired difference (e.g. 1.645: a
            one-sided 95 % bound), so thresholds that meet the target only by the calibration
            set's luck are not chosen. 0 (default): the plain point estimate.

    Ties are broken by the first thresholds in ``threshold_sweep`` order. When nothing meets the
    target, every image goes to the last option and ``met`` is False.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n, k = scores.shape
    if correct.shape != scores.shape or len(option_names) != k:
        raise ValueError("scores, correct, option_names and costs must agree on the number of options")
    cost = _cost_matrix(costs, n, k)
    ref_acc = float(100.0 * correct[:, -1].mean())
    best: tuple | None = None
    for ths, choice in threshold_sweep(scores, grid):
        acc, mean_cost = route_outcome(correct, cost, choice)
        if budget is not None:
            ok = mean_cost <= budget
        else:
            ok = acc >= ref_acc - delta - 1e-9
            if ok and confidence_z > 0:
                d = correct[np.arange(n), choice].astype(np.float64) - correct[:, -1]
                se = 100.0 * float(d.std(ddof=1)) / np.sqrt(n) if n > 1 else 0.0
                ok = (acc - ref_acc) - confidence_z * se >= -delta - 1e-9  # loss's upper bound <= delta
        if not ok:
            continue
        key = (-acc, mean_cost) if budget is not None else (mean_cost, -acc)
        if best is None or key < best[0]:
            best = (key, ths, acc, mean_cost, choice)
    met = best is not None
    if best is None:  # nothing meets the target: fall back to always the last option, say so
        ths = tuple([np.inf] * (k - 1))
        choice = route(scores, ths)
        best = (None, ths, *route_outcome(correct, cost, choice), choice)
    _, ths, acc, mean_cost, choice = best
    return Calibration(
        thresholds={option_names[j]: float(min(t, NEVER)) for j, t in enumerate(ths)},
        accuracy=acc, reference_accuracy=ref_acc, mean_cost=mean_cost,
        reference_cost=float(cost[:, -1].mean()),
        routed_fraction={name: float((choice == j).mean()) for j, name in enumerate(option_names)},
        level_accuracy={name: float(100.0 * correct[:, j].mean()) for j, name in enumerate(option_names)},
        target={"budget": budget} if budget is not None else {"delta": delta},
        met=met, n=n,
    )

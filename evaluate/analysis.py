"""``athe eval`` analysis: every row, the threshold sweep and the verdicts from measured arrays.

Pure numpy: nothing here runs a model or opens a bundle (that is :mod:`athe.evaluate.measure`);
the routing maths is :mod:`athe.runtime.routing` and latency percentiles
:func:`athe.runtime.stats.summarize_latency`, both numpy-only.

Every image was measured once: the router and *every* level ran on it, and the evaluation
keeps, per image, the router probabilities ``[N, L]``, each level's correctness ``[N, L]`` and
measured latency ``[N, L]``, the router latency ``[N]`` and the preprocessing time ``[N]``
(resize + normalise of the decoded pixels; the file decode is timed apart and left out of the
rows, since camera frames arrive decoded). Every row, the sweep and the verdicts are computed *post hoc*
from these arrays by choosing one level per image (``athe.runtime.routing.route``): no model is
re-run per policy, and all rows are on the same images with the same timings.

Per-image latency of a row = preprocessing + that image's measured latency of the level the
row chose + the router's latency on that image when the row runs the router (ATHE rows). Mean
MACs = the chosen levels' MACs from the manifest (+ the router's MACs for ATHE rows).

Rows: ``dense`` (the level that keeps every token and head), ``static:<level>`` for every level
(the EViT-style fixed keep ratio baselines), ``always-cheapest``, ``always-richest``,
``random`` (the router's per-level fractions, images assigned by seeded permutations, mean and
std over seeds, plus the exact expectation), ``oracle`` (cheapest level that is right, else the
richest; pays no router), ``athe`` (router at the bundle's calibrated thresholds).

Example (on arrays you already have, e.g. in a test)::

    >>> from athe.evaluate.analysis import Costs, Measurements, evaluate
    >>> result = evaluate(measurements, Costs(level_macs=(1e6, 4e6), router_macs=1e5),
    ...                   thresholds={"simple": 0.6})
    >>> for v in result.verdicts:
    ...     print(v.status, v.claim, v.text)        # MET / NOT MET / N/A, with the numbers
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from athe.runtime.routing import (
    oracle_choice,
    route,
    score_accuracy,
    threshold_sweep,
    threshold_vector,
)
from athe.runtime.stats import summarize_latency

#: Targets the verdicts check (the issue's claims).
TARGET_LATENCY_RATIO = 0.5  # ATHE mean latency <= 0.5x dense ...
TARGET_MAX_LOSS_PT = 1.0  # ... at <= 1 point top-1 loss
TARGET_ORACLE_GAP_PT = 0.5  # ATHE within 0.5 point of the oracle
_EPS = 1e-9  # float slack for the "<=" targets


class EvalError(ValueError):
    """Data, split or settings that cannot be evaluated; the message says the fix."""


# ---------------------------------------------------------------------------------------------
# What is measured once per image


@dataclass
class Measurements:
    """Everything measured per image; rows are derived from these arrays only.

    Attributes:
        level_names: levels, cheapest first.
        correct: ``[N, L]`` bool, level ``j`` classifies image ``i`` correctly.
        level_ms: ``[N, L]`` measured latency of level ``j`` on image ``i`` (ms).
        preprocess_ms: ``[N]`` resize + normalise of the decoded pixels (ms).
        decode_ms: ``[N]`` decoding the file (ms; optional, not in any row's latency).
        router_probs: ``[N, L]`` router probability that each level is right (None: no router).
        router_ms: ``[N]`` router latency (ms; None: no router).
        predictions: ``[N, L]`` predicted class per level (optional, for the record).
        targets: ``[N]`` true class index into the bundle's labels (optional).
        names: image names (optional).
    """

    level_names: tuple[str, ...]
    correct: np.ndarray
    level_ms: np.ndarray
    preprocess_ms: np.ndarray
    router_probs: np.ndarray | None = None
    router_ms: np.ndarray | None = None
    predictions: np.ndarray | None = None
    targets: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    decode_ms: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.level_names = tuple(self.level_names)
        self.correct = np.asarray(self.correct, dtype=bool)
        self.level_ms = np.asarray(self.level_ms, dtype=np.float64)
        self.preprocess_ms = np.asarray(self.preprocess_ms, dtype=np.float64)
        n, L = self.correct.shape
        if L != len(self.level_names) or self.level_ms.shape != (n, L) or self.preprocess_ms.shape != (n,):
            raise EvalError(f"measurements disagree: correct {self.correct.shape}, level_ms "
                            f"{self.level_ms.shape}, preprocess_ms {self.preprocess_ms.shape}, "
                            f"{len(self.level_names)} levels")
        if n == 0:
            raise EvalError("no images were measured; check --data / --split-from / --limit")
        if (self.router_probs is None) != (self.router_ms is None):
            raise EvalError("router_probs and router_ms come together (both or neither)")
        if self.router_probs is not None:
            self.router_probs = np.asarray(self.router_probs, dtype=np.float64)
            self.router_ms = np.asarray(self.router_ms, dtype=np.float64)
            if self.router_probs.shape != (n, L) or self.router_ms.shape != (n,):
                raise EvalError(f"router_probs {self.router_probs.shape} / router_ms "
                                f"{self.router_ms.shape} must be [{n}, {L}] / [{n}]")

    @property
    def n(self) -> int:
        return int(self.correct.shape[0])

    @property
    def has_router(self) -> bool:
        return self.router_probs is not None

    def save(self, path: Path) -> Path:
        """Write the raw arrays as ``.npz`` (re-analysis without re-running models)."""
        # values typed Any: numpy's stub would let **arrays bind savez's allow_pickle: bool
        arrays: dict[str, Any] = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
        np.savez_compressed(path, level_names=np.asarray(self.level_names), names=np.asarray(self.names),
                            **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Measurements:
        with np.load(path, allow_pickle=False) as z:
            kw: dict[str, Any] = {k: z[k] for k in z.files if k not in ("level_names", "names")}
            return cls(level_names=tuple(str(s) for s in z["level_names"]),
                       names=[str(s) for s in z["names"]], **kw)


@dataclass(frozen=True)
class Costs:
    """Per-level costs from the manifest (and an optional energy table).

    Attributes:
        level_macs: ``L`` MACs per image per level.
        router_macs: MACs of one router run.
        level_energy_j: ``L`` net J/image per level (None: no energy numbers).
        router_energy_j: net J of one router run (None: not given; routed rows then exclude it).
    """

    level_macs: tuple[float, ...]
    router_macs: float = 0.0
    level_energy_j: tuple[float, ...] | None = None
    router_energy_j: float | None = None


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class Row:
    """One line of the results table (all rows on the same images).

    Attributes:
        name: ``dense``, ``static:<level>``, ``always-cheapest``, ``always-richest``,
            ``random``, ``oracle`` or ``athe``.
        routed: the router runs (its latency, MACs and energy are charged).
        accuracy: top-1 (%) over all images.
        fraction: share of images per level.
        group_accuracy: top-1 (%) among the images sent to each level (None: no image).
        latency_*: per-image latency (ms): preprocess + chosen level (+ router).
        router_share: router ms / total ms over all images.
        energy_j: mean net J/image (None without energy numbers).
        accuracy_std / latency_mean_std_ms: spread over seeds (``random`` only).
        expected: exact expectations over random assignments (``random`` only).
    """

    name: str
    description: str
    routed: bool
    accuracy: float
    fraction: dict[str, float]
    group_accuracy: dict[str, float | None]
    mean_macs: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    router_share: float
    energy_j: float | None = None
    energy_note: str | None = None
    accuracy_std: float | None = None
    latency_mean_std_ms: float | None = None
    seeds: int | None = None
    expected: dict[str, float] | None = None


def row_for_choice(name: str, description: str, m: Measurements, costs: Costs, choice: np.ndarray,
                   routed: bool) -> Row:
    """The row of a policy that sent image ``i`` to level ``choice[i]``.

    Args:
        choice: ``[N]`` level index per image.
        routed: charge the router's latency, MACs and energy.
    """
    idx = np.arange(m.n)
    hit = m.correct[idx, choice]
    latency = m.preprocess_ms + m.level_ms[idx, choice]
    router_total = 0.0
    if routed:
        if m.router_ms is None:
            raise EvalError(f"row {name!r} runs the router but the bundle has none")
        latency = latency + m.router_ms
        router_total = float(m.router_ms.sum())
    fraction, group = {}, {}
    for j, level in enumerate(m.level_names):
        sel = choice == j
        fraction[level] = float(sel.mean())
        group[level] = float(100.0 * hit[sel].mean()) if sel.any() else None
    macs = float(np.asarray(costs.level_macs, dtype=np.float64)[choice].mean())
    macs += float(costs.router_macs) if routed else 0.0
    energy, note = _energy(costs, choice, routed)
    lat = summarize_latency(latency / 1e3)
    return Row(name=name, description=description, routed=routed, accuracy=float(100.0 * hit.mean()),
               fraction=fraction, group_accuracy=group, mean_macs=macs,
               latency_mean_ms=lat.mean_ms, latency_p50_ms=lat.p50_ms, latency_p90_ms=lat.p90_ms,
               router_share=router_total / float(latency.sum()) if latency.sum() > 0 else 0.0,
               energy_j=energy, energy_note=note)


def _energy(costs: Costs, choice: np.ndarray, routed: bool) -> tuple[float | None, str | None]:
    if costs.level_energy_j is None:
        return None, None
    energy = float(np.asarray(costs.level_energy_j, dtype=np.float64)[choice].mean())
    if not routed:
        return energy, None
    if costs.router_energy_j is None:
        return energy, "router energy not given: excluded"
    return energy + float(costs.router_energy_j), None


def dense_level_index(keep: Sequence[Sequence[Any]], heads: Sequence[int]) -> int | None:
    """Index of the dense level: keeps every token (empty keep schedule) with the most heads.

    Args:
        keep: per level, its keep schedule.
        heads: per level, its head count.

    Returns:
        The richest such level, or None when every level drops tokens or heads.
    """
    top = max(heads)
    dense = [j for j in range(len(heads)) if len(keep[j]) == 0 and heads[j] == top]
    return dense[-1] if dense else None


def exact_counts(fraction: Sequence[float], n: int) -> np.ndarray:
    """Images per level for the given shares of ``n`` (largest remainders; sums to ``n``)."""
    raw = np.asarray(fraction, dtype=np.float64) * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def random_rows(m: Measurements, costs: Costs, fraction: Sequence[float], seeds: int = 20,
                name: str = "random", description: str = "") -> Row:
    """Random routing at fixed per-level shares, averaged over ``seeds`` seeded assignments.

    Each seed ``s`` permutes the images with ``numpy.random.default_rng(s)`` and sends the
    first ``counts[0]`` to level 0, the next ``counts[1]`` to level 1, ... (exact shares, as
    the router produced them). The router is not run. ``expected`` holds the exact expectation
    over all assignments: top-1 = ``sum_j f_j acc_j``, mean latency = ``sum_j f_j lat_j``.
    """
    if seeds < 1:
        raise EvalError(f"random routing needs at least 1 seed, got {seeds}")
    counts = exact_counts(fraction, m.n)
    base = np.repeat(np.arange(len(counts)), counts)
    per_seed = []
    for seed in range(seeds):
        choice = np.empty(m.n, dtype=np.int64)
        choice[np.random.default_rng(seed).permutation(m.n)] = base
        per_seed.append(row_for_choice(name, description, m, costs, choice, routed=False))
    shares = counts / m.n
    level_acc = 100.0 * m.correct.mean(axis=0)
    level_lat = m.preprocess_ms.mean() + m.level_ms.mean(axis=0)
    expected = {"accuracy": float(shares @ level_acc), "latency_mean_ms": float(shares @ level_lat),
                "mean_macs": float(shares @ np.asarray(costs.level_macs, dtype=np.float64))}
    group = {}
    for level in m.level_names:
        values = [a for r in per_seed if (a := r.group_accuracy[level]) is not None]
        group[level] = float(np.mean(values)) if values else None
    acc = np.array([r.accuracy for r in per_seed])
    lat = np.array([r.latency_mean_ms for r in per_seed])
    first = per_seed[0]
    return Row(name=name, description=description, routed=False, accuracy=float(acc.mean()),
               fraction=first.fraction, group_accuracy=group, mean_macs=first.mean_macs,
               latency_mean_ms=float(lat.mean()),
               latency_p50_ms=float(np.mean([r.latency_p50_ms for r in per_seed])),
               latency_p90_ms=float(np.mean([r.latency_p90_ms for r in per_seed])),
               router_share=0.0, energy_j=first.energy_j, energy_note=first.energy_note,
               accuracy_std=float(acc.std(ddof=1)) if seeds > 1 else 0.0,
               latency_mean_std_ms=float(lat.std(ddof=1)) if seeds > 1 else 0.0,
               seeds=seeds, expected=expected)


def threshold_list(thresholds: Mapping[str, float], level_names: Sequence[str]) -> list[float]:
    """Thresholds in level order (all levels but the last); a missing one raises EvalError."""
    try:
        return threshold_vector(thresholds, level_names)
    except KeyError as exc:
        raise EvalError(exc.args[0]) from None


def build_rows(m: Measurements, costs: Costs, thresholds: Mapping[str, float] | None,
               dense_index: int | None = None, seeds: int = 20) -> list[Row]:
    """All rows of the table (see the module docstring), in display order.

    Args:
        thresholds: the calibrated thresholds (None: no router, so no ``athe``/``random`` rows).
        dense_index: the dense level (None: the bundle has none; the row is left out).
    """
    names, n, L = m.level_names, m.n, len(m.level_names)
    rows = []
    if dense_index is not None:
        rows.append(row_for_choice("dense", f"every image at the dense level {names[dense_index]!r}", m,
                                   costs, np.full(n, dense_index), routed=False))
    for j, level in enumerate(names):
        rows.append(row_for_choice(f"static:{level}", f"every image at level {level!r} (static keep)",
                                   m, costs, np.full(n, j), routed=False))
    rows.append(row_for_choice("always-cheapest", f"every image at the cheapest level {names[0]!r}", m,
                               costs, np.zeros(n, dtype=np.int64), routed=False))
    rows.append(row_for_choice("always-richest", f"every image at the richest level {names[-1]!r}", m,
                               costs, np.full(n, L - 1), routed=False))
    athe = None
    if thresholds is not None and m.has_router:
        assert m.router_probs is not None
        choice = route(m.router_probs, threshold_list(thresholds, names))
        athe = row_for_choice("athe", "router at the bundle's calibrated thresholds", m, costs, choice,
                              routed=True)
        rows.append(random_rows(m, costs, [athe.fraction[x] for x in names], seeds=seeds,
                                description=f"seeded random routing at the router's fractions "
                                            f"(mean of {seeds} seeds), no router"))
    rows.append(row_for_choice("oracle", "cheapest level that is right, else the richest (upper "
                               "bound, no router)", m, costs, oracle_choice(m.correct), routed=False))
    if athe is not None:
        rows.append(athe)
    return rows


def router_stats(m: Measurements, thresholds: Mapping[str, float]) -> dict[str, Any]:
    """How well the router predicts the oracle labels (per-level correctness).

    Returns:
        ``accuracy_at_0.5``: per level, % of images where ``p >= 0.5`` equals "level is right"
        (as training reports it); ``accuracy_at_threshold``: the same at the calibrated
        threshold (levels that have one); ``positive_rate``: % of images each level is right
        on; ``oracle_agreement``: % of images routed to the oracle's level; ``mean_ms``.
    """
    assert m.router_probs is not None and m.router_ms is not None
    names = m.level_names
    ths = threshold_list(thresholds, names)
    at_half = dict(zip(names, score_accuracy(m.router_probs, m.correct, [0.5] * len(names)).tolist(),
                       strict=True))
    at_t = dict(zip(names[:-1], score_accuracy(m.router_probs, m.correct, ths).tolist(), strict=True))
    choice = route(m.router_probs, ths)
    return {"thresholds": dict(zip(names[:-1], ths, strict=True)), "accuracy_at_0.5": at_half,
            "accuracy_at_threshold": at_t,
            "positive_rate": {n: float(100.0 * m.correct[:, j].mean()) for j, n in enumerate(names)},
            "oracle_agreement": float(100.0 * (choice == oracle_choice(m.correct)).mean()),
            "mean_ms": float(m.router_ms.mean())}


# ---------------------------------------------------------------------------------------------
# Threshold sweep


@dataclass(frozen=True)
class SweepPoint:
    """ATHE routing at one set of thresholds."""

    thresholds: dict[str, float]
    accuracy: float
    latency_mean_ms: float
    mean_macs: float
    fraction: dict[str, float]
    energy_j: float | None = None
    pareto_latency: bool = False
    pareto_macs: bool = False


def pareto_mask(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """``[P]`` bool: no other point is at most as costly and more accurate (ties: first kept)."""
    order = np.lexsort((-accuracy, cost))
    mask = np.zeros(len(cost), dtype=bool)
    best = -np.inf
    for i in order:
        if accuracy[i] > best:
            mask[i] = True
            best = accuracy[i]
    return mask


def sweep_thresholds(m: Measurements, costs: Costs, grid: int = 41, max_points: int = 20_000
                     ) -> list[SweepPoint]:
    """Route at every combination of per-level threshold candidates (jointly for 3+ levels).

    Args:
        grid: quantile levels per threshold; lowered so that ``grid ** (L - 1) <= max_points``.

    Returns:
        One point per distinct routing outcome, with Pareto flags (accuracy vs mean latency and
        vs mean MACs).
    """
    assert m.router_probs is not None
    points = []
    for ths, choice in threshold_sweep(m.router_probs, grid, max_points):
        row = row_for_choice("sweep", "", m, costs, choice, routed=True)
        points.append(SweepPoint(dict(zip(m.level_names[:-1], ths, strict=True)), row.accuracy,
                                 row.latency_mean_ms, row.mean_macs, row.fraction, row.energy_j))
    acc = np.array([p.accuracy for p in points])
    on_lat = pareto_mask(np.array([p.latency_mean_ms for p in points]), acc)
    on_macs = pareto_mask(np.array([p.mean_macs for p in points]), acc)
    return [SweepPoint(**{**asdict(p), "pareto_latency": bool(a), "pareto_macs": bool(b)})
            for p, a, b in zip(points, on_lat, on_macs, strict=True)]


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class Verdict:
    """One claim checked against the numbers.

    Attributes:
        met: True / False, or None when it cannot be checked (the reason is in ``text``).
    """

    name: str
    claim: str
    target: str
    met: bool | None
    text: str
    numbers: dict[str, Any]

    @property
    def status(self) -> str:
        return "N/A" if self.met is None else ("MET" if self.met else "NOT MET")


def interpolate(points: Sequence[tuple[float, float]], x: float) -> tuple[float, bool]:
    """Piecewise-linear ``y`` at ``x`` through ``(x, y)`` points sorted by ``x``.

    Returns:
        ``(y, outside)``: outside the points' range ``y`` is the nearest end's value and
        ``outside`` is True.
    """
    xs = np.array([p[0] for p in points], dtype=np.float64)
    ys = np.array([p[1] for p in points], dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    return float(np.interp(x, xs, ys)), bool(x < xs[0] or x > xs[-1])


def _by_name(rows: Sequence[Row]) -> dict[str, Row]:
    return {r.name: r for r in rows}


def verdict_vs_dense(athe: Row, dense: Row | None) -> Verdict:
    target = f"latency <= {TARGET_LATENCY_RATIO}x dense at <= {TARGET_MAX_LOSS_PT} pt top-1 loss"
    if dense is None:
        return Verdict("athe_vs_dense", "ATHE vs dense", target, None,
                       "the bundle has no dense level (every level drops tokens or heads)", {})
    ratio = athe.latency_mean_ms / dense.latency_mean_ms
    delta = athe.accuracy - dense.accuracy
    met = ratio <= TARGET_LATENCY_RATIO + _EPS and delta >= -TARGET_MAX_LOSS_PT - _EPS
    return Verdict("athe_vs_dense", "ATHE vs dense", target, met,
                   f"latency {ratio:.3f}x dense ({athe.latency_mean_ms:.3f} vs {dense.latency_mean_ms:.3f} ms), "
                   f"top-1 {delta:+.2f} pt ({athe.accuracy:.2f} vs {dense.accuracy:.2f} %), "
                   f"MACs {athe.mean_macs / dense.mean_macs:.3f}x",
                   {"latency_ratio": ratio, "accuracy_delta_pt": delta,
                    "macs_ratio": athe.mean_macs / dense.mean_macs,
                    "athe_latency_ms": athe.latency_mean_ms, "dense_latency_ms": dense.latency_mean_ms,
                    "athe_accuracy": athe.accuracy, "dense_accuracy": dense.accuracy})


def _front_at(front: Sequence[tuple[float, float]], x: float) -> float | None:
    if not front:
        return None
    y, outside = interpolate(front, x)
    return None if outside else y


def verdict_vs_static(athe: Row, static: Sequence[Row], sweep: Sequence[SweepPoint] = ()) -> Verdict:
    """ATHE vs the static levels' accuracy-latency line at ATHE's mean latency.

    The line joins the static levels that are on their own Pareto front (a slower, less
    accurate level is left out); outside its range the nearest end is used and said so.
    Also reported: the sweep's Pareto front interpolated at each static level's latency.
    """
    pts = [(r.latency_mean_ms, r.accuracy) for r in static]
    keep = pareto_mask(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    line = [p for p, k in zip(pts, keep, strict=True) if k]
    acc, outside = interpolate(line, athe.latency_mean_ms)
    diff = athe.accuracy - acc
    macs_line = [(r.mean_macs, r.accuracy) for r in static]
    acc_macs, outside_macs = interpolate(macs_line, athe.mean_macs)
    front = sorted((p.latency_mean_ms, p.accuracy) for p in sweep if p.pareto_latency)
    front_gain = {r.name.split(":", 1)[-1]: (None if (y := _front_at(front, r.latency_mean_ms)) is None
                                             else y - r.accuracy) for r in static}
    where = " (ATHE's latency is outside the static range: nearest static level used)" if outside else ""
    return Verdict("athe_vs_static", "ATHE vs static level at equal mean latency",
                   "ATHE top-1 > static line at ATHE's mean latency", diff > 0,
                   f"ATHE {athe.accuracy:.2f} % vs static {acc:.2f} % at {athe.latency_mean_ms:.3f} ms: "
                   f"{diff:+.2f} pt{where}",
                   {"athe_accuracy": athe.accuracy, "athe_latency_ms": athe.latency_mean_ms,
                    "static_accuracy_at_latency": acc, "accuracy_diff_pt": diff, "outside_range": outside,
                    "static_line": line, "static_accuracy_at_macs": acc_macs,
                    "accuracy_diff_at_macs_pt": athe.accuracy - acc_macs, "outside_range_macs": outside_macs,
                    "sweep_front_minus_static_pt": front_gain})


def verdict_vs_random(athe: Row, cheapest: Row, richest: Row, random_row: Row | None) -> Verdict:
    """ATHE vs random routing that mixes the cheapest and richest level to ATHE's mean latency.

    Mixing share ``p`` of the cheapest level gives latency ``p*l_c + (1-p)*l_r`` and expected
    top-1 ``p*a_c + (1-p)*a_r``: the straight line between the two, read at ATHE's latency.
    """
    line = [(cheapest.latency_mean_ms, cheapest.accuracy), (richest.latency_mean_ms, richest.accuracy)]
    acc, outside = interpolate(line, athe.latency_mean_ms)
    span = richest.latency_mean_ms - cheapest.latency_mean_ms
    # share of the cheapest level in the mix (clamped like the line: outside it, an end is used)
    share = min(1.0, max(0.0, (richest.latency_mean_ms - athe.latency_mean_ms) / span)) if span else float("nan")
    diff = athe.accuracy - acc
    numbers: dict[str, Any] = {"athe_accuracy": athe.accuracy, "athe_latency_ms": athe.latency_mean_ms,
                               "random_accuracy_at_latency": acc, "accuracy_diff_pt": diff,
                               "outside_range": outside, "cheapest_share": share}
    if random_row is not None:
        numbers.update(random_same_fractions_accuracy=random_row.accuracy,
                       random_same_fractions_std=random_row.accuracy_std,
                       random_same_fractions_latency_ms=random_row.latency_mean_ms,
                       accuracy_diff_vs_same_fractions_pt=athe.accuracy - random_row.accuracy)
    where = " (outside the cheapest-richest range: nearest end used)" if outside else ""
    return Verdict("athe_vs_random", "ATHE vs random routing at equal mean latency",
                   "ATHE top-1 > random cheapest/richest mix at ATHE's mean latency", diff > 0,
                   f"ATHE {athe.accuracy:.2f} % vs random mix {acc:.2f} % at {athe.latency_mean_ms:.3f} ms: "
                   f"{diff:+.2f} pt{where}", numbers)


def verdict_vs_oracle(athe: Row, oracle: Row) -> Verdict:
    gap = oracle.accuracy - athe.accuracy
    return Verdict("athe_vs_oracle", "ATHE vs oracle routing", f"gap <= {TARGET_ORACLE_GAP_PT} pt",
                   gap <= TARGET_ORACLE_GAP_PT + _EPS,
                   f"oracle {oracle.accuracy:.2f} % vs ATHE {athe.accuracy:.2f} %: gap {gap:.2f} pt",
                   {"oracle_accuracy": oracle.accuracy, "athe_accuracy": athe.accuracy, "gap_pt": gap,
                    "oracle_latency_ms": oracle.latency_mean_ms})


def build_verdicts(rows: Sequence[Row], sweep: Sequence[SweepPoint] = ()) -> list[Verdict]:
    """The four verdicts (N/A without a router)."""
    by = _by_name(rows)
    athe = by.get("athe")
    if athe is None:
        return [Verdict(name, name.replace("_", " "), "", None, "the bundle has no router", {})
                for name in ("athe_vs_dense", "athe_vs_static", "athe_vs_random", "athe_vs_oracle")]
    static = [r for r in rows if r.name.startswith("static:")]
    return [verdict_vs_dense(athe, by.get("dense")), verdict_vs_static(athe, static, sweep),
            verdict_vs_random(athe, by["always-cheapest"], by["always-richest"], by.get("random")),
            verdict_vs_oracle(athe, by["oracle"])]


# ---------------------------------------------------------------------------------------------
# The whole evaluation


@dataclass
class EvalResult:
    rows: list[Row]
    sweep: list[SweepPoint]
    verdicts: list[Verdict]
    router: dict[str, Any] | None
    level_names: tuple[str, ...]
    n_images: int
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.rows]}")

    def verdict(self, name: str) -> Verdict:
        for v in self.verdicts:
            if v.name == name:
                return v
        raise KeyError(f"no verdict {name!r}")

    def to_dict(self) -> dict[str, Any]:
        front = sweep_for_csv(p for p in self.sweep if p.pareto_latency)
        return {"warnings": self.warnings, **self.info, "n_images": self.n_images,
                "levels": list(self.level_names), "rows": [asdict(r) for r in self.rows],
                "verdicts": [{**asdict(v), "status": v.status} for v in self.verdicts],
                "router": self.router,
                "sweep": {"points": len(self.sweep), "pareto_latency": front,
                          "pareto_macs": sweep_for_csv(p for p in self.sweep if p.pareto_macs)}}


def evaluate(m: Measurements, costs: Costs, thresholds: Mapping[str, float] | None,
             dense_index: int | None = None, seeds: int = 20, grid: int = 41) -> EvalResult:
    """Rows, sweep and verdicts from the measurements (no model runs here)."""
    if len(costs.level_macs) != len(m.level_names):
        raise EvalError(f"{len(costs.level_macs)} level MACs for {len(m.level_names)} levels")
    routed = thresholds is not None and m.has_router
    rows = build_rows(m, costs, thresholds if routed else None, dense_index, seeds)
    sweep = sweep_thresholds(m, costs, grid) if routed else []
    return EvalResult(rows=rows, sweep=sweep, verdicts=build_verdicts(rows, sweep),
                      router=router_stats(m, thresholds) if routed and thresholds is not None else None,
                      level_names=m.level_names, n_images=m.n)


def sweep_for_csv(sweep: Iterable[SweepPoint]) -> list[dict[str, Any]]:
    """Sweep points as dicts; a threshold of +inf (level never taken) is written ``"inf"``."""
    return [{**asdict(p), "thresholds": {k: v if math.isfinite(v) else "inf" for k, v in p.thresholds.items()}}
            for p in sweep]



"""``athe eval``: the results table, the threshold sweep and the verdicts of one bundle.

Every image is measured once: the router and *every* level run on it (levels in a rotating
order, so no level always runs first), and the evaluation keeps, per image, the router
probabilities ``[N, L]``, each level's correctness ``[N, L]`` and measured latency ``[N, L]``,
the router latency ``[N]`` and the preprocessing time ``[N]`` (decode + resize + normalise).
Every row, the sweep and the verdicts are then computed *post hoc* from these arrays by
choosing one level per image (``athe.training.calibrate.route``, pure numpy): no model is
re-run per policy, and all rows are on the same images with the same timings.

Per-image latency of a row = preprocessing + that image's measured latency of the level the
row chose + the router's latency on that image when the row runs the router (ATHE rows). Mean
MACs = the chosen levels' MACs from the manifest (+ the router's MACs for ATHE rows).

Rows: ``dense`` (the level that keeps every token and head), ``static:<level>`` for every level
(the EViT-style fixed keep ratio baselines), ``always-cheapest``, ``always-richest``,
``random`` (the router's per-level fractions, images assigned by seeded permutations, mean and
std over seeds, plus the exact expectation), ``oracle`` (cheapest level that is right, else the
richest; pays no router), ``athe`` (router at the bundle's calibrated thresholds).

Example::

    >>> from athe.pi_runner.evaluate import run_eval
    >>> result = run_eval("bundles/athe-mini", "../shared/data/cifar10-train.tar.gz",
    ...                   backend="litert", threads=2, split_from="runs/athe-mini", out="eval/mini")
    >>> for v in result.verdicts:
    ...     print(v.status, v.claim, v.text)        # MET / NOT MET / N/A, with the numbers
    >>> result.row("athe").accuracy, result.row("athe").latency_mean_ms

Or, on arrays you already have (e.g. in a test)::

    >>> from athe.pi_runner.evaluate import Costs, Measurements, evaluate
    >>> result = evaluate(measurements, Costs(level_macs=(1e6, 4e6), router_macs=1e5),
    ...                   thresholds={"simple": 0.6})
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from athe.pi_runner.report import _figure, _save, environment_info, write_csv, write_json
from athe.training.calibrate import route

EVAL_JSON = "eval.json"
ROWS_CSV = "rows.csv"
SWEEP_CSV = "sweep.csv"
PARETO_PNG = "pareto.png"
MEASUREMENTS_NPZ = "measurements.npz"

#: Targets the verdicts check (the issue's claims).
TARGET_LATENCY_RATIO = 0.5  # ATHE mean latency <= 0.5x dense ...
TARGET_MAX_LOSS_PT = 1.0  # ... at <= 1 point top-1 loss
TARGET_ORACLE_GAP_PT = 0.5  # ATHE within 0.5 point of the oracle
_EPS = 1e-9  # float slack for the "<=" targets

RANDOM_WEIGHTS_WARNING = ("this bundle has RANDOM WEIGHTS (manifest says so): every accuracy below is "
                          "meaningless; only latencies and MACs are real")


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
        preprocess_ms: ``[N]`` decode + resize + normalise (ms).
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
        arrays = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
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
    p50, p90 = np.percentile(latency, [50, 90])
    return Row(name=name, description=description, routed=routed, accuracy=float(100.0 * hit.mean()),
               fraction=fraction, group_accuracy=group, mean_macs=macs,
               latency_mean_ms=float(latency.mean()), latency_p50_ms=float(p50), latency_p90_ms=float(p90),
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


def oracle_choice(correct: np.ndarray) -> np.ndarray:
    """``[N]`` cheapest level that is right per image, else the richest."""
    n, L = correct.shape
    any_right = correct.any(axis=1)
    return np.where(any_right, np.argmax(correct, axis=1), L - 1).astype(np.int64)


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
        values = [r.group_accuracy[level] for r in per_seed if r.group_accuracy[level] is not None]
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
    """Thresholds in level order (all levels but the last); a missing one raises."""
    missing = [n for n in level_names[:-1] if n not in thresholds]
    if missing:
        raise EvalError(f"thresholds lack level(s) {missing}; give one per level except the last "
                        f"({', '.join(level_names[:-1])})")
    return [float(thresholds[n]) for n in level_names[:-1]]


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
    at_half = {n: float(100.0 * ((m.router_probs[:, j] >= 0.5) == m.correct[:, j]).mean())
               for j, n in enumerate(names)}
    at_t = {n: float(100.0 * ((m.router_probs[:, j] >= ths[j]) == m.correct[:, j]).mean())
            for j, n in enumerate(names[:-1])}
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


def threshold_candidates(probs: np.ndarray, grid: int) -> np.ndarray:
    """Unique quantiles of one probability column at ``grid`` evenly spaced levels, plus +inf.

    The 0-quantile sends every image to the level; +inf sends none.
    """
    return np.concatenate([np.unique(np.quantile(probs, np.linspace(0.0, 1.0, grid))), [np.inf]])


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
    from itertools import product

    L = len(m.level_names)
    grid = max(2, min(grid, int(max_points ** (1.0 / max(1, L - 1)))))
    axes = [threshold_candidates(m.router_probs[:, j], grid) for j in range(L - 1)]
    seen: set[bytes] = set()
    points = []
    for ths in product(*axes):
        choice = route(m.router_probs, list(ths))
        key = choice.tobytes()
        if key in seen:
            continue
        seen.add(key)
        row = row_for_choice("sweep", "", m, costs, choice, routed=True)
        points.append(SweepPoint(dict(zip(m.level_names[:-1], map(float, ths), strict=True)), row.accuracy,
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
    numbers = {"athe_accuracy": athe.accuracy, "athe_latency_ms": athe.latency_mean_ms,
               "random_accuracy_at_latency": acc, "accuracy_diff_pt": diff, "outside_range": outside,
               "cheapest_share": share}
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


# ---------------------------------------------------------------------------------------------
# Images (read by athe.pi_runner.inputs; a training run's held-out split selected by index)


@dataclass(frozen=True)
class LabelledImage:
    """One image to evaluate.

    Attributes:
        data: what the dispatcher's ``decode`` takes (encoded bytes, a path or a uint8 array).
        label: the true class as an index into the bundle's labels.
    """

    name: str
    data: Any
    label: int


def split_test_indices(split_file: Path, classes: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The ``test`` half of a run's ``val`` split (images neither the router nor thresholds saw).

    ``athe train router`` cuts ``val`` with ``default_rng(seed + 7).permutation``: the first
    half calibrates the thresholds, the second (used here) is the held-out test. Indices count
    the images of the training data sorted by name, without the ones training skipped.

    Returns:
        ``(indices, skipped names, description)``.
    """
    if not split_file.is_file():
        raise EvalError(f"{str(split_file)!r} not found: --split-from takes the backbone run folder "
                        "(the one with split.json written by 'athe train backbone')")
    split = json.loads(split_file.read_text())
    if list(split["classes"]) != list(classes):
        raise EvalError(f"classes of --data {list(classes)} differ from {str(split_file)!r}'s "
                        f"{split['classes']}; pass the data the run was trained on")
    val = np.asarray(split["val"], dtype=np.int64)
    halves = np.random.default_rng(int(split["seed"]) + 7).permutation(len(val))
    test = np.sort(val[halves[len(val) // 2:]])
    skipped = [s[0] if isinstance(s, (list, tuple)) else str(s) for s in split.get("skipped", [])]
    return test, skipped, {"split_file": str(split_file), "part": "val/test half", "seed": split["seed"],
                           "val": len(val), "test": len(test), "source": split.get("source")}


def load_eval_images(data: str | Path, labels: Sequence[str], split_from: str | Path | None = None,
                     limit: int | None = None, seed: int = 0) -> tuple[list[LabelledImage], dict[str, Any]]:
    """Labelled images to evaluate (``athe.pi_runner.inputs.open_inputs`` reads them).

    Args:
        data: ImageFolder folder, ``.tar``/``.tar.gz`` archive, or CIFAR python folder (its
            ``test`` split; with ``split_from`` its ``train`` split, which training indexed).
        labels: the bundle's labels; class names map onto them by name.
        split_from: a backbone run folder: evaluate only its held-out ``test`` images.
        limit: evaluate a seeded random subset of this many images (not the first ones, which
            are sorted by class).
    """
    from athe.pi_runner.inputs import InputError, open_inputs

    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be at least 1, got {limit}")
    try:
        if split_from is None:
            source = open_inputs(data, labels, limit=limit, shuffle=seed if limit is not None else None)
        else:  # every image, in the order training indexed them
            source = open_inputs(data, labels, split="train")
    except InputError as exc:
        raise EvalError(str(exc)) from exc
    if not source.labelled:
        raise EvalError(f"{data}: evaluation needs labelled images (ImageFolder class folders, a CIFAR "
                        f"folder or an ImageFolder archive); got {source.describe()}")
    samples = list(source.samples)
    info: dict[str, Any] = {"data": str(data), "source": source.info()}
    if split_from is not None:
        test, skipped, info["split"] = split_test_indices(Path(split_from) / "split.json",
                                                          source.class_names or ())
        gone = set(skipped)
        samples = [s for s in samples if s[0] not in gone]
        if len(test) and test.max() >= len(samples):
            raise EvalError(f"split index {int(test.max())} is out of range for {len(samples)} images in "
                            f"{str(data)!r}; pass the data the run in {str(split_from)!r} was trained on")
        samples = [samples[i] for i in test]
        if limit is not None and limit < len(samples):
            samples = [samples[i] for i in np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])]
    if limit is not None:
        info["limit"] = {"limit": limit, "seed": seed}
    return [LabelledImage(name, image, int(label)) for name, image, label in samples], info


# ---------------------------------------------------------------------------------------------
# Measuring on a backend


def _timed(model: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """``(output [K], ms)`` of one run."""
    t0 = time.perf_counter()
    out = model.run(x).reshape(-1)
    return out, (time.perf_counter() - t0) * 1e3


def _warm_up(pre: Any, models: Sequence[Any], image: LabelledImage, warmup: int) -> None:
    """Untimed: the first decode loads PIL plugins and first runs allocate; keep them out."""
    for _ in range(max(1, warmup)):
        x = pre.preprocess(pre.decode(image.data, name=image.name))
    for model in models:
        for _ in range(warmup):
            model.run(x)


def measure(dispatcher: Any, images: Sequence[LabelledImage], warmup: int = 3,
            progress: Callable[[int, int], None] | None = None) -> tuple[Measurements, list[tuple[str, str]]]:
    """Run the router and every level once per image and time each (ms, ``perf_counter``).

    Args:
        dispatcher: an ``athe.runtime.Dispatcher`` (it has loaded and shape-checked every
            artifact); its models are run directly, its policy is not used.
        warmup: untimed decodes and runs of every model on the first image first.

    Returns:
        ``(measurements, skipped)``: images that cannot be decoded are skipped and listed with
        the reason.
    """
    from athe.runtime.preprocess import ImageError

    names = tuple(dispatcher.level_names)
    router, models, pre = dispatcher.router, [dispatcher.levels[n] for n in names], dispatcher.preprocessor
    L = len(names)
    cols: dict[str, list] = {k: [] for k in ("pred", "level_ms", "pre_ms", "probs", "router_ms", "target", "name")}
    skipped: list[tuple[str, str]] = []
    for i, image in enumerate(images):
        try:
            if not cols["name"] and i == len(skipped):  # before the first timed image
                _warm_up(pre, ([router] if router is not None else []) + models, image, warmup)
            t0 = time.perf_counter()
            x = pre.preprocess(pre.decode(image.data, name=image.name))
            cols["pre_ms"].append((time.perf_counter() - t0) * 1e3)
        except ImageError as exc:
            skipped.append((image.name, str(exc)))
            continue
        if router is not None:
            probs, ms = _timed(router, x)
            cols["probs"].append(probs)
            cols["router_ms"].append(ms)
        pred, level_ms = np.zeros(L, dtype=np.int64), np.zeros(L)
        for k in range(L):
            j = (i + k) % L  # rotate the order: no level always runs first (cold caches)
            logits, level_ms[j] = _timed(models[j], x)
            pred[j] = int(np.argmax(logits))
        cols["pred"].append(pred)
        cols["level_ms"].append(level_ms)
        cols["target"].append(image.label)
        cols["name"].append(image.name)
        if progress is not None:
            progress(i + 1, len(images))
    if not cols["name"]:
        raise EvalError(f"none of the {len(images)} images could be decoded: {skipped[:3]}")
    predictions, target = np.stack(cols["pred"]), np.asarray(cols["target"], dtype=np.int64)
    m = Measurements(level_names=names, correct=predictions == target[:, None], level_ms=np.stack(cols["level_ms"]),
                     preprocess_ms=np.asarray(cols["pre_ms"]),
                     router_probs=np.stack(cols["probs"]) if router is not None else None,
                     router_ms=np.asarray(cols["router_ms"]) if router is not None else None,
                     predictions=predictions, targets=target, names=cols["name"])
    return m, skipped


def load_energy_json(path: str | Path, level_names: Sequence[str]) -> tuple[tuple[float, ...], float | None]:
    """``{"<level>": J/image, ..., "router": J/run}`` -> per-level joules and the router's.

    Every level is required; ``router`` is optional (routed rows then exclude it and say so).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalError(f"cannot read energy JSON {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise EvalError(f"{str(path)!r}: expected an object {{\"<level>\": J/image, \"router\": J}}")
    allowed = [*level_names, "router"]
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            more = f" Did you mean {hint[0]!r}?" if hint else ""
            raise EvalError(f"{str(path)!r}: unknown key {key!r}; keys: {', '.join(allowed)}.{more}")
    missing = [n for n in level_names if n not in data]
    if missing:
        raise EvalError(f"{str(path)!r}: no J/image for level(s) {missing}; give every level")
    values = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EvalError(f"{str(path)!r}: {key!r} must be a finite number of joules, got {value!r}")
        values[key] = float(value)
    return tuple(values[n] for n in level_names), values.get("router")


def bundle_warnings(manifest: Any) -> list[str]:
    """Warnings a reader of the table must see (random weights)."""
    router = manifest.router
    random = bool(manifest.random_weights) or bool((manifest.checkpoint or {}).get("random_weights")) or bool(
        router is not None and router.calibration_target.get("random_weights"))
    return [RANDOM_WEIGHTS_WARNING] if random else []


def run_eval(bundle: str | Path, data: str | Path, backend: str = "litert", threads: int | None = None,
             limit: int | None = None, split_from: str | Path | None = None, out: str | Path | None = None,
             energy_json: str | Path | None = None, seeds: int = 20, grid: int = 41, warmup: int = 3,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Measure a bundle on ``data`` with one backend, evaluate, and write the outputs to ``out``."""
    from athe.runtime import BACKEND_FORMATS, Bundle, Dispatcher

    if backend not in BACKEND_FORMATS:
        raise EvalError(f"unknown backend {backend!r}; backends: {', '.join(sorted(BACKEND_FORMATS))}")
    opened = Bundle.open(bundle, formats=[BACKEND_FORMATS[backend]])
    manifest = opened.manifest
    names = opened.level_names
    energy, router_energy = load_energy_json(energy_json, names) if energy_json is not None else (None, None)
    images, data_info = load_eval_images(data, opened.labels, split_from, limit)
    policy = "router" if opened.router is not None else f"fixed:{names[-1]}"
    dispatcher = Dispatcher(opened, backend=backend, threads=threads, policy=policy)
    m, skipped = measure(dispatcher, images, warmup=warmup, progress=progress)
    costs = Costs(level_macs=tuple(float(lv.macs) for lv in opened.levels),
                  router_macs=float(opened.router.macs) if opened.router is not None else 0.0,
                  level_energy_j=energy, router_energy_j=router_energy)
    dense = dense_level_index([lv.keep for lv in opened.levels], [lv.heads for lv in opened.levels])
    result = evaluate(m, costs, opened.thresholds if opened.router is not None else None, dense, seeds, grid)
    result.warnings = bundle_warnings(manifest)
    result.info = {
        "bundle": str(opened.path), "variant": manifest.variant, "backend": dispatcher.info(),
        "data": data_info, "skipped": skipped, "seeds": seeds, "grid": grid, "warmup": warmup,
        "level_macs": dict(zip(names, costs.level_macs, strict=True)), "router_macs": costs.router_macs,
        "energy": None if energy is None else {"file": str(energy_json), "level_j": dict(zip(names, energy, strict=True)),
                                               "router_j": router_energy},
        "dense_level": names[dense] if dense is not None else None,
        "level_latency_mean_ms": dict(zip(names, m.level_ms.mean(axis=0).tolist(), strict=True)),
        "preprocess_mean_ms": float(m.preprocess_ms.mean()),
        "environment": environment_info(),
        "definitions": {
            "latency": "per image: preprocess (decode+resize+normalise) + the chosen level's measured "
                       "latency on that image (+ the router's, for routed rows); every model ran once per image",
            "macs": "chosen level's MACs from the manifest (+ router MACs for routed rows)",
            "random": "router's per-level fractions, seeded permutations, mean over seeds; no router",
            "oracle": "cheapest level that is right, else the richest; no router (upper bound)",
        },
    }
    if out is not None:
        result.info["files"] = {k: str(v) for k, v in write_outputs(result, m, Path(out)).items()}
    return result


# ---------------------------------------------------------------------------------------------
# Outputs


def rows_for_csv(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def sweep_for_csv(sweep: Iterable[SweepPoint]) -> list[dict[str, Any]]:
    """Sweep points as dicts; a threshold of +inf (level never taken) is written ``"inf"``."""
    return [{**asdict(p), "thresholds": {k: v if math.isfinite(v) else "inf" for k, v in p.thresholds.items()}}
            for p in sweep]


def write_outputs(result: EvalResult, m: Measurements | None, out: Path) -> dict[str, Path]:
    """``eval.json``, ``rows.csv``, ``sweep.csv``, ``pareto.png`` (and ``measurements.npz``)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"rows_csv": write_csv(out / ROWS_CSV, rows_for_csv(result.rows)),
             "sweep_csv": write_csv(out / SWEEP_CSV, sweep_for_csv(result.sweep))}
    if m is not None:
        files["measurements"] = m.save(out / MEASUREMENTS_NPZ)
    files["pareto_png"] = plot_pareto(result, out / PARETO_PNG)
    files["eval_json"] = out / EVAL_JSON
    write_json(out / EVAL_JSON, {**result.to_dict(), "files": {k: str(v) for k, v in files.items()}})
    return files


def plot_pareto(result: EvalResult, path: Path) -> Path:
    """Top-1 vs mean latency (left) and vs mean MACs (right): the sweep, its Pareto front, the
    static levels, the random cheapest/richest line, random at the router's fractions, oracle,
    dense and the calibrated ATHE point."""
    fig = _figure(12.0, 4.8)
    by = _by_name(result.rows)
    for ax, key, scale, label in ((fig.add_subplot(1, 2, 1), "latency_mean_ms", 1.0, "mean latency per image (ms)"),
                                  (fig.add_subplot(1, 2, 2), "mean_macs", 1e-6, "mean MACs per image (M)")):
        flag = "pareto_latency" if key == "latency_mean_ms" else "pareto_macs"
        if result.sweep:
            xs = np.array([getattr(p, key) for p in result.sweep]) * scale
            ys = np.array([p.accuracy for p in result.sweep])
            ax.scatter(xs, ys, s=6, color="0.75", label=f"router sweep ({len(xs)} threshold sets)", zorder=1)
            front = sorted((getattr(p, key) * scale, p.accuracy) for p in result.sweep if getattr(p, flag))
            ax.plot(*zip(*front, strict=True), "-o", color="tab:red", lw=1.5, ms=3, label="router Pareto front",
                    zorder=2)
        static = [r for r in result.rows if r.name.startswith("static:")]
        ax.plot([getattr(r, key) * scale for r in static], [r.accuracy for r in static], "s", color="tab:blue",
                ms=7, label="static levels", zorder=3)
        for r in static:
            ax.annotate(r.name.split(":", 1)[1], (getattr(r, key) * scale, r.accuracy),
                        textcoords="offset points", xytext=(5, -10), fontsize=8, color="tab:blue")
        ch, ri = by["always-cheapest"], by["always-richest"]
        ax.plot([getattr(ch, key) * scale, getattr(ri, key) * scale], [ch.accuracy, ri.accuracy], "--",
                color="tab:gray", label="random mix cheapest/richest", zorder=2)
        if "random" in by:
            r = by["random"]
            ax.errorbar([getattr(r, key) * scale], [r.accuracy], yerr=[r.accuracy_std or 0.0], fmt="D",
                        color="tab:purple", label=f"random @ router fractions ({r.seeds} seeds)", zorder=4)
        o = by["oracle"]
        ax.plot([getattr(o, key) * scale], [o.accuracy], "*", color="tab:green", ms=12, label="oracle", zorder=4)
        if "dense" in by:
            d = by["dense"]
            ax.plot([getattr(d, key) * scale], [d.accuracy], "o", mfc="none", mec="k", ms=11, label="dense", zorder=4)
        if "athe" in by:
            a = by["athe"]
            ax.plot([getattr(a, key) * scale], [a.accuracy], "o", color="tab:red", mec="k", ms=10,
                    label="ATHE (calibrated)", zorder=5)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best")
    title = f"{result.info.get('variant', '')} on {result.n_images} images"
    backend = result.info.get("backend") or {}
    if backend:
        title += f" — {backend.get('backend')} ({backend.get('threads')} threads)"
    if result.warnings:
        title += "\nRANDOM WEIGHTS: accuracy is meaningless"
    fig.suptitle(title, color="tab:red" if result.warnings else "black")
    return _save(fig, path)


def _pct(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def print_report(result: EvalResult, console: Any = None) -> None:
    """The rows table, the router table and the verdicts (rich)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = console or Console()
    for warning in result.warnings:
        console.print(Panel(f"[bold]WARNING[/bold]: {warning}", style="bold red"))
    names = result.level_names
    title = f"ATHE eval: {result.info.get('variant', '')}, {result.n_images} images"
    accuracy = Table(title=f"{title}: top-1 (per level: routed share · top-1 of that group)")
    for col in ("row", "top-1 %", *names):
        accuracy.add_column(col, justify="left" if col == "row" else "right")
    energy = any(r.energy_j is not None for r in result.rows)
    cost = Table(title=f"{title}: cost per image (latency = preprocess + chosen level + router)")
    for col in ("row", "MACs (M)", "mean ms", "p50 ms", "p90 ms", "router %", *(["J/img"] if energy else [])):
        cost.add_column(col, justify="left" if col == "row" else "right")
    for r in result.rows:
        style = "bold" if r.name == "athe" else None
        top1 = _pct(r.accuracy) + (f" ± {_pct(r.accuracy_std)}" if r.accuracy_std is not None else "")
        groups = [f"{r.fraction[n]:.0%} · {_pct(r.group_accuracy[n], '.1f')}" if r.fraction[n] > 0 else "–"
                  for n in names]
        accuracy.add_row(r.name, top1, *groups, style=style)
        cells = [r.name, f"{r.mean_macs / 1e6:.2f}", f"{r.latency_mean_ms:.3f}", f"{r.latency_p50_ms:.3f}",
                 f"{r.latency_p90_ms:.3f}", f"{100 * r.router_share:.1f}"]
        if energy:
            cells.append("–" if r.energy_j is None else f"{r.energy_j:.4g}" + (" *" if r.energy_note else ""))
        cost.add_row(*cells, style=style)
    console.print(accuracy)
    console.print(cost)
    if any(r.energy_note for r in result.rows):
        console.print("* router energy not given in the energy JSON: excluded from routed rows")
    if result.router is not None:
        rt = Table(title=f"Router vs oracle labels (routed level = oracle's on "
                         f"{result.router['oracle_agreement']:.1f} % of images; {result.router['mean_ms']:.3f} ms)")
        for col in ("level", "threshold", "acc @0.5 %", "acc @threshold %", "level right %"):
            rt.add_column(col, justify="left" if col == "level" else "right")
        for n in names:
            th = result.router["thresholds"].get(n)
            rt.add_row(n, "fallback" if th is None else f"{th:.3g}", _pct(result.router["accuracy_at_0.5"][n]),
                       _pct(result.router["accuracy_at_threshold"].get(n)), _pct(result.router["positive_rate"][n]))
        console.print(rt)
    for v in result.verdicts:
        color = {"MET": "green", "NOT MET": "red"}.get(v.status, "yellow")
        console.print(f"[bold {color}]{v.status:7s}[/bold {color}] {v.claim} (target: {v.target or '–'}): {v.text}")
    for warning in result.warnings:
        console.print(f"[bold red]WARNING: {warning}[/bold red]")

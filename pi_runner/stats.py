"""Latency statistics over raw samples, per level and overall (numpy only).

Raw per-image latencies stay in the per-image report; these summaries are derived from them
and never replace them. Percentiles use numpy's default (linear interpolation); ``std_ms`` is
the sample standard deviation (ddof=1, NaN for a single sample); throughput is images per
second of back-to-back processing (``count / sum(latencies)``).

Example::

    >>> from athe.pi_runner.stats import summarize_by_level, routed_fraction
    >>> latencies_s = [0.010, 0.012, 0.031, 0.011]
    >>> levels = ["simple", "simple", "complex", "simple"]
    >>> summaries = summarize_by_level(latencies_s, levels)
    >>> summaries["simple"].p50_ms, summaries["overall"].count
    (11.0, 4)
    >>> routed_fraction(levels, level_names=["simple", "complex", "dense"])
    {'simple': 0.75, 'complex': 0.25, 'dense': 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Key of the all-levels summary in :func:`summarize_by_level`.
OVERALL = "overall"


@dataclass(frozen=True)
class LatencySummary:
    """Summary of one set of latencies; times in milliseconds, throughput in images/s."""

    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput_per_s: float


def _as_seconds(latencies_s: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(latencies_s, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-D list of latencies, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("latencies must be finite and >= 0 seconds; check the timer")
    return values


def summarize_latency(latencies_s: Sequence[float] | np.ndarray) -> LatencySummary:
    """Summarize latencies.

    Args:
        latencies_s: per-image latencies in seconds, ``[n]``.

    Raises:
        ValueError: empty, not 1-D, negative or non-finite values.
    """
    seconds = _as_seconds(latencies_s)
    ms = seconds * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    total = float(seconds.sum())
    return LatencySummary(
        count=int(ms.size),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std(ddof=1)) if ms.size > 1 else math.nan,
        min_ms=float(ms.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(ms.max()),
        throughput_per_s=ms.size / total if total > 0 else math.inf,
    )


def _level_order(levels: Sequence[str], level_names: Sequence[str] | None) -> list[str]:
    seen = list(dict.fromkeys(levels))
    if level_names is None:
        return seen
    unknown = [name for name in seen if name not in level_names]
    if unknown:
        raise ValueError(f"levels {unknown} are not in level_names {list(level_names)}")
    return list(level_names)


def summarize_by_level(latencies_s: Sequence[float] | np.ndarray, levels: Sequence[str],
                       level_names: Sequence[str] | None = None) -> dict[str, LatencySummary]:
    """Summaries per level, plus ``"overall"`` over all samples.

    Args:
        latencies_s: per-image latencies in seconds, ``[n]``.
        levels: the level each image ran at, ``[n]``.
        level_names: order of the result (levels with no image are left out); default: order
            of first appearance.

    Raises:
        ValueError: lengths differ, a level is named ``"overall"``, or bad latencies.
    """
    seconds = _as_seconds(latencies_s)
    if len(levels) != seconds.size:
        raise ValueError(f"{seconds.size} latencies but {len(levels)} levels: one level per image")
    if OVERALL in levels:
        raise ValueError(f"a level may not be named {OVERALL!r}: it is the all-levels key")
    names = np.asarray(levels, dtype=object)
    result = {
        name: summarize_latency(seconds[names == name])
        for name in _level_order(levels, level_names)
        if np.any(names == name)
    }
    result[OVERALL] = summarize_latency(seconds)
    return result


def routed_fraction(levels: Sequence[str], level_names: Sequence[str] | None = None
                    ) -> dict[str, float]:
    """Fraction of images that ran at each level (levels with none get 0.0 when named).

    Raises:
        ValueError: no images, or a level not in ``level_names``.
    """
    if len(levels) == 0:
        raise ValueError("no images: routed fraction is undefined")
    total = len(levels)
    return {name: sum(1 for lv in levels if lv == name) / total
            for name in _level_order(levels, level_names)}

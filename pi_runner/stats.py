"""Latency statistics over raw samples, per level and overall, and the summaries of per-image rows.

Raw per-image latencies stay in the per-image report; these summaries are derived from them
and never replace them. One set of latencies is summarised by
:func:`athe.runtime.stats.summarize_latency` (re-exported here), the one percentile code of
the project.

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

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from athe.runtime.dispatcher import STAGES
from athe.runtime.stats import LatencySummary, as_seconds, summarize_latency

__all__ = ["OVERALL", "LatencySummary", "accuracy_of", "latency_report", "routed_fraction",
           "stage_seconds", "summarize_by_level", "summarize_latency"]

#: Key of the all-levels summary in :func:`summarize_by_level`.
OVERALL = "overall"


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
    seconds = as_seconds(latencies_s)
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


def accuracy_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Top-1 of the rows that have a label, overall and per level (None: no labelled row)."""
    scored = [r for r in rows if r.get("correct") is not None]
    if not scored:
        return None
    per_level: dict[str, dict[str, Any]] = {}
    for level in dict.fromkeys(r["level"] for r in scored):
        hits = [bool(r["correct"]) for r in scored if r["level"] == level]
        per_level[level] = {"count": len(hits), "top1": sum(hits) / len(hits)}
    correct = sum(bool(r["correct"]) for r in scored)
    return {"labelled": len(scored), "correct": correct, "top1": correct / len(scored),
            "per_level": per_level}


def stage_seconds(rows: Sequence[Mapping[str, Any]], stage: str) -> list[float]:
    """One stage's time of every row, in seconds.

    Raises:
        ValueError: a time below -1e-6 ms (``route = elapsed - infer`` can round to -1e-13 ms,
            which becomes 0; anything more negative is a timer bug).
    """
    values = [r["stages_ms"][stage] for r in rows]
    if any(v < -1e-6 for v in values):
        raise ValueError(f"negative {stage} time in the rows: the timer is broken")
    return [max(v, 0.0) / 1e3 for v in values]


def latency_report(rows: Sequence[Mapping[str, Any]], level_names: Sequence[str]) -> dict[str, Any]:
    """Summaries of per-image rows: per level and overall, per stage, routed fraction, accuracy.

    Returns:
        ``{"count", "latency_ms", "stages_ms", "routed_fraction", "accuracy"}``; the latency
        values are :class:`LatencySummary` (``"overall"`` included).
    """
    if not rows:
        return {"count": 0, "latency_ms": {}, "stages_ms": {}, "routed_fraction": {}, "accuracy": None}
    levels = [r["level"] for r in rows]
    return {
        "count": len(rows),
        "latency_ms": summarize_by_level(stage_seconds(rows, "total"), levels, level_names),
        "stages_ms": {stage: summarize_by_level(stage_seconds(rows, stage), levels, level_names)
                      for stage in STAGES},
        "routed_fraction": routed_fraction(levels, level_names),
        "accuracy": accuracy_of(rows),
    }

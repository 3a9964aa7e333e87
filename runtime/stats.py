"""Latency summary: the one place percentiles of raw latencies are computed (numpy only).

Used by ``athe.runtime.benchmark``, the on-device runner (``athe.pi_runner``) and ``athe eval``.
Percentiles use numpy's default (linear interpolation); ``std_ms`` is the sample standard
deviation (ddof=1, NaN for a single sample); throughput is images per second of back-to-back
processing (``count / sum(latencies)``).

Example::

    >>> from athe.runtime.stats import summarize_latency
    >>> s = summarize_latency([0.010, 0.012, 0.031, 0.011])
    >>> s.p50_ms, s.count
    (11.5, 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def as_seconds(latencies_s: Sequence[float] | np.ndarray) -> np.ndarray:
    """``[n]`` float64 seconds, checked.

    Raises:
        ValueError: empty, not 1-D, negative or non-finite values.
    """
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
    seconds = as_seconds(latencies_s)
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

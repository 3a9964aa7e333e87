"""Integration maths (pure functions): power traces by the trapezoid rule, energy counters by
differencing (wrap-aware)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class WindowNotCoveredError(ValueError):
    """A power trace does not span the whole measurement window."""


def trapezoid_joules(times_s: Sequence[float] | np.ndarray, watts: Sequence[float] | np.ndarray
                     ) -> float:
    """Energy of a power trace by the trapezoid rule.

    Args:
        times_s: sample times in seconds, non-decreasing, ``[n]``.
        watts: power at those times, ``[n]``.
    """
    t = np.asarray(times_s, dtype=np.float64)
    w = np.asarray(watts, dtype=np.float64)
    if t.shape != w.shape or t.ndim != 1:
        raise ValueError(f"times and watts must be 1-D and equal length, got {t.shape}, {w.shape}")
    if t.size < 2:
        return 0.0
    return float(np.sum((t[1:] - t[:-1]) * (w[1:] + w[:-1]) / 2.0))


def window_trapezoid_joules(
    times_s: np.ndarray, watts: np.ndarray, start_s: float, end_s: float
) -> tuple[float, int]:
    """Energy over ``[start_s, end_s]`` of a trace that covers it, interpolating the edges.

    Returns:
        ``(joules, samples)``: the integral, and the number of trace samples inside the window.

    Raises:
        WindowNotCoveredError: the trace does not cover the window.
    """
    if times_s.size == 0 or times_s[0] > start_s or times_s[-1] < end_s:
        covered = f"{times_s[0]:.3f}..{times_s[-1]:.3f}" if times_s.size else "nothing"
        raise WindowNotCoveredError(f"trace covers {covered}, window is {start_s:.3f}..{end_s:.3f}")
    inside = (times_s > start_s) & (times_s < end_s)
    t = np.concatenate([[start_s], times_s[inside], [end_s]])
    w = np.concatenate([
        [np.interp(start_s, times_s, watts)], watts[inside], [np.interp(end_s, times_s, watts)],
    ])
    return trapezoid_joules(t, w), int(inside.sum())


def counter_joules(counts_j: Sequence[float], wrap_j: float | None) -> float:
    """Energy from successive readings of a cumulative energy counter.

    Args:
        counts_j: counter readings in joules, in time order; read often enough that it wraps at
            most once between two readings.
        wrap_j: the counter's range (it restarts at 0 after ``wrap_j``); None when it never wraps.

    Raises:
        ValueError: the counter went backwards and has no known range (reset or replaced).
    """
    total = 0.0
    for previous, current in zip(counts_j[:-1], counts_j[1:], strict=True):
        delta = current - previous
        if delta < 0:
            if wrap_j is None:
                raise ValueError(
                    f"energy counter went backwards ({previous} -> {current} J) and has no known "
                    "range: the sensor was reset or replaced during the window"
                )
            delta += wrap_j
        total += delta
    return total

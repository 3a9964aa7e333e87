"""Idle protocol and per-image energy: :func:`measure_idle`, :func:`net_joules`,
:func:`per_image_energy` -> :class:`PerImageEnergy`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from athe.pi_runner.meters.base import EnergyMeter, EnergyReading


def measure_idle(meter: EnergyMeter, seconds: float, sleep: Callable[[float], None] = time.sleep
                 ) -> EnergyReading:
    """Measure idle power over ``seconds`` (models loaded, nothing running).

    Raises:
        ValueError: ``seconds`` is not positive.
    """
    if not seconds > 0:
        raise ValueError(f"idle window must be > 0 s, got {seconds}")
    meter.begin()
    try:
        sleep(seconds)
    finally:  # close the window even on Ctrl-C, so the meter can be used again
        reading = meter.end()
    return reading


def net_joules(run: EnergyReading, idle: EnergyReading) -> float:
    """``gross - idle_watts * seconds``; NaN when either reading is invalid."""
    if not (run.valid and idle.valid):
        return math.nan
    return run.joules - idle.mean_watts * run.seconds


@dataclass(frozen=True)
class PerImageEnergy:
    """Joules per image over repeats, gross and idle-subtracted (net).

    Attributes:
        gross_j_per_image: one value per repeat (NaN for an invalid repeat).
        net_j_per_image: the same minus idle power × repeat seconds; None without an idle
            baseline.
        idle_watts: the baseline's mean power (NaN when it was invalid).
        invalid_reason: every problem, ``"; "``-joined; None when ``valid``.
    """

    method: str
    is_estimate: bool
    images_per_repeat: tuple[int, ...]
    gross_j_per_image: tuple[float, ...]
    net_j_per_image: tuple[float, ...] | None
    idle_watts: float | None
    valid: bool
    invalid_reason: str | None

    @property
    def gross_mean(self) -> float:
        """Mean gross J/image over repeats (NaN if any repeat is invalid)."""
        return float(np.mean(self.gross_j_per_image))

    @property
    def gross_std(self) -> float:
        """Sample standard deviation (ddof=1) of gross J/image over repeats."""
        return _sample_std(self.gross_j_per_image)

    @property
    def net_mean(self) -> float:
        """Mean net J/image (NaN without a valid idle baseline)."""
        return float(np.mean(self.net_j_per_image)) if self.net_j_per_image else math.nan

    @property
    def net_std(self) -> float:
        """Sample standard deviation (ddof=1) of net J/image."""
        return _sample_std(self.net_j_per_image) if self.net_j_per_image else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Fields plus the means and spreads, ready for a JSON report."""
        return {
            "method": self.method, "is_estimate": self.is_estimate,
            "images_per_repeat": list(self.images_per_repeat),
            "gross_j_per_image": list(self.gross_j_per_image),
            "net_j_per_image": None if self.net_j_per_image is None else list(self.net_j_per_image),
            "idle_watts": self.idle_watts, "gross_mean": self.gross_mean,
            "gross_std": self.gross_std, "net_mean": self.net_mean, "net_std": self.net_std,
            "valid": self.valid, "invalid_reason": self.invalid_reason,
        }


def _sample_std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def per_image_energy(runs: Sequence[EnergyReading], images_per_repeat: int | Sequence[int],
                     idle: EnergyReading | None = None, min_repeats: int = 3) -> PerImageEnergy:
    """Gross and net joules per image with a spread over repeats.

    Args:
        runs: one reading per repeat of the same workload.
        images_per_repeat: images in each repeat (one number for all, or one per repeat).
        idle: the idle baseline from :func:`measure_idle` on the same meter; None: gross only.
        min_repeats: fewer runs than this is an error (a spread needs repeats).

    Raises:
        ValueError: too few repeats, counts that do not match, or readings from different meters.
    """
    if len(runs) < min_repeats:
        raise ValueError(
            f"{len(runs)} repeat(s) give no spread: measure at least {min_repeats} (--repeat {min_repeats})"
        )
    counts = ([images_per_repeat] * len(runs) if isinstance(images_per_repeat, int)
              else list(images_per_repeat))
    if len(counts) != len(runs) or min(counts) <= 0:
        raise ValueError(f"need one positive image count per repeat, got {counts} for {len(runs)} runs")
    methods = {r.method for r in runs} | ({idle.method} if idle is not None else set())
    if len(methods) != 1:
        raise ValueError(f"readings come from different meters {sorted(methods)}: use one meter")
    problems = [f"repeat {i}: {r.invalid_reason}" for i, r in enumerate(runs) if not r.valid]
    gross = tuple(r.joules / n if r.valid else math.nan for r, n in zip(runs, counts, strict=True))
    net = None
    idle_watts = None
    if idle is not None:
        idle_watts = idle.mean_watts if idle.valid else math.nan
        if not idle.valid:
            problems.append(f"idle baseline: {idle.invalid_reason}")
        net = tuple(net_joules(r, idle) / n for r, n in zip(runs, counts, strict=True))
    return PerImageEnergy(
        method=methods.pop(), is_estimate=any(r.is_estimate for r in runs),
        images_per_repeat=tuple(counts), gross_j_per_image=gross, net_j_per_image=net,
        idle_watts=idle_watts, valid=not problems,
        invalid_reason="; ".join(problems) if problems else None,
    )

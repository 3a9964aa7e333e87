"""Model estimate [``estimate``]: constant power × time; every reading says
``is_estimate=True``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from athe.pi_runner.meters.base import EnergyReading, WindowMeter
from athe.pi_runner.meters.registry import MeterContext, register_meter


@register_meter("estimate", order=60)
class EstimateMeter(WindowMeter):
    """A *model estimate*: constant ``watts`` × window seconds. Not a measurement.

    Every reading has ``is_estimate=True``; reports must label it. Never probed by ``auto``:
    an estimate must be asked for by name.

    Args:
        watts: assumed average power, e.g. a datasheet figure for the board under load.
        clock: monotonic clock (injectable for tests).
    """

    method = "estimate"
    is_estimate = True

    def __init__(self, watts: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(watts) and watts > 0):
            raise ValueError(f"estimate watts must be a positive number, got {watts}")
        super().__init__(clock)
        self.watts = watts

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> EstimateMeter:
        """``estimate:WATTS``."""
        if not arg:
            raise ValueError("estimate needs the assumed power: --energy estimate:WATTS, e.g. estimate:6.5")
        return cls(float(arg))

    def _close_window(self, start: float) -> EnergyReading:
        seconds = self.clock() - start
        return EnergyReading(joules=self.watts * seconds, seconds=seconds, mean_watts=self.watts,
                             samples=0, method=self.method, is_estimate=True)

    def describe(self) -> str:
        return f"MODEL ESTIMATE: constant {self.watts} W x time (not measured)"

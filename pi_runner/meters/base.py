"""The meter interface: errors, :class:`EnergyReading`, :class:`EnergyMeter`, and
:class:`WindowMeter`, the base of the built-in meters, which owns the ``begin()``/``end()``
window state and how to build a meter from an ``--energy`` value."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from athe.pi_runner.system import VcgencmdError

if TYPE_CHECKING:
    from athe.pi_runner.meters.registry import MeterContext


class EnergyMeterError(RuntimeError):
    """A meter that cannot be set up here; the message says how to fix it."""


class MeterReadError(RuntimeError):
    """One reading failed in a way that invalidates the current window."""


#: Errors a meter read may raise when its source fails or vanishes; they invalidate the window.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    MeterReadError,
    VcgencmdError,
    subprocess.SubprocessError,
)


@dataclass(frozen=True)
class EnergyReading:
    """The energy of one ``begin()``/``end()`` window.

    Attributes:
        joules: energy over the window; NaN when not ``valid``.
        seconds: window length.
        mean_watts: ``joules / seconds``; NaN when not ``valid``.
        samples: readings that went into the figure (0 for an estimate).
        method: backend name (``pmic``, ``ina219``, ``powercap``, …).
        is_estimate: True for a model estimate, not a measurement.
        valid: False when the meter failed during the window.
        invalid_reason: why it is invalid, with the fix when one is known.
        per_rail: joules per rail/channel/zone, when the meter has several.
    """

    joules: float
    seconds: float
    mean_watts: float
    samples: int
    method: str
    is_estimate: bool = False
    valid: bool = True
    invalid_reason: str | None = None
    per_rail: dict[str, float] | None = field(default=None)

    @classmethod
    def invalid(
        cls, method: str, reason: str, seconds: float = math.nan, samples: int = 0,
        is_estimate: bool = False,
    ) -> EnergyReading:
        """An invalid reading: NaN joules and the reason."""
        return cls(
            joules=math.nan, seconds=seconds, mean_watts=math.nan, samples=samples, method=method,
            is_estimate=is_estimate, valid=False, invalid_reason=reason,
        )


class EnergyMeter(ABC):
    """One source of energy figures. Use as ``begin()`` … ``end()``, then ``close()``.

    ``end()`` never raises for a failing source: it returns an :class:`EnergyReading` with
    ``valid=False`` and the reason. Set-up problems raise :class:`EnergyMeterError` from the
    constructor instead.
    """

    method: str = "meter"
    is_estimate: bool = False

    @abstractmethod
    def begin(self) -> None:
        """Open a measurement window."""

    @abstractmethod
    def end(self) -> EnergyReading:
        """Close the window and return its energy."""

    @abstractmethod
    def describe(self) -> str:
        """One line saying what is measured and how."""

    def close(self) -> None:
        """Release threads and devices (idempotent); nothing to release by default."""
        return None

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class WindowMeter(EnergyMeter):
    """Base of the built-in meters: one window at a time, opened by ``begin()`` at
    ``clock()`` and closed by ``end()``.

    A second ``begin()`` before ``end()``, or ``end()`` without ``begin()``, raises
    ``RuntimeError``. Subclasses implement :meth:`_close_window` (the reading of a window
    opened at ``start``) and may implement :meth:`_open_window` (work after the window opens).
    A meter module registers its class with
    :func:`~athe.pi_runner.meters.registry.register_meter` and implements :meth:`from_spec`
    (and :meth:`probe` when auto detection needs something else).

    Args:
        clock: the clock ``start`` is read from (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._window_lock = threading.Lock()
        self._window_start: float | None = None

    def begin(self) -> None:
        with self._window_lock:
            if self._window_start is not None:
                raise RuntimeError(f"{self.method}: begin() called twice; call end() first")
            self._window_start = self.clock()
        self._open_window()

    def end(self) -> EnergyReading:
        with self._window_lock:
            if self._window_start is None:
                raise RuntimeError(f"{self.method}: end() called without begin()")
            start, self._window_start = self._window_start, None
        return self._close_window(start)

    def _open_window(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Called by ``begin()`` once the window is open; nothing by default."""

    @abstractmethod
    def _close_window(self, start: float) -> EnergyReading:
        """The reading of the window that opened at ``start`` (on ``self.clock``)."""

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> EnergyMeter:
        """The meter ``--energy NAME:ARG`` asks for.

        Raises:
            ValueError: malformed ``arg``.
            EnergyMeterError: the meter is not available here.
        """
        raise NotImplementedError(f"{cls.__name__} cannot be built from an --energy value")

    @classmethod
    def probe(cls, context: MeterContext) -> EnergyMeter | None:
        """The meter auto detection finds here; None: this probe does not apply (skipped).

        Raises:
            EnergyMeterError: the meter is not here (the message joins auto's report).
        """
        return cls.from_spec(cls.method, "", context)

"""Polled meters: :class:`SampledMeter`, one long-lived sampler thread per meter."""

from __future__ import annotations

import math
import threading
import time
from abc import abstractmethod

import numpy as np

from athe.pi_runner.meters.base import READ_ERRORS, EnergyReading, WindowMeter
from athe.pi_runner.meters.integrate import counter_joules, trapezoid_joules


class SampledMeter(WindowMeter):
    """A meter read by polling, from one long-lived background sampler thread.

    The thread starts on the first ``begin()`` and keeps sampling until ``close()``, also
    between windows, so that its own CPU cost is the same during the idle baseline and the run.
    ``begin()`` and ``end()`` take one reading each in the caller's thread, so a window is
    bounded by samples at its exact edges. Subclasses implement :meth:`read`.

    Args:
        interval_s: pause between the sampler's readings.
        max_gap_s: a window with a longer gap between samples is invalid (sampler starved);
            default ``max(1, 10 * interval_s)``.
    """

    def __init__(self, interval_s: float, max_gap_s: float | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        super().__init__()
        self.interval_s = interval_s
        self.max_gap_s = max_gap_s if max_gap_s is not None else max(1.0, 10.0 * interval_s)
        #: counter channel name -> wrap range in J (None: never wraps); other channels are watts
        self.counter_wrap_j: dict[str, float | None] = {}
        self._read_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._window: list[tuple[float, dict[str, float]]] | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def read(self) -> dict[str, float]:
        """One reading of every channel: watts, or joules for channels in ``counter_wrap_j``.

        Raises:
            One of :data:`READ_ERRORS` when the source fails.
        """

    def start(self) -> None:
        """Start the sampler thread if it is not running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"athe-{self.method}-sampler", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, 3 * self.interval_s))
            self._thread = None

    def _open_window(self) -> None:
        with self._state_lock:
            self._window = []
            self._error = None
        self.start()
        self._sample()

    def _close_window(self, start: float) -> EnergyReading:
        self._sample()
        with self._state_lock:
            samples, error = self._window, self._error
            self._window = None
        assert samples is not None
        return self._reading(samples, error)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self._sample()
        except BaseException as exc:
            self._fail(f"sampler thread crashed: {exc!r}")
            raise

    def _sample(self) -> None:
        with self._read_lock:
            started = time.monotonic()
            try:
                values = self.read()
            except READ_ERRORS as exc:
                self._fail(f"{self.method} read failed: {type(exc).__name__}: {exc}")
                return
            stamp = (started + time.monotonic()) / 2.0
            with self._state_lock:
                if self._window is not None:
                    self._window.append((stamp, values))

    def _fail(self, reason: str) -> None:
        with self._state_lock:
            if self._window is not None and self._error is None:
                self._error = reason

    def _reading(self, samples: list[tuple[float, dict[str, float]]], error: str | None
                 ) -> EnergyReading:
        seconds = samples[-1][0] - samples[0][0] if len(samples) >= 2 else math.nan
        if error is not None:
            return EnergyReading.invalid(self.method, error, seconds, len(samples))
        if len(samples) < 2 or not seconds > 0:
            return EnergyReading.invalid(
                self.method, "fewer than 2 samples in the window", seconds, len(samples)
            )
        times = np.array([t for t, _ in samples])
        gap = float(np.max(np.diff(times)))
        if gap > self.max_gap_s:
            return EnergyReading.invalid(
                self.method,
                f"sampler stalled: {gap:.2f} s between samples > max_gap_s={self.max_gap_s} s "
                "(CPU starved or the source hung); raise max_gap_s or lower the load",
                seconds, len(samples),
            )
        names = list(samples[0][1])
        for _, values in samples:
            if list(values) != names:
                return EnergyReading.invalid(
                    self.method, f"channels changed during the window: {names} -> {list(values)}",
                    seconds, len(samples),
                )
        per_rail: dict[str, float] = {}
        for name in names:
            series = [values[name] for _, values in samples]
            if name in self.counter_wrap_j:
                try:
                    per_rail[name] = counter_joules(series, self.counter_wrap_j[name])
                except ValueError as exc:
                    return EnergyReading.invalid(self.method, f"{name}: {exc}", seconds, len(samples))
            else:
                per_rail[name] = trapezoid_joules(times, series)
        joules = sum(per_rail.values())
        if joules < 0:
            return EnergyReading.invalid(
                self.method,
                f"negative energy ({joules:.3f} J): a current sensor is wired backwards "
                "(swap its IN+ and IN- connections)",
                seconds, len(samples),
            )
        return EnergyReading(
            joules=joules, seconds=seconds, mean_watts=joules / seconds, samples=len(samples),
            method=self.method, per_rail=per_rail,
        )

"""External meter CSV log [``csv``] (USB meter, Monsoon), aligned to the run by wall-clock
timestamps: reading the log (:func:`read_power_trace`) and :class:`CsvLogMeter`."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from athe.pi_runner.meters.base import EnergyMeterError, EnergyReading, MeterReadError, WindowMeter
from athe.pi_runner.meters.integrate import WindowNotCoveredError, window_trapezoid_joules
from athe.pi_runner.meters.registry import MeterContext, register_meter

_TIME_COLUMNS = ("timestamp", "time", "t", "unix_time", "epoch")
_WATT_COLUMNS = ("watts", "power", "power_w", "w", "p")
_VOLT_COLUMNS = ("volts", "voltage", "voltage_v", "v", "u")
_AMP_COLUMNS = ("amps", "current", "current_a", "a", "i")


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch from a number or an ISO-8601 string (naive = local time).

    Raises:
        ValueError: neither form.
    """
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.strip()).timestamp()


@dataclass(frozen=True)
class PowerTrace:
    """A power log: ``times_s [n]`` (meter clock, epoch seconds) and ``watts [n]``."""

    times_s: np.ndarray
    watts: np.ndarray


def _pick_column(header: list[str], given: str | None, aliases: Sequence[str]) -> str | None:
    if given is not None:
        return given if given in header else None
    lowered = {h.strip().lower(): h for h in header}
    return next((lowered[a] for a in aliases if a in lowered), None)


def read_power_trace(path: Path, timestamp_column: str | None = None,
                     watts_column: str | None = None, volts_column: str | None = None,
                     amps_column: str | None = None, timestamp_scale: float = 1.0) -> PowerTrace:
    """Read an external meter's CSV log: a timestamp column plus watts, or volts and amps.

    Columns default to common names (``timestamp``/``time``, ``watts``/``power``,
    ``volts``/``voltage``, ``amps``/``current``, any case). A final row that is still being
    written (missing fields) is skipped.

    Args:
        path: the CSV file (header row first).
        timestamp_scale: multiply timestamps by this to get seconds (0.001 for milliseconds).

    Raises:
        MeterReadError: missing columns, unparseable values or timestamps that go backwards.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        t_col = _pick_column(header, timestamp_column, _TIME_COLUMNS)
        w_col = _pick_column(header, watts_column, _WATT_COLUMNS)
        v_col = _pick_column(header, volts_column, _VOLT_COLUMNS)
        a_col = _pick_column(header, amps_column, _AMP_COLUMNS)
        if t_col is None or (w_col is None and (v_col is None or a_col is None)):
            raise MeterReadError(
                f"{path}: need a timestamp column and watts, or volts and amps; header is {header}: "
                "name them with timestamp_column=/watts_column=/volts_column=/amps_column="
            )
        rows = list(reader)
    if rows and any(v in (None, "") for v in rows[-1].values()):
        rows = rows[:-1]  # the logger is mid-line
    times, watts = [], []
    for number, row in enumerate(rows, start=2):
        try:
            times.append(parse_timestamp(row[t_col]) * timestamp_scale)
            watts.append(_row_watts(row, w_col, v_col, a_col))
        except (ValueError, TypeError) as exc:
            raise MeterReadError(f"{path}:{number}: cannot parse {row}: {exc}") from exc
    t = np.asarray(times, dtype=np.float64)
    if t.size > 1 and np.any(np.diff(t) < 0):
        bad = int(np.argmax(np.diff(t) < 0)) + 3
        raise MeterReadError(f"{path}:{bad}: timestamps go backwards; is the log sorted by time?")
    return PowerTrace(times_s=t, watts=np.asarray(watts, dtype=np.float64))


def _row_watts(row: dict[str, str], w_col: str | None, v_col: str | None, a_col: str | None
               ) -> float:
    if w_col is not None:
        return float(row[w_col])
    assert v_col is not None and a_col is not None
    return float(row[v_col]) * float(row[a_col])


@register_meter("csv", order=50)
class CsvLogMeter(WindowMeter):
    """Energy from an external meter's CSV log, aligned to the run by wall-clock time.

    ``begin()``/``end()`` record this host's ``time.time()``; ``end()`` then reads the log and
    integrates the trapezoid over that window (edges interpolated). The log must cover the
    whole window: ``end()`` waits up to ``wait_s`` for the logger to write past it.

    Args:
        path: the CSV log (must exist; see :func:`read_power_trace` for columns).
        clock_offset_s: add to the meter's timestamps to get this host's clock (host − meter).
        wait_s: how long ``end()`` waits for the log to reach the end of the window.
        timestamp_scale: see :func:`read_power_trace`.
        clock: wall clock (injectable for tests).
        sleep: sleep function (injectable for tests).

    Raises:
        EnergyMeterError: the log is missing or its columns are not recognised.
    """

    method = "csv"

    def __init__(self, path: Path | str, clock_offset_s: float = 0.0,
                 timestamp_column: str | None = None, watts_column: str | None = None,
                 volts_column: str | None = None, amps_column: str | None = None,
                 wait_s: float = 2.0, timestamp_scale: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self.clock_offset_s = clock_offset_s
        self.columns = {"timestamp_column": timestamp_column, "watts_column": watts_column,
                        "volts_column": volts_column, "amps_column": amps_column}
        self.wait_s = wait_s
        self.timestamp_scale = timestamp_scale
        self.sleep = sleep
        if not self.path.is_file():
            raise EnergyMeterError(f"meter log {self.path} not found: start the meter's logger first")
        try:
            self._trace()
        except MeterReadError as exc:
            raise EnergyMeterError(str(exc)) from exc

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> CsvLogMeter:
        """``csv:PATH``."""
        if not arg:
            raise ValueError("csv needs the log path: --energy csv:PATH")
        return cls(arg)

    def _trace(self) -> PowerTrace:
        trace = read_power_trace(self.path, timestamp_scale=self.timestamp_scale, **self.columns)
        return PowerTrace(trace.times_s + self.clock_offset_s, trace.watts)

    def _close_window(self, start: float) -> EnergyReading:
        stop = self.clock()
        seconds = stop - start
        deadline = stop + self.wait_s
        try:
            trace = self._trace()
            while (trace.times_s.size == 0 or trace.times_s[-1] < stop) and self.clock() < deadline:
                self.sleep(min(0.1, self.wait_s))
                trace = self._trace()
            joules, samples = window_trapezoid_joules(trace.times_s, trace.watts, start, stop)
        except (OSError, MeterReadError) as exc:
            return EnergyReading.invalid(self.method, f"{type(exc).__name__}: {exc}", seconds)
        except WindowNotCoveredError as exc:
            return EnergyReading.invalid(
                self.method,
                f"log {self.path} does not cover the window ({exc}, host clock, "
                f"clock_offset_s={self.clock_offset_s}): is the logger running, and is the "
                "clock offset right?",
                seconds,
            )
        if not seconds > 0:
            return EnergyReading.invalid(self.method, f"empty window ({seconds} s)", seconds)
        return EnergyReading(joules=joules, seconds=seconds, mean_watts=joules / seconds,
                             samples=samples, method=self.method)

    def describe(self) -> str:
        return f"external meter log {self.path} (clock offset {self.clock_offset_s:+.3f} s)"

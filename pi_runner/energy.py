"""Energy meters behind one interface: ``meter.begin()`` … ``meter.end() -> EnergyReading``.

Backends (``method`` in brackets):

- :class:`PmicMeter` [``pmic``]: Raspberry Pi 5 PMIC via ``vcgencmd pmic_read_adc``; one
  long-lived sampler thread; board total = Σ V·I over the rails, and per rail.
- :class:`Ina2xxMeter` [``ina219``/``ina226``/``ina260``]: an INA2xx current/power monitor on
  I2C (``smbus2``), e.g. in series with the Pi's 5 V supply.
- :class:`PowercapMeter` [``powercap``]: Linux powercap/RAPL energy counters (wrap-aware).
- :class:`HwmonMeter` [``hwmon``]: hwmon ``power*_input`` (sampled) or ``energy*_input``.
- :class:`CsvLogMeter` [``csv``]: the CSV log of an external meter (USB meter, Monsoon),
  aligned to the run by wall-clock timestamps.
- :class:`EstimateMeter` [``estimate``]: a constant-power *model estimate*; every reading says
  ``is_estimate=True``.

Power samples are integrated with the trapezoid rule; energy counters are differenced. A meter
that errors or disappears during a window returns ``valid=False`` with the reason and NaN
joules, never a zero.

Example::

    >>> from athe.pi_runner.energy import auto_meter, measure_idle, per_image_energy
    >>> meter, how = auto_meter()
    >>> print(how)
    using pmic: Raspberry Pi 5 PMIC via 'vcgencmd pmic_read_adc' (12 rails)
    >>> idle = measure_idle(meter, seconds=10.0)       # models loaded, nothing running
    >>> runs = []
    >>> for _ in range(3):
    ...     meter.begin(); run_all_images(); runs.append(meter.end())
    >>> energy = per_image_energy(runs, images_per_repeat=500, idle=idle)
    >>> f"{energy.net_mean:.3f} ± {energy.net_std:.3f} J/image"
    '0.412 ± 0.006 J/image'
    >>> meter.close()
"""

from __future__ import annotations

import csv
import difflib
import math
import re
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from athe.pi_runner.system import VcgencmdError, run_vcgencmd


class EnergyMeterError(RuntimeError):
    """A meter that cannot be set up here; the message says how to fix it."""


class MeterReadError(RuntimeError):
    """One reading failed in a way that invalidates the current window."""


class WindowNotCoveredError(ValueError):
    """A power trace does not span the whole measurement window."""


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


# --------------------------------------------------------------------------------------------
# Integration (pure functions)


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


# --------------------------------------------------------------------------------------------
# The interface


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


class SampledMeter(EnergyMeter):
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

    def begin(self) -> None:
        with self._state_lock:
            if self._window is not None:
                raise RuntimeError(f"{self.method}: begin() called twice; call end() first")
            self._window = []
            self._error = None
        self.start()
        self._sample()

    def end(self) -> EnergyReading:
        with self._state_lock:
            if self._window is None:
                raise RuntimeError(f"{self.method}: end() called without begin()")
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


# --------------------------------------------------------------------------------------------
# Raspberry Pi 5 PMIC

_PMIC_LINE = re.compile(
    r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+0-9.eE]+)[AV]\s*$"
)


def parse_pmic_adc(text: str) -> dict[str, tuple[float, float]]:
    """Parse ``vcgencmd pmic_read_adc`` into rail → ``(volts, amps)``.

    Currents (``VDD_CORE_A current(7)=2.34567A``) and voltages (``VDD_CORE_V volt(15)=0.81V``)
    are paired by rail name; rails with only one of the two (e.g. ``EXT5V_V``) are left out.

    Raises:
        MeterReadError: no rail had both a current and a voltage.
    """
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _PMIC_LINE.match(line)
        if match is None:
            continue
        target = amps if match.group("kind") == "A" else volts
        target[match.group("rail")] = float(match.group("value"))
    rails = {rail: (volts[rail], amps[rail]) for rail in amps if rail in volts}
    if not rails:
        raise MeterReadError(
            "'vcgencmd pmic_read_adc' printed no rail with both current and voltage "
            f"(first line: {text.strip().splitlines()[:1]}); the PMIC ADC exists on the "
            "Raspberry Pi 5 only: update the firmware or pick another meter"
        )
    return rails


class PmicMeter(SampledMeter):
    """Raspberry Pi 5 board power from the PMIC's ADC (``vcgencmd pmic_read_adc``).

    The total is Σ V·I over the PMIC rails: the SoC and on-board supplies, not USB devices or
    the 5 V input's own losses, so it reads below a wall or USB-C meter.

    Args:
        vcgencmd: executable name on ``PATH`` or its path.
        interval_s: pause between readings (one ``vcgencmd`` call takes ~10–30 ms on a Pi 5).
        timeout_s: a call that takes longer fails the window.
        max_gap_s: see :class:`SampledMeter`.

    Raises:
        EnergyMeterError: ``vcgencmd`` is missing or this board has no PMIC ADC.
    """

    method = "pmic"

    def __init__(self, vcgencmd: str = "vcgencmd", interval_s: float = 0.1, timeout_s: float = 2.0,
                 max_gap_s: float | None = None) -> None:
        super().__init__(interval_s, max_gap_s)
        self.vcgencmd = vcgencmd
        self.timeout_s = timeout_s
        if shutil.which(vcgencmd) is None:
            raise EnergyMeterError(
                f"'{vcgencmd}' not found on PATH: the PMIC meter needs a Raspberry Pi 5 with "
                "Raspberry Pi OS (package libraspberrypi-bin / raspi-utils)"
            )
        try:
            self.rails = tuple(self.read())
        except READ_ERRORS as exc:
            raise EnergyMeterError(f"PMIC meter unavailable: {exc}") from exc

    def read(self) -> dict[str, float]:
        text = run_vcgencmd(["pmic_read_adc"], self.vcgencmd, self.timeout_s)
        return {rail: v * a for rail, (v, a) in parse_pmic_adc(text).items()}

    def describe(self) -> str:
        return f"Raspberry Pi 5 PMIC via '{self.vcgencmd} pmic_read_adc' ({len(self.rails)} rails)"


# --------------------------------------------------------------------------------------------
# INA219 / INA226 / INA260 on I2C


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` the INA meters use (tests pass a fake)."""

    def read_word_data(self, i2c_addr: int, register: int) -> int: ...


@dataclass(frozen=True)
class InaChip:
    """Register map and scales of one INA2xx part (from its datasheet).

    Attributes:
        shunt_lsb_v: shunt-voltage register LSB (None: current register instead, INA260).
        current_lsb_a: current register LSB, for parts with an internal shunt.
        bus_lsb_v: bus-voltage LSB after ``bus_shift``.
        bus_shift: right shift of the bus-voltage register (INA219 keeps flags in bits 0–2).
        die_id: value of register 0xFF (None: the part has no ID register).
    """

    name: str
    shunt_lsb_v: float | None
    current_lsb_a: float | None
    bus_lsb_v: float
    bus_shift: int
    die_id: int | None


INA_CHIPS: dict[str, InaChip] = {
    "ina219": InaChip("ina219", 10e-6, None, 4e-3, 3, None),
    "ina226": InaChip("ina226", 2.5e-6, None, 1.25e-3, 0, 0x2260),
    "ina260": InaChip("ina260", None, 1.25e-3, 1.25e-3, 0, 0x2270),
}
INA_REG_CONFIG, INA_REG_SHUNT, INA_REG_BUS, INA_REG_CURRENT_260 = 0x00, 0x01, 0x02, 0x01
INA_REG_MANUFACTURER, INA_REG_DIE = 0xFE, 0xFF
TI_MANUFACTURER_ID = 0x5449  # "TI"
DEFAULT_INA_ADDRESS = 0x40


def swap_bytes(word: int) -> int:
    """SMBus words are little-endian, INA2xx registers big-endian: swap the two bytes."""
    return ((word & 0xFF) << 8) | ((word >> 8) & 0xFF)


def to_signed16(value: int) -> int:
    """Two's-complement 16-bit register value as a Python int."""
    return value - 0x10000 if value & 0x8000 else value


def ina_volts_amps(chip: InaChip, read_register: Callable[[int], int], shunt_ohms: float | None
                   ) -> tuple[float, float]:
    """Bus volts and load amps from one INA2xx.

    Args:
        chip: the part.
        read_register: register number → 16-bit value, already in big-endian order.
        shunt_ohms: shunt resistance (None for the INA260's internal shunt).

    Raises:
        MeterReadError: the shunt voltage is at full scale or the INA219 flags an overflow.
    """
    bus_raw = read_register(INA_REG_BUS)
    if chip.name == "ina219" and bus_raw & 0x1:
        raise MeterReadError("INA219 math overflow flag set: current beyond the shunt's range")
    volts = (bus_raw >> chip.bus_shift) * chip.bus_lsb_v
    if chip.current_lsb_a is not None:
        return volts, to_signed16(read_register(INA_REG_CURRENT_260)) * chip.current_lsb_a
    assert chip.shunt_lsb_v is not None and shunt_ohms is not None
    shunt_raw = to_signed16(read_register(INA_REG_SHUNT))
    full_scale = _ina_shunt_full_scale(chip, read_register)
    if abs(shunt_raw) >= full_scale:
        raise MeterReadError(
            f"{chip.name} shunt voltage at full scale ({shunt_raw * chip.shunt_lsb_v * 1e3:.2f} mV): "
            "the current exceeds the range; use a smaller shunt or a larger PGA range"
        )
    return volts, shunt_raw * chip.shunt_lsb_v / shunt_ohms


def _ina_shunt_full_scale(chip: InaChip, read_register: Callable[[int], int]) -> int:
    """Shunt register counts at full scale (INA219: set by the PGA bits 12–11 of CONFIG)."""
    if chip.name == "ina219":
        pga = (read_register(INA_REG_CONFIG) >> 11) & 0x3
        return 4000 << pga  # 40, 80, 160, 320 mV at 10 µV/count
    return 0x7FFF


def open_i2c_bus(bus: int) -> SMBusLike:
    """Open ``/dev/i2c-BUS`` with smbus2.

    Raises:
        EnergyMeterError: smbus2 is missing or the bus cannot be opened.
    """
    try:
        import smbus2
    except ModuleNotFoundError as exc:
        raise EnergyMeterError(
            "INA2xx meters need smbus2: pip install smbus2 (or pip install 'athe[pi]')"
        ) from exc
    try:
        return smbus2.SMBus(bus)
    except OSError as exc:
        raise EnergyMeterError(
            f"cannot open /dev/i2c-{bus}: {exc}; enable I2C (sudo raspi-config nonint do_i2c 0) "
            "and add your user to the 'i2c' group"
        ) from exc


class Ina2xxMeter(SampledMeter):
    """Power from an INA219, INA226 or INA260 on I2C, polled by a sampler thread.

    Current is computed from the shunt-voltage register and ``shunt_ohms`` (INA219/INA226) or
    read from the current register (INA260, internal 2 mΩ shunt), so the chip's calibration
    register is never written. Power = bus volts × amps.

    Args:
        chip: ``ina219``, ``ina226`` or ``ina260``.
        bus: I2C bus number (``/dev/i2c-N``) or an object with ``read_word_data``.
        address: 7-bit I2C address (0x40 when A0 = A1 = GND).
        shunt_ohms: shunt resistance for INA219/INA226 (0.1 Ω on most breakout boards); must
            be None for the INA260.
        interval_s: pause between readings.
        max_gap_s: see :class:`SampledMeter`.

    Raises:
        EnergyMeterError: unknown chip, wrong shunt argument, no device or a different part at
            the address.
    """

    def __init__(self, chip: str = "ina219", bus: int | SMBusLike = 1,
                 address: int = DEFAULT_INA_ADDRESS, shunt_ohms: float | None = None,
                 interval_s: float = 0.01, max_gap_s: float | None = None) -> None:
        super().__init__(interval_s, max_gap_s)
        if chip not in INA_CHIPS:
            close = difflib.get_close_matches(chip, INA_CHIPS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EnergyMeterError(f"unknown INA chip {chip!r}{hint}; known: {sorted(INA_CHIPS)}")
        self.chip = INA_CHIPS[chip]
        self.method = chip
        if self.chip.current_lsb_a is not None and shunt_ohms is not None:
            raise EnergyMeterError(f"{chip} has an internal shunt: leave shunt_ohms unset")
        if self.chip.current_lsb_a is None:
            shunt_ohms = 0.1 if shunt_ohms is None else shunt_ohms
            if not shunt_ohms > 0:
                raise EnergyMeterError(f"shunt_ohms must be > 0, got {shunt_ohms}")
        self.shunt_ohms = shunt_ohms
        self.address = address
        self.bus_number = bus if isinstance(bus, int) else None
        self.bus: SMBusLike = open_i2c_bus(bus) if isinstance(bus, int) else bus
        self._check_device()

    def read_register(self, register: int) -> int:
        """One 16-bit register, byte order fixed to the chip's big-endian value."""
        return swap_bytes(self.bus.read_word_data(self.address, register))

    def _check_device(self) -> None:
        where = f"0x{self.address:02x}" + (
            f" on /dev/i2c-{self.bus_number}" if self.bus_number is not None else ""
        )
        try:
            self.read_register(INA_REG_BUS)
            if self.chip.die_id is None:
                return
            manufacturer = self.read_register(INA_REG_MANUFACTURER)
            die = self.read_register(INA_REG_DIE) & 0xFFF0
        except OSError as exc:
            raise EnergyMeterError(
                f"no {self.chip.name} answering at {where}: {exc}; check wiring (SDA GPIO2, SCL "
                "GPIO3, VCC 3.3 V, GND) and the address with 'i2cdetect -y 1'"
            ) from exc
        if manufacturer != TI_MANUFACTURER_ID or die != self.chip.die_id:
            found = [c.name for c in INA_CHIPS.values() if c.die_id == die]
            hint = f": it is an {found[0]}, pass chip={found[0]!r}" if found else ""
            raise EnergyMeterError(
                f"device at {where} is not an {self.chip.name} (manufacturer 0x{manufacturer:04x}, "
                f"die 0x{die:04x}){hint}"
            )

    def read(self) -> dict[str, float]:
        volts, amps = ina_volts_amps(self.chip, self.read_register, self.shunt_ohms)
        return {self.method: volts * amps}

    def describe(self) -> str:
        shunt = f", shunt {self.shunt_ohms} Ω" if self.shunt_ohms is not None else ""
        return f"{self.chip.name.upper()} at I2C 0x{self.address:02x}{shunt}"

    def close(self) -> None:
        super().close()
        if self.bus_number is not None:  # we opened it
            close = getattr(self.bus, "close", None)
            if close is not None:
                close()
            self.bus_number = None


# --------------------------------------------------------------------------------------------
# Linux powercap / RAPL

_TOP_LEVEL_ZONE = re.compile(r"^(?!.*-mmio)[\w-]+:\d+$")


class PowercapMeter(SampledMeter):
    """Energy counters of Linux powercap zones (Intel/AMD RAPL): ``energy_uj``.

    The counters wrap at ``max_energy_range_uj``; the sampler reads them every ``interval_s``
    so at most one wrap happens between readings.

    Args:
        root: the powercap class folder.
        zones: zone folder names to sum (e.g. ``["intel-rapl:0"]``); default: every top-level
            zone except ``psys`` and ``*-mmio`` (they overlap the package zones).
        interval_s: pause between counter readings.
        max_gap_s: see :class:`SampledMeter`.

    Raises:
        EnergyMeterError: no zone, or the counters are not readable (root-only since Linux 5.10).
    """

    method = "powercap"

    def __init__(self, root: Path = Path("/sys/class/powercap"), zones: Sequence[str] | None = None,
                 interval_s: float = 1.0, max_gap_s: float | None = None) -> None:
        super().__init__(interval_s, max_gap_s)
        self.root = Path(root)
        self.zones = self._zone_paths(zones)
        self.channels: dict[str, Path] = {}
        for zone in self.zones:
            name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
            key = name if name not in self.channels else f"{zone.name}/{name}"
            self.channels[key] = zone / "energy_uj"
            wrap_uj = _read_stripped(zone / "max_energy_range_uj")
            self.counter_wrap_j[key] = int(wrap_uj) / 1e6 if wrap_uj else None
        try:
            self.read()
        except PermissionError as exc:
            raise EnergyMeterError(
                f"cannot read {exc.filename} (RAPL counters are root-only since Linux 5.10): run "
                f"as root or 'sudo chmod o+r {self.root}/*/energy_uj'"
            ) from exc
        except READ_ERRORS as exc:
            raise EnergyMeterError(f"cannot read powercap counters in {self.root}: {exc}") from exc

    def _zone_paths(self, zones: Sequence[str] | None) -> list[Path]:
        found = sorted(p.parent for p in self.root.glob("*/energy_uj"))
        if zones is not None:
            names = {p.name for p in found}
            missing = [z for z in zones if z not in names]
            if missing:
                raise EnergyMeterError(f"powercap zones {missing} not in {self.root}; found {sorted(names)}")
            return [self.root / z for z in zones]
        chosen = [
            p for p in found
            if _TOP_LEVEL_ZONE.match(p.name) and _read_stripped(p / "name") != "psys"
        ]
        if not chosen:
            raise EnergyMeterError(
                f"no powercap energy zone in {self.root} (found {[p.name for p in found]}); "
                "RAPL needs an Intel/AMD CPU and the intel_rapl_common kernel module"
            )
        return chosen

    def read(self) -> dict[str, float]:
        return {name: read_sysfs_int(path) / 1e6 for name, path in self.channels.items()}

    def describe(self) -> str:
        return f"Linux powercap {', '.join(self.channels)} ({self.root})"


def _read_stripped(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def read_sysfs_int(path: Path) -> int:
    """An integer sysfs attribute.

    Raises:
        OSError: the file vanished or cannot be read.
        MeterReadError: it does not hold an integer.
    """
    text = path.read_text().strip()
    try:
        return int(text)
    except ValueError as exc:
        raise MeterReadError(f"{path} holds {text!r}, not an integer") from exc


# --------------------------------------------------------------------------------------------
# hwmon


class HwmonMeter(SampledMeter):
    """hwmon power (``power*_input``, µW, sampled) or energy (``energy*_input``, µJ counters).

    A device with energy counters is read through them; otherwise through its power inputs
    (never both: they measure the same thing). The chosen channels are summed, so pick one
    ``device`` when several sensors measure overlapping rails.

    Args:
        root: the hwmon class folder.
        device: hwmon ``name`` to use (e.g. ``ina219``); None: every device with sensors.
        interval_s: pause between readings.
        max_gap_s: see :class:`SampledMeter`.

    Raises:
        EnergyMeterError: no matching device with power or energy sensors.
    """

    method = "hwmon"

    def __init__(self, root: Path = Path("/sys/class/hwmon"), device: str | None = None,
                 interval_s: float = 0.1, max_gap_s: float | None = None) -> None:
        super().__init__(interval_s, max_gap_s)
        self.root = Path(root)
        self.channels: dict[str, tuple[Path, float]] = {}  # name -> (file, unit scale)
        seen = []
        for hw in sorted(self.root.glob("hwmon*"), key=lambda p: p.name):
            name = _read_stripped(hw / "name") or hw.name
            seen.append(name)
            if device is not None and name != device:
                continue
            energy = sorted(hw.glob("energy*_input"))
            for path in energy or sorted(hw.glob("power*_input")):
                label = _read_stripped(path.with_name(path.name.replace("_input", "_label")))
                key = f"{name}/{label or path.name.removesuffix('_input')}"
                if key in self.channels:
                    key = f"{hw.name}/{key}"
                self.channels[key] = (path, 1e-6)
                if energy:
                    self.counter_wrap_j[key] = None
        if not self.channels:
            wanted = f"device {device!r}" if device else "any device"
            raise EnergyMeterError(
                f"no hwmon power*_input/energy*_input for {wanted} in {self.root} (devices: "
                f"{seen}); load the sensor's driver (e.g. 'dtoverlay=i2c-sensor,ina219')"
            )
        try:
            self.read()
        except READ_ERRORS as exc:
            raise EnergyMeterError(f"cannot read hwmon sensors {list(self.channels)}: {exc}") from exc

    def read(self) -> dict[str, float]:
        return {name: read_sysfs_int(path) * scale
                for name, (path, scale) in self.channels.items()}

    def describe(self) -> str:
        kind = "energy counters" if self.counter_wrap_j else "power inputs"
        return f"hwmon {kind}: {', '.join(self.channels)}"


# --------------------------------------------------------------------------------------------
# External meter CSV log

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


class CsvLogMeter(EnergyMeter):
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
        self.path = Path(path)
        self.clock_offset_s = clock_offset_s
        self.columns = {"timestamp_column": timestamp_column, "watts_column": watts_column,
                        "volts_column": volts_column, "amps_column": amps_column}
        self.wait_s = wait_s
        self.timestamp_scale = timestamp_scale
        self.clock = clock
        self.sleep = sleep
        self._start: float | None = None
        if not self.path.is_file():
            raise EnergyMeterError(f"meter log {self.path} not found: start the meter's logger first")
        try:
            self._trace()
        except MeterReadError as exc:
            raise EnergyMeterError(str(exc)) from exc

    def _trace(self) -> PowerTrace:
        trace = read_power_trace(self.path, timestamp_scale=self.timestamp_scale, **self.columns)
        return PowerTrace(trace.times_s + self.clock_offset_s, trace.watts)

    def begin(self) -> None:
        if self._start is not None:
            raise RuntimeError("csv: begin() called twice; call end() first")
        self._start = self.clock()

    def end(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("csv: end() called without begin()")
        start, stop = self._start, self.clock()
        self._start = None
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


# --------------------------------------------------------------------------------------------
# Model estimate


class EstimateMeter(EnergyMeter):
    """A *model estimate*: constant ``watts`` × window seconds. Not a measurement.

    Every reading has ``is_estimate=True``; reports must label it.

    Args:
        watts: assumed average power, e.g. a datasheet figure for the board under load.
        clock: monotonic clock (injectable for tests).
    """

    method = "estimate"
    is_estimate = True

    def __init__(self, watts: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(watts) and watts > 0):
            raise ValueError(f"estimate watts must be a positive number, got {watts}")
        self.watts = watts
        self.clock = clock
        self._start: float | None = None

    def begin(self) -> None:
        if self._start is not None:
            raise RuntimeError("estimate: begin() called twice; call end() first")
        self._start = self.clock()

    def end(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("estimate: end() called without begin()")
        seconds = self.clock() - self._start
        self._start = None
        return EnergyReading(joules=self.watts * seconds, seconds=seconds, mean_watts=self.watts,
                             samples=0, method=self.method, is_estimate=True)

    def describe(self) -> str:
        return f"MODEL ESTIMATE: constant {self.watts} W x time (not measured)"


# --------------------------------------------------------------------------------------------
# Choosing a meter


def _try(notes: list[str], label: str, make: Callable[[], EnergyMeter]) -> EnergyMeter | None:
    try:
        return make()
    except EnergyMeterError as exc:
        notes.append(f"{label}: {exc}")
        return None


def _probe_ina(bus: int | SMBusLike, root: Path, address: int) -> EnergyMeter:
    """An INA226/INA260 identified by its ID registers (the INA219 has none: name it)."""
    if isinstance(bus, int) and not (root / f"dev/i2c-{bus}").exists():
        raise EnergyMeterError(f"no /dev/i2c-{bus}")
    handle = open_i2c_bus(bus) if isinstance(bus, int) else bus
    try:
        die = swap_bytes(handle.read_word_data(address, INA_REG_DIE)) & 0xFFF0
    except OSError as exc:
        raise EnergyMeterError(f"nothing at 0x{address:02x}: {exc}") from exc
    chip = next((c.name for c in INA_CHIPS.values() if c.die_id == die), None)
    if chip is None:
        raise EnergyMeterError(
            f"no INA226/INA260 at 0x{address:02x} (an INA219 cannot be detected: use --energy ina219)"
        )
    return Ina2xxMeter(chip, bus, address)


def auto_meter(root: Path = Path("/"), vcgencmd: str = "vcgencmd",
               i2c_bus: int | SMBusLike | None = 1, ina_address: int = DEFAULT_INA_ADDRESS
               ) -> tuple[EnergyMeter | None, str]:
    """The first real meter present, in the order PMIC, INA226/INA260, hwmon, powercap.

    Never returns an estimate: a model estimate must be asked for by name.

    Args:
        root: filesystem root holding ``sys/`` and ``dev/`` (a fake tree in tests).
        vcgencmd: the ``vcgencmd`` executable.
        i2c_bus: I2C bus number or bus object to probe; None skips I2C.
        ina_address: I2C address probed for an INA226/INA260.

    Returns:
        ``(meter, message)``: the meter, or None with a message listing what was tried.
    """
    notes: list[str] = []
    candidates: list[tuple[str, Callable[[], EnergyMeter]]] = [
        ("pmic", lambda: PmicMeter(vcgencmd)),
    ]
    if i2c_bus is not None:
        bus = i2c_bus
        candidates.append(("ina2xx", lambda: _probe_ina(bus, root, ina_address)))
    candidates += [
        ("hwmon", lambda: HwmonMeter(root / "sys/class/hwmon")),
        ("powercap", lambda: PowercapMeter(root / "sys/class/powercap")),
    ]
    for label, make in candidates:
        meter = _try(notes, label, make)
        if meter is not None:
            return meter, f"using {meter.method}: {meter.describe()}"
    return None, (
        "no energy meter found (" + "; ".join(notes) + "); for an external meter pass its log "
        "(--energy csv:PATH), or ask for a labelled model estimate (--energy estimate:WATTS)"
    )


#: ``--energy`` values; ``NAME:ARGS`` forms are documented in :func:`meter_from_spec`.
METER_NAMES = ("auto", "none", "pmic", "ina219", "ina226", "ina260", "powercap", "hwmon", "csv",
               "estimate")


def meter_from_spec(spec: str, root: Path = Path("/"), vcgencmd: str = "vcgencmd"
                    ) -> tuple[EnergyMeter | None, str]:
    """Build the meter an ``--energy`` value names.

    Forms: ``auto``, ``none``, ``pmic``, ``ina219[:BUS[:ADDR[:SHUNT_OHMS]]]`` (also ina226,
    ina260 without shunt), ``powercap[:ZONE,…]``, ``hwmon[:DEVICE]``, ``csv:PATH``,
    ``estimate:WATTS``.

    Returns:
        ``(meter, message)``; meter is None for ``none``, or for ``auto`` when nothing is found.

    Raises:
        ValueError: unknown name or malformed arguments.
        EnergyMeterError: the named meter is not available here.
    """
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in METER_NAMES:
        close = difflib.get_close_matches(name, METER_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown energy meter {spec!r}{hint}; choose from {', '.join(METER_NAMES)}")
    if name == "none":
        return None, "energy measurement disabled (--energy none)"
    if name == "auto":
        return auto_meter(root, vcgencmd)
    meter = _named_meter(name, arg, root, vcgencmd)
    return meter, f"using {meter.method}: {meter.describe()}"


def _named_meter(name: str, arg: str, root: Path, vcgencmd: str) -> EnergyMeter:
    if name == "pmic":
        return PmicMeter(vcgencmd)
    if name.startswith("ina"):
        parts = [p for p in arg.split(":") if p]
        if len(parts) > 3:
            raise ValueError(f"{name} takes BUS:ADDR:SHUNT_OHMS, got {arg!r}")
        bus = int(parts[0]) if parts else 1
        address = int(parts[1], 0) if len(parts) > 1 else DEFAULT_INA_ADDRESS
        shunt = float(parts[2]) if len(parts) > 2 else None
        return Ina2xxMeter(name, bus, address, shunt)
    if name == "powercap":
        zones = [z for z in arg.split(",") if z] or None
        return PowercapMeter(root / "sys/class/powercap", zones)
    if name == "hwmon":
        return HwmonMeter(root / "sys/class/hwmon", arg or None)
    if name == "csv":
        if not arg:
            raise ValueError("csv needs the log path: --energy csv:PATH")
        return CsvLogMeter(arg)
    assert name == "estimate"
    if not arg:
        raise ValueError("estimate needs the assumed power: --energy estimate:WATTS, e.g. estimate:6.5")
    return EstimateMeter(float(arg))


# --------------------------------------------------------------------------------------------
# Idle protocol and per-image energy


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

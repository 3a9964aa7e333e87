"""INA219 / INA226 / INA260 current/power monitors on I2C [``ina219``/``ina226``/``ina260``]
(``smbus2``), e.g. in series with the Pi's 5 V supply."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from athe.pi_runner.meters.base import EnergyMeterError, MeterReadError
from athe.pi_runner.meters.registry import MeterContext, register_meter
from athe.pi_runner.meters.sampled import SampledMeter


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


@register_meter(*INA_CHIPS, order=20, auto=20, auto_label="ina2xx")
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

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> Ina2xxMeter:
        """``ina219[:BUS[:ADDR[:SHUNT_OHMS]]]``, ``ina226`` alike, ``ina260`` without shunt."""
        parts = [p for p in arg.split(":") if p]
        if len(parts) > 3:
            raise ValueError(f"{name} takes BUS:ADDR:SHUNT_OHMS, got {arg!r}")
        bus = int(parts[0]) if parts else 1
        address = int(parts[1], 0) if len(parts) > 1 else DEFAULT_INA_ADDRESS
        shunt = float(parts[2]) if len(parts) > 2 else None
        return cls(name, bus, address, shunt)

    @classmethod
    def probe(cls, context: MeterContext) -> Ina2xxMeter | None:
        """An INA226/INA260 identified by its ID registers (the INA219 has none: name it)."""
        if context.i2c_bus is None:
            return None
        bus: int | SMBusLike = context.i2c_bus
        address = DEFAULT_INA_ADDRESS if context.ina_address is None else context.ina_address
        if isinstance(bus, int) and not (context.root / f"dev/i2c-{bus}").exists():
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
        return cls(chip, bus, address)

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

"""Energy meters against fakes with known joules (athe.pi_runner.meters).

Every backend is checked against a fake source whose energy is known: a fake ``vcgencmd`` on
PATH (constant power), a fake sysfs tree (powercap counter wrap, hwmon power and energy), a
fake I2C bus (register words for known volts and amps), a CSV trace with an analytic integral.
Failures mid-window must give ``valid=False`` with a reason and NaN joules, never zero.
"""

from __future__ import annotations

import math
import os
import stat
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from athe.pi_runner import meters as en

# --------------------------------------------------------------------------------------------
# helpers

PMIC_OUTPUT = """\
 3V7_WL_SW_A current(0)=0.10000000A
   3V3_SYS_A current(1)=0.50000000A
  VDD_CORE_A current(7)=2.00000000A
 3V7_WL_SW_V volt(8)=3.70000000V
   3V3_SYS_V volt(9)=3.30000000V
  VDD_CORE_V volt(15)=0.80000000V
     EXT5V_V volt(24)=5.10000000V
"""
PMIC_RAILS_W = {"3V7_WL_SW": 0.37, "3V3_SYS": 1.65, "VDD_CORE": 1.6}
PMIC_TOTAL_W = sum(PMIC_RAILS_W.values())  # 3.62 W


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_vcgencmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``vcgencmd`` first on PATH: prints PMIC_OUTPUT; exits 1 once ``fail`` exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pmic.txt").write_text(PMIC_OUTPUT)
    write_script(bin_dir / "vcgencmd", f"""\
if [ -e "{bin_dir}/fail" ]; then echo "VCHI initialization failed" >&2; exit 1; fi
if [ "$1" = "pmic_read_adc" ]; then cat "{bin_dir}/pmic.txt"; exit 0; fi
echo "error=2 error_msg=\\"Command not registered\\""; exit 0
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


class FakeClock:
    """A settable clock; ``sleep`` advances it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def assert_invalid(reading: en.EnergyReading, *fragments: str) -> None:
    assert not reading.valid
    assert math.isnan(reading.joules) and math.isnan(reading.mean_watts)
    for fragment in fragments:
        assert fragment in (reading.invalid_reason or ""), reading.invalid_reason


def window(meter: en.EnergyMeter, seconds: float = 0.15) -> en.EnergyReading:
    meter.begin()
    time.sleep(seconds)
    return meter.end()


# --------------------------------------------------------------------------------------------
# integration


def test_trapezoid_and_counter_math() -> None:
    assert en.trapezoid_joules([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(3.0 + 8.0)
    assert en.counter_joules([990.0, 995.0, 2.0, 10.0], wrap_j=1000.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="went backwards"):
        en.counter_joules([5.0, 3.0], wrap_j=None)


def test_window_trapezoid_interpolates_edges() -> None:
    t = np.arange(0.0, 11.0)
    w = 1.0 + 0.5 * t  # linear: the trapezoid is exact
    joules, inside = en.window_trapezoid_joules(t, w, 2.5, 7.25)
    exact = 1.0 * (7.25 - 2.5) + 0.25 * (7.25**2 - 2.5**2)
    assert joules == pytest.approx(exact)
    assert inside == 5  # samples at 3..7
    with pytest.raises(en.WindowNotCoveredError):
        en.window_trapezoid_joules(t, w, -1.0, 3.0)


def test_invalid_reading_is_nan_not_zero() -> None:
    reading = en.EnergyReading.invalid("pmic", "gone", seconds=1.0)
    assert_invalid(reading, "gone")


# --------------------------------------------------------------------------------------------
# Raspberry Pi 5 PMIC


def test_parse_pmic_pairs_rails() -> None:
    rails = en.parse_pmic_adc(PMIC_OUTPUT)
    assert set(rails) == set(PMIC_RAILS_W)  # EXT5V has no current: left out
    assert rails["VDD_CORE"] == (0.8, 2.0)
    with pytest.raises(en.MeterReadError, match="Raspberry Pi 5"):
        en.parse_pmic_adc("throttled=0x0\n")


def test_pmic_meter_constant_power(fake_vcgencmd: Path) -> None:
    with en.PmicMeter(interval_s=0.02) as meter:
        reading = window(meter, 0.3)
    assert reading.valid, reading.invalid_reason
    assert reading.method == "pmic" and not reading.is_estimate
    assert reading.samples >= 3  # begin + end + the sampler thread
    assert reading.mean_watts == pytest.approx(PMIC_TOTAL_W)
    assert reading.joules == pytest.approx(PMIC_TOTAL_W * reading.seconds)
    assert reading.seconds == pytest.approx(0.3, abs=0.15)
    assert reading.per_rail is not None
    for rail, watts in PMIC_RAILS_W.items():
        assert reading.per_rail[rail] == pytest.approx(watts * reading.seconds)


def test_pmic_meter_two_windows_reuse_one_sampler(fake_vcgencmd: Path) -> None:
    with en.PmicMeter(interval_s=0.02) as meter:
        first = window(meter, 0.05)
        thread = meter._thread
        second = window(meter, 0.05)
        assert meter._thread is thread and thread is not None and thread.is_alive()
    assert first.valid and second.valid
    assert second.mean_watts == pytest.approx(PMIC_TOTAL_W)


def test_pmic_meter_errors_mid_run(fake_vcgencmd: Path) -> None:
    with en.PmicMeter(interval_s=0.02) as meter:
        meter.begin()
        (fake_vcgencmd / "fail").touch()
        time.sleep(0.1)
        reading = meter.end()
        (fake_vcgencmd / "fail").unlink()
        recovered = window(meter, 0.05)  # the next window starts clean
    assert_invalid(reading, "exited with 1", "VCHI")
    assert recovered.valid


def test_pmic_meter_disappears_mid_run(fake_vcgencmd: Path) -> None:
    with en.PmicMeter(interval_s=0.02) as meter:
        meter.begin()
        (fake_vcgencmd / "vcgencmd").unlink()
        time.sleep(0.05)
        reading = meter.end()
    assert_invalid(reading, "FileNotFoundError")


def test_pmic_meter_absent(tmp_path: Path) -> None:
    with pytest.raises(en.EnergyMeterError, match="not found on PATH"):
        en.PmicMeter(str(tmp_path / "no-vcgencmd"))


def test_sampler_stall_is_invalid(fake_vcgencmd: Path) -> None:
    with en.PmicMeter(interval_s=0.5, max_gap_s=0.01) as meter:
        reading = window(meter, 0.1)
    assert_invalid(reading, "sampler stalled")


# --------------------------------------------------------------------------------------------
# INA219 / INA226 / INA260


class FakeInaBus:
    """An I2C bus with one INA2xx: big-endian register values, returned as SMBus LE words."""

    def __init__(self, registers: dict[int, int], address: int = 0x40) -> None:
        self.registers = dict(registers)
        self.address = address
        self.fail = False

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        if self.fail or i2c_addr != self.address:
            raise OSError(121, "Remote I/O error")
        value = self.registers[register]
        return ((value & 0xFF) << 8) | (value >> 8)


# 5.0 V bus and 1.5 A load = 7.5 W on each part:
INA219_REGS = {0x00: 0x399F, 0x01: 15000, 0x02: (1250 << 3) | 0b10}  # 0.15 V on 0.1 Ω, CNVR
INA226_REGS = {0x01: 6000, 0x02: 4000, 0xFE: 0x5449, 0xFF: 0x2260}  # 15 mV on 0.01 Ω
INA260_REGS = {0x01: 1200, 0x02: 4000, 0xFE: 0x5449, 0xFF: 0x2270}  # 1.25 mA/LSB


def test_byte_order_and_sign() -> None:
    assert en.swap_bytes(0x1234) == 0x3412
    assert en.to_signed16(0xFFFF) == -1 and en.to_signed16(0x7FFF) == 32767


@pytest.mark.parametrize(
    ("chip", "registers", "shunt"),
    [("ina219", INA219_REGS, 0.1), ("ina226", INA226_REGS, 0.01), ("ina260", INA260_REGS, None)],
)
def test_ina_volts_amps(chip: str, registers: dict[int, int], shunt: float | None) -> None:
    bus = FakeInaBus(registers)
    with en.Ina2xxMeter(chip, bus, shunt_ohms=shunt, interval_s=0.005) as meter:
        volts, amps = en.ina_volts_amps(meter.chip, meter.read_register, meter.shunt_ohms)
        reading = window(meter, 0.1)
    assert (volts, amps) == (pytest.approx(5.0), pytest.approx(1.5))
    assert reading.valid, reading.invalid_reason
    assert reading.method == chip
    assert reading.mean_watts == pytest.approx(7.5)
    assert reading.joules == pytest.approx(7.5 * reading.seconds)
    assert reading.samples >= 3


def test_ina_bus_fails_mid_run() -> None:
    bus = FakeInaBus(INA226_REGS)
    with en.Ina2xxMeter("ina226", bus, shunt_ohms=0.01, interval_s=0.005) as meter:
        meter.begin()
        bus.fail = True
        time.sleep(0.03)
        reading = meter.end()
    assert_invalid(reading, "Remote I/O error")


def test_ina219_saturated_shunt_is_invalid() -> None:
    bus = FakeInaBus({**INA219_REGS, 0x01: 32000})  # 320 mV = full scale at PGA /8
    with en.Ina2xxMeter("ina219", bus, interval_s=0.005) as meter:
        reading = window(meter, 0.02)
    assert_invalid(reading, "full scale")


def test_ina_wired_backwards_is_invalid() -> None:
    bus = FakeInaBus({**INA219_REGS, 0x01: 0x10000 - 15000})  # -150 mV
    with en.Ina2xxMeter("ina219", bus, interval_s=0.005) as meter:
        reading = window(meter, 0.02)
    assert_invalid(reading, "wired backwards")


def test_ina_wrong_chip_or_absent() -> None:
    with pytest.raises(en.EnergyMeterError, match="chip='ina260'"):
        en.Ina2xxMeter("ina226", FakeInaBus(INA260_REGS), shunt_ohms=0.01)
    with pytest.raises(en.EnergyMeterError, match="i2cdetect"):
        en.Ina2xxMeter("ina219", FakeInaBus(INA219_REGS), address=0x41)
    with pytest.raises(en.EnergyMeterError, match="did you mean 'ina219'"):
        en.Ina2xxMeter("ina291", FakeInaBus(INA219_REGS))
    with pytest.raises(en.EnergyMeterError, match="internal shunt"):
        en.Ina2xxMeter("ina260", FakeInaBus(INA260_REGS), shunt_ohms=0.002)


# --------------------------------------------------------------------------------------------
# powercap / RAPL


def make_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = 1_000_000_000
              ) -> Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def powercap_root(tmp_path: Path) -> Path:
    root = tmp_path / "sys/class/powercap"
    make_zone(root, "intel-rapl:0", "package-0", 999_000_000)  # 1 J below the wrap at 1000 J
    make_zone(root, "intel-rapl:0:0", "core", 5_000_000)  # subzone: inside package-0
    make_zone(root, "intel-rapl:1", "psys", 7_000_000)  # overlaps the package
    make_zone(root, "intel-rapl-mmio:0", "package-0", 999_000_000)  # same counter via MMIO
    return root


def test_powercap_counter_wraps(powercap_root: Path) -> None:
    with en.PowercapMeter(powercap_root, interval_s=30.0) as meter:  # no poll inside the window
        assert list(meter.channels) == ["package-0"]
        meter.begin()
        (powercap_root / "intel-rapl:0/energy_uj").write_text("500000\n")  # wrapped: +1.5 J
        reading = meter.end()
    assert reading.valid, reading.invalid_reason
    assert reading.joules == pytest.approx(1.5)
    assert reading.per_rail == {"package-0": pytest.approx(1.5)}
    assert reading.mean_watts == pytest.approx(1.5 / reading.seconds)


def test_powercap_zone_selection_and_disappearing(powercap_root: Path) -> None:
    with en.PowercapMeter(powercap_root, zones=["intel-rapl:0:0"], interval_s=30.0) as meter:
        meter.begin()
        (powercap_root / "intel-rapl:0:0/energy_uj").write_text("7250000\n")
        assert meter.end().joules == pytest.approx(2.25)
        meter.begin()
        (powercap_root / "intel-rapl:0:0/energy_uj").unlink()
        reading = meter.end()
    assert_invalid(reading, "FileNotFoundError")
    with pytest.raises(en.EnergyMeterError, match="found"):
        en.PowercapMeter(powercap_root, zones=["intel-rapl:9"])


# --------------------------------------------------------------------------------------------
# hwmon


@pytest.fixture
def hwmon_root(tmp_path: Path) -> Path:
    root = tmp_path / "sys/class/hwmon"
    thermal = root / "hwmon0"
    thermal.mkdir(parents=True)
    (thermal / "name").write_text("cpu_thermal\n")
    (thermal / "temp1_input").write_text("45000\n")
    ina = root / "hwmon1"
    ina.mkdir()
    (ina / "name").write_text("ina219\n")
    (ina / "power1_input").write_text("4500000\n")  # µW: 4.5 W
    (ina / "power1_label").write_text("pi5v\n")
    counters = root / "hwmon2"
    counters.mkdir()
    (counters / "name").write_text("soc_energy\n")
    (counters / "energy1_input").write_text("1000000\n")  # µJ
    (counters / "power1_input").write_text("9999999\n")  # ignored: the counters are used
    return root


def test_hwmon_power_constant(hwmon_root: Path) -> None:
    with en.HwmonMeter(hwmon_root, device="ina219", interval_s=0.02) as meter:
        assert list(meter.channels) == ["ina219/pi5v"]
        reading = window(meter, 0.15)
    assert reading.valid, reading.invalid_reason
    assert reading.mean_watts == pytest.approx(4.5)
    assert reading.joules == pytest.approx(4.5 * reading.seconds)


def test_hwmon_energy_counter(hwmon_root: Path) -> None:
    with en.HwmonMeter(hwmon_root, device="soc_energy", interval_s=30.0) as meter:
        assert list(meter.channels) == ["soc_energy/energy1"]
        meter.begin()
        (hwmon_root / "hwmon2/energy1_input").write_text("4250000\n")
        reading = meter.end()
        meter.begin()
        (hwmon_root / "hwmon2/energy1_input").write_text("10\n")  # reset mid-window
        reset = meter.end()
    assert reading.valid and reading.joules == pytest.approx(3.25)
    assert_invalid(reset, "went backwards")


def test_hwmon_sensor_disappears(hwmon_root: Path) -> None:
    with en.HwmonMeter(hwmon_root, device="ina219", interval_s=0.02) as meter:
        meter.begin()
        (hwmon_root / "hwmon1/power1_input").unlink()
        reading = meter.end()
    assert_invalid(reading, "FileNotFoundError")
    with pytest.raises(en.EnergyMeterError, match="devices"):
        en.HwmonMeter(hwmon_root, device="nope")


# --------------------------------------------------------------------------------------------
# external meter CSV log

T0 = 1_700_000_000.0  # meter trace origin (epoch seconds)


def ramp_watts(t: np.ndarray | float) -> np.ndarray | float:
    return 2.0 + 0.1 * (t - T0)


def ramp_joules(start: float, stop: float) -> float:
    """Exact integral of ramp_watts."""
    return 2.0 * (stop - start) + 0.05 * ((stop - T0) ** 2 - (start - T0) ** 2)


def write_trace(path: Path, offset_s: float = 0.0, iso: bool = False, volts_amps: bool = False,
                partial_last_row: bool = False) -> Path:
    times = T0 + np.arange(-2.0, 16.0, 0.5)
    lines = ["timestamp,volts,amps" if volts_amps else "Time,Power"]
    for t in times:
        stamp = datetime.fromtimestamp(t - offset_s).isoformat() if iso else f"{t - offset_s:.3f}"
        if volts_amps:
            lines.append(f"{stamp},5.0,{ramp_watts(t) / 5.0:.9f}")
        else:
            lines.append(f"{stamp},{ramp_watts(t):.9f}")
    text = "\n".join(lines) + "\n" + ("1700000099.0," if partial_last_row else "")
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("iso", "volts_amps", "offset"), [(False, False, 0.0), (True, True, 0.0), (False, False, 3.0)]
)
def test_csv_log_known_integral(tmp_path: Path, iso: bool, volts_amps: bool, offset: float) -> None:
    log = write_trace(tmp_path / "meter.csv", offset, iso, volts_amps, partial_last_row=True)
    clock = FakeClock(T0 + 0.25)
    meter = en.CsvLogMeter(log, clock_offset_s=offset, wait_s=0.0, clock=clock, sleep=clock.sleep)
    meter.begin()
    clock.now = T0 + 10.75
    reading = meter.end()
    assert reading.valid, reading.invalid_reason
    assert reading.seconds == pytest.approx(10.5)
    assert reading.joules == pytest.approx(ramp_joules(T0 + 0.25, T0 + 10.75), rel=1e-9)
    assert reading.samples == 21  # trace points strictly inside the window


def test_csv_log_not_covering_or_vanishing(tmp_path: Path) -> None:
    log = write_trace(tmp_path / "meter.csv")
    clock = FakeClock(T0 + 10.0)
    meter = en.CsvLogMeter(log, wait_s=0.3, clock=clock, sleep=clock.sleep)
    meter.begin()
    clock.now = T0 + 30.0  # the log stops at T0 + 15.5
    assert_invalid(meter.end(), "does not cover", "clock offset")
    meter.begin()
    log.unlink()
    clock.now += 1.0
    assert_invalid(meter.end(), "FileNotFoundError")


def test_csv_log_bad_columns(tmp_path: Path) -> None:
    log = tmp_path / "meter.csv"
    log.write_text("when,mA\n1,2\n")
    with pytest.raises(en.EnergyMeterError, match="watts_column"):
        en.CsvLogMeter(log)
    with pytest.raises(en.EnergyMeterError, match="logger"):
        en.CsvLogMeter(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------
# estimate, choosing a meter


def test_estimate_is_labelled() -> None:
    clock = FakeClock(100.0)
    meter = en.EstimateMeter(5.0, clock=clock)
    reading = en.measure_idle(meter, 2.0, sleep=clock.sleep)
    assert reading.joules == pytest.approx(10.0) and reading.is_estimate and reading.valid
    assert "ESTIMATE" in meter.describe()
    with pytest.raises(ValueError, match="positive"):
        en.EstimateMeter(0.0)


def test_auto_meter_order(fake_vcgencmd: Path, tmp_path: Path, hwmon_root: Path) -> None:
    meter, message = en.auto_meter(tmp_path, i2c_bus=None)
    assert isinstance(meter, en.PmicMeter) and "using pmic" in message
    meter.close()
    missing = str(tmp_path / "no-vcgencmd")
    meter, message = en.auto_meter(tmp_path, missing, i2c_bus=FakeInaBus(INA260_REGS))
    assert isinstance(meter, en.Ina2xxMeter) and meter.method == "ina260", message
    meter.close()
    meter, message = en.auto_meter(tmp_path, missing)  # no dev/i2c-1 under the fake root
    assert isinstance(meter, en.HwmonMeter) and "using hwmon" in message
    meter.close()


def test_auto_meter_finds_nothing(tmp_path: Path) -> None:
    meter, message = en.auto_meter(tmp_path, str(tmp_path / "no-vcgencmd"))
    assert meter is None
    assert "no energy meter found" in message and "estimate:WATTS" in message


def test_meter_from_spec(tmp_path: Path) -> None:
    assert en.meter_from_spec("none")[0] is None
    meter, message = en.meter_from_spec("estimate:6.5")
    assert isinstance(meter, en.EstimateMeter) and meter.watts == 6.5 and "ESTIMATE" in message
    with pytest.raises(ValueError, match="did you mean 'pmic'"):
        en.meter_from_spec("pmicc")
    with pytest.raises(ValueError, match="csv:PATH"):
        en.meter_from_spec("csv")


# --------------------------------------------------------------------------------------------
# registry


def test_registry_lists_every_meter_and_the_auto_order(tmp_path: Path) -> None:
    assert en.METER_NAMES == ("auto", "none", "pmic", "ina219", "ina226", "ina260", "powercap",
                              "hwmon", "csv", "estimate")
    assert en.meter_names() == en.METER_NAMES
    by_name = {name: entry.meter for entry in en.registry.entries() for name in entry.names}
    assert by_name == {
        "pmic": en.PmicMeter, "ina219": en.Ina2xxMeter, "ina226": en.Ina2xxMeter,
        "ina260": en.Ina2xxMeter, "powercap": en.PowercapMeter, "hwmon": en.HwmonMeter,
        "csv": en.CsvLogMeter, "estimate": en.EstimateMeter,
    }
    # auto: PMIC, INA226/INA260, hwmon, powercap; never the CSV log or an estimate
    assert [(e.auto_label, e.meter) for e in en.registry.auto_order()] == [
        ("pmic", en.PmicMeter), ("ina2xx", en.Ina2xxMeter), ("hwmon", en.HwmonMeter),
        ("powercap", en.PowercapMeter),
    ]
    meter, message = en.auto_meter(tmp_path, str(tmp_path / "no-vcgencmd"),
                                   i2c_bus=FakeInaBus({}, address=0x41))  # nothing at 0x40
    assert meter is None
    tried = [message.index(f"{label}: ") for label in ("(pmic", "; ina2xx", "; hwmon", "; powercap")]
    assert tried == sorted(tried)


def test_a_new_meter_is_one_registered_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(en.registry, "_ENTRIES", list(en.registry._ENTRIES))

    @en.register_meter("fixed", order=55)
    class FixedMeter(en.EstimateMeter):
        method = "fixed"

        @classmethod
        def from_spec(cls, name: str, arg: str, context: en.MeterContext) -> FixedMeter:
            return cls(float(arg or 1.0))

    assert en.meter_names()[-3:] == ("csv", "fixed", "estimate")
    meter, message = en.meter_from_spec("fixed:2")
    assert isinstance(meter, FixedMeter) and meter.watts == 2.0 and message.startswith("using fixed")
    with pytest.raises(ValueError, match="already registered"):
        en.register_meter("csv", order=99)(FixedMeter)

# --------------------------------------------------------------------------------------------
# idle protocol


def reading(joules: float, seconds: float, valid: bool = True) -> en.EnergyReading:
    if not valid:
        return en.EnergyReading.invalid("pmic", "meter vanished", seconds)
    return en.EnergyReading(joules, seconds, joules / seconds, 10, "pmic")


def test_per_image_energy_gross_and_net() -> None:
    idle = reading(20.0, 10.0)  # 2 W
    runs = [reading(50.0, 10.0), reading(52.0, 10.5), reading(48.0, 9.8)]
    result = en.per_image_energy(runs, 100, idle)
    gross = np.array([50.0, 52.0, 48.0]) / 100
    net = (np.array([50.0, 52.0, 48.0]) - 2.0 * np.array([10.0, 10.5, 9.8])) / 100
    assert result.valid and result.idle_watts == 2.0
    assert result.gross_mean == pytest.approx(gross.mean())
    assert result.gross_std == pytest.approx(gross.std(ddof=1))
    assert result.net_mean == pytest.approx(net.mean())
    assert result.net_std == pytest.approx(net.std(ddof=1))
    assert en.net_joules(runs[1], idle) == pytest.approx(52.0 - 21.0)


def test_per_image_energy_invalid_is_never_zero() -> None:
    runs = [reading(50.0, 10.0), reading(0.0, 10.0, valid=False), reading(48.0, 9.8)]
    result = en.per_image_energy(runs, [100, 100, 100], reading(20.0, 10.0))
    assert not result.valid and "repeat 1: meter vanished" in (result.invalid_reason or "")
    assert math.isnan(result.gross_mean) and math.isnan(result.net_mean)
    bad_idle = en.per_image_energy(runs[:1] * 3, 100, reading(0.0, 10.0, valid=False))
    assert not bad_idle.valid and "idle baseline" in (bad_idle.invalid_reason or "")
    assert bad_idle.gross_mean == pytest.approx(0.5) and math.isnan(bad_idle.net_mean)


def test_per_image_energy_rejects_bad_protocol() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        en.per_image_energy([reading(1.0, 1.0)] * 2, 10)
    with pytest.raises(ValueError, match="different meters"):
        other = en.EnergyReading(1.0, 1.0, 1.0, 1, "hwmon")
        en.per_image_energy([reading(1.0, 1.0)] * 3, 10, other)

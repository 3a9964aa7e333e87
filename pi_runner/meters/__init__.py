"""Energy meters behind one interface: ``meter.begin()`` … ``meter.end() -> EnergyReading``.

Backends (``method`` in brackets), one module each:

- :class:`PmicMeter` [``pmic``] (``pmic``): Raspberry Pi 5 PMIC via ``vcgencmd
  pmic_read_adc``; one long-lived sampler thread; board total = Σ V·I over the rails, and per
  rail.
- :class:`Ina2xxMeter` [``ina219``/``ina226``/``ina260``] (``ina2xx``): an INA2xx
  current/power monitor on I2C (``smbus2``), e.g. in series with the Pi's 5 V supply.
- :class:`PowercapMeter` [``powercap``] (``powercap``): Linux powercap/RAPL energy counters
  (wrap-aware).
- :class:`HwmonMeter` [``hwmon``] (``hwmon``): hwmon ``power*_input`` (sampled) or
  ``energy*_input``.
- :class:`CsvLogMeter` [``csv``] (``csvlog``): the CSV log of an external meter (USB meter,
  Monsoon), aligned to the run by wall-clock timestamps.
- :class:`EstimateMeter` [``estimate``] (``estimate``): a constant-power *model estimate*;
  every reading says ``is_estimate=True``.

The rest: ``base`` (errors, :class:`EnergyReading`, :class:`EnergyMeter`, and
:class:`WindowMeter`, which owns the begin/end window), ``sampled`` (:class:`SampledMeter`,
the polling thread), ``integrate`` (the maths), ``registry`` (``--energy`` name -> meter class,
and the ``auto`` order; a meter module registers itself, and this package imports every module
in it, so a new meter is one new file), ``selection`` (:func:`meter_from_spec`,
:func:`auto_meter`) and ``protocol`` (idle baseline, per-image energy).

Power samples are integrated with the trapezoid rule; energy counters are differenced. A meter
that errors or disappears during a window returns ``valid=False`` with the reason and NaN
joules, never a zero.

Example::

    >>> from athe.pi_runner.meters import auto_meter, measure_idle, per_image_energy
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

from athe.pi_runner.meters import registry
from athe.pi_runner.meters.base import (
    READ_ERRORS,
    EnergyMeter,
    EnergyMeterError,
    EnergyReading,
    MeterReadError,
    WindowMeter,
)
from athe.pi_runner.meters.csvlog import CsvLogMeter, PowerTrace, parse_timestamp, read_power_trace
from athe.pi_runner.meters.estimate import EstimateMeter
from athe.pi_runner.meters.hwmon import HwmonMeter
from athe.pi_runner.meters.ina2xx import (
    DEFAULT_INA_ADDRESS,
    INA_CHIPS,
    INA_REG_BUS,
    INA_REG_CONFIG,
    INA_REG_CURRENT_260,
    INA_REG_DIE,
    INA_REG_MANUFACTURER,
    INA_REG_SHUNT,
    TI_MANUFACTURER_ID,
    Ina2xxMeter,
    InaChip,
    SMBusLike,
    ina_volts_amps,
    open_i2c_bus,
    swap_bytes,
    to_signed16,
)
from athe.pi_runner.meters.integrate import (
    WindowNotCoveredError,
    counter_joules,
    trapezoid_joules,
    window_trapezoid_joules,
)
from athe.pi_runner.meters.pmic import PmicMeter, parse_pmic_adc
from athe.pi_runner.meters.powercap import PowercapMeter
from athe.pi_runner.meters.protocol import (
    PerImageEnergy,
    measure_idle,
    net_joules,
    per_image_energy,
)
from athe.pi_runner.meters.registry import MeterContext, register_meter
from athe.pi_runner.meters.sampled import SampledMeter
from athe.pi_runner.meters.selection import auto_meter, meter_from_spec, meter_names
from athe.pi_runner.meters.sysfs import read_sysfs_int

registry.import_meter_modules()  # meter modules not imported above register themselves here

#: ``--energy`` values; ``NAME:ARGS`` forms are documented in :func:`meter_from_spec`.
METER_NAMES = meter_names()

__all__ = [
    "DEFAULT_INA_ADDRESS",
    "INA_CHIPS",
    "INA_REG_BUS",
    "INA_REG_CONFIG",
    "INA_REG_CURRENT_260",
    "INA_REG_DIE",
    "INA_REG_MANUFACTURER",
    "INA_REG_SHUNT",
    "METER_NAMES",
    "READ_ERRORS",
    "TI_MANUFACTURER_ID",
    "CsvLogMeter",
    "EnergyMeter",
    "EnergyMeterError",
    "EnergyReading",
    "EstimateMeter",
    "HwmonMeter",
    "Ina2xxMeter",
    "InaChip",
    "MeterContext",
    "MeterReadError",
    "PerImageEnergy",
    "PmicMeter",
    "PowerTrace",
    "PowercapMeter",
    "SMBusLike",
    "SampledMeter",
    "WindowMeter",
    "WindowNotCoveredError",
    "auto_meter",
    "counter_joules",
    "ina_volts_amps",
    "measure_idle",
    "meter_from_spec",
    "meter_names",
    "net_joules",
    "open_i2c_bus",
    "parse_pmic_adc",
    "parse_timestamp",
    "per_image_energy",
    "read_power_trace",
    "read_sysfs_int",
    "register_meter",
    "registry",
    "swap_bytes",
    "to_signed16",
    "trapezoid_joules",
    "window_trapezoid_joules",
]

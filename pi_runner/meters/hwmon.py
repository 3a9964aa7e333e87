"""hwmon meter [``hwmon``]: ``power*_input`` (sampled) or ``energy*_input`` (counters)."""

from __future__ import annotations

from pathlib import Path

from athe.pi_runner.meters.base import READ_ERRORS, EnergyMeterError
from athe.pi_runner.meters.registry import MeterContext, register_meter
from athe.pi_runner.meters.sampled import SampledMeter
from athe.pi_runner.meters.sysfs import read_stripped, read_sysfs_int


@register_meter("hwmon", order=40, auto=30)
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
            name = read_stripped(hw / "name") or hw.name
            seen.append(name)
            if device is not None and name != device:
                continue
            energy = sorted(hw.glob("energy*_input"))
            for path in energy or sorted(hw.glob("power*_input")):
                label = read_stripped(path.with_name(path.name.replace("_input", "_label")))
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

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> HwmonMeter:
        """``hwmon[:DEVICE]``."""
        return cls(context.root / "sys/class/hwmon", arg or None)

    def read(self) -> dict[str, float]:
        return {name: read_sysfs_int(path) * scale
                for name, (path, scale) in self.channels.items()}

    def describe(self) -> str:
        kind = "energy counters" if self.counter_wrap_j else "power inputs"
        return f"hwmon {kind}: {', '.join(self.channels)}"

"""Linux powercap / RAPL energy counters [``powercap``] (wrap-aware)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from athe.pi_runner.meters.base import READ_ERRORS, EnergyMeterError
from athe.pi_runner.meters.registry import MeterContext, register_meter
from athe.pi_runner.meters.sampled import SampledMeter
from athe.pi_runner.meters.sysfs import read_stripped, read_sysfs_int

_TOP_LEVEL_ZONE = re.compile(r"^(?!.*-mmio)[\w-]+:\d+$")


@register_meter("powercap", order=30, auto=40)
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
            wrap_uj = read_stripped(zone / "max_energy_range_uj")
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

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> PowercapMeter:
        """``powercap[:ZONE,…]``."""
        zones = [z for z in arg.split(",") if z] or None
        return cls(context.root / "sys/class/powercap", zones)

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
            if _TOP_LEVEL_ZONE.match(p.name) and read_stripped(p / "name") != "psys"
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

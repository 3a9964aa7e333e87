"""System guard: record the machine's state before and after a run, and say when it throttled.

A latency or energy figure is only meaningful next to the state it was taken in: the CPU
frequency governor, the clock, the temperature and (on a Raspberry Pi) the firmware's throttle
flags from ``vcgencmd get_throttled``. This module reads them from sysfs/procfs (the root is
injectable, so tests use a fake tree) and compares a snapshot taken before a run with one taken
after it.

Example::

    >>> from athe.pi_runner.system import snapshot, compare_snapshots, governor_warnings
    >>> before = snapshot()
    >>> for line in governor_warnings(before):
    ...     print("warning:", line)
    >>> run_the_benchmark()
    >>> guard = compare_snapshots(before, snapshot())
    >>> guard.throttled, guard.throttle_reasons
    (False, ())
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Bits of ``vcgencmd get_throttled`` (Raspberry Pi firmware documentation).
THROTTLE_BITS: dict[str, int] = {
    "under_voltage_now": 0,
    "freq_capped_now": 1,
    "throttled_now": 2,
    "soft_temp_limit_now": 3,
    "under_voltage_occurred": 16,
    "freq_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}
_NOW_MASK = 0xF
_OCCURRED_MASK = 0xF << 16
#: The Raspberry Pi firmware starts soft throttling at 80 °C.
SOFT_TEMP_LIMIT_C = 80.0
PERFORMANCE_GOVERNOR = "performance"


class VcgencmdError(RuntimeError):
    """``vcgencmd`` ran but failed or printed something unexpected."""


def run_vcgencmd(args: Sequence[str], vcgencmd: str = "vcgencmd", timeout_s: float = 2.0) -> str:
    """Run ``vcgencmd ARGS…`` and return its standard output.

    Args:
        args: sub-command and its arguments, e.g. ``["get_throttled"]``.
        vcgencmd: executable name (looked up on ``PATH``) or path.
        timeout_s: kill the command after this many seconds.

    Raises:
        FileNotFoundError: the executable does not exist.
        subprocess.TimeoutExpired: it ran longer than ``timeout_s``.
        VcgencmdError: it exited non-zero or reported ``error=`` (e.g. a sub-command this
            board's firmware does not have).
    """
    proc = subprocess.run(
        [vcgencmd, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    command = " ".join([vcgencmd, *args])
    if proc.returncode != 0:
        raise VcgencmdError(
            f"'{command}' exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()}; "
            "update the firmware (sudo rpi-eeprom-update) or check that this is a Raspberry Pi"
        )
    if proc.stdout.lstrip().startswith("error="):
        raise VcgencmdError(f"'{command}' reported {proc.stdout.strip()!r}")
    return proc.stdout


@dataclass(frozen=True)
class ThrottleFlags:
    """``vcgencmd get_throttled`` decoded; ``*_now`` are live, ``*_occurred`` stick since boot."""

    raw: int
    under_voltage_now: bool
    freq_capped_now: bool
    throttled_now: bool
    soft_temp_limit_now: bool
    under_voltage_occurred: bool
    freq_capped_occurred: bool
    throttled_occurred: bool
    soft_temp_limit_occurred: bool

    @property
    def any_now(self) -> bool:
        """True when any live flag is set."""
        return bool(self.raw & _NOW_MASK)

    @property
    def any_occurred(self) -> bool:
        """True when any since-boot flag is set."""
        return bool(self.raw & _OCCURRED_MASK)

    def set_flags(self) -> tuple[str, ...]:
        """Names of the set flags, e.g. ``("under_voltage_now", "throttled_occurred")``."""
        return tuple(name for name, bit in THROTTLE_BITS.items() if self.raw >> bit & 1)


def parse_throttled(text: str) -> ThrottleFlags:
    """Decode the output of ``vcgencmd get_throttled`` (``throttled=0x50005``).

    Raises:
        VcgencmdError: the text has no ``throttled=0x…`` value.
    """
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if match is None:
        raise VcgencmdError(
            f"cannot parse {text.strip()!r}: expected 'throttled=0x…' from 'vcgencmd get_throttled'"
        )
    raw = int(match.group(1), 0)
    flags = {name: bool(raw >> bit & 1) for name, bit in THROTTLE_BITS.items()}
    return ThrottleFlags(raw=raw, **flags)


@dataclass(frozen=True)
class CpuState:
    """Frequency scaling state of one CPU from ``/sys/devices/system/cpu/cpuN/cpufreq``."""

    cpu: int
    governor: str | None
    cur_khz: int | None
    min_khz: int | None
    max_khz: int | None


@dataclass(frozen=True)
class SystemSnapshot:
    """The machine's state at one moment.

    Attributes:
        wall_time: seconds since the epoch when taken.
        cpu_model: from ``/proc/cpuinfo`` (``model name``/``Model``/``Hardware``) or platform.
        board: device-tree model (e.g. ``Raspberry Pi 5 Model B Rev 1.0``), None elsewhere.
        cores: CPUs listed under ``/sys/devices/system/cpu`` (``os.cpu_count()`` without sysfs).
        cpus: per-CPU governor and frequencies; empty without cpufreq (containers, macOS).
        temperatures_c: thermal zone type → °C.
        throttled: decoded ``vcgencmd get_throttled``; None when there is no ``vcgencmd``.
        errors: probes that failed, with the reason (recorded, never hidden).
    """

    wall_time: float
    cpu_model: str
    board: str | None
    machine: str
    system: str
    cores: int
    cpus: tuple[CpuState, ...]
    temperatures_c: dict[str, float]
    throttled: ThrottleFlags | None
    errors: tuple[str, ...] = field(default=())

    @property
    def governors(self) -> tuple[str, ...]:
        """Distinct governors over all CPUs, sorted; empty when unknown."""
        return tuple(sorted({c.governor for c in self.cpus if c.governor is not None}))

    @property
    def max_temp_c(self) -> float | None:
        """Hottest thermal zone, or None without thermal zones."""
        return max(self.temperatures_c.values()) if self.temperatures_c else None


def _read_text(path: Path) -> str | None:
    """Stripped file content, or None when the file does not exist."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    return None if text is None or text == "" else int(text)


#: ARM Ltd (implementer 0x41) CPU part numbers of common SBC and phone cores.
ARM_CPU_PARTS: dict[int, str] = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0D: "Cortex-A77", 0xD41: "Cortex-A78", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510",
    0xD47: "Cortex-A710", 0xD4D: "Cortex-A715", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720",
}


def _cpuinfo_field(cpuinfo: str, key: str) -> str | None:
    match = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_model(root: Path = Path("/")) -> str:
    """CPU model from ``/proc/cpuinfo`` (x86 ``model name``, ARM implementer/part), else platform.

    On ARM boards ``/proc/cpuinfo`` names no CPU, so the part number is decoded, e.g.
    ``ARM Cortex-A76`` on a Raspberry Pi 5; the board itself is :func:`board_model`.
    """
    cpuinfo = _read_text(root / "proc/cpuinfo") or ""
    name = _cpuinfo_field(cpuinfo, "model name")
    if name:
        return name
    implementer, part = (_cpuinfo_field(cpuinfo, k) for k in ("CPU implementer", "CPU part"))
    if implementer and part:
        if int(implementer, 0) == 0x41 and int(part, 0) in ARM_CPU_PARTS:
            return f"ARM {ARM_CPU_PARTS[int(part, 0)]}"
        return f"CPU implementer {implementer} part {part}"
    for key in ("Hardware", "cpu model", "Processor"):
        name = _cpuinfo_field(cpuinfo, key)
        if name:
            return name
    return platform.processor() or platform.machine() or "unknown"


def board_model(root: Path = Path("/")) -> str | None:
    """Device-tree board model (Raspberry Pi and other ARM boards), else None."""
    text = _read_text(root / "proc/device-tree/model")
    if text is None:
        text = _read_text(root / "sys/firmware/devicetree/base/model")
    return text.rstrip("\x00") if text else None


def cpu_states(root: Path = Path("/")) -> tuple[CpuState, ...]:
    """Governor and cur/min/max frequency of every CPU that has cpufreq."""
    states = []
    for cpu_dir in _cpu_dirs(root):
        freq = cpu_dir / "cpufreq"
        if not freq.is_dir():
            continue
        states.append(
            CpuState(
                cpu=int(cpu_dir.name[3:]),
                governor=_read_text(freq / "scaling_governor"),
                cur_khz=_read_int(freq / "scaling_cur_freq"),
                min_khz=_read_int(freq / "scaling_min_freq"),
                max_khz=_read_int(freq / "scaling_max_freq"),
            )
        )
    return tuple(states)


def _cpu_dirs(root: Path) -> list[Path]:
    base = root / "sys/devices/system/cpu"
    dirs = [p for p in base.glob("cpu*") if re.fullmatch(r"cpu\d+", p.name)]
    return sorted(dirs, key=lambda p: int(p.name[3:]))


def temperatures(root: Path = Path("/")) -> dict[str, float]:
    """Thermal zone type → temperature in °C, from ``/sys/class/thermal/thermal_zone*/temp``."""
    temps: dict[str, float] = {}
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=lambda p: p.name)
    for zone in zones:
        millidegrees = _read_int(zone / "temp")
        if millidegrees is None:
            continue
        name = _read_text(zone / "type") or zone.name
        if name in temps:
            name = f"{name}:{zone.name}"
        temps[name] = millidegrees / 1000.0
    return temps


def read_throttled(vcgencmd: str = "vcgencmd") -> ThrottleFlags | None:
    """Decoded ``vcgencmd get_throttled``, or None when ``vcgencmd`` is not installed.

    Raises:
        VcgencmdError, subprocess.SubprocessError: ``vcgencmd`` exists but failed.
    """
    if shutil.which(vcgencmd) is None:
        return None
    return parse_throttled(run_vcgencmd(["get_throttled"], vcgencmd))


def snapshot(root: Path = Path("/"), vcgencmd: str = "vcgencmd") -> SystemSnapshot:
    """Take a :class:`SystemSnapshot`.

    Args:
        root: filesystem root holding ``sys/`` and ``proc/`` (a fake tree in tests).
        vcgencmd: the ``vcgencmd`` executable (name on ``PATH`` or path).

    A failing ``vcgencmd`` is recorded in ``errors`` (and makes ``throttled`` None) rather than
    aborting a benchmark over a diagnostic; the report shows it.
    """
    errors: list[str] = []
    try:
        throttled = read_throttled(vcgencmd)
    except (VcgencmdError, OSError, subprocess.SubprocessError) as exc:
        throttled = None
        errors.append(f"vcgencmd get_throttled: {type(exc).__name__}: {exc}")
    cpu_dirs = _cpu_dirs(root)
    return SystemSnapshot(
        wall_time=time.time(),
        cpu_model=cpu_model(root),
        board=board_model(root),
        machine=platform.machine(),
        system=platform.system(),
        cores=len(cpu_dirs) if cpu_dirs else (os.cpu_count() or 0),
        cpus=cpu_states(root),
        temperatures_c=temperatures(root),
        throttled=throttled,
        errors=tuple(errors),
    )


def governor_warnings(snap: SystemSnapshot) -> list[str]:
    """Warnings about settings that make latency figures vary (governor not ``performance``)."""
    if not snap.cpus:
        return ["CPU frequency governor unknown (no cpufreq in sysfs): latency may vary with "
                "frequency scaling"]
    slow = sorted({c.governor or "unknown" for c in snap.cpus} - {PERFORMANCE_GOVERNOR})
    if not slow:
        return []
    return [
        f"CPU governor is {', '.join(map(repr, slow))}, not 'performance': latency will vary with "
        "frequency scaling; fix: echo performance | sudo tee "
        "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
    ]


@dataclass(frozen=True)
class GuardResult:
    """Before/after comparison.

    Attributes:
        throttled: True when the firmware throttled or capped the clock (or saw under-voltage)
            during the run; the report must say so.
        throttle_reasons: why ``throttled`` is True.
        warnings: everything else worth printing (governor, heat, unreadable probes).
        temp_rise_c: hottest zone after minus before, None without thermal zones.
    """

    before: SystemSnapshot
    after: SystemSnapshot
    throttled: bool
    throttle_reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    temp_rise_c: float | None


def _throttle_reasons(before: ThrottleFlags | None, after: ThrottleFlags | None) -> list[str]:
    reasons = []
    if before is not None and before.any_now:
        now = [f for f in before.set_flags() if f.endswith("_now")]
        reasons.append(f"already throttled at start: {', '.join(now)}")
    if after is not None and after.any_now:
        now = [f for f in after.set_flags() if f.endswith("_now")]
        reasons.append(f"throttled at end: {', '.join(now)}")
    if after is not None:
        new_bits = after.raw & _OCCURRED_MASK & ~(before.raw if before is not None else 0)
        if new_bits:
            new = parse_throttled(f"throttled={new_bits:#x}").set_flags()
            reasons.append(f"occurred during the run: {', '.join(new)}")
    return reasons


def compare_snapshots(before: SystemSnapshot, after: SystemSnapshot) -> GuardResult:
    """Compare the snapshots taken before and after a run."""
    reasons = _throttle_reasons(before.throttled, after.throttled)
    warnings = governor_warnings(before)
    if before.governors != after.governors:
        warnings.append(f"governor changed during the run: {before.governors} -> {after.governors}")
    if before.throttled is not None and before.throttled.any_occurred:
        warnings.append(
            "since-boot throttle flags were already set before the run "
            f"({', '.join(f for f in before.throttled.set_flags() if f.endswith('_occurred'))}); "
            "only live flags can show throttling in this run: reboot for a clean record"
        )
    hottest = after.max_temp_c
    if hottest is not None and hottest >= SOFT_TEMP_LIMIT_C:
        warnings.append(
            f"hottest zone at {hottest:.1f} °C at the end (soft throttling starts at "
            f"{SOFT_TEMP_LIMIT_C:.0f} °C): add a heatsink/fan or pause between runs"
        )
    warnings.extend(f"before: {e}" for e in before.errors)
    warnings.extend(f"after: {e}" for e in after.errors)
    temp_rise = (
        None if hottest is None or before.max_temp_c is None else hottest - before.max_temp_c
    )
    return GuardResult(
        before=before,
        after=after,
        throttled=bool(reasons),
        throttle_reasons=tuple(reasons),
        warnings=tuple(warnings),
        temp_rise_c=temp_rise,
    )

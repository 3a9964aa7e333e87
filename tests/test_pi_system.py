"""System guard with a fake sysfs/procfs tree and a fake ``vcgencmd`` (athe.pi_runner.system)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from athe.pi_runner import system as sy

PI5_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd0b

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def make_tree(root: Path, governor: str = "ondemand", temp_mc: int = 52_300) -> Path:
    """A fake Raspberry Pi 5: 4 CPUs with cpufreq, two thermal zones, a device-tree model."""
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(PI5_CPUINFO)
    (root / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    for cpu in range(4):
        freq = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text(governor + "\n")
        (freq / "scaling_cur_freq").write_text("1500000\n")
        (freq / "scaling_min_freq").write_text("1500000\n")
        (freq / "scaling_max_freq").write_text("2400000\n")
    (root / "sys/devices/system/cpu/cpufreq").mkdir()  # not a CPU
    for index, (name, millideg) in enumerate([("cpu-thermal", temp_mc), ("rp1_adc", 40_000)]):
        zone = root / f"sys/class/thermal/thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(name + "\n")
        (zone / "temp").write_text(f"{millideg}\n")
    return root


@pytest.fixture
def fake_vcgencmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``vcgencmd`` first on PATH; ``get_throttled`` prints the content of ``throttled.txt``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "throttled.txt").write_text("throttled=0x0\n")
    script = bin_dir / "vcgencmd"
    script.write_text(f"""#!/bin/sh
if [ -e "{bin_dir}/fail" ]; then echo "VCHI initialization failed" >&2; exit 255; fi
[ "$1" = "get_throttled" ] && cat "{bin_dir}/throttled.txt"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_parse_throttled_bits() -> None:
    flags = sy.parse_throttled("throttled=0x50005\n")
    assert flags.raw == 0x50005
    assert flags.under_voltage_now and flags.throttled_now
    assert not flags.freq_capped_now and not flags.soft_temp_limit_now
    assert flags.under_voltage_occurred and flags.throttled_occurred
    assert not flags.freq_capped_occurred and not flags.soft_temp_limit_occurred
    assert flags.any_now and flags.any_occurred
    assert flags.set_flags() == ("under_voltage_now", "throttled_now", "under_voltage_occurred",
                                 "throttled_occurred")
    assert sy.parse_throttled("throttled=0x80008").soft_temp_limit_now
    assert not sy.parse_throttled("throttled=0x0").any_now
    with pytest.raises(sy.VcgencmdError, match="throttled=0x"):
        sy.parse_throttled("error=1")


def test_snapshot_reads_fake_pi(tmp_path: Path, fake_vcgencmd: Path) -> None:
    snap = sy.snapshot(make_tree(tmp_path / "root"))
    assert snap.cpu_model == "ARM Cortex-A76"
    assert snap.board == "Raspberry Pi 5 Model B Rev 1.0"
    assert snap.cores == 4
    assert [c.cpu for c in snap.cpus] == [0, 1, 2, 3]
    assert snap.cpus[0] == sy.CpuState(0, "ondemand", 1_500_000, 1_500_000, 2_400_000)
    assert snap.governors == ("ondemand",)
    assert snap.temperatures_c == {"cpu-thermal": pytest.approx(52.3), "rp1_adc": 40.0}
    assert snap.max_temp_c == pytest.approx(52.3)
    assert snap.throttled is not None and snap.throttled.raw == 0
    assert snap.errors == ()


def test_x86_cpu_model(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("model name\t: Intel(R) Core(TM) i7-8650U CPU\n")
    assert sy.cpu_model(tmp_path) == "Intel(R) Core(TM) i7-8650U CPU"


def test_governor_warning(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-vcgencmd")
    slow = sy.snapshot(make_tree(tmp_path / "a", governor="ondemand"), vcgencmd=missing)
    fast = sy.snapshot(make_tree(tmp_path / "b", governor="performance"), vcgencmd=missing)
    (warning,) = sy.governor_warnings(slow)
    assert "'ondemand'" in warning and "scaling_governor" in warning
    assert sy.governor_warnings(fast) == []
    assert fast.throttled is None and fast.errors == ()  # not a Pi: no vcgencmd, no error
    assert "unknown" in sy.governor_warnings(sy.snapshot(tmp_path / "empty", missing))[0]


def test_compare_flags_throttling_during_run(tmp_path: Path, fake_vcgencmd: Path) -> None:
    root = make_tree(tmp_path / "root", governor="performance")
    before = sy.snapshot(root)
    (fake_vcgencmd / "throttled.txt").write_text("throttled=0x50005\n")
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("82500\n")
    guard = sy.compare_snapshots(before, sy.snapshot(root))
    assert guard.throttled
    assert any("throttled at end" in r and "under_voltage_now" in r for r in guard.throttle_reasons)
    assert any("occurred during the run" in r and "throttled_occurred" in r
               for r in guard.throttle_reasons)
    assert guard.temp_rise_c == pytest.approx(30.2)
    assert any("82.5 °C" in w for w in guard.warnings)


def test_compare_clean_run_with_old_sticky_flags(tmp_path: Path, fake_vcgencmd: Path) -> None:
    root = make_tree(tmp_path / "root", governor="performance")
    (fake_vcgencmd / "throttled.txt").write_text("throttled=0x50000\n")  # happened before the run
    guard = sy.compare_snapshots(sy.snapshot(root), sy.snapshot(root))
    assert not guard.throttled and guard.throttle_reasons == ()
    assert any("reboot for a clean record" in w for w in guard.warnings)


def test_failing_vcgencmd_is_recorded(tmp_path: Path, fake_vcgencmd: Path) -> None:
    root = make_tree(tmp_path / "root", governor="performance")
    before = sy.snapshot(root)
    (fake_vcgencmd / "fail").touch()
    after = sy.snapshot(root)
    assert after.throttled is None
    assert "exited with 255" in after.errors[0] and "VCHI" in after.errors[0]
    assert any(w.startswith("after: vcgencmd") for w in sy.compare_snapshots(before, after).warnings)


def test_imports_without_torch_or_smbus2() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['smbus2'] = None\n"
        "import athe.pi_runner.meters, athe.pi_runner.system, athe.pi_runner.stats\n"
        "import athe.pi_runner.report\n"
        "assert sys.modules['torch'] is None\n"
        "assert 'matplotlib' not in sys.modules, 'plots must import matplotlib lazily'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

"""Raspberry Pi 5 PMIC meter [``pmic``]: ``vcgencmd pmic_read_adc``; board total = Σ V·I over
the rails, and per rail."""

from __future__ import annotations

import re
import shutil

from athe.pi_runner.meters.base import READ_ERRORS, EnergyMeterError, MeterReadError
from athe.pi_runner.meters.registry import MeterContext, register_meter
from athe.pi_runner.meters.sampled import SampledMeter
from athe.pi_runner.system import run_vcgencmd

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


@register_meter("pmic", order=10, auto=10)
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

    @classmethod
    def from_spec(cls, name: str, arg: str, context: MeterContext) -> PmicMeter:
        """``pmic``."""
        return cls(context.vcgencmd)

    def read(self) -> dict[str, float]:
        text = run_vcgencmd(["pmic_read_adc"], self.vcgencmd, self.timeout_s)
        return {rail: v * a for rail, (v, a) in parse_pmic_adc(text).items()}

    def describe(self) -> str:
        return f"Raspberry Pi 5 PMIC via '{self.vcgencmd} pmic_read_adc' ({len(self.rails)} rails)"

"""Choosing a meter: ``--energy`` values (:func:`meter_from_spec`) and detection
(:func:`auto_meter`), both through the registry."""

from __future__ import annotations

import difflib
from pathlib import Path

from athe.pi_runner.meters import registry
from athe.pi_runner.meters.base import EnergyMeter, EnergyMeterError
from athe.pi_runner.meters.ina2xx import DEFAULT_INA_ADDRESS, SMBusLike
from athe.pi_runner.meters.registry import MeterContext


def meter_names() -> tuple[str, ...]:
    """``--energy`` values: ``auto``, ``none`` and every registered meter, in its ``order``."""
    return ("auto", "none", *registry.spec_names())


def auto_meter(root: Path = Path("/"), vcgencmd: str = "vcgencmd",
               i2c_bus: int | SMBusLike | None = 1, ina_address: int = DEFAULT_INA_ADDRESS
               ) -> tuple[EnergyMeter | None, str]:
    """The first real meter present, in the registry's ``auto`` order (PMIC, INA226/INA260,
    hwmon, powercap).

    Never returns an estimate: a model estimate must be asked for by name.

    Args:
        root: filesystem root holding ``sys/`` and ``dev/`` (a fake tree in tests).
        vcgencmd: the ``vcgencmd`` executable.
        i2c_bus: I2C bus number or bus object to probe; None skips I2C.
        ina_address: I2C address probed for an INA226/INA260.

    Returns:
        ``(meter, message)``: the meter, or None with a message listing what was tried.
    """
    context = MeterContext(root, vcgencmd, i2c_bus, ina_address)
    notes: list[str] = []
    for entry in registry.auto_order():
        try:
            meter = entry.meter.probe(context)
        except EnergyMeterError as exc:
            notes.append(f"{entry.auto_label}: {exc}")
            continue
        if meter is not None:
            return meter, f"using {meter.method}: {meter.describe()}"
    return None, (
        "no energy meter found (" + "; ".join(notes) + "); for an external meter pass its log "
        "(--energy csv:PATH), or ask for a labelled model estimate (--energy estimate:WATTS)"
    )


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
    names = meter_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown energy meter {spec!r}{hint}; choose from {', '.join(names)}")
    if name == "none":
        return None, "energy measurement disabled (--energy none)"
    if name == "auto":
        return auto_meter(root, vcgencmd)
    meter = registry.factory(name)(name, arg, MeterContext(root, vcgencmd))
    return meter, f"using {meter.method}: {meter.describe()}"

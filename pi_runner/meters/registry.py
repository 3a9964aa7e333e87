"""The meter registry: ``--energy`` name -> meter class, and the order ``auto`` probes in.

A meter module registers its class with :func:`register_meter`; the package imports every
module in it (:func:`import_meter_modules`), so a new meter is one new file::

    @register_meter("mymeter", order=70, auto=50)
    class MyMeter(SampledMeter):
        method = "mymeter"

        @classmethod
        def from_spec(cls, name, arg, context):
            return cls(context.root / "sys/class/mymeter", arg or None)

``order`` places the names in :data:`~athe.pi_runner.meters.METER_NAMES` (and the CLI help);
``auto`` places the meter among those ``--energy auto`` tries, lowest first (None: never tried,
as for a model estimate, which must be asked for by name).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from athe.pi_runner.meters.base import EnergyMeter, WindowMeter


@dataclass(frozen=True)
class MeterContext:
    """What building or probing a meter may need.

    Attributes:
        root: filesystem root holding ``sys/`` and ``dev/`` (a fake tree in tests).
        vcgencmd: the ``vcgencmd`` executable.
        i2c_bus: I2C bus number or bus object to probe; None skips I2C probes.
        ina_address: I2C address probed for an INA226/INA260; None: the default address.
    """

    root: Path = Path("/")
    vcgencmd: str = "vcgencmd"
    i2c_bus: Any = 1
    ina_address: int | None = None


@dataclass(frozen=True)
class MeterEntry:
    """One registered meter class.

    Attributes:
        names: the ``--energy`` names it is built for (``NAME`` or ``NAME:ARG``).
        meter: the class; ``meter.from_spec(name, arg, context)`` builds it.
        order: where its names go in the list of names.
        auto: its place in the ``auto`` probe order; None: never probed.
        auto_label: how ``auto``'s report names it when it is not found.
    """

    names: tuple[str, ...]
    meter: type[WindowMeter]
    order: float
    auto: float | None
    auto_label: str


_ENTRIES: list[MeterEntry] = []
M = TypeVar("M", bound=type[WindowMeter])


def register_meter(*names: str, order: float, auto: float | None = None,
                   auto_label: str | None = None) -> Callable[[M], M]:
    """Class decorator: build the class for each of ``names`` (see the module docstring).

    Raises:
        ValueError: no name, or a name already registered.
    """
    if not names:
        raise ValueError("register_meter needs at least one --energy name")

    def decorate(meter: M) -> M:
        taken = [n for n in names if any(n in e.names for e in _ENTRIES) or n in ("auto", "none")]
        if taken:
            raise ValueError(f"energy meter name(s) {taken} already registered")
        _ENTRIES.append(MeterEntry(tuple(names), meter, order, auto, auto_label or names[0]))
        return meter

    return decorate


def entries() -> list[MeterEntry]:
    """Registered meters in ``order``."""
    return sorted(_ENTRIES, key=lambda e: e.order)


def spec_names() -> tuple[str, ...]:
    """Every registered ``--energy`` name, in ``order``."""
    return tuple(name for entry in entries() for name in entry.names)


def factory(name: str) -> Callable[[str, str, MeterContext], EnergyMeter]:
    """``from_spec`` of the class registered for ``name``.

    Raises:
        KeyError: nothing is registered for ``name``.
    """
    for entry in _ENTRIES:
        if name in entry.names:
            return entry.meter.from_spec
    raise KeyError(name)


def auto_order() -> list[MeterEntry]:
    """The meters ``auto`` probes, in the order it probes them."""
    return sorted((e for e in _ENTRIES if e.auto is not None), key=lambda e: e.auto or 0.0)


def import_meter_modules() -> None:
    """Import every module of this package, so that each meter module registers itself."""
    package = importlib.import_module(__package__ or "athe.pi_runner.meters")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")

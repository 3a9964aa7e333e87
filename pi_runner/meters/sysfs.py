"""Reading sysfs attributes (the powercap and hwmon meters)."""

from __future__ import annotations

from pathlib import Path

from athe.pi_runner.meters.base import MeterReadError


def read_stripped(path: Path) -> str | None:
    """A text attribute without its newline; None when the file does not exist."""
    return path.read_text().strip() if path.exists() else None


def read_sysfs_int(path: Path) -> int:
    """An integer sysfs attribute.

    Raises:
        OSError: the file vanished or cannot be read.
        MeterReadError: it does not hold an integer.
    """
    text = path.read_text().strip()
    try:
        return int(text)
    except ValueError as exc:
        raise MeterReadError(f"{path} holds {text!r}, not an integer") from exc

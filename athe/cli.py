"""The ``athe`` command: one click group whose subcommands are imported only when run.

``athe --help`` and ``athe run`` never import torch: each subcommand lives in its component
(``athe.training.cli``, ``athe.convert.cli``, …) and is loaded by name on first use.

Errors (shared by every subcommand, see the README's "Errors"): options are validated when
they are parsed (``Error: Invalid value for '--threads': …``, exit 2); a documented library
error (:func:`is_user_error`: ``BundleError``, ``ManifestError``, ``ImageError``,
``DispatchError``, ``InputError``, ``EnergyMeterError``, ``ReadError``, …, an ``OSError``, or a
plain ``ValueError`` raised by athe's own code) becomes one ``Error:`` line and exit 1; any
other exception is a bug and keeps its traceback. Ctrl-C exits 130 (SIGTERM 143, SIGHUP 129).
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from athe import __version__

#: subcommand -> ("module:attribute", one-line help shown by ``athe --help``)
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "variants": ("athe.commands:variants", "List the registered variants and their levels."),
    "demo": ("athe.commands:demo", "Run the demo on sample photos; 'athe demo serve' serves the phone demo."),
    "train": ("athe.training.cli:train", "Train a backbone or a router (needs athe[train])."),
    "convert": ("athe.convert.cli:convert", "Export every level to .tflite/.pte as a bundle."),
    "run": ("athe.pi_runner.cli:run", "Measure a bundle on this device (latency, energy)."),
    "eval": ("athe.evaluate.cli:eval_command", "Results table and Pareto sweep of a bundle."),
}


#: Documented library errors, by module: a user error when its module is loaded (an error of a
#: module that was never imported cannot have been raised, and torch stays unimported).
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("athe.runtime.manifest", "ManifestError"), ("athe.runtime.bundle", "BundleError"),
    ("athe.runtime.preprocess", "ImageError"), ("athe.runtime.dispatcher", "DispatchError"),
    ("athe.runtime.backends", "BackendError"), ("athe.runtime.readers", "ReadError"),
    ("athe.pi_runner.inputs", "InputError"), ("athe.pi_runner.meters.base", "EnergyMeterError"),
    ("athe.pi_runner.meters.base", "MeterReadError"), ("athe.training.data", "DataError"),
    ("athe.convert.bundle", "ConvertError"), ("athe.evaluate.analysis", "EvalError"),
    ("athe.demo_web", "DemoServerError"),
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The documented error classes of the modules loaded so far."""
    found = []
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _raised_by_athe(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module == "athe" or module.startswith("athe.")


def is_user_error(exc: BaseException) -> bool:
    """True for bad input or settings (one line, exit 1); False for a bug (traceback).

    User errors: the documented library errors, ``OSError`` (a full disk, a permission), and a
    plain ``ValueError`` that athe's own code raised with a message. A ``TypeError``,
    ``KeyError``, … or a ``ValueError`` raised inside numpy or the standard library is a bug.
    """
    if isinstance(exc, user_error_types()) or isinstance(exc, OSError):
        return True
    return type(exc) is ValueError and bool(str(exc)) and _raised_by_athe(exc)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class OneLineErrors(click.Group):
    """A group whose subcommands' user errors are one ``Error:`` line and Ctrl-C exits 130.

    Click would print "Aborted!" and exit 1 for a Ctrl-C that lands while a subcommand is
    being imported or parsed; here it is exit 130 (128 + the signal for SIGTERM/SIGHUP).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as exc:
            code = int(getattr(exc, "exit_code", 130))
            if not getattr(exc, "reported", False):
                click.echo("\ninterrupted", err=True)
            raise click.exceptions.Exit(code) from None
        except Exception as exc:
            if is_user_error(exc):
                raise click.ClickException(one_line(exc)) from exc
            raise


# -- option validation shared by the subcommands (click callbacks) -------------------------------
def max_threads() -> int:
    """The most backend threads an option accepts: 4 x the CPUs (more only slows a backend down)."""
    return 4 * (os.cpu_count() or 1)


def threads_option(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """``--threads``: 1 .. 4 x cpu_count (None: the default)."""
    if value is None:
        return None
    limit = max_threads()
    if not 1 <= value <= limit:
        raise click.BadParameter(f"{value} threads: use 1 to {limit} (4 x the {os.cpu_count() or 1} CPUs "
                                 "here; more threads than cores only slow the backend down)")
    return value


def unit_float(text: str, what: str) -> float:
    """A finite number in [0, 1] from ``text`` (else ``click.BadParameter`` naming ``what``)."""
    try:
        value = float(text)
    except ValueError:
        raise click.BadParameter(f"{what}: {text!r} is not a number; write a probability in [0, 1]") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"{what}: {text} must be a finite number in [0, 1]")
    return value


def thresholds_option(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float] | None:
    """``--thresholds NAME=P,...``: every P finite in [0, 1], each name once, not empty."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or not any(parts):
        raise click.BadParameter("empty: write NAME=P,... (e.g. simple=0.7,complex=0.5), or leave the "
                                 "option out to use the bundle's calibrated thresholds")
    out: dict[str, float] = {}
    for part in parts:
        if not part:
            raise click.BadParameter(f"{value!r} has an empty entry; write NAME=P,... without stray commas")
        name, sep, number = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"{part!r}: write NAME=P (e.g. simple=0.7)")
        if name in out:
            raise click.BadParameter(f"{name!r} is given twice; give each threshold once")
        out[name] = unit_float(number.strip(), name)
    return out


def finite_float(lo: float, hi: float) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback accepting None or a finite float in [lo, hi] (NaN and inf refused)."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise click.BadParameter(f"{value} must be a finite number in [{lo:g}, {hi:g}]")
        return value

    return check


#: Folders an output may not be written under (virtual filesystems).
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")
NAME_MAX = 255
PATH_MAX = 4096


def check_out_dir(value: str | os.PathLike[str]) -> Path:
    """An output folder that can be created: refuses '', system folders, files in the way, long names.

    Raises:
        click.BadParameter: saying which rule and the fix.
    """
    text = os.fspath(value)
    if not text.strip():
        raise click.BadParameter("empty: give a folder for the report (it is created)")
    if "\x00" in text:
        raise click.BadParameter("contains a NUL byte")
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        raise click.BadParameter(f"{text!r} cannot be encoded as a file name here") from None
    if len(encoded) >= PATH_MAX:
        raise click.BadParameter(f"{len(encoded)} bytes long; a path may have at most {PATH_MAX - 1}")
    long = [part for part in Path(text).parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise click.BadParameter(f"the name {long[0][:40]!r}... is {len(os.fsencode(long[0]))} bytes; a file "
                                 f"name may have at most {NAME_MAX}")
    path = Path(text)
    resolved = Path(os.path.abspath(path))
    for system in SYSTEM_FOLDERS:
        if resolved == Path(system) or Path(system) in resolved.parents:
            raise click.BadParameter(f"{text!r} is under {system}, a virtual filesystem: write the report "
                                     "to an ordinary folder")
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{text!r} exists and is not a folder; pick a new folder name")
    for parent in resolved.parents:  # the nearest existing ancestor must be a writable folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise click.BadParameter(f"{text!r} is under {str(parent)!r}, which is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                raise click.BadParameter(f"cannot create {text!r}: {str(parent)!r} is not writable")
            break
    return path


def out_option(ctx: click.Context, param: click.Parameter, value: Any) -> Path | None:
    """``--out``: see :func:`check_out_dir` (None: the command's default)."""
    return None if value is None else check_out_dir(value)


class LazyGroup(OneLineErrors):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, LAZY_COMMANDS[name][1]) for name in sorted(LAZY_COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    @staticmethod
    def _load(cmd_name: str) -> click.Command:
        target, _ = LAZY_COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or "a dependency"
            extra = "train" if missing.split(".")[0] in {"torch", "torchvision", "timm"} else (
                "convert" if missing.split(".")[0] in {"executorch", "litert_torch", "ai_edge_quantizer"}
                else "pi")
            raise click.ClickException(
                f"'athe {cmd_name}' needs {missing!r}, which is not installed; "
                f"install it with: pip install 'athe[{extra}]'"
            ) from exc
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="athe")
def cli() -> None:
    """ATHE Edge: adaptive ViTs exported per level, dispatched and measured on the edge."""


def main() -> None:
    try:
        cli(prog_name="athe")
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's message is printed
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

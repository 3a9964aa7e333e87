"""``athe run``: measure a bundle on this device, or compare bundles and policies.

Two subcommands; a first argument that is not a subcommand means ``measure``, so::

    athe run BUNDLE --input PATH [options]          # = athe run measure BUNDLE --input PATH
    athe run compare BUNDLE_A BUNDLE_B --input PATH
    athe run compare BUNDLE --policies router,fixed:dense --input PATH
    python -m athe.pi_runner BUNDLE --input PATH    # the same, without the athe entry point

(A bundle folder literally named ``compare`` or ``measure``: write ``./compare``.)
Each command parses its options and calls one library function:
:func:`athe.pi_runner.runner.run_bundle` or :func:`athe.pi_runner.compare.compare_runs`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from athe.cli import (
    OneLineErrors,
    finite_float,
    is_user_error,
    one_line,
    out_option,
    threads_option,
    thresholds_option,
)
from athe.pi_runner.meters import METER_NAMES

BACKENDS = ("litert", "executorch", "torch")


def energy_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--energy``: the arguments of a known meter checked at parse time (names at run time).

    An unknown name is left to the run, whose message lists the meters and the closest one.
    """
    text = value.strip()
    name, sep, arg = text.partition(":")
    name = name.strip().lower()
    if not text:
        raise click.BadParameter(f"empty: name a meter ({', '.join(METER_NAMES)}) or 'none'")
    if name in ("none", "auto", "pmic") and sep:
        raise click.BadParameter(f"{value!r}: {name!r} takes no argument")
    if name == "estimate":
        try:
            watts = float(arg)
        except ValueError:
            raise click.BadParameter(f"{value!r}: estimate needs the assumed power in watts, e.g. "
                                     "estimate:6.5") from None
        if not math.isfinite(watts) or not 0 < watts <= 10_000:
            raise click.BadParameter(f"{value!r}: the watts must be a finite number in (0, 10000]")
    elif name in ("ina219", "ina226", "ina260"):
        parts = arg.split(":") if arg else []
        most = 2 if name == "ina260" else 3
        form = f"{name}[:BUS[:ADDR" + ("" if name == "ina260" else "[:SHUNT_OHMS]") + "]]"
        if len(parts) > most or any(not p.strip() for p in parts):
            raise click.BadParameter(f"{value!r}: write {form}, e.g. {name}:1:0x40")
        try:
            bus = int(parts[0]) if parts else 1
            address = int(parts[1], 0) if len(parts) > 1 else 0x40
        except ValueError:
            raise click.BadParameter(f"{value!r}: BUS is a number (1) and ADDR an I2C address (0x40); "
                                     f"write {form}") from None
        if not 0 <= bus <= 1023:
            raise click.BadParameter(f"{value!r}: I2C bus {bus} out of range 0-1023")
        if not 0x03 <= address <= 0x77:
            raise click.BadParameter(f"{value!r}: I2C address {address:#x} out of range 0x03-0x77")
        if len(parts) > 2:
            try:
                shunt = float(parts[2])
            except ValueError:
                shunt = math.nan
            if not math.isfinite(shunt) or not 0 < shunt <= 1000:
                raise click.BadParameter(f"{value!r}: SHUNT_OHMS must be a finite resistance in (0, 1000], "
                                         "e.g. 0.1")
    elif name == "csv" and not arg.strip():
        raise click.BadParameter(f"{value!r}: write csv:PATH (the meter's log file)")
    return text


def input_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--input``: not empty, no NUL byte (what it names is read at run time)."""
    if not value.strip():
        raise click.BadParameter("empty: give an image folder, an ImageFolder dataset, a CIFAR folder, "
                                 "a .tar/.tar.gz archive, an image, or camera[:N]")
    if "\x00" in value:
        raise click.BadParameter("contains a NUL byte")
    return value


class RunGroup(OneLineErrors):
    """A group whose first argument, when it is not a subcommand, selects ``measure``.

    Its subcommands' user errors are one ``Error:`` line and Ctrl-C exits 130, also when run
    as ``python -m athe.pi_runner`` (:class:`athe.cli.OneLineErrors`).
    """

    default_command = "measure"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        help_names = set(ctx.help_option_names) | {"--help"}
        if args and args[0] not in self.commands and args[0] not in help_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _remember_wide(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta["athe.wide"] = value
    return value


def _console() -> Any:
    """The run's console: terminal width, or wide enough for every column with ``--wide``."""
    from rich.console import Console

    from athe.pi_runner.report import WIDE_COLUMNS

    wide = click.get_current_context().meta.get("athe.wide", False)
    return Console(width=max(WIDE_COLUMNS, Console().width)) if wide else Console()


def energy_refusal(energy: str, repeat: int, found: str | None = None) -> str:
    """Why an energy run refuses fewer than 3 repeats, and the two ways on (pinned by a test)."""
    from athe.pi_runner.runner import MIN_ENERGY_REPEATS

    what = f"--energy {energy}" + (f" found {found}" if found else "")
    passes = f"{repeat} repeat{'s' if repeat != 1 else ''}"
    return (f"{what}, but energy per image is reported as mean ± std over repeats and {passes} "
            f"give{'s' if repeat == 1 else ''} no spread: pass --repeat {MIN_ENERGY_REPEATS} or more, "
            "or --energy none to measure latency only")


def _check_energy(energy: str, repeat: int) -> None:
    """Refuse a meter with fewer than 3 repeats before anything loads, saying why.

    ``--energy auto`` that finds no meter is not refused: the run measures latency only and
    says so on its ``energy:`` line.
    """
    from athe.pi_runner.meters import auto_meter, meter_names
    from athe.pi_runner.runner import MIN_ENERGY_REPEATS

    name = energy.strip().lower().partition(":")[0]
    if name == "none" or name not in meter_names() or repeat >= MIN_ENERGY_REPEATS:
        return  # an unknown name gets its own error from the run
    found = None
    if name == "auto":
        meter, _ = auto_meter()
        if meter is None:
            return
        found = f"{meter.method} ({meter.describe()})"
        meter.close()
    raise click.ClickException(energy_refusal(energy, repeat, found))


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--input", "input_spec", required=True, metavar="PATH|camera[:N]", callback=input_option,
                     help="Image folder, ImageFolder dataset, CIFAR python folder, .tar/.tar.gz "
                          "ImageFolder archive, one image, or camera[:N]."),
        click.option("--backend", type=click.Choice(BACKENDS), default="litert", show_default=True,
                     help="Runtime: litert (.tflite), executorch (.pte), torch (.pt2 reference)."),
        click.option("--threads", type=int, default=None, callback=threads_option,
                     help="Backend threads, 1 to 4 x the CPUs [default: all cores]."),
        click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
                     help="Warm-up images (then one run of every model)."),
        click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
                     help="Passes over the same images (at least 3 with a meter)."),
        click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="Use at most this many images (camera: frames, default 30)."),
        click.option("--shuffle", "shuffle", type=click.IntRange(min=0), default=None, metavar="SEED",
                     help="Seeded random order (subset with --limit) instead of sorted order."),
        click.option("--split", type=click.Choice(["test", "train"]), default="test",
                     show_default=True, help="Split of a CIFAR folder."),
        click.option("--no-labels", "ignore_labels", is_flag=True,
                     help="Ignore class folders (no accuracy)."),
        click.option("--thresholds", default=None, metavar="NAME=P,...", callback=thresholds_option,
                     help="Override exit thresholds (s1=0.9,s2=0.8) or router thresholds "
                          "(simple=0.7,complex=0.5), per the policy."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the random policy."),
        click.option("--energy", default="auto", show_default=True, metavar="METER", callback=energy_option,
                     help=f"Energy meter: {', '.join(METER_NAMES)}; forms: ina219[:BUS[:ADDR[:SHUNT]]], "
                          "powercap[:ZONE,..], hwmon[:DEVICE], csv:PATH, estimate:WATTS."),
        click.option("--idle-seconds", type=float, default=10.0, show_default=True,
                     callback=finite_float(0.0, 3600.0),
                     help="Idle baseline window with models loaded (0: gross energy only)."),
        click.option("--out", type=str, default=None, callback=out_option, metavar="DIR",
                     help="Report folder [default: runs/NAME-TIMESTAMP]."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--no-plots", is_flag=True, help="Do not write PNG plots."),
        click.option("--fsync", is_flag=True, help="fsync every row (survives power loss; slower)."),
        click.option("--wide", is_flag=True, expose_value=False, callback=_remember_wide,
                     help="Tables with every column (by default they fit the terminal, e.g. 80 columns "
                          "over SSH or in a pipe, hiding the least important ones)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _default_out(name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "run"
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _summary_complete(path: Path) -> bool:
    import json

    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def _call(out: Path, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; user errors become one-line click errors; Ctrl-C exits 130 (SIGTERM 143,
    SIGHUP 129) saying what was kept."""
    from athe.pi_runner.runner import interrupt_signals

    started = time.time()
    try:
        with interrupt_signals(ignore_after=True):  # SIGTERM/SIGHUP like Ctrl-C, each once
            return fn()
    except KeyboardInterrupt as exc:
        code = int(getattr(exc, "exit_code", 130))
        what = "interrupted" if code == 130 else f"terminated ({exc})"
        summary, rows = out / "summary.json", out / "per_image.jsonl"
        if summary.exists() and summary.stat().st_mtime >= started - 1.0:
            state = "marked incomplete" if not _summary_complete(summary) else "complete (the run had finished)"
            click.echo(f"\n{what}: completed rows kept in {out}, summary {state}", err=True)
        elif rows.exists():
            click.echo(f"\n{what}: completed rows kept in {rows} (no summary was written)", err=True)
        else:
            click.echo(f"\n{what} before any image was measured: nothing written", err=True)
        raise click.exceptions.Exit(code) from None
    except Exception as exc:
        if not is_user_error(exc):
            raise
        summary = out / "summary.json"
        kept = (f" (rows so far kept in {out}, summary marked incomplete)"
                if summary.exists() and summary.stat().st_mtime >= started - 1.0 else "")
        raise click.ClickException(f"{one_line(exc)}{kept}") from exc


@click.group("run", cls=RunGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def run(ctx: click.Context) -> None:
    """Measure a bundle on this device (latency per stage, energy, system state) or compare.

    \b
    athe run BUNDLE --input PATH [options]     (same as: athe run measure ...)
    athe run compare BUNDLE_A BUNDLE_B --input PATH
    athe run compare BUNDLE --policies router,fixed:dense --input PATH
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@run.command("measure")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--policy", default=None,
              help="exit, exit:<stage>, router, fixed:<level>, random:<fraction>, "
                   "random:<level>=<share>,..., oracle [default: the bundle's: exit with stages, else router].")
@click.option("--level-energy/--no-level-energy", default=True, show_default=True,
              help="With a meter, also measure each level in its own fixed-level passes.")
@_common_options
def measure(bundle: Path, policy: str, level_energy: bool, input_spec: str, backend: str,
            threads: int | None, warmup: int, repeat: int, limit: int | None,
            shuffle: int | None, split: str, ignore_labels: bool, thresholds: dict[str, float] | None,
            seed: int, energy: str, idle_seconds: float, out: Path | None, no_progress: bool,
            no_plots: bool, fsync: bool) -> None:
    """Measure BUNDLE on --input: per-image rows, summary, CSV, plots, table."""
    from athe.pi_runner.runner import run_bundle

    _check_energy(energy, repeat)
    out = out or _default_out(f"{Path(os.path.abspath(bundle)).name}-{policy or 'default'}")
    _call(out, lambda: run_bundle(
        bundle, input_spec, out=out, backend=backend, threads=threads, policy=policy,
        thresholds=thresholds, seed=seed, warmup=warmup, repeat=repeat, limit=limit,
        shuffle=shuffle, split=split, ignore_labels=ignore_labels, energy=energy,
        idle_seconds=idle_seconds, level_energy=level_energy, progress=not no_progress,
        plots=not no_plots, fsync=fsync, console=_console()))


@run.command("compare")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--policies", default="default", show_default=True, metavar="P1,P2,...",
              help="Policies to run for every bundle, e.g. exit,router,fixed:dense "
                   "('default': the bundle's own).")
@_common_options
def compare(bundles: tuple[Path, ...], policies: str, input_spec: str, backend: str,
            threads: int | None, warmup: int, repeat: int, limit: int | None,
            shuffle: int | None, split: str, ignore_labels: bool, thresholds: dict[str, float] | None,
            seed: int, energy: str, idle_seconds: float, out: Path | None, no_progress: bool,
            no_plots: bool, fsync: bool) -> None:
    """Run BUNDLES × --policies interleaved on the same images; print ratios to the first."""
    from athe.pi_runner.compare import compare_runs

    _check_energy(energy, repeat)
    policy_list = [p.strip() for p in policies.split(",") if p.strip()]
    out = out or _default_out("compare")
    _call(out, lambda: compare_runs(
        list(bundles), input_spec, out=out, policies=policy_list, backend=backend,
        threads=threads, thresholds=thresholds, seed=seed, warmup=warmup,
        repeat=repeat, limit=limit, shuffle=shuffle, split=split, ignore_labels=ignore_labels,
        energy=energy, idle_seconds=idle_seconds, progress=not no_progress,
        plots=not no_plots, fsync=fsync, console=_console()))

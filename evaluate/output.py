"""``athe eval`` outputs: ``eval.json``, ``rows.csv``, ``sweep.csv``, ``pareto.png``,
``measurements.npz`` and the terminal tables.

Example::

    >>> from athe.evaluate.output import print_report, write_outputs
    >>> files = write_outputs(result, measurements, Path("eval/mini"))  # an EvalResult
    >>> print_report(result)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from athe.evaluate.analysis import EvalResult, Measurements, Row, sweep_for_csv
from athe.pi_runner.report import new_figure, save_figure, write_csv, write_json

EVAL_JSON = "eval.json"
ROWS_CSV = "rows.csv"
SWEEP_CSV = "sweep.csv"
PARETO_PNG = "pareto.png"
MEASUREMENTS_NPZ = "measurements.npz"


def rows_for_csv(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def write_outputs(result: EvalResult, m: Measurements | None, out: Path) -> dict[str, Path]:
    """``eval.json``, ``rows.csv``, ``sweep.csv``, ``pareto.png`` (and ``measurements.npz``)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"rows_csv": write_csv(out / ROWS_CSV, rows_for_csv(result.rows)),
             "sweep_csv": write_csv(out / SWEEP_CSV, sweep_for_csv(result.sweep))}
    if m is not None:
        files["measurements"] = m.save(out / MEASUREMENTS_NPZ)
    files["pareto_png"] = plot_pareto(result, out / PARETO_PNG)
    files["eval_json"] = out / EVAL_JSON
    write_json(out / EVAL_JSON, {**result.to_dict(), "files": {k: str(v) for k, v in files.items()}})
    return files


def plot_pareto(result: EvalResult, path: Path) -> Path:
    """Top-1 vs mean latency (left) and vs mean MACs (right): the sweep, its Pareto front, the
    static levels, the random cheapest/richest line, random at the router's fractions, oracle,
    dense and the calibrated ATHE point."""
    fig = new_figure(12.0, 4.8)
    by = {r.name: r for r in result.rows}
    for ax, key, scale, label in ((fig.add_subplot(1, 2, 1), "latency_mean_ms", 1.0, "mean latency per image (ms)"),
                                  (fig.add_subplot(1, 2, 2), "mean_macs", 1e-6, "mean MACs per image (M)")):
        flag = "pareto_latency" if key == "latency_mean_ms" else "pareto_macs"
        if result.sweep:
            xs = np.array([getattr(p, key) for p in result.sweep]) * scale
            ys = np.array([p.accuracy for p in result.sweep])
            ax.scatter(xs, ys, s=6, color="0.75", label=f"router sweep ({len(xs)} threshold sets)", zorder=1)
            front = sorted((getattr(p, key) * scale, p.accuracy) for p in result.sweep if getattr(p, flag))
            ax.plot(*zip(*front, strict=True), "-o", color="tab:red", lw=1.5, ms=3, label="router Pareto front",
                    zorder=2)
        static = [r for r in result.rows if r.name.startswith("static:")]
        ax.plot([getattr(r, key) * scale for r in static], [r.accuracy for r in static], "s", color="tab:blue",
                ms=7, label="static levels", zorder=3)
        for r in static:
            ax.annotate(r.name.split(":", 1)[1], (getattr(r, key) * scale, r.accuracy),
                        textcoords="offset points", xytext=(5, -10), fontsize=8, color="tab:blue")
        ch, ri = by["always-cheapest"], by["always-richest"]
        ax.plot([getattr(ch, key) * scale, getattr(ri, key) * scale], [ch.accuracy, ri.accuracy], "--",
                color="tab:gray", label="random mix cheapest/richest", zorder=2)
        if "random" in by:
            r = by["random"]
            ax.errorbar([getattr(r, key) * scale], [r.accuracy], yerr=[r.accuracy_std or 0.0], fmt="D",
                        color="tab:purple", label=f"random @ router fractions ({r.seeds} seeds)", zorder=4)
        o = by["oracle"]
        ax.plot([getattr(o, key) * scale], [o.accuracy], "*", color="tab:green", ms=12, label="oracle", zorder=4)
        if "dense" in by:
            d = by["dense"]
            ax.plot([getattr(d, key) * scale], [d.accuracy], "o", mfc="none", mec="k", ms=11, label="dense", zorder=4)
        exits = [r for r in result.rows if r.name.startswith("exit:")]
        if exits:
            ax.plot([getattr(r, key) * scale for r in exits], [r.accuracy for r in exits], "^-",
                    color="tab:orange", ms=7, lw=1, label="each exit alone", zorder=3)
            for r in exits:
                ax.annotate(r.name, (getattr(r, key) * scale, r.accuracy), textcoords="offset points",
                            xytext=(5, 4), fontsize=8, color="tab:orange")
        for name, marker, color, text in (("random-exits", "D", "tab:brown", "random exits @ gate fractions"),
                                          ("oracle-exit", "*", "tab:olive", "oracle exit"),
                                          ("exit-maxsoftmax", "v", "tab:pink", "max-softmax exits"),
                                          ("exit-logistic", "v", "tab:pink", "logistic-gate exits"),
                                          ("exit-gate", "P", "tab:orange", "exit gate (default policy)")):
            if name in by:
                r = by[name]
                ax.plot([getattr(r, key) * scale], [r.accuracy], marker, color=color, mec="k",
                        ms=11 if name == "exit-gate" else 8, label=text, zorder=5)
        if "athe" in by:
            a = by["athe"]
            ax.plot([getattr(a, key) * scale], [a.accuracy], "o", color="tab:red", mec="k", ms=10,
                    label="router over levels (calibrated)", zorder=5)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best")
    title = f"{result.info.get('variant', '')} on {result.n_images} images"
    backend = result.info.get("backend") or {}
    if backend:
        n = backend.get('threads')
        title += f" — {backend.get('backend')} ({n} thread{'' if n == 1 else 's'})"
    if result.warnings:
        title += "\nRANDOM WEIGHTS: accuracy is meaningless"
    fig.suptitle(title, color="tab:red" if result.warnings else "black")
    return save_figure(fig, path)


def _pct(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} ms"


def print_report(result: EvalResult, console: Any = None) -> None:
    """The rows table, the router table and the verdicts (rich)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = console or Console()
    for warning in result.warnings:
        console.print(Panel(f"[bold]WARNING[/bold]: {warning}", style="bold red"))
    names = result.level_names
    title = f"ATHE eval: {result.info.get('variant', '')}, {result.n_images} images"
    accuracy = Table(title=f"{title}: top-1 (per level: routed share · top-1 of that group)")
    for col in ("row", "top-1 %", *names):
        accuracy.add_column(col, justify="left" if col == "row" else "right")
    energy = any(r.energy_j is not None for r in result.rows)
    cost = Table(title=f"{title}: cost per image (latency = preprocess + chosen level + router; "
                 f"file decode apart: {_ms(result.info.get('decode_mean_ms'))})")
    for col in ("row", "MACs (M)", "mean ms", "p50 ms", "p90 ms", "router %", *(["J/img"] if energy else [])):
        cost.add_column(col, justify="left" if col == "row" else "right")
    exit_rows = [r for r in result.rows if not set(r.fraction) <= set(names)]
    for r in result.rows:
        style = "bold" if r.name in ("athe", "exit-gate") else None
        top1 = _pct(r.accuracy) + (f" ± {_pct(r.accuracy_std)}" if r.accuracy_std is not None else "")
        if r not in exit_rows:
            groups = [f"{r.fraction[n]:.0%} · {_pct(r.group_accuracy[n], '.1f')}" if r.fraction[n] > 0
                      else "–" for n in names]
            accuracy.add_row(r.name, top1, *groups, style=style)
        cells = [r.name, f"{r.mean_macs / 1e6:.2f}", f"{r.latency_mean_ms:.3f}", f"{r.latency_p50_ms:.3f}",
                 f"{r.latency_p90_ms:.3f}", f"{100 * r.router_share:.1f}"]
        if energy:
            cells.append("–" if r.energy_j is None else f"{r.energy_j:.4g}" + (" *" if r.energy_note else ""))
        cost.add_row(*cells, style=style)
    console.print(accuracy)
    if exit_rows:
        stages = list(exit_rows[0].fraction)
        ex = Table(title=f"{title}: exits (per exit: share answering there · top-1 of that group)")
        for col in ("row", "top-1 %", *stages):
            ex.add_column(col, justify="left" if col == "row" else "right")
        for r in exit_rows:
            top1 = _pct(r.accuracy) + (f" ± {_pct(r.accuracy_std)}" if r.accuracy_std is not None else "")
            ex.add_row(r.name, top1, *[f"{r.fraction[n]:.0%} · {_pct(r.group_accuracy[n], '.1f')}"
                                       if r.fraction[n] > 0 else "–" for n in stages],
                       style="bold" if r.name == "exit-gate" else None)
        console.print(ex)
    console.print(cost)
    if any(r.energy_note for r in result.rows):
        console.print("* router energy not given in the energy JSON: excluded from routed rows")
    if result.router is not None:
        rt = Table(title=f"Router vs oracle labels (routed level = oracle's on "
                         f"{result.router['oracle_agreement']:.1f} % of images; {result.router['mean_ms']:.3f} ms)")
        for col in ("level", "threshold", "acc @0.5 %", "acc @threshold %", "level right %"):
            rt.add_column(col, justify="left" if col == "level" else "right")
        for n in names:
            th = result.router["thresholds"].get(n)
            rt.add_row(n, "fallback" if th is None else f"{th:.3g}", _pct(result.router["accuracy_at_0.5"][n]),
                       _pct(result.router["accuracy_at_threshold"].get(n)), _pct(result.router["positive_rate"][n]))
        console.print(rt)
    for v in result.verdicts:
        color = {"MET": "green", "NOT MET": "red"}.get(v.status, "yellow")
        console.print(f"[bold {color}]{v.status:7s}[/bold {color}] {v.claim} (target: {v.target or '–'}): {v.text}")
    for warning in result.warnings:
        console.print(f"[bold red]WARNING: {warning}[/bold red]")


"""``compare_runs`` (``athe run compare``): several bundles and/or policies in one process.

Every bundle × policy (a *candidate*) runs on the same images, round-robin per image (the
candidate order rotates per image), and latency and accuracy are reported as ratios/deltas
against the first candidate. With a meter, energy is then measured in whole-pass windows, one
per candidate per repeat, rotating the order per repeat (an image-level interleave cannot be
metered: windows that short are below any meter's resolution).

Example::

    >>> from athe.pi_runner.compare import compare_runs
    >>> result = compare_runs(["bundles/athe-mini"], "../shared/data/cifar10-train.tar.gz",
    ...                       out="runs/cmp", policies=["router", "fixed:dense"], limit=100)
    >>> result.summary["ratios"]["fixed:dense"]["mean_ratio"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from athe.pi_runner.inputs import ImageSource, Sample
from athe.pi_runner.meters import EnergyMeter, PerImageEnergy, measure_idle
from athe.pi_runner.report import (
    ENERGY_PNG,
    LATENCY_CDF_PNG,
    PER_IMAGE_JSONL,
    Column,
    JsonlWriter,
    RunRecorder,
    count_text,
    environment_info,
    fit_table,
    fmt_value,
    plot_energy_per_image,
    plot_latency_cdf,
    print_energy_table,
    progress_bar,
    to_jsonable,
)
from athe.pi_runner.runner import (
    ENERGY_PASSES_JSONL,
    MeasureOptions,
    RunResult,
    check_energy_repeats,
    check_out,
    check_source,
    default_console,
    energy_of,
    load_bundle,
    open_meter,
    open_source,
    predict_sample,
    prediction_row,
    rotated,
    warm_up,
)
from athe.pi_runner.stats import OVERALL, latency_report
from athe.pi_runner.system import compare_snapshots, governor_warnings, snapshot
from athe.runtime.dispatcher import Dispatcher, rss_bytes


@dataclass
class Candidate:
    """One bundle × policy in a comparison."""

    name: str
    bundle: str
    policy: str
    dispatcher: Dispatcher
    info: dict[str, Any]
    label_map: dict[int, int] | None = None

    def sample(self, sample: Sample) -> Sample:
        """The sample with its label index mapped onto this bundle's labels."""
        name, image, label = sample
        if label is None or self.label_map is None:
            return sample
        return name, image, self.label_map[label]


def candidate_names(bundles: Sequence[str | Path], policies: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(name, bundle, policy)`` for every bundle × policy; names are short but unique.

    Raises:
        ValueError: nothing to compare, or the same bundle and policy twice.
    """
    if not bundles or not policies:
        raise ValueError("compare needs at least one bundle and one policy")
    short = [Path(b).name or str(b) for b in bundles]
    labels = short if len(set(short)) == len(short) else [str(b) for b in bundles]
    out = []
    for b, label in zip(bundles, labels, strict=True):
        for p in policies:
            if len(bundles) == 1:
                name = p
            elif len(policies) == 1:
                name = label
            else:
                name = f"{label} {p}"
            out.append((name, str(b), p))
    names = [n for n, _, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"candidates given twice: {dupes}; each bundle × policy once")
    if len(out) < 2:
        raise ValueError("compare needs at least two candidates: give two bundles, or several "
                         "--policies (e.g. --policies router,fixed:dense)")
    return out


def _label_map(first: Sequence[str], other: Sequence[str], name: str) -> dict[int, int]:
    missing = [lb for lb in first if lb not in other]
    if missing:
        raise ValueError(f"candidate {name!r} lacks labels {missing[:10]} of the first bundle: "
                         "accuracy cannot be compared; use --no-labels for latency only")
    return {i: list(other).index(lb) for i, lb in enumerate(first)}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def compare_ratios(reports: Mapping[str, dict[str, Any]],
                   energy: Mapping[str, PerImageEnergy]) -> dict[str, dict[str, Any]]:
    """Per candidate: mean/p50/p90 latency and J/image as ratios to the first, accuracy delta."""
    names = list(reports)
    base = reports[names[0]]
    base_e = energy.get(names[0])
    out = {}
    for name in names:
        rep = reports[name]
        lat, blat = rep["latency_ms"][OVERALL], base["latency_ms"][OVERALL]
        acc, bacc = rep["accuracy"], base["accuracy"]
        e = energy.get(name)
        use_net = (e is not None and base_e is not None and e.net_j_per_image is not None
                   and base_e.net_j_per_image is not None)
        j = (e.net_mean if use_net else e.gross_mean) if e is not None else None
        bj = (base_e.net_mean if use_net else base_e.gross_mean) if base_e is not None else None
        out[name] = {
            "mean_ms": lat.mean_ms, "p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms,
            "mean_ratio": _ratio(lat.mean_ms, blat.mean_ms),
            "p50_ratio": _ratio(lat.p50_ms, blat.p50_ms),
            "p90_ratio": _ratio(lat.p90_ms, blat.p90_ms),
            "top1": acc["top1"] if acc else None,
            "top1_delta": acc["top1"] - bacc["top1"] if acc and bacc else None,
            "j_per_image": j, "j_kind": ("net" if use_net else "gross") if e is not None else None,
            "j_ratio": _ratio(j, bj),
            "is_estimate": e.is_estimate if e is not None else None,
        }
    return out


def print_compare_table(ratios: Mapping[str, Mapping[str, Any]], console: Any, title: str) -> None:
    """One row per candidate: latency, ratios to the first, accuracy delta, J/image.

    Fitted to the terminal (80 columns over SSH or a pipe): the p50 columns, then top-1 and
    the absolute mean are hidden before anything is cut; ``--wide`` shows them all.
    """
    rows = list(ratios.values())
    columns = [
        Column("candidate", [escape(name) for name in ratios], justify="left", wrap=True),
        Column("mean ms", [fmt_value(r["mean_ms"], ".4g") for r in rows], drop=4),
        Column("p50 ms", [fmt_value(r["p50_ms"], ".4g") for r in rows], drop=2),
        Column("× mean", [f"{fmt_value(r['mean_ratio'], '.2f')}×" for r in rows]),
        Column("× p50", [f"{fmt_value(r['p50_ratio'], '.2f')}×" for r in rows], drop=1),
        Column("top-1", ["–" if r["top1"] is None else f"{r['top1']:.1%}" for r in rows], drop=3),
        Column("Δ top-1", ["–" if r["top1_delta"] is None else f"{r['top1_delta'] * 100:+.1f} pp" for r in rows]),
    ]
    metered = [r for r in rows if r["j_per_image"] is not None]
    if metered:
        kinds = {r["j_kind"] for r in metered}
        kind = f"{kinds.pop()} " if len(kinds) == 1 else ""
        est = " (est)" if any(r["is_estimate"] for r in metered) else ""
        columns += [
            Column(f"{kind}J/img{est}", [fmt_value(r["j_per_image"], ".3g")
                                         + (f" {r['j_kind']}" if not kind and r["j_kind"] else "") for r in rows]),
            Column("× J", [f"{fmt_value(r['j_ratio'], '.2f')}×" for r in rows]),
        ]
    console.print(fit_table(console, title, columns))


def compare_runs(bundles: Sequence[str | Path], inputs: str | Path | ImageSource | Sequence[Sample],
                 *, out: str | Path, policies: Sequence[str] = ("router",),
                 backend: str = "litert", threads: int | None = None,
                 thresholds: dict[str, float] | None = None, seed: int = 0, warmup: int = 10,
                 repeat: int = 3, limit: int | None = None, shuffle: int | None = None,
                 split: str = "test", ignore_labels: bool = False,
                 energy: str | EnergyMeter | None = "none", idle_seconds: float = 10.0,
                 progress: bool = True, plots: bool = True, console: Any = None,
                 fsync: bool = False) -> RunResult:
    """Run every bundle × policy interleaved on the same images; report ratios to the first.

    Latency rows come from passes where each image goes through every candidate in turn (the
    order rotates per image); with a meter, energy comes from whole-pass windows afterwards,
    one per candidate per repeat (order rotated per repeat), rows in ``energy_passes.jsonl``.
    ``thresholds`` apply to the ``router`` candidates only.

    Raises:
        see :func:`run_bundle`; ValueError for fewer than two candidates or mismatched labels.
    """
    out = Path(out)
    console = default_console(console)
    check_out(out, PER_IMAGE_JSONL, ENERGY_PASSES_JSONL)
    named = candidate_names(bundles, policies)
    meter, meter_text = open_meter(energy)
    check_energy_repeats(meter, repeat)
    try:
        candidates = []
        for name, b, p in named:
            policy = None if p.strip().lower() == "default" else p
            loaded = load_bundle(b, backend, threads, policy,
                                 thresholds if p.strip().lower() in ("router", "exit", "default") else None,
                                 seed)
            candidates.append(Candidate(name, b, p, loaded.dispatcher, loaded.info))
        first_labels = candidates[0].dispatcher.bundle.labels
        source = open_source(inputs, first_labels, limit, shuffle, split, ignore_labels)
        check_source(source, [c.dispatcher.policy.kind for c in candidates])
        if source.labelled:
            for c in candidates[1:]:
                c.label_map = _label_map(first_labels, c.dispatcher.bundle.labels, c.name)
        opts = MeasureOptions(out=out, warmup=warmup, repeat=repeat, idle_seconds=idle_seconds,
                              level_energy=False, progress=progress, plots=plots, fsync=fsync,
                              energy=energy if isinstance(energy, str) else None)
        return _compare(candidates, source, meter, meter_text, opts, console)
    finally:
        if meter is not None:
            meter.close()


def _compare(candidates: list[Candidate], source: ImageSource, meter: EnergyMeter | None,
             meter_text: str, opts: MeasureOptions, console: Any) -> RunResult:
    out, warmup, repeat, fsync = opts.out, opts.warmup, opts.repeat, opts.fsync
    samples = source.samples
    names = [c.name for c in candidates]
    before = snapshot()
    console.print(f"comparing {len(candidates)} candidates on {source.describe()}, "
                  f"{repeat} repeat{'s' if repeat != 1 else ''}, interleaved per image; energy: {meter_text}", markup=False)
    for c in candidates:
        info = c.dispatcher.info()
        threads = info.get("threads")
        console.print(f"  {escape(c.name)}: {escape(c.bundle)} policy {escape(c.policy)}, {info['backend']} "
                      f"{threads} thread{'s' if threads != 1 else ''}"
                      + (" [bold white on red] RANDOM WEIGHTS [/]" if c.info["random_weights"] else ""))
    for note in source.notes:
        console.print(f"  note: {note}", markup=False)
    for line in governor_warnings(before):
        console.print(f"[yellow]warning:[/] {escape(line)}")
    state: dict[str, Any] = {"idle": None, "readings": {n: [] for n in names}, "guard": None}

    def summarize(rows: Sequence[Mapping[str, Any]], complete: bool) -> dict[str, Any]:
        reports = {c.name: latency_report([r for r in rows if r["run"] == c.name],
                                          c.dispatcher.options) for c in candidates}
        energies = {}
        if meter is not None:
            for n in names:
                e = energy_of(state["readings"][n], len(samples), state["idle"], complete)
                if e is not None:
                    energies[n] = e
        ready = all(rep["count"] for rep in reports.values())
        guard = state["guard"]
        return {
            "baseline": names[0],
            "candidates": {c.name: {"bundle": c.info, "policy": c.policy,
                                    "settings": c.dispatcher.info(), **reports[c.name],
                                    "energy": energies.get(c.name)} for c in candidates},
            "ratios": compare_ratios(reports, energies) if ready else None,
            "inputs": source.info(), "repeat": repeat, "warmup": warmup,
            "images_per_repeat": len(samples),
            "expected_rows": len(samples) * repeat * len(candidates),
            "energy": {"enabled": meter is not None, "message": meter_text,
                       "idle": state["idle"], "readings": state["readings"] if meter else None,
                       "method": "whole-pass windows per candidate per repeat, order rotated"},
            "peak_rss_bytes": rss_bytes(peak=True)[0],
            "system": ({"before": before, "warnings": governor_warnings(before)} if guard is None else
                       {"before": guard.before, "after": guard.after, "throttled": guard.throttled,
                        "throttle_reasons": guard.throttle_reasons, "warnings": guard.warnings}),
            "environment": environment_info(),
        }

    energy_writer = JsonlWriter(out / ENERGY_PASSES_JSONL, fsync=fsync) if meter is not None else None
    total = len(samples) * repeat * len(candidates) * (2 if meter is not None else 1)
    window_open = False
    with RunRecorder(out, summarize=lambda rows: summarize(rows, complete=False), fsync=fsync) as recorder:
        try:
            with progress_bar(console, opts.progress, total) as bar:
                bar.label("warm-up")
                for c in candidates:
                    warm_up(c.dispatcher, [c.sample(s) for s in samples], warmup)
                for r in range(repeat):
                    bar.label(f"repeat {r + 1}/{repeat} interleaved")
                    for i, sample in enumerate(samples):
                        for c in rotated(candidates, i + r):
                            p = predict_sample(c.dispatcher, c.sample(sample))
                            recorder.add_row(prediction_row(c.name, r, i, sample[0], p,
                                                            c.dispatcher.bundle.labels))
                            bar.advance()
                if meter is not None:
                    assert energy_writer is not None
                    if meter.is_estimate:
                        pass  # a constant-power estimate has no idle/active difference
                    elif opts.idle_seconds > 0:
                        bar.label(f"idle {opts.idle_seconds:g} s")
                        state["idle"] = measure_idle(meter, opts.idle_seconds)
                    for r in range(repeat):
                        for c in rotated(candidates, r):
                            bar.label(f"energy repeat {r + 1}/{repeat} {c.name}")
                            meter.begin()
                            window_open = True
                            for i, sample in enumerate(samples):
                                p = predict_sample(c.dispatcher, c.sample(sample))
                                energy_writer.write(prediction_row(c.name, r, i, sample[0], p,
                                                                   c.dispatcher.bundle.labels))
                                bar.advance()
                            window_open = False
                            state["readings"][c.name].append(meter.end())
        finally:
            if window_open and meter is not None:
                meter.end()
            if energy_writer is not None:
                energy_writer.close()
        state["guard"] = compare_snapshots(before, snapshot())
        rows = recorder.read_rows()
        summary = summarize(rows, complete=True)
        files = dict(recorder.finish(summary))
    if energy_writer is not None:
        files["energy_passes"] = out / ENERGY_PASSES_JSONL
    for line in state["guard"].warnings:
        if line not in governor_warnings(before):  # those were printed at the start
            console.print(f"[yellow]warning:[/] {escape(line)}")
    reports = {c.name: latency_report([r for r in rows if r["run"] == c.name], c.dispatcher.options)
               for c in candidates}
    energies = {n: e for n in names
                if (e := energy_of(state["readings"][n], len(samples), state["idle"], True)) is not None}
    ratios = compare_ratios(reports, energies)
    if opts.plots:
        files["latency_cdf"] = plot_latency_cdf(
            {n: [r["stages_ms"]["total"] / 1e3 for r in rows if r["run"] == n] for n in names},
            out / LATENCY_CDF_PNG, title="Latency CDF per candidate (interleaved per image)")
        if energies:
            kind = "net" if all(e.net_j_per_image is not None for e in energies.values()) else "gross"
            files["energy"] = plot_energy_per_image(energies, out / ENERGY_PNG, kind=kind,
                                                    title="Energy per image per candidate",
                                                    xlabel="candidate (bundle × policy)")
    print_compare_table(ratios, console, title=f"Compared with {names[0]!r} ({count_text(len(samples), repeat)}, "
                                               "interleaved per image)")
    if energies:
        print_energy_table(energies, console)
    if state["guard"].throttled:
        console.print(f"[bold red]THROTTLED during the run:[/] {escape('; '.join(state['guard'].throttle_reasons))}")
    console.print(f"report: {', '.join(str(p) for p in files.values())}", markup=False)
    return RunResult(out_dir=out, summary=to_jsonable({"rows": len(rows), **summary}), files=files)


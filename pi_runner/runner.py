"""Measure a bundle on this device and write the report: ``run_bundle``.

``run_bundle`` (what ``athe run BUNDLE --input PATH`` does), in order:

1. open and verify the bundle, load the router and every level on one backend (bundle
   verification, model load seconds, resident memory);
2. read the inputs into memory (:mod:`athe.pi_runner.inputs`), take a system snapshot, warn when
   the CPU governor is not ``performance``;
3. warm up: ``warmup`` images through the dispatcher, then one run of every model, so that no
   level is cold when routing first picks it;
4. with an energy meter: an idle window of ``idle_seconds`` with the models loaded and nothing
   running (skipped for a constant-power estimate, which has no idle/active difference);
5. ``repeat`` passes over the same images, each inside its own meter window; one JSONL row per
   image with every stage's raw time (decode, preprocess, route, infer, total), appended and
   flushed as it completes;
6. with a meter and ``level_energy``: each repeat also runs one pass per level with the policy
   forced to ``fixed:<level>`` on the same loaded models, each in its own meter window. Energy
   per level is therefore *measured* (J/image when every image runs at that level), not
   apportioned from a mixed run by inference time, which would only be an estimate. The order
   of the passes rotates from repeat to repeat so slow drift (heat, clocks) hits all of them;
   their rows go to ``level_passes.jsonl``;
7. a second snapshot: throttling, governor changes and heat are flagged in the report;
8. ``summary.json``, ``per_image.csv``, PNG plots and a short table on the terminal.

Ctrl-C or a crash during 3–6 keeps every completed row and writes a summary marked
``"complete": false`` with the reason (:class:`~athe.pi_runner.report.RunRecorder`). SIGTERM
(``kill``, a service stop) and SIGHUP (the terminal closed) are handled like Ctrl-C
(:func:`interrupt_signals`: they raise :class:`Terminated`, exit 128 + the signal); once the
first interrupt arrived, or while a summary is being written, further ones are held until
the summary is on disk.

Energy per image is gross (meter window joules / images) and net (minus idle watts × window
seconds), mean ± sample std over the repeats; the window covers the whole pass, i.e. the
dispatcher plus the runner's own per-image bookkeeping (a JSONL write, a progress tick).

``compare_runs`` (``athe run compare``, several bundles/policies interleaved) lives in
:mod:`athe.pi_runner.compare` and reuses this module's pieces.

Example::

    >>> from athe.pi_runner.runner import run_bundle
    >>> result = run_bundle("bundles/athe-mini", "../shared/data/cifar10-train.tar.gz",
    ...                     out="runs/mini", limit=200, shuffle=0, repeat=3, energy="auto")
    >>> result.summary["latency_ms"]["overall"]["p50_ms"], result.files["summary"]
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from athe.pi_runner.inputs import ImageSource, Sample, open_inputs
from athe.pi_runner.meters import (
    EnergyMeter,
    EnergyReading,
    PerImageEnergy,
    measure_idle,
    meter_from_spec,
    per_image_energy,
)
from athe.pi_runner.report import (
    PER_IMAGE_JSONL,
    JsonlWriter,
    RunRecorder,
    accuracy_line,
    count_text,
    energy_line,
    environment_info,
    plot_run,
    print_energy_table,
    print_latency_table,
    progress_bar,
    random_weights,
    rss_line,
    to_jsonable,
)
from athe.pi_runner.stats import (
    OVERALL,
    accuracy_of,
    latency_report,
    stage_seconds,
    summarize_latency,
)
from athe.pi_runner.system import (
    GuardResult,
    SystemSnapshot,
    compare_snapshots,
    governor_warnings,
    snapshot,
)
from athe.runtime.backends import BACKEND_FORMATS, load_backend
from athe.runtime.bundle import MANIFEST_NAME, Bundle
from athe.runtime.dispatcher import STAGES, Dispatcher, DispatchError, Prediction, rss_bytes
from athe.runtime.manifest import sha256_file
from athe.runtime.preprocess import ImageError

LEVEL_PASSES_JSONL = "level_passes.jsonl"
ENERGY_PASSES_JSONL = "energy_passes.jsonl"
#: A spread needs repeats: energy runs refuse fewer.
MIN_ENERGY_REPEATS = 3
LEVEL_ENERGY_METHOD = (
    "measured: one fixed-level pass per level per repeat over the same images, each in its own "
    "meter window (J/image if every image ran at that level); not apportioned by inference time"
)


@dataclass(frozen=True)
class MeasureOptions:
    """How a run measures (``run_bundle``'s and ``compare_runs``' settings after validation).

    Attributes:
        out: report folder.
        warmup: warm-up images (0: none).
        repeat: passes over the same images.
        idle_seconds: idle baseline window (0: none).
        level_energy: with a meter, also fixed-level passes (``run_bundle`` only).
        progress: show a progress bar.
        plots: write the PNGs.
        fsync: fsync every row.
        energy: the ``--energy`` spec as given, for the record (None: a meter object or none).
    """

    out: Path
    warmup: int = 10
    repeat: int = 3
    idle_seconds: float = 10.0
    level_energy: bool = True
    progress: bool = True
    plots: bool = True
    fsync: bool = False
    energy: str | None = None


@dataclass
class RunResult:
    """What a run wrote.

    Attributes:
        out_dir: the ``--out`` folder.
        summary: the summary as written to ``summary.json`` (JSON types).
        files: ``jsonl``, ``summary``, ``csv`` and the PNGs → path.
    """

    out_dir: Path
    summary: dict[str, Any]
    files: dict[str, Path]


# -- signals ---------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a run: handled like Ctrl-C (rows kept, summary incomplete).

    Attributes:
        signum: the signal; ``exit_code`` is ``128 + signum`` (143 for SIGTERM, 129 for SIGHUP).
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"{signal.Signals(self.signum).name} received")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: The signals a run turns into an interruption (those this platform has).
INTERRUPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                          if hasattr(signal, name))


class _Interrupts:
    """What :func:`interrupt_signals` installs: the first signal raises, later ones are held."""

    def __init__(self) -> None:
        self.fired = False
        self.holding = False
        self.held: list[int] = []

    def handler(self, signum: int, frame: object) -> None:
        if self.fired or self.holding:
            self.held.append(signum)  # the summary of the first interruption is being written
            return
        for state in _ACTIVE:  # enclosing blocks (the CLI's) hold the later ones too
            state.fired = True
        self.fired = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def hold(self) -> None:
        """Hold signals from now on (a summary is about to be written)."""
        self.holding = True

    def release(self) -> None:
        """Stop holding; a signal held meanwhile (and not yet acted on) is raised now."""
        self.holding = False
        if self.held and not self.fired:
            signum = self.held.pop(0)
            self.fired = True
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


_ACTIVE: list[_Interrupts] = []


def hold_interrupts() -> None:
    """Hold interrupts until the run's :func:`interrupt_signals` block ends (no-op outside one)."""
    if _ACTIVE:
        _ACTIVE[-1].hold()


def release_interrupts() -> None:
    """End :func:`hold_interrupts`; a signal held meanwhile is raised now."""
    if _ACTIVE:
        _ACTIVE[-1].release()


@contextmanager
def interrupt_signals(ignore_after: bool = False) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP interrupt the block; each only once.

    Args:
        ignore_after: when the block ends by an interruption, leave the three signals ignored
            instead of restoring the previous handlers (for a command line that exits next:
            a late second Ctrl-C then cannot turn a clean exit 130 into a traceback).

    SIGINT raises ``KeyboardInterrupt`` as usual, SIGTERM and SIGHUP raise :class:`Terminated`
    (a ``KeyboardInterrupt``), so every ``except KeyboardInterrupt`` / ``finally`` that keeps
    rows and writes a partial summary handles them too. After the first, or once
    :func:`hold_interrupts` was called (a summary is being written), further signals are held;
    one held while no interruption was raised is raised when the block ends. Outside the main
    thread (signals cannot be handled there) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = _Interrupts()
    saved = {}
    for sig in INTERRUPT_SIGNALS:
        try:
            saved[sig] = signal.signal(sig, state.handler)
        except (OSError, ValueError):  # not settable here
            continue
    _ACTIVE.append(state)
    try:
        yield
        state.release()
    finally:
        _ACTIVE.remove(state)
        for sig, old in saved.items():
            signal.signal(sig, signal.SIG_IGN if ignore_after and state.fired else old)


# -- small pieces ----------------------------------------------------------------------------
def open_meter(energy: str | EnergyMeter | None) -> tuple[EnergyMeter | None, str]:
    """An ``--energy`` value (or a meter object, or None) → ``(meter or None, message)``."""
    if energy is None:
        return None, "energy measurement disabled"
    if isinstance(energy, EnergyMeter):
        return energy, f"using {energy.method}: {energy.describe()}"
    return meter_from_spec(energy)


def check_energy_repeats(meter: EnergyMeter | None, repeat: int) -> None:
    """Raise ValueError when a meter is in use with fewer than 3 repeats (no spread)."""
    if repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {repeat}")
    if meter is not None and repeat < MIN_ENERGY_REPEATS:
        meter.close()
        raise ValueError(f"energy per image needs a spread over at least {MIN_ENERGY_REPEATS} repeats: "
                         f"pass --repeat {MIN_ENERGY_REPEATS} (or --energy none for latency only)")


@dataclass
class LoadedBundle:
    """A dispatcher and what loading it cost."""

    dispatcher: Dispatcher
    info: dict[str, Any]


def load_bundle(bundle: str | Path, backend: str | Any = "litert", threads: int | None = None,
                policy: str | None = None, thresholds: dict[str, float] | None = None,
                seed: int = 0) -> LoadedBundle:
    """Verify the bundle (only the backend's format) and preload the router and every level.

    Raises:
        BackendError, BundleError, DispatchError: with the fix in the message.
    """
    backend_obj = load_backend(backend, threads) if isinstance(backend, str) else backend
    fmt = BACKEND_FORMATS.get(backend_obj.name) or getattr(backend_obj, "format", None)
    t0 = time.perf_counter()
    opened = Bundle.open(bundle, formats=[fmt] if fmt else None)
    t1 = time.perf_counter()
    dispatcher = Dispatcher(opened, backend=backend_obj, fmt=fmt, policy=policy,
                            thresholds=thresholds, seed=seed)
    t2 = time.perf_counter()
    rss, rss_method = rss_bytes()
    manifest = opened.manifest
    info = {
        "path": str(opened.path), "variant": opened.variant, "levels": opened.level_names,
        "stages": opened.stage_names, "policy": dispatcher.policy.text,
        "router": opened.router is not None, "labels": len(opened.labels),
        "manifest_sha256": sha256_file(opened.path / MANIFEST_NAME),
        "random_weights": random_weights(manifest), "precision": manifest.precision,
        "created_with": manifest.created_with,
        "load": {
            "bundle_verify_s": t1 - t0, "dispatcher_init_s": t2 - t1,
            "models_load_s": sum(load.seconds for load in dispatcher.loads),
            "artifacts": [asdict(load) for load in dispatcher.loads],
            "rss_after_load_bytes": rss, "rss_method": rss_method,
            "peak_rss_after_load_bytes": rss_bytes(peak=True)[0],
        },
    }
    return LoadedBundle(dispatcher, info)


def rotated(items: Sequence[Any], start: int) -> list[Any]:
    if not items:
        return []
    k = start % len(items)
    return [*items[k:], *items[:k]]


@contextmanager
def forced_policy(dispatcher: Dispatcher, policy: str) -> Iterator[None]:
    """Run ``dispatcher`` with another policy on the same loaded models, then restore it."""
    try:
        saved = dispatcher.force_policy(policy)
    except DispatchError as exc:
        raise ValueError(str(exc)) from None
    try:
        yield
    finally:
        dispatcher.policy = saved


def predict_sample(dispatcher: Dispatcher, sample: Sample) -> Prediction:
    """``dispatcher.predict`` with the sample's name added to an image error."""
    name, image, label = sample
    try:
        return dispatcher.predict(image, label)
    except ImageError as exc:
        raise ImageError(f"input {name!r}: {exc}") from exc


def prediction_row(run: str, repeat: int, index: int, name: str, p: Prediction,
                   labels: Sequence[str]) -> dict[str, Any]:
    """One per-image JSONL row: identity, decision, correctness and raw stage times (ms)."""
    target = p.target
    return {
        "run": run, "repeat": repeat, "index": index, "image": name, "level": p.level,
        "label": target,
        "label_name": labels[target] if target is not None and target < len(labels) else None,
        "pred": p.label, "pred_name": p.label_name, "probability": p.probability,
        "correct": p.correct, "router_scores": p.router_scores,
        "stages_ms": {stage: p.timings_ms[stage] for stage in STAGES},
        # exit policies: each chain stage's ms and each asked gate's score (empty for levels);
        # ``athe train gates --latency-from`` calibrates to a latency budget from these.
        "stage_ms": dict(p.stage_ms), "gate_scores": dict(p.gate_scores), "wall_time": time.time(),
    }


def warm_up(dispatcher: Dispatcher, samples: Sequence[Sample], count: int) -> int:
    """``count`` images through the dispatcher, then one run of the router and every level.

    Returns:
        model runs done outside the dispatcher (0 when ``count`` is 0: no warm-up asked).
    """
    if count <= 0 or not samples:
        return 0
    for i in range(count):
        predict_sample(dispatcher, samples[i % len(samples)])
    x = dispatcher.preprocessor(samples[0][1])
    models = [m for m in (dispatcher.router, *dispatcher.levels.values()) if m is not None]
    for model in models:
        model.run(x)
    return len(models)


def default_console(console: Any) -> Any:
    """``console``, or a new stdout rich console."""
    if console is not None:
        return console
    from rich.console import Console

    return Console()


def say_weights(console: Any, random: bool) -> None:
    """One line on the weights: a red RANDOM WEIGHTS banner, or "trained"."""
    if random:
        console.print("[bold white on red] RANDOM WEIGHTS [/] the bundle manifest says "
                      "random_weights=true: latency and energy are real, accuracy is meaningless")
    else:
        console.print("weights: trained (manifest random_weights=false)")


# -- summaries -------------------------------------------------------------------------------
def energy_of(readings: Sequence[EnergyReading], images: int, idle: EnergyReading | None,
              complete: bool) -> PerImageEnergy | None:
    """Per-image energy of a run's meter windows (None: no window); a partial run needs 1 repeat."""
    if not readings:
        return None
    return per_image_energy(readings, images, idle=idle,
                            min_repeats=MIN_ENERGY_REPEATS if complete else 1)


@dataclass
class _RunState:
    """Everything a (partial) summary needs, filled in as the run goes."""

    settings: dict[str, Any]
    bundle: dict[str, Any]
    inputs: dict[str, Any]
    environment: dict[str, Any]
    level_names: list[str]
    main_name: str
    images_per_repeat: int
    before: SystemSnapshot
    meter_text: str
    meter: EnergyMeter | None = None
    fixed_policies: dict[str, str] = field(default_factory=dict)
    idle: EnergyReading | None = None
    idle_note: str | None = None
    pass_order: list[list[str]] = field(default_factory=list)
    pass_seconds: dict[str, list[float]] = field(default_factory=dict)
    readings: dict[str, list[EnergyReading]] = field(default_factory=dict)
    side_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    guard: GuardResult | None = None
    warmup_runs: int = 0


def _energy_block(state: _RunState, complete: bool) -> tuple[dict[str, Any], dict[str, PerImageEnergy]]:
    if state.meter is None:
        return {"enabled": False, "message": state.meter_text}, {}
    idle = state.idle if state.idle is not None else None
    per_run = {name: e for name in state.readings
               if (e := energy_of(state.readings[name], state.images_per_repeat, idle, complete))
               is not None}
    return {
        "enabled": True, "message": state.meter_text, "method": state.meter.method,
        "describe": state.meter.describe(), "is_estimate": state.meter.is_estimate,
        "idle": state.idle, "idle_note": state.idle_note,
        "main": state.main_name, "per_run": per_run,
        "per_level_method": LEVEL_ENERGY_METHOD if len(per_run) > 1 else None,
        "readings": {name: list(rs) for name, rs in state.readings.items()},
        "valid": all(e.valid for e in per_run.values()) if per_run else False,
        "invalid_reasons": {n: e.invalid_reason for n, e in per_run.items() if not e.valid},
    }, per_run


def build_summary(rows: Sequence[Mapping[str, Any]], state: _RunState, complete: bool) -> dict[str, Any]:
    """The summary of a run from its rows and state (also for a partial run)."""
    report = latency_report(rows, state.level_names)
    energy, _ = _energy_block(state, complete)
    seconds = state.pass_seconds.get(state.main_name, [])
    system: dict[str, Any] = {"before": state.before, "warnings": governor_warnings(state.before)}
    if state.guard is not None:
        g = state.guard
        system = {"before": g.before, "after": g.after, "throttled": g.throttled,
                  "throttle_reasons": g.throttle_reasons, "warnings": g.warnings,
                  "temp_rise_c": g.temp_rise_c}
    side = {name: {"count": len(rs),
                   "latency_ms": summarize_latency(stage_seconds(rs, "total")) if rs else None,
                   "accuracy": accuracy_of(rs)}
            for name, rs in state.side_rows.items()}
    return {
        "random_weights": state.bundle["random_weights"],
        "bundle": state.bundle, "settings": state.settings, "inputs": state.inputs,
        "images_per_repeat": state.images_per_repeat,
        "repeats_completed": len(seconds),
        "expected_rows": state.images_per_repeat * state.settings["repeat"],
        "warmup_model_runs": state.warmup_runs,
        **report,
        "wall": {"pass_seconds": state.pass_seconds, "pass_order": state.pass_order,
                 "images_per_s_per_repeat": [state.images_per_repeat / s for s in seconds if s > 0]},
        "level_passes": side,
        "energy": energy,
        "peak_rss_bytes": rss_bytes(peak=True)[0],
        "system": system,
        "environment": state.environment,
    }


# -- printing --------------------------------------------------------------------------------
def _print_end(console: Any, report: dict[str, Any], per_run: dict[str, PerImageEnergy],
               state: _RunState, files: Mapping[str, Path], peak_rss: int | None) -> None:
    level_energy = {lv: per_run[p] for lv in state.level_names
                    if (p := state.fixed_policies.get(lv, f"fixed:{lv}")) in per_run}
    if state.main_name in per_run:
        level_energy[OVERALL] = per_run[state.main_name]
    has_net = level_energy and all(e.net_j_per_image is not None for e in level_energy.values())
    print_latency_table(report["latency_ms"], routed=report["routed_fraction"],
                        energy=level_energy if has_net else None, console=console,
                        title=f"Latency per image (ms), {count_text(state.images_per_repeat, state.settings['repeat'])}, "
                              f"policy {state.settings['policy']}")
    if per_run:
        print_energy_table(per_run, console)
    acc = report["accuracy"]
    if acc is not None:
        console.print(accuracy_line(acc["top1"], state.images_per_repeat, state.settings["repeat"]))
    console.print(f"model load {1e3 * state.bundle['load']['models_load_s']:.1f} ms, " + rss_line(peak_rss))
    if state.guard is not None and state.guard.throttled:
        console.print(f"[bold red]THROTTLED during the run:[/] {escape('; '.join(state.guard.throttle_reasons))}")
    say_weights(console, state.bundle["random_weights"])
    console.print(f"report: {', '.join(str(p) for p in files.values())}", markup=False)


# -- the run ---------------------------------------------------------------------------------
def check_out(out: Path, *names: str) -> None:
    for name in names:
        if (out / name).exists():
            raise FileExistsError(f"{out / name} exists: pick a new --out folder (rows of two runs "
                                  "must not mix)")


def open_source(inputs: str | Path | ImageSource | Sequence[Sample], labels: Sequence[str],
                 limit: int | None, shuffle: int | None, split: str,
                 ignore_labels: bool) -> ImageSource:
    if isinstance(inputs, ImageSource):
        return inputs
    if isinstance(inputs, (str, Path)):
        return open_inputs(inputs, labels, limit=limit, shuffle=shuffle, split=split,
                           ignore_labels=ignore_labels)
    samples = list(inputs)
    return ImageSource("samples", "<in memory>", samples,
                       labelled=bool(samples) and all(s[2] is not None for s in samples))


def check_source(source: ImageSource, policy_kinds: Sequence[str]) -> None:
    if len(source) == 0:
        raise ValueError(f"no images in {source.location}")
    if "oracle" in policy_kinds and not source.labelled:
        raise ValueError(f"the oracle policy needs labelled images; {source.describe()} has none: "
                         "give an ImageFolder, CIFAR or tar dataset")


def run_bundle(bundle: str | Path, inputs: str | Path | ImageSource | Sequence[Sample], *,
               out: str | Path, backend: str | Any = "litert", threads: int | None = None,
               policy: str | None = None, thresholds: dict[str, float] | None = None, seed: int = 0,
               warmup: int = 10, repeat: int = 3, limit: int | None = None,
               shuffle: int | None = None, split: str = "test", ignore_labels: bool = False,
               energy: str | EnergyMeter | None = "none", idle_seconds: float = 10.0,
               level_energy: bool = True, progress: bool = True, plots: bool = True,
               console: Any = None, fsync: bool = False) -> RunResult:
    """Measure one bundle on this device and write the report into ``out`` (see the module doc).

    Args:
        bundle: the bundle folder.
        inputs: an ``--input`` spec (path or ``camera[:N]``), an opened source, or samples.
        out: report folder; must not hold a previous run.
        backend: ``litert``, ``executorch``, ``torch`` (or a backend object).
        threads: backend threads (None: ``os.cpu_count()``).
        policy, thresholds, seed: dispatcher settings (``athe.runtime.dispatcher``).
        warmup: warm-up images (0: none).
        repeat: passes over the same images (at least 3 with a meter).
        limit, shuffle, split, ignore_labels: see :func:`~athe.pi_runner.inputs.open_inputs`.
        energy: an ``--energy`` spec (``none``, ``auto``, ``pmic``, ``csv:PATH``,
            ``estimate:W``, …), a meter object, or None.
        idle_seconds: idle baseline window (0: no baseline, gross energy only).
        level_energy: with a meter, also measure each level in fixed-level passes.
        progress: show a progress bar.
        plots: write the PNGs.
        console: a rich console to print to (default stdout).
        fsync: fsync each row (survives power loss; slower on an SD card).

    Raises:
        FileExistsError: ``out`` holds a previous run.
        BundleError, BackendError, DispatchError, InputError, EnergyMeterError, ValueError:
            bad settings, before anything is measured.
        ImageError: an input that cannot be decoded (rows so far are kept, summary incomplete).
        KeyboardInterrupt: Ctrl-C (rows so far are kept, summary marked incomplete).
    """
    out = Path(out)
    console = default_console(console)
    check_out(out, PER_IMAGE_JSONL, LEVEL_PASSES_JSONL)
    if not idle_seconds >= 0:
        raise ValueError(f"--idle-seconds must be >= 0, got {idle_seconds}")
    with interrupt_signals():
        meter, meter_text = open_meter(energy)
        check_energy_repeats(meter, repeat)
        try:
            loaded = load_bundle(bundle, backend, threads, policy, thresholds, seed)
            dispatcher = loaded.dispatcher
            source = open_source(inputs, dispatcher.bundle.labels, limit, shuffle, split, ignore_labels)
            check_source(source, [dispatcher.policy.kind])
            opts = MeasureOptions(out=out, warmup=warmup, repeat=repeat, idle_seconds=idle_seconds,
                                  level_energy=level_energy, progress=progress, plots=plots, fsync=fsync,
                                  energy=energy if isinstance(energy, str) else None)
            return _measure(loaded, source, meter, meter_text, opts, console)
        finally:
            if meter is not None:
                meter.close()


def _measure(loaded: LoadedBundle, source: ImageSource, meter: EnergyMeter | None, meter_text: str,
             opts: MeasureOptions, console: Any) -> RunResult:
    dispatcher, bundle_info, out = loaded.dispatcher, loaded.info, opts.out
    warmup, repeat, idle_seconds, fsync = opts.warmup, opts.repeat, opts.idle_seconds, opts.fsync
    info = dispatcher.info()
    samples = source.samples
    labels = dispatcher.bundle.labels
    main = dispatcher.policy.text
    fixed = (dispatcher.policy.level if dispatcher.policy.kind == "fixed"
             else dispatcher.policy.stage if dispatcher.policy.kind == "fixed-exit" else None)
    options = dispatcher.options  # levels, or the stages under an exit policy
    fixed_policies = {o: dispatcher.fixed_policy(o) for o in options}
    side = ([fixed_policies[o] for o in options if o != fixed]
            if meter is not None and opts.level_energy else [])
    settings = {
        "backend": info["backend"], "backend_version": info.get("version"), "format": info["format"],
        "threads": info.get("threads"), "cpu_affinity": info.get("cpu_affinity"),
        "policy": main, "thresholds": info["thresholds"], "seed": info["seed"], "warmup": warmup,
        "repeat": repeat, "energy": opts.energy if opts.energy is not None else meter_text,
        "idle_seconds": idle_seconds, "level_energy": bool(side),
    }
    environment = {**environment_info(), "bundle_manifest_sha256": bundle_info["manifest_sha256"],
                   "backend": info["backend"], "backend_version": info.get("version"),
                   "threads": info.get("threads"), "random_weights": bundle_info["random_weights"]}
    what = "exits" if options != list(dispatcher.level_names) else "levels"
    console.print(f"bundle {bundle_info['path']} ({bundle_info['variant']}), {what} "
                  f"{', '.join(options)}, backend {info['backend']} "
                  f"{info.get('version', '')}, {info.get('threads')} threads, policy {main}", markup=False)
    load = bundle_info["load"]
    rss = load["rss_after_load_bytes"]
    console.print(f"loaded in {1e3 * (load['bundle_verify_s'] + load['dispatcher_init_s']):.0f} ms "
                  f"(sha256 verify {1e3 * load['bundle_verify_s']:.0f} ms, models "
                  f"{1e3 * load['models_load_s']:.0f} ms), RSS after load "
                  + (f"{rss / 2**20:.0f} MiB" if rss is not None else "unknown"))
    say_weights(console, bundle_info["random_weights"])
    console.print(f"inputs: {source.describe()}", markup=False)
    for note in source.notes:
        console.print(f"  note: {note}", markup=False)
    console.print(energy_line(meter is not None, meter_text), markup=False)
    before = snapshot()
    for line in governor_warnings(before):
        console.print(f"[yellow]warning:[/] {escape(line)}")
    state = _RunState(settings=settings, bundle=bundle_info, inputs=source.info(),
                      environment=environment, level_names=list(options), fixed_policies=fixed_policies,
                      main_name=main, images_per_repeat=len(samples), before=before,
                      meter_text=meter_text, meter=meter)
    passes = [main, *side]
    state.pass_seconds = {name: [] for name in passes}
    state.readings = {name: [] for name in passes} if meter is not None else {}
    state.side_rows = {name: [] for name in side}
    side_writer = JsonlWriter(out / LEVEL_PASSES_JSONL, fsync=fsync) if side else None
    window_open = False
    with RunRecorder(out, summarize=lambda rows: build_summary(rows, state, complete=False),
                     fsync=fsync) as recorder:
        try:
            with progress_bar(console, opts.progress, len(samples) * repeat * len(passes)) as bar:
                bar.label("warm-up")
                state.warmup_runs = warm_up(dispatcher, samples, warmup)
                if meter is not None and meter.is_estimate:
                    state.idle_note = ("no idle window: a constant-power estimate has no idle/active "
                                       "difference (net energy is not reported)")
                elif meter is not None and idle_seconds > 0:
                    bar.label(f"idle {idle_seconds:g} s")
                    state.idle = measure_idle(meter, idle_seconds)
                elif meter is not None:
                    state.idle_note = "--idle-seconds 0: no idle baseline, gross energy only"
                for r in range(repeat):
                    order = rotated(passes, r)
                    state.pass_order.append(order)
                    for name in order:
                        bar.label(f"repeat {r + 1}/{repeat} {name}")
                        if meter is not None:
                            meter.begin()
                            window_open = True
                        start = time.perf_counter()
                        with forced_policy(dispatcher, name):
                            for i, sample in enumerate(samples):
                                p = predict_sample(dispatcher, sample)
                                row = prediction_row(name, r, i, sample[0], p, labels)
                                if name == main:
                                    recorder.add_row(row)
                                else:
                                    assert side_writer is not None
                                    side_writer.write(row)
                                    state.side_rows[name].append(row)
                                bar.advance()
                        seconds = time.perf_counter() - start
                        if meter is not None:
                            window_open = False
                            state.readings[name].append(meter.end())
                        state.pass_seconds[name].append(seconds)
        except BaseException:
            hold_interrupts()  # a second Ctrl-C must not cut the partial summary short
            raise
        finally:
            if window_open and meter is not None:
                meter.end()  # close the window of an interrupted pass; its reading is dropped
            if side_writer is not None:
                side_writer.close()
        state.guard = compare_snapshots(before, snapshot())
        rows = recorder.read_rows()
        summary = build_summary(rows, state, complete=True)
        hold_interrupts()  # the complete summary is written whole; a signal now ends the run after it
        files = dict(recorder.finish(summary))
        release_interrupts()
    if side_writer is not None:
        files["level_passes"] = out / LEVEL_PASSES_JSONL
    for line in state.guard.warnings:
        if line not in governor_warnings(before):  # those were printed at the start
            console.print(f"[yellow]warning:[/] {escape(line)}")
    report = latency_report(rows, state.level_names)
    _, per_run = _energy_block(state, complete=True)
    if opts.plots:
        files.update(plot_run(out, rows, report["routed_fraction"], per_run, state.level_names,
                              policy=state.main_name, where=f"{state.bundle['variant']}, "
                              f"{state.settings['backend']}, {state.settings['threads']} threads"))
    _print_end(console, report, per_run, state, files, summary["peak_rss_bytes"])
    written = to_jsonable({"rows": len(rows), **summary})
    return RunResult(out_dir=out, summary=written, files=files)

"""The ATHE dispatcher: preprocess once, route, run the chosen level, return a ``Prediction``.

At construction the dispatcher loads the router and every level of one format (recording load
seconds and resident-memory growth per artifact), so ``predict`` never loads anything.

Example::

    >>> from athe.runtime import Bundle, Dispatcher
    >>> dispatcher = Dispatcher(Bundle.open("bundles/athe-mini"), backend="litert", threads=2)
    >>> p = dispatcher.predict("cat.jpg")
    >>> p.label_name, p.level, p.timings_ms["total"]
    ('cat', 'simple', 1.9)

Policies (the ``policy`` argument; parsed by ``parse_policy``; default: the bundle's
``default_policy``, ``exit`` for bundles with a stage chain, else ``router``):

``exit``
    Run the stage chain: after each stage but the last, score its exit with the stage's gate
    (``athe.runtime.gates.gate_score``) and stop when the score is at least its threshold
    (``thresholds`` overrides them per stage). The prediction records the exit taken, each
    stage's milliseconds and the gate scores. Work already done is reused by the next stage.
``exit:<stage>``
    Always answer at that stage's exit (the fixed-exit baselines).
``router``
    Run the router, pick the cheapest level whose predicted correctness is at least
    its threshold (``athe.runtime.routing.choose_level``); the richest level is the fallback.
    ``thresholds`` overrides some or all of the bundle's calibrated thresholds.
``fixed:<level>``
    Always that level (the static baselines).
``random:<fraction>``
    Seeded random routing: ``fraction`` of images to the cheapest level, the rest to the
    richest. ``random:simple=0.6,complex=0.3`` names shares per level; what is left (here
    0.1) goes to the richest level. Draws come from ``numpy.random.default_rng(seed)``.
``oracle``
    Needs the true label (evaluation only): run levels cheapest first and take the first that
    is right, else the richest. ``infer`` time is the sum over the levels it ran.

A bundle without a router allows only ``fixed``, ``random`` and ``oracle``. A dispatcher is not
thread-safe (one interpreter per artifact); use one per thread.
"""

from __future__ import annotations

import difflib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import BACKEND_FORMATS, Backend, LoadedModel, load_backend
from .bundle import Bundle, BundleError
from .gates import CompiledGate
from .preprocess import MAX_PIXELS, ImageInput, Preprocessor
from .routing import choose_level

#: Stage names in ``Prediction.timings_ms``.
STAGES = ("decode", "preprocess", "route", "infer", "total")


class DispatchError(ValueError):
    """A dispatcher setting that cannot work (policy, thresholds, label, shapes); says the fix."""


# -- policies ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """A parsed policy string.

    Attributes:
        kind: ``router``, ``fixed``, ``random`` or ``oracle``.
        level: the level of ``fixed``.
        shares: ``((level, probability), ...)`` of ``random``, summing to 1, cheapest first.
        text: the string it was parsed from.
    """

    kind: str
    text: str
    level: str | None = None
    shares: tuple[tuple[str, float], ...] = ()
    stage: str | None = None


def parse_policy(text: str, level_names: Sequence[str], stage_names: Sequence[str] = ()) -> Policy:
    """Parse ``router`` / ``fixed:<level>`` / ``random:<fraction>`` / ``random:a=0.6,b=0.3`` / ``oracle``.

    Args:
        text: the policy string.
        level_names: the bundle's levels, cheapest first.

    Raises:
        DispatchError: an unknown policy, level or malformed fraction, with the valid forms.
    """
    names = list(level_names)
    kind, _, arg = str(text).strip().partition(":")
    kind = kind.strip().lower()
    usage = "policies: router, fixed:<level>, random:<fraction>, random:<level>=<share>,..., oracle"
    if stage_names:
        usage = "policies: exit, exit:<stage>, " + usage[len("policies: "):]
    if kind == "exit":
        if not stage_names:
            raise DispatchError(f"policy {text!r}: this bundle has no stage chain; {usage} "
                                "(re-convert with a variant that declares stages for exits)")
        stage = arg.strip()
        if not stage:
            return Policy("exit", text)
        if stage not in stage_names:
            hint = difflib.get_close_matches(stage, list(stage_names), n=1)
            more = f" Did you mean {hint[0]!r}?" if hint else ""
            raise DispatchError(f"policy {text!r}: no stage {stage!r}; stages: {', '.join(stage_names)}.{more}")
        return Policy("fixed-exit", text, stage=stage)
    if kind in ("router", "oracle"):
        if arg:
            raise DispatchError(f"policy {text!r}: {kind!r} takes no argument; {usage}")
        return Policy(kind, text)
    if kind == "fixed":
        return Policy("fixed", text, level=_level_name(arg.strip(), names, text))
    if kind == "random":
        return Policy("random", text, shares=_parse_shares(arg, names, text))
    hint = difflib.get_close_matches(kind, ["exit", "router", "fixed", "random", "oracle"], n=1)
    more = f" Did you mean {hint[0]!r}?" if hint else ""
    raise DispatchError(f"unknown policy {text!r}; {usage}.{more}")


def _level_name(name: str, names: list[str], text: str) -> str:
    if name in names:
        return name
    hint = difflib.get_close_matches(name, names, n=1)
    more = f" Did you mean {hint[0]!r}?" if hint else ""
    raise DispatchError(f"policy {text!r}: no level {name!r}; levels: {', '.join(names)}.{more}")


def _fraction(value: str, text: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise DispatchError(f"policy {text!r}: {value!r} is not a number; write e.g. random:0.6") from None
    if not 0.0 <= share <= 1.0 or math.isnan(share):
        raise DispatchError(f"policy {text!r}: share {share} must be between 0 and 1")
    return share


def _parse_shares(arg: str, names: list[str], text: str) -> tuple[tuple[str, float], ...]:
    arg = arg.strip()
    if not arg:
        raise DispatchError(f"policy {text!r}: give a fraction (random:0.6) or shares "
                            f"(random:{names[0]}=0.6,...)")
    cheapest, richest = names[0], names[-1]
    shares: dict[str, float] = dict.fromkeys(names, 0.0)
    if "=" not in arg:
        fraction = _fraction(arg, text)
        shares[cheapest] += fraction
        shares[richest] += 1.0 - fraction
    else:
        seen: set[str] = set()
        for part in arg.split(","):
            name, sep, value = part.partition("=")
            name = _level_name(name.strip(), names, text)
            if not sep or name in seen:
                raise DispatchError(f"policy {text!r}: write each level once as <level>=<share>")
            seen.add(name)
            shares[name] = _fraction(value.strip(), text)
        total = sum(shares.values())
        if total > 1.0 + 1e-9:
            raise DispatchError(f"policy {text!r}: shares sum to {total:g} > 1")
        if richest in seen and abs(total - 1.0) > 1e-6:
            raise DispatchError(f"policy {text!r}: shares sum to {total:g}; when the richest level "
                                f"{richest!r} is named they must sum to 1 (or leave it out to take the rest)")
        shares[richest] += max(0.0, 1.0 - total)
    return tuple((n, shares[n]) for n in names)


def parse_thresholds(text: str) -> dict[str, float]:
    """``"simple=0.7,complex=0.5"`` -> ``{"simple": 0.7, "complex": 0.5}`` (for command lines).

    Raises:
        DispatchError: empty, malformed, a name given twice, or a value not finite in [0, 1].
    """
    out: dict[str, float] = {}
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise DispatchError(f"thresholds {text!r} are empty: write <level>=<threshold>,... e.g. simple=0.7")
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise DispatchError(f"thresholds {text!r}: write <level>=<threshold>,... e.g. simple=0.7")
        if name in out:
            raise DispatchError(f"thresholds {text!r}: {name!r} is given twice; give each threshold once")
        out[name] = check_threshold(name, number)
    return out


def check_threshold(name: str, value: Any) -> float:
    """A threshold: a finite number in [0, 1] (a probability or a gate score), else ``DispatchError``."""
    if (isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer)
            or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0):
        raise DispatchError(f"threshold for {name!r} must be a number in [0, 1] (finite), got {value!r}")
    return float(value)


def check_tensor(x: Any, shape: tuple[int, ...], what: str = "input tensor") -> np.ndarray:
    """A float32 array of ``shape`` with finite values (NaN or inf would route and answer silently).

    Raises:
        DispatchError: another type, dtype or shape, or a NaN/inf value (with how many).
    """
    if not isinstance(x, np.ndarray):
        raise DispatchError(f"{what} must be a numpy float32 array {shape}, got {type(x).__name__}")
    if x.dtype != np.float32 or tuple(x.shape) != tuple(shape):
        raise DispatchError(f"{what} must be float32 {tuple(shape)} (the preprocessed image), got "
                            f"{x.dtype} {tuple(x.shape)}")
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DispatchError(f"{what} has {bad} NaN/inf value(s) of {x.size}; refusing to predict on it")
    return x


def _finite_output(out: Any, owner: str) -> np.ndarray:
    """A model output with finite values, else ``DispatchError`` (a NaN never becomes an answer)."""
    arr = np.asarray(out)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise DispatchError(f"{owner} artifact returned NaN/inf (or no) values; the artifact or its input "
                            "is broken: re-convert the bundle")
    return arr


def _merged(base: dict[str, float], override: dict[str, float] | None, allowed: Sequence[str],
            only: str, fallback: str) -> dict[str, float]:
    """``base`` with ``override`` merged in; every key must be in ``allowed``, every value a
    threshold (``check_threshold``)."""
    merged = dict(base)
    for name, value in (override or {}).items():
        if name not in allowed:
            raise DispatchError(f"threshold for {name!r}: {only}: {', '.join(allowed)} ({fallback})")
        merged[name] = check_threshold(name, value)
    return merged


def run_named(model: Any, inputs: Sequence[str], outputs: Sequence[str],
              feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a stage artifact on the named tensors of ``feed``; its outputs by name."""
    args = [feed[name] for name in inputs]
    if hasattr(model, "run_many"):
        outs = model.run_many(args)
    elif len(args) == 1 and len(outputs) == 1:
        outs = [model.run(args[0])]
    else:
        raise DispatchError(f"backend model {model!r} cannot run multi-tensor stage artifacts")
    if len(outs) != len(outputs):
        raise DispatchError(f"stage artifact gave {len(outs)} outputs, the manifest names {list(outputs)}; "
                            "re-convert the bundle")
    return dict(zip(outputs, outs, strict=True))


# -- results -----------------------------------------------------------------------------------
@dataclass
class Prediction:
    """What the dispatcher decided for one image.

    Attributes:
        label: predicted class index.
        label_name: its name from the bundle's labels (``str(label)`` if the bundle has none).
        probability: softmax probability of ``label``.
        level: the level that produced the logits.
        router_scores: router probability per level (``{}`` when the router did not run).
        logits: ``[num_classes]`` float32 of ``level``.
        timings_ms: wall-clock per stage, ``decode``, ``preprocess``, ``route``, ``infer``,
            ``total`` (``total`` also covers the glue between stages).
        target: the true label index when one was given, else None.
        exit: the stage whose exit answered (``exit`` policies), else None; ``level`` then
            holds the same name.
        stage_ms: milliseconds of each stage that ran (``exit`` policies).
        gate_scores: gate score of each stage that was asked (``exit`` policy).
    """

    label: int
    label_name: str
    probability: float
    level: str
    router_scores: dict[str, float]
    logits: np.ndarray
    timings_ms: dict[str, float]
    target: int | None = None
    exit: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    gate_scores: dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> bool | None:
        return None if self.target is None else self.label == self.target

    @property
    def overhead_ms(self) -> float:
        """``total - route - infer``: decode, preprocessing and dispatcher glue."""
        t = self.timings_ms
        return t["total"] - t["route"] - t["infer"]


@dataclass(frozen=True)
class ArtifactLoad:
    """Cost of preloading one artifact.

    Attributes:
        rss_delta_bytes: growth of resident memory across the load (``None`` if unmeasurable);
            ``rss_method`` says how it was read.
    """

    owner: str
    format: str
    path: str
    file_bytes: int
    seconds: float
    rss_delta_bytes: int | None
    rss_method: str


def rss_bytes(peak: bool = False) -> tuple[int | None, str]:
    """Resident memory of this process and how it was read (the one RSS probe of the project).

    Args:
        peak: the peak so far (``getrusage`` ``ru_maxrss``) instead of the current value.

    Returns:
        ``(bytes or None, method)``: current is ``/proc/self/status`` VmRSS, else (no /proc)
        the peak, method ``"ru_maxrss (peak)"``; ``(None, "unavailable")`` without either.
    """
    if not peak:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024, "VmRSS"
        except OSError:
            pass
    try:
        import resource
        import sys
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(value if sys.platform == "darwin" else value * 1024), "ru_maxrss (peak)"
    except (ImportError, OSError):
        return None, "unavailable"


# -- the dispatcher ----------------------------------------------------------------------------
class Dispatcher:
    """Route each image to one level of a bundle and run it.

    Args:
        bundle: a ``Bundle`` or a bundle folder (opened verifying only ``fmt``).
        backend: ``litert``, ``executorch``, ``torch``, or a backend object with ``name``,
            ``threads`` and ``load(path) -> model`` (``model.run``, ``input_shape``,
            ``output_shape``), e.g. a fake in tests.
        threads: thread count for a backend given by name (``None``: ``os.cpu_count()``).
        fmt: bundle format to load; default the backend's (``BACKEND_FORMATS``).
        policy: see the module docstring.
        thresholds: per-level router threshold overrides (``router`` policy only), merged onto
            the bundle's calibrated ones.
        seed: seed of the ``random`` policy's generator.
        max_pixels: decompression-bomb limit for decoding.
    """

    def __init__(self, bundle: Bundle | str | Path, backend: str | Any = "litert",
                 threads: int | None = None, fmt: str | None = None, policy: str | None = None,
                 thresholds: dict[str, float] | None = None, seed: int = 0,
                 max_pixels: int = MAX_PIXELS) -> None:
        if isinstance(backend, str):
            limit = 4 * (os.cpu_count() or 1)
            if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                        or not 1 <= threads <= limit):
                raise DispatchError(f"threads must be an integer from 1 to {limit} (4 x the CPUs), got {threads!r}")
            self.backend: Backend = load_backend(backend, threads)
        else:
            if threads is not None:
                raise DispatchError("threads applies to a backend given by name; set it on the backend object")
            self.backend = backend
        found = fmt or BACKEND_FORMATS.get(self.backend.name) or getattr(self.backend, "format", None)
        if not found:
            raise DispatchError(f"backend {self.backend.name!r} has no default format; pass fmt=")
        self.format: str = str(found)
        if not isinstance(bundle, Bundle):
            bundle = Bundle.open(bundle, formats=[self.format])
        elif self.format not in bundle.formats:
            raise BundleError(f"bundle {str(bundle.path)!r} was not opened with format {self.format!r} "
                              f"(it has: {', '.join(bundle.formats)}); pick a backend for one of those")
        self.bundle = bundle
        self.level_names = bundle.level_names
        self.stage_names = bundle.stage_names
        if policy is None:
            policy = bundle.manifest.default_policy
        self.policy = parse_policy(policy, self.level_names, self.stage_names)
        if self.policy.kind == "router" and bundle.router is None:
            raise DispatchError(f"bundle {str(bundle.path)!r} has no router; use fixed:<level>, "
                                "random:<fraction> or oracle")
        self.thresholds = self._merge_thresholds(thresholds)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._cumulative = np.cumsum([p for _, p in self.policy.shares]) if self.policy.shares else None
        self.preprocessor = Preprocessor(bundle.input, max_pixels)
        self.loads: list[ArtifactLoad] = []
        chain = self.policy.kind in ("exit", "fixed-exit")
        # Everything is preloaded (router, levels, stages), so a runner can force any policy
        # on the same models (fixed-level and fixed-exit energy passes).
        self.router: LoadedModel | None = self._load("router") if bundle.router is not None else None
        self.levels: dict[str, LoadedModel] = {name: self._load(name) for name in self.level_names}
        self.stages: dict[str, LoadedModel] = {name: self._load(f"stage:{name}") for name in self.stage_names}
        self.exit_thresholds = self._merge_exit_thresholds(thresholds if chain else None)
        self._gates = {st.name: CompiledGate(st.gate) for st in bundle.stages[:-1] if st.gate is not None}
        self._check_shapes()

    @property
    def options(self) -> list[str]:
        """What ``Prediction.level`` can be under the current policy: the stages for exit
        policies, else the levels (cheapest first)."""
        return list(self.stage_names) if self.policy.kind in ("exit", "fixed-exit") else list(self.level_names)

    def fixed_policy(self, option: str) -> str:
        """The policy that always answers with ``option`` (``exit:<stage>`` or ``fixed:<level>``)."""
        return f"exit:{option}" if self.policy.kind in ("exit", "fixed-exit") else f"fixed:{option}"

    def force_policy(self, text: str) -> Policy:
        """Switch to another policy on the same loaded models; returns the previous one."""
        saved = self.policy
        parsed = parse_policy(text, self.level_names, self.stage_names)
        if parsed.kind == "router" and self.router is None:
            raise DispatchError(f"cannot use {text!r}: the bundle has no router")
        self.policy = parsed
        return saved

    # -- setup -------------------------------------------------------------------------------
    def _merge_exit_thresholds(self, override: dict[str, float] | None) -> dict[str, float]:
        if override is not None and self.policy.kind != "exit":
            raise DispatchError(f"thresholds only apply to the exit and router policies, not {self.policy.text!r}")
        return _merged(self.bundle.manifest.exit_thresholds(), override, self.stage_names[:-1],
                       "only these stages have exit thresholds", "the last stage always answers")

    def _merge_thresholds(self, override: dict[str, float] | None) -> dict[str, float]:
        if override is None or self.policy.kind in ("exit", "fixed-exit"):
            return self.bundle.thresholds
        if self.policy.kind != "router":
            raise DispatchError(f"thresholds only apply to the router policy, not {self.policy.text!r}")
        return _merged(self.bundle.thresholds, override, self.level_names[:-1],
                       "only these levels have thresholds", "the richest level is the fallback")

    def _load(self, owner: str) -> LoadedModel:
        path = self.bundle.artifact_path(owner, self.format)
        before, method = rss_bytes()
        start = time.perf_counter()
        model = self.backend.load(path)
        seconds = time.perf_counter() - start
        after, _ = rss_bytes()
        delta = after - before if before is not None and after is not None else None
        self.loads.append(ArtifactLoad(owner, self.format, str(path), path.stat().st_size,
                                       seconds, delta, method))
        return model

    def _check_shapes(self) -> None:
        want = tuple(self.preprocessor.output_shape)
        n_labels = len(self.bundle.labels)
        first = self.bundle.stages[0] if self.stages else None
        if first is not None:
            stage_model = self.stages[first.name]
            shapes = getattr(stage_model, "input_shapes", [tuple(stage_model.input_shape)])
            if tuple(shapes[0]) != want:
                raise DispatchError(f"stage {first.name} artifact takes input {tuple(shapes[0])} but the "
                                    f"bundle's input spec gives {want}; re-convert the bundle")
        for owner, model in [("router", self.router), *self.levels.items()]:
            if model is None:
                continue
            if tuple(model.input_shape) != want:
                raise DispatchError(f"{owner} artifact takes input {tuple(model.input_shape)} but the bundle's "
                                    f"input spec gives {want}; re-convert the bundle")
            outputs = int(np.prod(model.output_shape))
            expected = len(self.level_names) if owner == "router" else n_labels
            if expected and outputs != expected:
                what = "levels" if owner == "router" else "labels"
                raise DispatchError(f"{owner} artifact has {outputs} outputs but the bundle has {expected} "
                                    f"{what}; re-convert the bundle")

    # -- running -----------------------------------------------------------------------------
    def predict(self, image: ImageInput, label: int | str | None = None) -> Prediction:
        """Decode, preprocess, route and run one image (path, bytes, PIL image or uint8 array).

        Raises:
            ImageError: the input is not a usable image.
            DispatchError: ``oracle`` without a label, or an unknown label.
        """
        start = time.perf_counter()
        rgb = self.preprocessor.decode(image)
        decoded = time.perf_counter()
        x = self.preprocessor.preprocess(rgb)
        prepared = time.perf_counter()
        return self._dispatch(x, label, start, {"decode": (decoded - start) * 1e3,
                                                "preprocess": (prepared - decoded) * 1e3})

    def predict_tensor(self, x: np.ndarray, label: int | str | None = None) -> Prediction:
        """Route and run an already preprocessed float32 ``[1, 3, crop, crop]`` tensor.

        Raises:
            DispatchError: not a float32 array of the input shape, or NaN/inf values in it.
        """
        start = time.perf_counter()
        check_tensor(x, tuple(self.preprocessor.output_shape))
        return self._dispatch(x, label, start, {"decode": 0.0, "preprocess": 0.0})

    def predict_many(self, images: Iterable[ImageInput], labels: Iterable[int | str] | None = None,
                     progress: Callable[[int, int | None], None] | None = None) -> list[Prediction]:
        """``predict`` over an iterable; ``progress(done, total)`` after each (total None if unsized).

        Raises:
            DispatchError: ``labels`` and ``images`` differ in length.
        """
        total = len(images) if isinstance(images, Sequence) else None
        if labels is not None and total is not None and isinstance(labels, Sequence) and len(labels) != total:
            raise DispatchError(f"{len(labels)} labels for {total} images; give one label per image")
        label_iter = iter(labels) if labels is not None else None
        out: list[Prediction] = []
        for image in images:
            label = None
            if label_iter is not None:
                label = next(label_iter, None)
                if label is None:
                    raise DispatchError(f"labels ran out after {len(out)} images; give one label per image")
            out.append(self.predict(image, label))
            if progress is not None:
                progress(len(out), total)
        return out

    def _run_chain(self, x: np.ndarray, stop_at: str | None
                   ) -> tuple[str, np.ndarray, dict[str, float], dict[str, float], float]:
        """Run stages until a gate passes (or ``stop_at``); ``(exit, logits, stage_ms,
        gate_scores, gate_ms)``."""
        feed: dict[str, np.ndarray] = {"image": x}
        stage_ms: dict[str, float] = {}
        gates: dict[str, float] = {}
        gate_ms = 0.0
        specs = self.bundle.stages
        for i, spec in enumerate(specs):
            model = self.stages[spec.name]
            t_run = time.perf_counter()
            outs = run_named(model, spec.inputs, spec.outputs, feed)
            stage_ms[spec.name] = (time.perf_counter() - t_run) * 1e3
            logits = _finite_output(outs["logits"], f"stage {spec.name}").reshape(1, -1)
            if i == len(specs) - 1 or spec.name == stop_at:
                return spec.name, logits.reshape(-1), stage_ms, gates, gate_ms
            if stop_at is None:
                t_gate = time.perf_counter()
                gate = self._gates[spec.name]
                cls = outs["tokens"][0, 0] if gate.needs_cls else None
                try:
                    score = gate.score(logits, cls)
                except ValueError as exc:  # a CLS token of another width than the gate's weights
                    raise DispatchError(f"stage {spec.name}'s exit gate does not fit its outputs ({exc}); "
                                        "re-convert the bundle") from None
                if not math.isfinite(score):
                    raise DispatchError(f"stage {spec.name}'s exit gate scored NaN/inf; re-convert the bundle")
                gates[spec.name] = score
                done = score >= self.exit_thresholds[spec.name]
                gate_ms += (time.perf_counter() - t_gate) * 1e3
                if done:
                    return spec.name, logits.reshape(-1), stage_ms, gates, gate_ms
            feed = outs
        raise AssertionError("unreachable: the last stage always answers")

    def _dispatch(self, x: np.ndarray, label: int | str | None, start: float,
                  timings: dict[str, float]) -> Prediction:
        target = self._target(label)
        if self.policy.kind in ("exit", "fixed-exit"):
            exit_name, exit_logits, stage_ms, gates, gate_ms = self._run_chain(x, self.policy.stage)
            timings.update(route=gate_ms, infer=sum(stage_ms.values()),
                           total=(time.perf_counter() - start) * 1e3)
            return self._answer(exit_logits, exit_name, {}, timings, target,
                                exit=exit_name, stage_ms=stage_ms, gate_scores=gates)
        scores: dict[str, float] = {}
        logits: np.ndarray | None = None
        infer_ms = 0.0
        t0 = time.perf_counter()
        kind = self.policy.kind
        if kind == "router":
            assert self.router is not None
            raw = _finite_output(self.router.run(x), "router").reshape(-1)
            scores = {name: float(v) for name, v in zip(self.level_names, raw, strict=False)}
            level = choose_level(scores, self.level_names, self.thresholds)
        elif kind == "fixed":
            assert self.policy.level is not None
            level = self.policy.level
        elif kind == "random":
            assert self._cumulative is not None
            idx = int(np.searchsorted(self._cumulative, self._rng.random(), side="right"))
            level = self.level_names[min(idx, len(self.level_names) - 1)]
        else:  # oracle
            if target is None:
                raise DispatchError("the oracle policy needs the true label (evaluation only): pass label=")
            for level in self.level_names:
                t_run = time.perf_counter()
                logits = _finite_output(self.levels[level].run(x), f"level {level}").reshape(-1)
                infer_ms += (time.perf_counter() - t_run) * 1e3
                if int(np.argmax(logits)) == target:
                    break
        route_ms = (time.perf_counter() - t0) * 1e3 - infer_ms
        if logits is None:
            t_run = time.perf_counter()
            logits = _finite_output(self.levels[level].run(x), f"level {level}").reshape(-1)
            infer_ms = (time.perf_counter() - t_run) * 1e3
        timings.update(route=route_ms, infer=infer_ms, total=(time.perf_counter() - start) * 1e3)
        return self._answer(logits, level, scores, timings, target)

    def _answer(self, logits: np.ndarray, level: str, scores: dict[str, float],
                timings: dict[str, float], target: int | None, **chain: Any) -> Prediction:
        """The ``Prediction`` of ``logits`` (top-1, its name and softmax probability)."""
        index = int(np.argmax(logits))
        z = logits.astype(np.float64) - float(logits.max())
        labels = self.bundle.labels
        return Prediction(
            label=index, label_name=labels[index] if index < len(labels) else str(index),
            probability=float(1.0 / np.exp(z).sum()),  # softmax at the argmax: exp(0) / sum
            level=level, router_scores=scores, logits=logits, timings_ms=timings, target=target,
            **chain,
        )

    def _target(self, label: int | str | None) -> int | None:
        if label is None:
            return None
        labels = self.bundle.labels
        if isinstance(label, str):
            if label not in labels:
                raise DispatchError(f"label {label!r} is not one of the bundle's {len(labels)} labels")
            return labels.index(label)
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise DispatchError(f"label must be a class index (int) or a label name (str), got {label!r}")
        index = int(label)
        if labels and not 0 <= index < len(labels):
            raise DispatchError(f"label index {index} out of range for {len(labels)} labels")
        return index

    # -- reporting ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Settings and load costs, for a report."""
        backend_info = self.backend.info() if hasattr(self.backend, "info") else {"backend": self.backend.name}
        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return {
            **backend_info, "bundle": str(self.bundle.path), "variant": self.bundle.variant,
            "format": self.format, "policy": self.policy.text,
            "thresholds": self.exit_thresholds if self.stages else self.thresholds,
            "seed": self.seed, "cpu_affinity": affinity,
            "loads": [asdict(load) for load in self.loads],
        }

    def __repr__(self) -> str:
        return (f"Dispatcher({str(self.bundle.path)!r}, backend={self.backend.name!r}, format={self.format!r}, "
                f"policy={self.policy.text!r}, levels={self.level_names})")



"""``athe eval`` measuring: read labelled images, run a bundle's router and every level on each.

Every image is measured once: the router and *every* level run on it (levels in a rotating
order, so no level always runs first). The arrays go to :mod:`athe.evaluate.analysis`, the
files to :mod:`athe.evaluate.output`; ``run_eval`` does all three (what ``athe eval`` runs).

Example::

    >>> from athe.evaluate.measure import run_eval
    >>> result = run_eval("bundles/athe-mini", "../shared/data/cifar10-train.tar.gz",
    ...                   backend="litert", threads=2, split_from="runs/athe-mini", out="eval/mini")
    >>> result.row("athe").accuracy, result.row("athe").latency_mean_ms
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from athe.evaluate.analysis import (
    Costs,
    EvalError,
    EvalResult,
    Measurements,
    dense_level_index,
    evaluate,
)
from athe.evaluate.exits import (
    ExitMeasurements,
    exit_rows,
    exit_verdicts,
    gate_sets,
    measure_exit_image,
)
from athe.evaluate.output import write_outputs
from athe.pi_runner.report import environment_info, random_weights
from athe.runtime.split import stored_val_halves

RANDOM_WEIGHTS_WARNING = ("this bundle has RANDOM WEIGHTS (manifest says so): every accuracy below is "
                          "meaningless; only latencies and MACs are real")


# ---------------------------------------------------------------------------------------------
# Images (opened by athe.pi_runner.inputs, read by athe.runtime.readers as training read them;
# a training run's held-out split selected by index)


@dataclass(frozen=True)
class LabelledImage:
    """One image to evaluate.

    Attributes:
        data: what the dispatcher's ``decode`` takes (encoded bytes, a path or a uint8 array).
        label: the true class as an index into the bundle's labels.
    """

    name: str
    data: Any
    label: int


def split_test_indices(split_file: Path, classes: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The ``test`` half of a run's ``val`` split (images neither the router nor thresholds saw).

    ``athe train router`` cuts ``val`` in two (``athe.runtime.split``) and stores both halves
    in ``split.json``: ``calib`` chose the thresholds, ``test`` (read here) is held out. A run
    written before the halves were stored gets them from the same function. Indices count the
    images of the training data sorted by name, without the ones training skipped.

    Returns:
        ``(indices, skipped names, description)``.
    """
    if not split_file.is_file():
        raise EvalError(f"{str(split_file)!r} not found: --split-from takes the backbone run folder "
                        "(the one with split.json written by 'athe train backbone')")
    split = json.loads(split_file.read_text())
    if list(split["classes"]) != list(classes):
        raise EvalError(f"classes of --data {list(classes)} differ from {str(split_file)!r}'s "
                        f"{split['classes']}; pass the data the run was trained on")
    _, test, stored = stored_val_halves(split)
    skipped = [s[0] if isinstance(s, (list, tuple)) else str(s) for s in split.get("skipped", [])]
    return test, skipped, {"split_file": str(split_file), "part": "val/test half",
                           "halves": "stored" if stored else "derived (run written before halves were stored)",
                           "seed": split["seed"], "val": len(split["val"]), "test": len(test),
                           "source": split.get("source")}


def load_eval_images(data: str | Path, labels: Sequence[str], split_from: str | Path | None = None,
                     limit: int | None = None, seed: int = 0) -> tuple[list[LabelledImage], dict[str, Any]]:
    """Labelled images to evaluate (``athe.pi_runner.inputs.open_inputs`` reads them).

    Args:
        data: ImageFolder folder, ``.tar``/``.tar.gz`` archive, or CIFAR python folder (its
            ``test`` split; with ``split_from`` its ``train`` split, which training indexed).
        labels: the bundle's labels; class names map onto them by name.
        split_from: a backbone run folder: evaluate only its held-out ``test`` images.
        limit: evaluate a seeded random subset of this many images (not the first ones, which
            are sorted by class).
    """
    from athe.pi_runner.inputs import InputError, open_inputs

    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be at least 1, got {limit}")
    try:
        if split_from is None:
            source = open_inputs(data, labels, limit=limit, shuffle=seed if limit is not None else None)
        else:  # every image, in the order training indexed them
            source = open_inputs(data, labels, split="train")
    except InputError as exc:
        raise EvalError(str(exc)) from exc
    if not source.labelled:
        raise EvalError(f"{data}: evaluation needs labelled images (ImageFolder class folders, a CIFAR "
                        f"folder or an ImageFolder archive); got {source.describe()}")
    samples = list(source.samples)
    info: dict[str, Any] = {"data": str(data), "source": source.info()}
    if split_from is not None:
        test, skipped, info["split"] = split_test_indices(Path(split_from) / "split.json",
                                                          source.class_names or ())
        gone = set(skipped)
        samples = [s for s in samples if s[0] not in gone]
        if len(test) and test.max() >= len(samples):
            raise EvalError(f"split index {int(test.max())} is out of range for {len(samples)} images in "
                            f"{str(data)!r}; pass the data the run in {str(split_from)!r} was trained on")
        samples = [samples[i] for i in test]
        if limit is not None and limit < len(samples):
            samples = [samples[i] for i in np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])]
    if limit is not None:
        info["limit"] = {"limit": limit, "seed": seed}
    images = []
    for name, image, label in samples:
        assert label is not None  # a labelled source labels every sample
        images.append(LabelledImage(name, image, label))
    return images, info


# ---------------------------------------------------------------------------------------------
# Measuring on a backend


def _timed(model: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """``(output [K], ms)`` of one run."""
    t0 = time.perf_counter()
    out = model.run(x).reshape(-1)
    return out, (time.perf_counter() - t0) * 1e3


def _warm_up(pre: Any, models: Sequence[Any], image: LabelledImage, warmup: int) -> None:
    """Untimed: the first decode loads PIL plugins and first runs allocate; keep them out."""
    for _ in range(max(1, warmup)):
        x = pre.preprocess(pre.decode(image.data, name=image.name))
    for model in models:
        for _ in range(warmup):
            model.run(x)


def measure(dispatcher: Any, images: Sequence[LabelledImage], warmup: int = 3,
            progress: Callable[[int, int], None] | None = None, chain: Any = None,
            gates: dict[str, list[Any]] | None = None, exits_out: list[ExitMeasurements] | None = None
            ) -> tuple[Measurements, list[tuple[str, str]]]:
    """Run the router and every level once per image and time each (ms, ``perf_counter``).

    Args:
        dispatcher: an ``athe.runtime.Dispatcher`` (it has loaded and shape-checked every
            artifact); its models are run directly, its policy is not used.
        warmup: untimed decodes and runs of every model on the first image first.

        chain / gates / exits_out: with an exit-policy dispatcher ``chain``, every stage also
            runs on each image (in the same pass, after the levels) and the exit measurements
            (``athe.evaluate.exits.ExitMeasurements``, both gate kinds of ``gates``) are
            appended to ``exits_out``.

    Returns:
        ``(measurements, skipped)``: images that cannot be decoded are skipped and listed with
        the reason.
    """
    from athe.runtime.preprocess import ImageError

    names = tuple(dispatcher.level_names)
    router, models, pre = dispatcher.router, [dispatcher.levels[n] for n in names], dispatcher.preprocessor
    L = len(names)
    cols: dict[str, list] = {k: [] for k in ("pred", "level_ms", "decode_ms", "pre_ms", "probs", "router_ms",
                                             "target", "name", "x_pred", "x_ms", "x_scores", "x_gate_ms")}
    skipped: list[tuple[str, str]] = []
    for i, image in enumerate(images):
        try:
            if not cols["name"] and i == len(skipped):  # before the first timed image
                _warm_up(pre, ([router] if router is not None else []) + models, image, warmup)
                if chain is not None:
                    x0 = pre.preprocess(pre.decode(image.data, name=image.name))
                    for _ in range(warmup):
                        measure_exit_image(chain, x0, gates or {})
            t0 = time.perf_counter()
            rgb = pre.decode(image.data, name=image.name)
            t1 = time.perf_counter()
            x = pre.preprocess(rgb)
            cols["decode_ms"].append((t1 - t0) * 1e3)
            cols["pre_ms"].append((time.perf_counter() - t1) * 1e3)
        except ImageError as exc:
            skipped.append((image.name, str(exc)))
            continue
        if router is not None:
            probs, ms = _timed(router, x)
            cols["probs"].append(probs)
            cols["router_ms"].append(ms)
        pred, level_ms = np.zeros(L, dtype=np.int64), np.zeros(L)
        for k in range(L):
            j = (i + k) % L  # rotate the order: no level always runs first (cold caches)
            logits, level_ms[j] = _timed(models[j], x)
            pred[j] = int(np.argmax(logits))
        if chain is not None:
            x_pred, x_ms, x_scores, x_gate_ms = measure_exit_image(chain, x, gates or {})
            cols["x_pred"].append(x_pred)
            cols["x_ms"].append(x_ms)
            cols["x_scores"].append(x_scores)
            cols["x_gate_ms"].append(x_gate_ms)
        cols["pred"].append(pred)
        cols["level_ms"].append(level_ms)
        cols["target"].append(image.label)
        cols["name"].append(image.name)
        if progress is not None:
            progress(i + 1, len(images))
    if not cols["name"]:
        raise EvalError(f"none of the {len(images)} images could be decoded: {skipped[:3]}")
    predictions, target = np.stack(cols["pred"]), np.asarray(cols["target"], dtype=np.int64)
    m = Measurements(level_names=names, correct=predictions == target[:, None], level_ms=np.stack(cols["level_ms"]),
                     preprocess_ms=np.asarray(cols["pre_ms"]), decode_ms=np.asarray(cols["decode_ms"]),
                     router_probs=np.stack(cols["probs"]) if router is not None else None,
                     router_ms=np.asarray(cols["router_ms"]) if router is not None else None,
                     predictions=predictions, targets=target, names=cols["name"])
    if chain is not None and exits_out is not None:
        kinds = list(gates or {})
        exits_out.append(ExitMeasurements(
            stage_names=tuple(chain.stage_names),
            correct=np.stack(cols["x_pred"]) == target[:, None], stage_ms=np.stack(cols["x_ms"]),
            preprocess_ms=np.asarray(cols["pre_ms"]), decode_ms=np.asarray(cols["decode_ms"]),
            gate_scores={k: np.stack([s[k] for s in cols["x_scores"]]) for k in kinds},
            gate_ms={k: np.stack([g[k] for g in cols["x_gate_ms"]]) for k in kinds}))
    return m, skipped


def load_energy_json(path: str | Path, level_names: Sequence[str]) -> tuple[tuple[float, ...], float | None]:
    """``{"<level>": J/image, ..., "router": J/run}`` -> per-level joules and the router's.

    Every level is required; ``router`` is optional (routed rows then exclude it and say so).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalError(f"cannot read energy JSON {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise EvalError(f"{str(path)!r}: expected an object {{\"<level>\": J/image, \"router\": J}}")
    allowed = [*level_names, "router"]
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            more = f" Did you mean {hint[0]!r}?" if hint else ""
            raise EvalError(f"{str(path)!r}: unknown key {key!r}; keys: {', '.join(allowed)}.{more}")
    missing = [n for n in level_names if n not in data]
    if missing:
        raise EvalError(f"{str(path)!r}: no J/image for level(s) {missing}; give every level")
    values = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EvalError(f"{str(path)!r}: {key!r} must be a finite number of joules, got {value!r}")
        values[key] = float(value)
    return tuple(values[n] for n in level_names), values.get("router")


def bundle_warnings(manifest: Any) -> list[str]:
    """Warnings a reader of the table must see (random weights: ``athe.pi_runner.report.random_weights``)."""
    return [RANDOM_WEIGHTS_WARNING] if random_weights(manifest) else []


def run_eval(bundle: str | Path, data: str | Path, backend: str = "litert", threads: int | None = None,
             limit: int | None = None, split_from: str | Path | None = None, out: str | Path | None = None,
             energy_json: str | Path | None = None, seeds: int = 20, grid: int = 41, warmup: int = 3,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Measure a bundle on ``data`` with one backend, evaluate, and write the outputs to ``out``."""
    from athe.runtime import BACKEND_FORMATS, Bundle, Dispatcher

    if backend not in BACKEND_FORMATS:
        raise EvalError(f"unknown backend {backend!r}; backends: {', '.join(sorted(BACKEND_FORMATS))}")
    opened = Bundle.open(bundle, formats=[BACKEND_FORMATS[backend]])
    manifest = opened.manifest
    names = opened.level_names
    energy, router_energy = load_energy_json(energy_json, names) if energy_json is not None else (None, None)
    images, data_info = load_eval_images(data, opened.labels, split_from, limit)
    policy = "router" if opened.router is not None else f"fixed:{names[-1]}"
    dispatcher = Dispatcher(opened, backend=backend, threads=threads, policy=policy)
    chain, gates = None, None
    exits_out: list[ExitMeasurements] = []
    if opened.stages:
        default_kind, gates, exit_ths = gate_sets(manifest)
        chain = Dispatcher(opened, backend=backend, threads=threads, policy="exit")
    m, skipped = measure(dispatcher, images, warmup=warmup, progress=progress, chain=chain,
                         gates=gates, exits_out=exits_out)
    costs = Costs(level_macs=tuple(float(lv.macs) for lv in opened.levels),
                  router_macs=float(opened.router.macs) if opened.router is not None else 0.0,
                  level_energy_j=energy, router_energy_j=router_energy)
    dense = dense_level_index([lv.keep for lv in opened.levels], [lv.heads for lv in opened.levels])
    result = evaluate(m, costs, opened.thresholds if opened.router is not None else None, dense, seeds, grid)
    result.warnings = bundle_warnings(manifest)
    if exits_out:
        em = exits_out[0]
        stage_macs = [float(st.macs) for st in opened.stages]
        rows = exit_rows(em, stage_macs, default_kind, exit_ths, seeds=seeds)
        static = [r for r in result.rows if r.name.startswith("static:")]
        result.rows.extend(rows)
        result.verdicts.extend(exit_verdicts(
            rows, static, em.stage_names, decode_ms=None if em.decode_ms is None else float(em.decode_ms.mean())))
        if not (manifest.calibration or {}).get("exits"):
            result.warnings.append("the exit thresholds were not calibrated (manifest has no "
                                   "calibration.exits): the exit rows show an uncalibrated chain")
    result.info = {
        "bundle": str(opened.path), "variant": manifest.variant, "backend": dispatcher.info(),
        "data": data_info, "skipped": skipped, "seeds": seeds, "grid": grid, "warmup": warmup,
        "level_macs": dict(zip(names, costs.level_macs, strict=True)), "router_macs": costs.router_macs,
        "energy": None if energy is None else {"file": str(energy_json), "level_j": dict(zip(names, energy, strict=True)),
                                               "router_j": router_energy},
        "dense_level": names[dense] if dense is not None else None,
        "level_latency_mean_ms": dict(zip(names, m.level_ms.mean(axis=0).tolist(), strict=True)),
        **({"stage_latency_mean_ms": dict(zip(exits_out[0].stage_names,
                                              exits_out[0].stage_ms.mean(axis=0).tolist(), strict=True)),
            "stage_macs": {st.name: st.macs for st in opened.stages},
            "exit_thresholds": exit_ths} if exits_out else {}),
        "preprocess_mean_ms": float(m.preprocess_ms.mean()),
        "decode_mean_ms": None if m.decode_ms is None else float(m.decode_ms.mean()),
        "environment": environment_info(),
        "definitions": {
            "latency": "per image: preprocess (resize+normalise of the decoded pixels) + the chosen level's "
                       "measured latency on that image (+ the router's, for routed rows); every model ran once "
                       "per image. Decoding the file is timed apart (decode_mean_ms) and not in the rows: it "
                       "depends on the image source (camera frames arrive decoded), not on the policy",
            "macs": "chosen level's MACs from the manifest (+ router MACs for routed rows)",
            "random": "router's per-level fractions, seeded permutations, mean over seeds; no router",
            "oracle": "cheapest level that is right, else the richest; no router (upper bound)",
        },
    }
    if out is not None:
        result.info["files"] = {k: str(v) for k, v in write_outputs(result, m, Path(out)).items()}
    return result


# ---------------------------------------------------------------------------------------------

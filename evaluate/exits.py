"""``athe eval`` for bundles with a stage chain: every exit row from one measurement pass.

Per image, every stage of the chain runs once (timed each), so each exit's answer, each
stage's latency and both gate kinds' scores are known for every image. The rows are then
computed, not re-run:

``exit-gate``
    The bundle's default policy: the shipped gate at the manifest's thresholds.
``exit-maxsoftmax`` / ``exit-logistic``
    The other gate kind at the thresholds calibration chose for it (``calibration.exits``),
    when the manifest records them.
``exit:<stage>``
    Every image answers at that exit (the last one is the full path).
``random-exits``
    Seeded random exits at the default policy's exit fractions (mean of the seeds).
``oracle-exit``
    The earliest exit that is right, else the last (an upper bound; no gate).

Latency of a row per image: preprocess (of the decoded pixels) + the stages run up to its exit
+ the gates asked on the way (measured); MACs: the stages run. Decoding the file is timed apart:
the verdict also gives the ratio with it added to both sides. Pure numpy here; ``measure_exit_image`` is the only
function that runs models.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from athe.evaluate.analysis import EvalError, Row, Verdict, exact_counts, interpolate
from athe.runtime.gates import CompiledGate
from athe.runtime.routing import route

GATE_ROW = "exit-gate"


@dataclass
class ExitMeasurements:
    """Per image ``i`` and stage ``k`` (``K`` stages, chain order)."""

    stage_names: tuple[str, ...]
    correct: np.ndarray  # [N, K] bool: exit k is right
    stage_ms: np.ndarray  # [N, K]
    preprocess_ms: np.ndarray  # [N]
    gate_scores: dict[str, np.ndarray]  # kind -> [N, K] (last column 1)
    gate_ms: dict[str, np.ndarray]  # kind -> [N, K - 1] ms of computing that gate
    decode_ms: np.ndarray | None = None  # [N] decoding the file (not in the rows' latency)

    @property
    def n(self) -> int:
        return int(self.correct.shape[0])


def measure_exit_image(dispatcher: Any, x: np.ndarray, gates: Mapping[str, Sequence[Any]]
                       ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the whole chain on one preprocessed image.

    Args:
        dispatcher: an exit-policy ``Dispatcher`` (its stage models are run directly).
        gates: kind -> one ``GateSpec`` per stage but the last.

    Returns:
        ``(predicted class [K], stage ms [K], gate scores {kind: [K]}, gate ms {kind: [K-1]})``.
    """
    from athe.runtime.dispatcher import run_named

    specs = dispatcher.bundle.stages
    K = len(specs)
    pred, ms = np.zeros(K, dtype=np.int64), np.zeros(K)
    scores = {k: np.ones(K) for k in gates}
    gms = {k: np.zeros(K - 1) for k in gates}
    compiled = {k: [CompiledGate(g) for g in specs_k] for k, specs_k in gates.items()}
    feed: dict[str, np.ndarray] = {"image": x}
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        outs = run_named(dispatcher.stages[spec.name], spec.inputs, spec.outputs, feed)
        ms[i] = (time.perf_counter() - t0) * 1e3
        logits = outs["logits"].reshape(1, -1)
        pred[i] = int(np.argmax(logits))
        if i < K - 1:
            for kind, gates_k in compiled.items():
                t1 = time.perf_counter()
                gate = gates_k[i]
                scores[kind][i] = gate.score(logits, outs["tokens"][0, 0] if gate.needs_cls else None)
                gms[kind][i] = (time.perf_counter() - t1) * 1e3
        feed = outs
    return pred, ms, scores, gms


def _row(name: str, description: str, em: ExitMeasurements, stage_macs: Sequence[float],
         choice: np.ndarray, gate: str | None) -> Row:
    n, K = em.n, len(em.stage_names)
    idx = np.arange(n)
    cum_ms = np.cumsum(em.stage_ms, axis=1)
    lat = em.preprocess_ms + cum_ms[idx, choice]
    gate_total = np.zeros(n)
    if gate is not None:
        asked = np.minimum(choice + 1, K - 1)  # gates asked on the way to the exit
        cum_gate = np.concatenate([np.zeros((n, 1)), np.cumsum(em.gate_ms[gate], axis=1)], axis=1)
        gate_total = cum_gate[idx, asked]
        lat = lat + gate_total
    macs = np.cumsum(np.asarray(stage_macs, dtype=np.float64))[choice]
    right = em.correct[idx, choice]
    fraction = {s: float((choice == k).mean()) for k, s in enumerate(em.stage_names)}
    group = {s: (float(100 * right[choice == k].mean()) if (choice == k).any() else None)
             for k, s in enumerate(em.stage_names)}
    return Row(name=name, description=description, routed=gate is not None,
               accuracy=float(100 * right.mean()), fraction=fraction, group_accuracy=group,
               mean_macs=float(macs.mean()), latency_mean_ms=float(lat.mean()),
               latency_p50_ms=float(np.percentile(lat, 50)), latency_p90_ms=float(np.percentile(lat, 90)),
               router_share=float(gate_total.sum() / lat.sum()))


def exit_rows(em: ExitMeasurements, stage_macs: Sequence[float], default_kind: str,
              thresholds: Mapping[str, Mapping[str, float]], seeds: int = 20) -> list[Row]:
    """Every exit row (see the module docstring); ``thresholds``: kind -> {stage: t}."""
    names, n, K = em.stage_names, em.n, len(em.stage_names)
    rows = [_row(f"exit:{s}", f"every image answers at exit {s!r}" + (" (the full path)" if k == K - 1 else ""),
                 em, stage_macs, np.full(n, k), gate=None) for k, s in enumerate(names)]
    default = None
    for kind, ths in thresholds.items():
        if kind not in em.gate_scores:
            continue
        choice = route(em.gate_scores[kind], [float(ths[s]) for s in names[:-1]])
        name = GATE_ROW if kind == default_kind else f"exit-{kind.replace('_', '')}"
        row = _row(name, f"{kind} gate at the thresholds calibration chose"
                   + (" (the bundle's default policy)" if kind == default_kind else ""),
                   em, stage_macs, choice, gate=kind)
        rows.append(row)
        if kind == default_kind:
            default = (row, choice)
    if default is not None:
        row, choice = default
        counts = exact_counts([row.fraction[s] for s in names], n)
        acc, lat = [], []
        for seed in range(seeds):
            perm = np.random.default_rng(seed).permutation(n)
            rc = np.empty(n, dtype=np.int64)
            rc[perm] = np.repeat(np.arange(K), counts)
            r = _row("random-exits", "", em, stage_macs, rc, gate=None)
            acc.append(r.accuracy)
            lat.append(r.latency_mean_ms)
        rows.append(Row(**{**r.__dict__, "name": "random-exits",
                           "description": f"seeded random exits at the gate's fractions (mean of {seeds} seeds), no gate",
                           "accuracy": float(np.mean(acc)), "latency_mean_ms": float(np.mean(lat)),
                           "accuracy_std": float(np.std(acc, ddof=1)) if seeds > 1 else 0.0,
                           "latency_mean_std_ms": float(np.std(lat, ddof=1)) if seeds > 1 else 0.0,
                           "seeds": seeds}))
    oracle = np.where(em.correct.any(1), np.argmax(em.correct, axis=1), K - 1)
    rows.append(_row("oracle-exit", "earliest exit that is right, else the last (upper bound, no gate)",
                     em, stage_macs, oracle, gate=None))
    return rows


def exit_verdicts(rows: Sequence[Row], static_rows: Sequence[Row], stage_names: Sequence[str],
                  max_ratio: float = 0.5, max_loss: float = 1.0, decode_ms: float | None = None) -> list[Verdict]:
    """The acceptance checks of the default exit policy, each with its numbers (``decode_ms``:
    the mean file decode, added to both sides for the ratio with decode)."""
    by = {r.name: r for r in rows}
    if GATE_ROW not in by:
        return []
    gate, full = by[GATE_ROW], by[f"exit:{stage_names[-1]}"]
    ratio = gate.latency_mean_ms / full.latency_mean_ms
    loss = full.accuracy - gate.accuracy
    with_decode = (None if decode_ms is None else
                   (gate.latency_mean_ms + decode_ms) / (full.latency_mean_ms + decode_ms))
    out = [Verdict(
        "exit-vs-full", "the default exit policy is fast at little loss",
        f"<= {max_ratio:.2f}x the full path's mean latency at <= {max_loss:.1f} pt top-1 loss",
        ratio <= max_ratio and loss <= max_loss,
        f"{ratio:.2f}x the full path's mean latency"
        + ("" if with_decode is None else f" ({with_decode:.2f}x with the {decode_ms:.3f} ms file decode)")
        + f" at {-loss:+.2f} pt top-1",
        {"latency_ratio": ratio, "latency_ratio_with_decode": with_decode, "decode_mean_ms": decode_ms,
         "accuracy_loss": loss, "gate_accuracy": gate.accuracy, "full_accuracy": full.accuracy})]
    rnd = by.get("random-exits")
    if rnd is not None:
        out.append(Verdict(
            "exit-vs-random", "the gate beats random exits at the same fractions", "higher top-1",
            gate.accuracy > rnd.accuracy,
            f"gate {gate.accuracy:.2f} % vs random {rnd.accuracy:.2f} % "
            f"({gate.latency_mean_ms:.3f} vs {rnd.latency_mean_ms:.3f} ms)",
            {"gate": gate.accuracy, "random": rnd.accuracy}))
    pts = sorted((r.latency_mean_ms, r.accuracy) for r in static_rows)
    if len(pts) >= 2:
        at, outside = interpolate(pts, gate.latency_mean_ms)
        out.append(Verdict(
            "exit-vs-static", "the gate lies above the static-level line at equal latency",
            "higher top-1 than the line", gate.accuracy > at,
            f"gate {gate.accuracy:.2f} % vs static line {at:.2f} % at {gate.latency_mean_ms:.3f} ms"
            + (" (outside the line: nearest end)" if outside else ""),
            {"gate": gate.accuracy, "static_line": at}))
    return out


def gate_sets(manifest: Any) -> tuple[str, dict[str, list[Any]], dict[str, dict[str, float]]]:
    """``(default kind, kind -> gates, kind -> thresholds)`` of a bundle with stages."""
    from athe.runtime.manifest import GateSpec

    stages = manifest.stages
    if not stages:
        raise EvalError("this bundle has no stage chain")
    default_kind = stages[0].gate.kind if stages[0].gate is not None else "max_softmax"
    gates: dict[str, list[Any]] = {default_kind: [st.gate for st in stages[:-1]]}
    thresholds: dict[str, dict[str, float]] = {default_kind: manifest.exit_thresholds()}
    kinds = ((manifest.calibration or {}).get("exits") or {}).get("kinds") or {}
    if "max_softmax" not in gates:
        gates["max_softmax"] = [GateSpec(kind="max_softmax") for _ in stages[:-1]]
        if "max_softmax" in kinds:
            thresholds["max_softmax"] = dict(kinds["max_softmax"]["thresholds"])
    return default_kind, gates, thresholds

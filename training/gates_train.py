"""Exit gates: "this exit is right" labels from held-out images, one small model per exit.

For every stage but the last, a gate scores the exit's answer from its softmax (max-prob,
margin, entropy) and the stage's CLS token, by L2-regularised logistic regression
(``athe.runtime.gates``, numpy, so the dispatcher computes exactly the same score).

Which images do what: the thresholds are calibrated on the *pool* of the backbone run's
``router`` split and the ``calib`` half of ``val`` (7,500 images on athe-mini, none seen by the
backbone's training); the ``test`` half only reports. The learned gate is cross-fitted on that
pool (``FOLDS`` folds: each image is scored by a gate fit on the other folds), so its thresholds
are calibrated on scores of images it did not fit; the shipped gate is then fit on the whole
pool. Pooling matters because calibration keeps a confidence margin (``confidence_z`` standard
errors of the paired accuracy loss): on 2,500 images that margin is ~0.8 pt of a 1 pt budget,
on 7,500 ~0.45 pt.

Both gate kinds are calibrated and compared on the same pooled images: the learned gate and the
plain max-softmax threshold. The learned gate is shipped only when its mean cost at the target
is lower than max-softmax's by more than ``LEARNED_MARGIN`` of the full path (it reads the CLS
token and runs more code per exit); otherwise max-softmax ships. Never chosen on the test half.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from athe.runtime.gates import auroc, fit_logistic, gate_features, gate_score
from athe.runtime.manifest import GateSpec
from athe.runtime.routing import NEVER, calibrate, route, route_outcome
from athe.training.model import AtheViT, read_checkpoint

FEATURES = ("max_prob", "margin", "entropy", "cls")
#: Cross-fitting folds of the learned gate on the calibration pool.
FOLDS = 5
#: The learned gate must save more than this share of the full path's cost to be shipped.
LEARNED_MARGIN = 0.01
#: Threshold candidates per exit in the calibration sweep (score quantiles).
GRID = 81


@torch.no_grad()
def exit_outputs(model: AtheViT, x: torch.Tensor, batch_size: int = 500
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per exit: logits ``[N, classes]`` and the stage's output CLS token ``[N, dim]``."""
    model.eval()
    k = len(model.stages)
    logits: list[list[np.ndarray]] = [[] for _ in range(k)]
    cls: list[list[np.ndarray]] = [[] for _ in range(k)]
    for s in range(0, len(x), batch_size):
        tokens, scores = x[s:s + batch_size], None
        for i in range(k):
            tokens, lg, scores = model.forward_stage(i, tokens, scores)
            logits[i].append(lg.float().numpy())
            cls[i].append(tokens[:, 0].float().numpy())
    return [np.concatenate(v) for v in logits], [np.concatenate(v) for v in cls]


def fit_gates(logits: Sequence[np.ndarray], cls: Sequence[np.ndarray], labels: np.ndarray,
              stage_names: Sequence[str], l2: float = 1e-2) -> dict[str, GateSpec]:
    """A logistic gate for every exit but the last, fit on "this exit is right"."""
    gates = {}
    for i, name in enumerate(stage_names[:-1]):
        right = logits[i].argmax(1) == labels
        f = gate_features(FEATURES, logits[i], cls[i])
        mean, std, w, b = fit_logistic(f, right, l2=l2)
        gates[name] = GateSpec(kind="logistic", features=FEATURES, mean=tuple(mean.tolist()),
                               std=tuple(std.tolist()), weights=tuple(w.tolist()), bias=b)
    return gates


def crossfit_scores(logits: Sequence[np.ndarray], cls: Sequence[np.ndarray], labels: np.ndarray,
                    stage_names: Sequence[str], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """``[N, K]`` out-of-fold scores of the learned gates: image ``i`` scored by gates fit on the
    folds without it (the last column is 1)."""
    n = len(labels)
    fold = np.random.default_rng(seed).permutation(n) % folds
    out = np.ones((n, len(stage_names)))
    for f in range(folds):
        fit, held = fold != f, fold == f
        gates = fit_gates([lg[fit] for lg in logits], [c[fit] for c in cls], labels[fit], stage_names)
        out[held] = score_matrix(gates, [lg[held] for lg in logits], [c[held] for c in cls], stage_names)
    return out


def score_matrix(gates: dict[str, GateSpec], logits: Sequence[np.ndarray], cls: Sequence[np.ndarray],
                 stage_names: Sequence[str]) -> np.ndarray:
    """``[N, K]`` gate scores (the last column, never compared, is 1)."""
    n = len(logits[0])
    cols = [gate_score(gates[name], logits[i], cls[i]) for i, name in enumerate(stage_names[:-1])]
    return np.stack(cols + [np.ones(n)], axis=1)


def correct_matrix(logits: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    return np.stack([lg.argmax(1) == labels for lg in logits], axis=1)


def exit_costs(stage_costs: Sequence[float]) -> list[float]:
    """Cost of answering at each exit: the sum of the stages run so far."""
    return np.cumsum(np.asarray(stage_costs, dtype=np.float64)).tolist()


def gate_threshold(t: float) -> float:
    """A calibrated threshold as the manifest stores it: in [0, 1] (``never`` becomes 1.0, which a
    gate score reaches only when the exit is certain)."""
    return float(min(max(t, 0.0), 1.0)) if t < NEVER else 1.0


def train_exit_gates(model: AtheViT, x_gate: torch.Tensor, y_gate: np.ndarray,
                     x_calib: torch.Tensor, y_calib: np.ndarray,
                     x_test: torch.Tensor, y_test: np.ndarray,
                     stage_costs: Sequence[float], delta: float = 1.0,
                     budget: float | None = None, confidence_z: float = 1.645) -> dict:
    """Fit the gates, calibrate both gate kinds on ``gate`` ∪ ``calib``, pick one, report on ``test``.

    Args:
        stage_costs: cost of each stage alone (MACs, or measured ms); an exit costs the sum of
            the stages run so far.
        budget: with a budget, the most accurate thresholds whose mean cost per image is at most
            this (in ``stage_costs`` units) instead of the ``delta`` target.

    Returns:
        ``{"gates": {stage: GateSpec dict}, "thresholds": {stage: float}, "kind": str,
        "report": {...}}``: ``report`` has per exit the AUROC of both kinds and the accuracy of
        each exit alone, and per kind the calibrated thresholds and their outcome on the pool
        (``calib``) and the test half (``test``).
    """
    names = [st.name for st in model.stages]
    lg_g, cls_g = exit_outputs(model, x_gate)
    lg_c, cls_c = exit_outputs(model, x_calib)
    lg_t, cls_t = exit_outputs(model, x_test)
    lg_p = [np.concatenate([a, b]) for a, b in zip(lg_g, lg_c, strict=True)]
    cls_p = [np.concatenate([a, b]) for a, b in zip(cls_g, cls_c, strict=True)]
    y_p = np.concatenate([np.asarray(y_gate), np.asarray(y_calib)])
    learned = fit_gates(lg_p, cls_p, y_p, names)
    kinds = {"logistic": learned,
             "max_softmax": {n: GateSpec(kind="max_softmax") for n in names[:-1]}}
    pool_scores = {"logistic": crossfit_scores(lg_p, cls_p, y_p, names),
                   "max_softmax": score_matrix(kinds["max_softmax"], lg_p, cls_p, names)}
    costs = exit_costs(stage_costs)
    c_p, c_t = correct_matrix(lg_p, y_p), correct_matrix(lg_t, y_test)
    report: dict = {"target": {"delta": delta, "budget": budget, "confidence_z": confidence_z},
                    "calibration_images": {"router": len(y_gate), "calib": len(y_calib),
                                           "learned_gate": f"{FOLDS}-fold cross-fitted on the pool"},
                    "exit_accuracy_test": {n: float(100 * c_t[:, i].mean()) for i, n in enumerate(names)},
                    "exit_accuracy_calib": {n: float(100 * c_p[:, i].mean()) for i, n in enumerate(names)},
                    "oracle_accuracy_test": float(100 * c_t.any(1).mean()),
                    "exit_costs": dict(zip(names, costs, strict=True)), "kinds": {}}
    for kind, gates in kinds.items():
        s_p = pool_scores[kind]
        s_t = score_matrix(gates, lg_t, cls_t, names)
        cal = calibrate(s_p, c_p, names, costs, delta=delta, budget=budget, grid=GRID,
                        confidence_z=confidence_z)
        # Report what the bundle will do: the thresholds as the manifest stores them.
        ths = [gate_threshold(cal.thresholds[n]) for n in names[:-1]]
        choice = route(s_t, ths)
        acc, cost = route_outcome(c_t, costs, choice)
        report["kinds"][kind] = {
            "auroc_test": {n: auroc(s_t[:, i], c_t[:, i]) for i, n in enumerate(names[:-1])},
            "auroc_calib": {n: auroc(s_p[:, i], c_p[:, i]) for i, n in enumerate(names[:-1])},
            "thresholds": {n: gate_threshold(t) for n, t in cal.thresholds.items()},
            "calib": cal.to_dict(),
            "test": {"accuracy": acc, "mean_cost": cost, "cost_ratio": cost / costs[-1],
                     "reference_accuracy": float(100 * c_t[:, -1].mean()),
                     "exit_fraction": {n: float((choice == i).mean()) for i, n in enumerate(names)}},
        }
    best = choose_kind(report["kinds"], costs[-1], budget is not None)
    for n, g in kinds[best].items():
        kinds[best][n] = dataclasses.replace(g, auroc=report["kinds"][best]["auroc_test"][n])
    report["shipped"] = best
    return {"gates": {n: dataclasses.asdict(g) for n, g in kinds[best].items()},
            "thresholds": report["kinds"][best]["thresholds"], "kind": best, "report": report}


def choose_kind(kinds: dict, full_cost: float, by_accuracy: bool) -> str:
    """The gate kind to ship from the calibration results (never the test half's).

    A kind that met the target beats one that did not. Then, under a ``delta`` target, the
    learned gate ships only if its mean cost is lower than max-softmax's by more than
    ``LEARNED_MARGIN`` of ``full_cost``; under a budget, only if it is more accurate by more than
    0.1 pt. Otherwise max-softmax: equal or nearly, the simpler gate runs less code per exit.
    """
    learned, plain = kinds["logistic"]["calib"], kinds["max_softmax"]["calib"]
    if learned["met"] != plain["met"]:
        return "logistic" if learned["met"] else "max_softmax"
    if by_accuracy:
        better = learned["accuracy"] > plain["accuracy"] + 0.1
    else:
        better = learned["mean_cost"] < plain["mean_cost"] - LEARNED_MARGIN * full_cost
    return "logistic" if better else "max_softmax"


def exit_card(exits: dict) -> dict:
    """The model card's ``exits`` entry from ``train_exit_gates``'s result."""
    rep = exits["report"]
    return {"shipped_gate": exits["kind"], "thresholds": exits["thresholds"],
            "target": rep["target"], "exit_accuracy_test": rep["exit_accuracy_test"],
            "oracle_accuracy_test": rep["oracle_accuracy_test"],
            **{f"{k}_test": v["test"] for k, v in rep["kinds"].items()},
            **{f"{k}_auroc_test": v["auroc_test"] for k, v in rep["kinds"].items()}}


#: The most per-image rows ``stage_latency_ms`` reads (a runner file is one row per image).
MAX_LATENCY_ROWS = 1_000_000


def stage_latency_ms(path: str | Path, stage_names: Sequence[str]) -> dict[str, float]:
    """Mean milliseconds of each chain stage from an ``athe run`` output (its ``per_image.jsonl``).

    Every stage must have run on some images: time the whole chain with
    ``athe run --policy exit:<last stage>`` (every image through every stage) on the target device.

    Raises:
        ValueError: a missing or unreadable file, or a stage it never timed (names the fix).
    """
    from athe.pi_runner.report import PER_IMAGE_JSONL

    path = Path(path)
    file = path / PER_IMAGE_JSONL if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"--latency-from {path}: no {PER_IMAGE_JSONL} there; give the output "
                         "folder of an `athe run --policy exit:<last stage>` on the target device")
    times: dict[str, list[float]] = {n: [] for n in stage_names}
    with open(file, encoding="utf-8") as handle:
        for i, line in enumerate(handle, 1):
            if i > MAX_LATENCY_ROWS:
                raise ValueError(f"--latency-from {file}: more than {MAX_LATENCY_ROWS:,} rows; "
                                 "give one run's per_image.jsonl")
            try:
                row = json.loads(line)
                stage_ms = row.get("stage_ms") or {}
                for name, ms in stage_ms.items():
                    if name in times and isinstance(ms, (int, float)) and np.isfinite(ms) and ms >= 0:
                        times[name].append(float(ms))
            except (ValueError, AttributeError):
                raise ValueError(f"--latency-from {file}: line {i} is not a runner row (JSON object); "
                                 "give the per_image.jsonl `athe run` wrote") from None
    missing = [n for n, v in times.items() if not v]
    if missing:
        raise ValueError(f"--latency-from {file}: stage(s) {', '.join(missing)} never timed there; "
                         f"re-run `athe run --policy exit:{stage_names[-1]}` so every image runs every stage")
    return {n: float(np.mean(v)) for n, v in times.items()}


def recalibrate_checkpoint(run_dir: str | Path, delta: float = 1.0, confidence_z: float = 1.645,
                           budget: float | None = None, latency_from: str | Path | None = None) -> dict:
    """Refit the exit gates and thresholds of a run's ``athe-checkpoint.pt`` in place (the router
    and backbone stay): ``athe train gates RUN [--delta D | --budget F] [--latency-from DIR]``.

    Args:
        budget: a share of the full path's cost in (0, 1]: the most accurate thresholds whose mean
            cost per image is at most ``budget`` × the full path (else the ``delta`` target).
        latency_from: an ``athe run`` output with per-stage ms (``stage_latency_ms``): the stage
            costs are those measured latencies instead of MACs.
    """
    from athe.training.data import load_imageset
    from athe.training.model import load_model
    from athe.training.router_train import store_val_halves
    from athe.training.transforms import eval_tensor
    from athe.variants import get_variant

    run = Path(run_dir)
    ckpt = run / "athe-checkpoint.pt"
    for need in (ckpt, run / "split.json", run / "config.json"):
        if not need.is_file():
            raise ValueError(f"{need} not found; give a run directory that `athe train router` finished")
    blob = read_checkpoint(ckpt)
    variant = get_variant(blob["variant"])
    names = [st.name for st in variant.stages]
    if not names:
        raise ValueError(f"variant {variant.name} has no stages, so no exit gates to fit")
    if budget is not None and not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a share of the full path in (0, 1], got {budget}")
    stage_costs = (list(stage_latency_ms(latency_from, names).values()) if latency_from is not None
                   else list(variant.stage_macs()))
    model = load_model(variant, ckpt).eval()
    split = store_val_halves(run / "split.json")  # the halves router training uses
    cfg = json.loads((run / "config.json").read_text())
    images = load_imageset(cfg["data"], cfg.get("dataset", "auto"))

    def part(key: str) -> tuple[torch.Tensor, np.ndarray]:
        idx = np.asarray(split[key])
        return eval_tensor(images, variant.preprocess, idx), images.labels[idx]

    (x_g, y_g), (x_c, y_c), (x_t, y_t) = part("router"), part("calib"), part("test")
    exits = train_exit_gates(model, x_g, y_g, x_c, y_c, x_t, y_t, stage_costs, delta=delta,
                             budget=None if budget is None else budget * float(sum(stage_costs)),
                             confidence_z=confidence_z)
    exits["report"]["stage_costs"] = {"unit": "ms" if latency_from is not None else "MACs",
                                      "from": str(latency_from) if latency_from is not None else "variant",
                                      "values": dict(zip(names, stage_costs, strict=True))}
    blob["gates"], blob["exit_thresholds"] = exits["gates"], exits["thresholds"]
    blob["calibration"] = {**(blob.get("calibration") or {}), "exits": exits["report"]}
    card = blob.get("card") or {}
    card["exits"] = exit_card(exits)
    blob["card"] = card
    tmp = ckpt.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(ckpt)
    (run / "card.json").write_text(json.dumps(card, indent=2))
    return card["exits"]

"""Exit gates: "this exit is right" labels from held-out images, one small model per exit.

For every stage but the last, a gate scores the exit's answer from its softmax (max-prob,
margin, entropy) and the stage's CLS token, by L2-regularised logistic regression
(``athe.runtime.gates``, numpy, so the dispatcher computes exactly the same score). The gates
train on the backbone run's ``router`` split (images the backbone never trained on); the
thresholds are calibrated on the ``calib`` half of ``val``; the ``test`` half reports.

Both gate kinds are calibrated and compared on the same images: the learned gate and the
plain max-softmax threshold. The kind with the lower mean cost at the target on the
calibration half is shipped (never chosen on the test half).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from athe.runtime.gates import auroc, fit_logistic, gate_features, gate_score
from athe.runtime.manifest import GateSpec
from athe.runtime.routing import NEVER, calibrate, route, route_outcome
from athe.training.model import AtheViT

FEATURES = ("max_prob", "margin", "entropy", "cls")


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
    """Fit the gates, calibrate both gate kinds on ``calib``, pick one, report on ``test``.

    Returns:
        ``{"gates": {stage: GateSpec dict}, "thresholds": {stage: float}, "kind": str,
        "report": {...}}``: ``report`` has per exit the AUROC of both kinds and the accuracy of
        each exit alone, and per kind the calibrated thresholds and their outcome on both halves.
    """
    names = [st.name for st in model.stages]
    lg_g, cls_g = exit_outputs(model, x_gate)
    lg_c, cls_c = exit_outputs(model, x_calib)
    lg_t, cls_t = exit_outputs(model, x_test)
    learned = fit_gates(lg_g, cls_g, y_gate, names)
    kinds = {"logistic": learned,
             "max_softmax": {n: GateSpec(kind="max_softmax") for n in names[:-1]}}
    costs = exit_costs(stage_costs)
    c_c, c_t = correct_matrix(lg_c, y_calib), correct_matrix(lg_t, y_test)
    report: dict = {"target": {"delta": delta, "budget": budget, "confidence_z": confidence_z},
                    "exit_accuracy_test": {n: float(100 * c_t[:, i].mean()) for i, n in enumerate(names)},
                    "exit_accuracy_calib": {n: float(100 * c_c[:, i].mean()) for i, n in enumerate(names)},
                    "oracle_accuracy_test": float(100 * c_t.any(1).mean()),
                    "exit_costs": dict(zip(names, costs, strict=True)), "kinds": {}}
    for kind, gates in kinds.items():
        s_c = score_matrix(gates, lg_c, cls_c, names)
        s_t = score_matrix(gates, lg_t, cls_t, names)
        cal = calibrate(s_c, c_c, names, costs, delta=delta, budget=budget, confidence_z=confidence_z)
        # Report what the bundle will do: the thresholds as the manifest stores them.
        ths = [gate_threshold(cal.thresholds[n]) for n in names[:-1]]
        choice = route(s_t, ths)
        acc, cost = route_outcome(c_t, costs, choice)
        report["kinds"][kind] = {
            "auroc_test": {n: auroc(s_t[:, i], c_t[:, i]) for i, n in enumerate(names[:-1])},
            "thresholds": {n: gate_threshold(t) for n, t in cal.thresholds.items()},
            "calib": cal.to_dict(),
            "test": {"accuracy": acc, "mean_cost": cost, "cost_ratio": cost / costs[-1],
                     "reference_accuracy": float(100 * c_t[:, -1].mean()),
                     "exit_fraction": {n: float((choice == i).mean()) for i, n in enumerate(names)}},
        }
    # Ship the kind that is cheaper at the target on the calibration half (ties: the learned one).
    order = sorted(kinds, key=lambda k: (not report["kinds"][k]["calib"]["met"],
                                         report["kinds"][k]["calib"]["mean_cost"], k != "logistic"))
    best = order[0]
    for n, g in kinds[best].items():
        kinds[best][n] = dataclasses.replace(g, auroc=report["kinds"][best]["auroc_test"][n])
    report["shipped"] = best
    return {"gates": {n: dataclasses.asdict(g) for n, g in kinds[best].items()},
            "thresholds": report["kinds"][best]["thresholds"], "kind": best, "report": report}


def exit_card(exits: dict) -> dict:
    """The model card's ``exits`` entry from ``train_exit_gates``'s result."""
    rep = exits["report"]
    return {"shipped_gate": exits["kind"], "thresholds": exits["thresholds"],
            "target": rep["target"], "exit_accuracy_test": rep["exit_accuracy_test"],
            "oracle_accuracy_test": rep["oracle_accuracy_test"],
            **{f"{k}_test": v["test"] for k, v in rep["kinds"].items()},
            **{f"{k}_auroc_test": v["auroc_test"] for k, v in rep["kinds"].items()}}


def recalibrate_checkpoint(run_dir: str, delta: float = 1.0, confidence_z: float = 1.645) -> dict:
    """Refit the exit gates and thresholds of a run's ``athe-checkpoint.pt`` in place (the router
    and backbone stay): ``python -m athe.training.gates_train RUN [--delta D] [--z Z]``."""
    import json
    from pathlib import Path

    from athe.training.data import load_imageset
    from athe.training.model import load_model
    from athe.training.transforms import eval_tensor
    from athe.variants import get_variant

    run = Path(run_dir)
    ckpt = run / "athe-checkpoint.pt"
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    variant = get_variant(blob["variant"])
    model = load_model(variant, ckpt).eval()
    split = json.loads((run / "split.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    images = load_imageset(cfg["data"], cfg.get("dataset", "auto"))
    def part(key: str) -> tuple[torch.Tensor, np.ndarray]:
        idx = np.asarray(split[key])
        return eval_tensor(images, variant.preprocess, idx), images.labels[idx]

    (x_g, y_g), (x_c, y_c), (x_t, y_t) = part("router"), part("calib"), part("test")
    exits = train_exit_gates(model, x_g, y_g, x_c, y_c, x_t, y_t, variant.stage_macs(),
                             delta=delta, confidence_z=confidence_z)
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


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Refit a run's exit gates and thresholds")
    ap.add_argument("run")
    ap.add_argument("--delta", type=float, default=1.0)
    ap.add_argument("--z", type=float, default=1.645)
    a = ap.parse_args()
    print(json.dumps(recalibrate_checkpoint(a.run, a.delta, a.z), indent=2))

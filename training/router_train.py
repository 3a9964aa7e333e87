"""Router training: per-level correctness labels from the trained backbone, then a tiny CNN.

Images: the backbone run's ``router`` split (held out from backbone training) trains the
router; the ``val`` split is cut in two seeded halves (``athe.runtime.split.val_halves``):
``calib`` chooses the thresholds, ``test`` reports routed accuracy on images neither the router
nor the thresholds saw. Both halves are stored in the backbone run's ``split.json`` (keys
``calib`` and ``test``), where ``athe eval --split-from`` reads them.

Output (in the run directory): ``router.pt``, ``calibration.json`` and ``athe-checkpoint.pt``
(backbone fp16 + router + thresholds + classes + card), which ``athe convert`` reads.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from athe.runtime.routing import score_accuracy
from athe.runtime.split import with_val_halves
from athe.training.calibrate import calibrate_router
from athe.training.data import load_imageset
from athe.training.model import load_model, read_checkpoint
from athe.training.router import RouterCNN, build_router, router_macs
from athe.training.train import TrainConfig, level_predictions, read_metrics
from athe.training.transforms import augment_batch, eval_tensor
from athe.variants import Variant, get_variant

_logger = logging.getLogger(__name__)


def correctness_labels(logits: dict[str, torch.Tensor], labels: torch.Tensor,
                       level_names: list[str]) -> np.ndarray:
    """``[N, L]`` bool: does level ``j`` classify image ``i`` correctly."""
    return np.stack([(logits[n].argmax(-1) == labels).numpy() for n in level_names], axis=1)


def train_router(router: RouterCNN, x: torch.Tensor, targets: np.ndarray, epochs: int = 30,
                 lr: float = 3e-3, batch_size: int = 128, seed: int = 0) -> list[float]:
    """BCE on per-level correctness with flip/crop augmentation; returns per-epoch loss."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(targets.astype(np.float32))
    opt = torch.optim.AdamW(router.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * max(1, len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    history = []
    router.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, n = 0.0, 0
        for s in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[s:s + batch_size]
            xb = augment_batch(x[idx], gen, pad=max(1, x.shape[-1] // 8), erase_prob=0.0)
            loss = F.binary_cross_entropy_with_logits(router.logits(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        history.append(total / max(1, n))
    router.eval()
    return history


@torch.no_grad()
def router_probs(router: RouterCNN, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    router.eval()
    return torch.cat([router(x[s:s + batch_size]) for s in range(0, len(x), batch_size)]).numpy()


def _run_paths(backbone_run: str | Path) -> tuple[Path, Path]:
    p = Path(backbone_run)
    ckpt = p if p.is_file() else p / "last.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"no backbone checkpoint at {str(ckpt)!r}; train one with 'athe train backbone'")
    return ckpt.parent, ckpt


def train_router_from_run(backbone_run: str | Path, data: str | None = None, epochs: int = 30,
                          delta: float | None = None, out: str | Path | None = None) -> dict:
    """Label, train, calibrate and write ``athe-checkpoint.pt`` for a backbone run."""
    t0 = time.time()
    run_dir, ckpt_path = _run_paths(backbone_run)
    state = read_checkpoint(ckpt_path)
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{ckpt_path} is a checkpoint but not a backbone run's last.pt (no training "
                         "config in it); pass the folder `athe train backbone --out` wrote")
    cfg = TrainConfig(**state["config"])
    variant = get_variant(cfg.variant)
    if variant.router is None:
        raise ValueError(f"variant {variant.name!r} has no router")
    out_dir = Path(out) if out else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    split = store_val_halves(run_dir / "split.json")
    images = load_imageset(data or cfg.data, cfg.dataset)
    if images.classes != split["classes"]:
        raise ValueError(f"classes in {data or cfg.data!r} differ from the backbone run's split.json")
    model = load_model(variant)
    # The EMA of the weights when the run kept one (it is what the run's val figures measure).
    weights = "ema" if state.get("ema") is not None else "model"
    model.load_state_dict(state[weights])
    names = variant.level_names
    pre = variant.preprocess

    def labelled(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, dict]:
        x = eval_tensor(images, pre, np.asarray(idx))
        y = torch.from_numpy(images.labels[np.asarray(idx)])
        logits = level_predictions(model, variant, x, torch.device("cpu"))
        return x, y, correctness_labels(logits, y, names), logits

    x_r, y_r, c_r, _ = labelled(split["router"])
    calib_idx, test_idx = np.asarray(split["calib"]), np.asarray(split["test"])
    x_c, y_c, c_c, _ = labelled(calib_idx)
    x_t, y_t, c_t, _ = labelled(test_idx)

    router = build_router(variant)
    history = train_router(router, x_r, c_r, epochs=epochs, seed=cfg.seed)
    p_c, p_t = router_probs(router, x_c), router_probs(router, x_t)
    router_acc = dict(zip(names, score_accuracy(p_t, c_t, [0.5] * len(names)).tolist(), strict=True))
    macs = [variant.macs(n) for n in names]
    r_macs = router_macs(router)
    target_delta = variant.router.target_delta if delta is None else delta
    cal, test = calibrate_router(p_c, c_c, p_t, c_t, names, macs, router_macs=r_macs, delta=target_delta)
    t_acc = test["routed_accuracy"]
    calibration = {"target": cal.target, "calib": cal.to_dict(), "test": test,
                   "router_accuracy": router_acc, "router_macs": r_macs,
                   "router_train_loss": history,
                   "split": {"router": len(split["router"]), "calib": len(calib_idx), "test": len(test_idx),
                             "halves": "split.json of the backbone run (keys calib, test)"}}
    exits = None
    if variant.stages:
        from athe.training.gates_train import train_exit_gates

        exits = train_exit_gates(model, x_r, y_r.numpy(), x_c, y_c.numpy(), x_t, y_t.numpy(),
                                 variant.stage_macs(), delta=target_delta)
        calibration["exits"] = exits["report"]
        _logger.info("exit gates: shipped %s, thresholds %s", exits["kind"], exits["thresholds"])
    torch.save(router.state_dict(), out_dir / "router.pt")
    (out_dir / "calibration.json").write_text(json.dumps(calibration, indent=2))
    card = {
        "variant": variant.name, "data": cfg.data, "split_seed": cfg.split_seed,
        "split": {k: len(split[k]) for k in ("train", "router", "val")},
        "epochs": state["epoch"], "backbone_metrics": state.get("metrics"),
        "level_accuracy_test": test["level_accuracy"], "routed_accuracy_test": t_acc,
        "routed_fraction_test": test["routed_fraction"], "router_accuracy_test": router_acc,
        "thresholds": cal.thresholds, "router_seconds": round(time.time() - t0, 1),
        "weights": weights,
        **_run_curve(run_dir),
    }
    if exits is not None:
        from athe.training.gates_train import exit_card

        card["exits"] = exit_card(exits)
    save_athe_checkpoint(out_dir / "athe-checkpoint.pt", variant, model.state_dict(), router,
                         cal.thresholds, images.classes, calibration, card,
                         gates=exits["gates"] if exits else None,
                         exit_thresholds=exits["thresholds"] if exits else None)
    (out_dir / "card.json").write_text(json.dumps(card, indent=2))
    return card


def _run_curve(run_dir: Path) -> dict:
    """The backbone run's per-epoch validation curve, wall time and speed (from metrics.jsonl)."""
    rows = read_metrics(run_dir)
    if not rows:
        return {}
    curve = [{"epoch": r["epoch"], **{k: v for k, v in r.items() if k.startswith("val_top1")}} for r in rows]
    seconds = sum(float(r.get("epoch_seconds", 0.0)) for r in rows)
    speeds = [float(r["images_per_second"]) for r in rows if "images_per_second" in r]
    return {"per_epoch_val_top1": curve, "backbone_wall_seconds": round(seconds, 1),
            "images_per_second_median": float(np.median(speeds)) if speeds else None,
            "images_per_second_max": max(speeds) if speeds else None}


def store_val_halves(split_file: Path) -> dict:
    """Read a backbone run's ``split.json``, add the ``calib``/``test`` halves of ``val`` if it
    lacks them (``athe.runtime.split.with_val_halves``), write it back atomically, return it."""
    split = json.loads(split_file.read_text())
    if "calib" in split and "test" in split:
        return split
    split = with_val_halves(split)
    tmp = split_file.with_name(split_file.name + ".tmp")
    tmp.write_text(json.dumps(split))
    tmp.replace(split_file)
    return split


def save_athe_checkpoint(path: Path, variant: Variant, backbone_state: dict, router: RouterCNN | None,
                         thresholds: dict[str, float] | None, classes: list[str],
                         calibration: dict | None, card: dict | None,
                         gates: dict[str, dict] | None = None,
                         exit_thresholds: dict[str, float] | None = None) -> None:
    """The shippable checkpoint: fp16 backbone + router, thresholds, classes, calibration, and
    for variants with stages the exit gates (``GateSpec`` fields per stage) and thresholds."""
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in backbone_state.items()}
    blob = {"format": "athe-checkpoint-v1", "variant": variant.name, "model": half,
            "router": router.state_dict() if router is not None else None,
            "thresholds": thresholds, "classes": classes, "calibration": calibration, "card": card,
            "gates": gates, "exit_thresholds": exit_thresholds}
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)

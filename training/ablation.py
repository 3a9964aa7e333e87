"""Recipe ablation: every ingredient of the backbone recipe taken out, one at a time.

Each arm is a real backbone run (``train_backbone``) from the same random init, on the same
training subset, the same number of epochs and the same seed; only the ingredient named by the
arm differs from the full recipe (``soft-teacher`` swaps rather than removes: the teacher's
softmax at weight 0.7, as the shipped legs distil, for its hard label at 0.5). The table reports
each arm's validation top-1 (the 5,000 ``val`` images of the split, EMA weights where the arm
has an EMA) and its difference from the full recipe.

    python -m athe.training.ablation --data ../shared/data/cifar10-train.tar.gz \\
        --teacher runs/teacher/teacher.pt --limit 8000 --epochs 2 --out runs/ablation

A short schedule favours ingredients that speed early learning and penalises regularisers
that pay late (mixing, EMA, erasing): read the table as "what each ingredient does in the first
epochs", not as its effect at 60 epochs. One seed: on 5,000 images a difference below ~1.3 pt
(two standard errors of a 70 % accuracy) is noise. An arm whose run directory already holds a
finished run is read back, not retrained, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from athe.training.train import TrainConfig, read_metrics

#: arm name -> (what it removes, the TrainConfig fields it changes)
ARMS: dict[str, tuple[str, dict]] = {
    "full": ("the full recipe", {}),
    "no-teacher": ("no distillation from the CNN teacher", {"teacher": None}),
    "no-ema": ("no EMA of the weights", {"ema_decay": 0.0}),
    "no-mix": ("no mixup/cutmix", {"mix_prob": 0.0}),
    "no-smoothing": ("no label smoothing", {"label_smoothing": 0.0}),
    "no-erasing": ("no random erasing", {"erase_prob": 0.0}),
    # not a removal: the shipped legs' distillation (the teacher's whole softmax, weight 0.7)
    "soft-teacher": ("the teacher's hard label (its softmax, w 0.7)",
                     {"teacher_kind": "soft", "teacher_weight": 0.7}),
    # not a removal either: TrivialAugment before the crop/flip/erasing
    "trivial-augment": ("nothing (adds TrivialAugment)", {"augment": "trivial"}),
}
NEEDS_TEACHER = ("no-teacher", "soft-teacher")


def recipe_config(data: str, out: str, epochs: int, limit: int | None, teacher: str | None,
                  seed: int = 0, variant_name: str = "athe-mini") -> TrainConfig:
    """The shipped run's recipe (variant defaults + the long run's options) for a short schedule."""
    from athe.variants import get_variant

    r = get_variant(variant_name).train
    return TrainConfig(
        variant=variant_name, data=data, out=out, epochs=epochs, batch_size=r.batch_size, lr=r.lr,
        weight_decay=r.weight_decay, warmup_epochs=min(r.warmup_epochs, epochs / 4),
        label_smoothing=r.label_smoothing, distill_weight=r.distill_weight, val_size=r.val_size,
        router_size=r.router_size, split_seed=r.split_seed, seed=seed, cheap_levels_per_step=1,
        limit=limit, workers=0, mix_prob=0.3, ema_decay=0.999, teacher=teacher, teacher_weight=0.5,
        log_every=100)


def arm_config(base: TrainConfig, arm: str, root: Path) -> TrainConfig:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    return replace(base, out=str(root / arm), **ARMS[arm][1])


def _saved_state(cfg: TrainConfig) -> str:
    """'fresh' (nothing to continue), 'finished', 'partial' (same config, resumable) or 'other'."""
    out = Path(cfg.out)
    if not out.exists():
        return "fresh"
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return "other"
    try:  # a run saved before a field existed holds that field's default
        saved = json.loads(json.dumps(asdict(TrainConfig(**saved))))
    except (TypeError, ValueError):
        return "other"
    if saved != json.loads(json.dumps(asdict(cfg))):
        return "other"
    if not (out / "last.pt").is_file():
        return "fresh"
    rows = read_metrics(out)
    return "finished" if rows and rows[-1].get("epoch") == cfg.epochs else "partial"


def run_arms(base: TrainConfig, arms: list[str], root: Path, variant=None) -> list[dict[str, Any]]:
    """Train (or read back) every arm; returns one result row per arm, in order."""
    from athe.training.train import train_backbone
    from athe.variants import get_variant

    variant = variant if variant is not None else get_variant(base.variant)
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for arm in arms:
        cfg = arm_config(base, arm, root)
        state = _saved_state(cfg)
        if state == "other":
            raise FileExistsError(f"{cfg.out!r} holds a run with other settings; remove it or pick another --out")
        t0 = time.time()
        reused = state == "finished"
        if reused:
            metrics = read_metrics(Path(cfg.out))[-1]
        else:  # a partial arm continues from its last epoch (a resumed run equals a straight one)
            metrics = train_backbone(cfg, variant, resume=state == "partial")
        results.append({
            "arm": arm, "removes": ARMS[arm][0], "reused": reused,
            "val_top1_dense": metrics.get("val_top1_dense"),
            # the live (non-EMA) weights, where the arm keeps an EMA: what EMA does at this schedule
            "val_top1_raw_dense": metrics.get("val_top1_raw_dense"),
            "val_top1_exit_s1": metrics.get(f"val_top1_exit_{variant.stages[0].name}") if variant.stages else None,
            "val_top1_simple": metrics.get(f"val_top1_{variant.levels[0].name}"),
            "images_per_second": metrics.get("images_per_second"),
            "seconds": round(time.time() - t0, 1),
        })
    full = next((r for r in results if r["arm"] == "full"), None)
    for r in results:
        r["delta_dense_pt"] = (None if full is None or r["val_top1_dense"] is None
                               else round(r["val_top1_dense"] - full["val_top1_dense"], 2))
    return results


def markdown_table(results: list[dict], base: TrainConfig) -> str:
    def pct(v):
        return "–" if v is None else f"{v:.2f}"

    lines = [f"Recipe ablation: {base.epochs} epochs on {base.limit or 'all'} training images, seed {base.seed}, "
             "val top-1 (5,000 images)", "",
             "| arm | removes | dense | Δ dense (pt) | dense, live weights | exit s1 | simple level | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["delta_dense_pt"]
        lines.append(f"| {r['arm']} | {r['removes']} | {pct(r['val_top1_dense'])} | "
                     f"{'–' if d is None or r['arm'] == 'full' else f'{d:+.2f}'} | {pct(r.get('val_top1_raw_dense'))} | "
                     f"{pct(r['val_top1_exit_s1'])} | "
                     f"{pct(r['val_top1_simple'])} | {r['images_per_second'] or '–'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m athe.training.ablation", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the CIFAR-10 archive (or any data athe train backbone reads)")
    p.add_argument("--teacher", default=None,
                   help="teacher.pt trained on this split (athe train teacher); without it 'no-teacher' is the base")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=8000, help="training images per arm (a seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--out", required=True, help="directory: one run per arm, ablation.json, ablation.md")
    a = p.parse_args(argv)
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in arms if x not in ARMS]
    if bad:
        p.error(f"--arms: unknown {', '.join(bad)}; choose from {', '.join(ARMS)}")
    if a.epochs < 1 or a.limit < 1:
        p.error("--epochs and --limit must be >= 1")
    needs = [x for x in arms if x in NEEDS_TEACHER]
    if a.teacher is None and needs:
        p.error(f"--arms includes {', '.join(needs)} but no --teacher was given: pass the teacher.pt "
                "(athe train teacher) or leave the arm out")
    if a.teacher is not None and not Path(a.teacher).is_file():
        p.error(f"--teacher: no file at {a.teacher!r}; train one with athe train teacher")
    root = Path(a.out)
    base = recipe_config(a.data, str(root), a.epochs, a.limit, a.teacher, a.seed)
    try:
        results = run_arms(base, arms, root)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = markdown_table(results, base)
    (root / "ablation.json").write_text(json.dumps({"base": asdict(base), "results": results}, indent=2))
    (root / "ablation.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

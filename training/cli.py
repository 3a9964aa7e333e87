"""``athe train backbone`` and ``athe train router``: thin click wrappers over the library."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from athe.cli import OneLineErrors, finite_float, is_user_error, one_line, out_option
from athe.variants import AUGMENTS, VARIANTS, get_variant

#: Bounds of the numeric options (a typo like --epochs 0 or --lr nan is refused at parse time).
POSITIVE = click.IntRange(min=1)
T = TypeVar("T")


def library_call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with a user error (bad input, settings) as one click line."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        raise click.ClickException(one_line(exc)) from None


@click.group(cls=OneLineErrors)
def train() -> None:
    """Train a backbone (all levels, one weight set) or the difficulty router."""


@train.command("backbone")
@click.option("--variant", "variant_name", type=click.Choice(sorted(VARIANTS)), required=True)
@click.option("--data", type=click.Path(), default=None,
              help="ImageFolder dir, .tar(.gz) archive or CIFAR root (default: the variant's).")
@click.option("--dataset", type=click.Choice(["auto", "cifar10", "cifar100", "imagefolder"]), default="auto")
@click.option("--download", is_flag=True, help="Download CIFAR into --data if missing.")
@click.option("--init", default=None, help="'timm' (pretrained weights; needs network) or a checkpoint path.")
@click.option("--epochs", type=click.IntRange(1, 100_000), default=None)
@click.option("--batch-size", type=click.IntRange(1, 65_536), default=None)
@click.option("--lr", type=float, default=None, callback=finite_float(1e-12, 10.0),
              help="Peak learning rate, a finite number in (0, 10].")
@click.option("--cheap-levels-per-step", type=click.IntRange(min=0), default=0, show_default=True,
              help="0: every cheaper level each step (sandwich); k: k of them, cycling.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="Use only the first N training images.")
@click.option("--max-steps", type=POSITIVE, default=None)
@click.option("--workers", type=click.IntRange(0, 256), default=2, show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
              show_default=True, help="auto: bf16 autocast where the CPU has bf16 matmuls (AMX/AVX512-BF16).")
@click.option("--mix-prob", type=click.FloatRange(0, 1), default=None,
              help="Probability that a batch is mixed (mixup/cutmix); default: the variant's.")
@click.option("--augment", type=click.Choice(AUGMENTS), default=None,
              help="crop_flip: crop, flip, erasing; trivial: TrivialAugment first (default: the variant's).")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="EMA of weights per step (0: off); default: the variant's.")
@click.option("--exit-weight", type=float, default=1.0, show_default=True, callback=finite_float(0.0, 1000.0),
              help="Weight of each early exit's loss.")
@click.option("--teacher", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A teacher.pt (athe train teacher on this run's split): distil its labels (--teacher-kind).")
@click.option("--teacher-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of each target that is the teacher's label.")
@click.option("--teacher-kind", type=click.Choice(["hard", "soft"]), default="hard", show_default=True,
              help="hard: the teacher's smoothed argmax (DeiT); soft: its softmax (function matching).")
@click.option("--out", type=str, required=True, callback=out_option, help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def backbone(variant_name: str, data: str | None, dataset: str, download: bool, init: str | None,
             epochs: int | None, batch_size: int | None, lr: float | None,
             cheap_levels_per_step: int, seed: int, limit: int | None, max_steps: int | None,
             workers: int, compile_: bool, precision: str, mix_prob: float | None,
             augment: str | None, ema_decay: float | None, exit_weight: float, teacher: str | None, teacher_weight: float,
             teacher_kind: str, out: Path, resume: bool) -> None:
    """Train every level of VARIANT's backbone with one weight set."""
    from athe.training.train import TrainConfig, train_backbone

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variant = get_variant(variant_name)
    recipe = variant.train
    data = data or recipe.data_path
    if data is None:
        raise click.UsageError(f"variant {variant_name!r} has no default data; pass --data")
    if teacher_kind == "soft" and teacher is None:
        raise click.UsageError("--teacher-kind soft needs --teacher PATH (a teacher.pt from athe train teacher)")
    if init not in (None, "timm") and not Path(init).is_file():
        raise click.BadParameter(f"{init!r} is neither 'timm' nor an existing checkpoint file", param_hint="--init")
    cfg = TrainConfig(
        variant=variant_name, data=str(data), out=str(out), epochs=epochs or recipe.epochs,
        batch_size=batch_size or recipe.batch_size, lr=lr or recipe.lr,
        weight_decay=recipe.weight_decay, warmup_epochs=recipe.warmup_epochs,
        label_smoothing=recipe.label_smoothing, distill_weight=recipe.distill_weight,
        val_size=recipe.val_size, router_size=recipe.router_size, split_seed=recipe.split_seed,
        seed=seed, init=init, cheap_levels_per_step=cheap_levels_per_step, limit=limit,
        max_steps=max_steps, workers=workers, compile=compile_, dataset=dataset, download=download,
        precision=precision, exit_weight=exit_weight,
        mix_prob=recipe.mix_prob if mix_prob is None else mix_prob,
        augment=recipe.augment if augment is None else augment,
        ema_decay=recipe.ema_decay if ema_decay is None else ema_decay,
        teacher=teacher, teacher_weight=teacher_weight, teacher_kind=teacher_kind,
    )
    metrics = library_call(train_backbone, cfg, variant, resume=resume)
    click.echo(json.dumps(metrics, indent=2))


@train.command("router")
@click.option("--backbone", "backbone_run", type=click.Path(exists=True), required=True,
              help="Backbone run directory (or its last.pt).")
@click.option("--data", type=click.Path(), default=None, help="Default: the backbone run's data.")
@click.option("--epochs", type=click.IntRange(1, 100_000), default=30, show_default=True)
@click.option("--delta", type=float, default=None, callback=finite_float(0.0, 100.0),
              help="Calibration: accuracy points below dense allowed (0 to 100).")
@click.option("--out", type=str, default=None, callback=out_option,
              help="Default: the backbone run directory.")
def router(backbone_run: str, data: str | None, epochs: int, delta: float | None, out: Path | None) -> None:
    """Label held-out images by per-level correctness, train the router CNN, calibrate thresholds."""
    from athe.training.router_train import train_router_from_run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = library_call(train_router_from_run, backbone_run, data=data, epochs=epochs, delta=delta,
                          out=None if out is None else str(out))
    json.dump(result, sys.stdout, indent=2)
    click.echo()


@train.command("gates")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--delta", type=float, default=1.0, show_default=True, callback=finite_float(0.0, 100.0),
              help="Accuracy points below the full path allowed (at the confidence margin).")
@click.option("--budget", type=float, default=None, callback=finite_float(1e-9, 1.0),
              help="Instead of --delta: mean cost per image at most this share of the full path "
                   "(0 < B <= 1), at the highest accuracy.")
@click.option("--latency-from", type=click.Path(exists=True), default=None,
              help="An `athe run --policy exit:<last>` output on the target device: calibrate on "
                   "its measured stage ms instead of MACs.")
@click.option("--z", "confidence_z", type=float, default=1.645, show_default=True,
              callback=finite_float(0.0, 10.0),
              help="Confidence margin of the --delta target, in standard errors (0: point estimate).")
def gates(run: str, delta: float, budget: float | None, latency_from: str | None,
          confidence_z: float) -> None:
    """Refit RUN's exit gates and recalibrate their thresholds in its athe-checkpoint.pt."""
    from athe.training.gates_train import recalibrate_checkpoint

    card = library_call(recalibrate_checkpoint, run, delta=delta, confidence_z=confidence_z,
                        budget=budget, latency_from=latency_from)
    json.dump(card, sys.stdout, indent=2)
    click.echo()
    click.echo(f"Next: athe convert --checkpoint {Path(run) / 'athe-checkpoint.pt'} ... "
               "(the bundle's manifest takes the new thresholds)", err=True)


def _widths_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int, int]:
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{value!r} is not three positive integers; write e.g. 128,384,384")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


@train.command("teacher")
@click.option("--run", "run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Backbone run folder: the teacher trains on its split.json's train images only.")
@click.option("--data", type=click.Path(exists=True), default=None, help="Default: the run's data.")
@click.option("--epochs", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--lr", type=float, default=1.5, show_default=True, callback=finite_float(1e-12, 10.0),
              help="Peak learning rate of the weights (BatchNorm shifts: 64x).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="Use only N of the run's training images.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--widths", type=str, default="64,256,256", show_default=True, callback=_widths_option,
              help="Channels of the three conv groups, e.g. 128,384,384 (wider: slower, more accurate).")
@click.option("--out", type=str, required=True, callback=out_option, help="Teacher folder (teacher.pt, teacher.json).")
def teacher(run: str, data: str | None, epochs: int, lr: float, seed: int, limit: int | None,
            precision: str, widths: tuple[int, int, int], out: Path) -> None:
    """Train the CNN teacher that `athe train backbone --teacher` distils from."""
    from athe.training.teacher import TeacherConfig, train_teacher

    config = Path(run) / "config.json"
    if not config.is_file():
        raise click.BadParameter(f"{str(config)!r} not found: --run takes a backbone run folder", param_hint="--run")
    run_cfg = json.loads(config.read_text())
    variant = get_variant(run_cfg["variant"])
    data = data or run_cfg["data"]
    cfg = TeacherConfig(run=run, out=str(out), epochs=epochs, lr=lr, seed=seed, limit=limit, precision=precision,
                        widths=widths)
    card = library_call(train_teacher, cfg, variant.preprocess, variant.backbone.num_classes, str(data))
    click.echo(json.dumps({k: card[k] for k in ("held_out_top1", "wall_seconds", "params")}, indent=2))
    click.echo(f"Next: athe train backbone ... --teacher {Path(out) / 'teacher.pt'}", err=True)

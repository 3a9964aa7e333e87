"""Once-trained backbone training: one weight set serves every level.

Each step trains the dense level on the labels and the cheaper levels (sandwich rule) on the
dense level's detached soft outputs (in-place distillation). The cheap levels use the first
``h`` heads, so the head prefix is what learns to work alone (nested head dropout).

Device-agnostic: CUDA when present (AMP bf16/fp16), CPU otherwise; multi-GPU / multi-node via
``torchrun`` (DistributedSampler semantics, rank-0 logging and checkpoints).

Example::

    athe train backbone --variant athe-mini --data ../shared/data/cifar10-train.tar.gz --out runs/mini
    athe train backbone --variant athe-mini --data ... --out runs/mini --resume
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from athe.training.data import ImageSet, check_labels, load_imageset, make_split
from athe.training.model import AtheViT, chain_is_dense, load_model, read_checkpoint
from athe.training.transforms import (
    PilDataset,
    eval_tensor,
    is_array_ready,
    train_batch,
    train_transform,
)
from athe.variants import AUGMENTS, Level, Variant

_logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a backbone run (saved in the run directory and checkpoints)."""

    variant: str
    data: str
    out: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    distill_weight: float
    val_size: int
    router_size: int
    split_seed: int
    seed: int = 0
    init: str | None = None
    cheap_levels_per_step: int = 0  # 0 = all cheaper levels every step
    clip_grad: float = 1.0
    limit: int | None = None  # use only the first N training images (tests, smoke runs)
    max_steps: int | None = None  # stop after N steps in total (tests)
    workers: int = 2
    compile: bool = False
    dataset: str = "auto"
    download: bool = False
    log_every: int = 50
    precision: str = "auto"  # auto: bf16 autocast where the CPU/GPU has bf16 matmuls, else fp32
    exit_weight: float = 1.0  # weight of each early exit's loss (CE + distillation from the last)
    mix_prob: float = 0.0  # probability that a batch is mixed (mixup or cutmix, half each)
    ema_decay: float = 0.0  # EMA of weights per step (0: off); the EMA is what gets evaluated
    teacher: str | None = None  # a teacher.pt (athe train teacher): its labels join the targets
    teacher_weight: float = 0.5  # share of the target that is the teacher's label
    teacher_kind: str = "hard"  # hard: its smoothed argmax (DeiT); soft: its softmax (function matching)
    erase_prob: float = 0.25  # random erasing per image (array path; the PIL path uses RandAugment)
    augment: str = "crop_flip"  # array path: crop_flip, or trivial (TrivialAugment first, then crop_flip)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment={self.augment!r}: use one of {', '.join(AUGMENTS)}")
        if self.teacher_kind not in ("hard", "soft"):
            raise ValueError(f"teacher_kind={self.teacher_kind!r}: use 'hard' or 'soft'")


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _is_dist() else 0


def _world() -> int:
    return dist.get_world_size() if _is_dist() else 1


def setup_distributed() -> torch.device:
    """Init the process group when launched by torchrun; return this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _is_dist():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on norms, biases, position embeddings and the CLS token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total_steps: int, warmup_steps: int, floor: float = 0.01):
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return fn


def cheap_levels_for_step(cheap: list[Level], step: int, per_step: int) -> list[Level]:
    """Sandwich rule: all cheaper levels, or ``per_step`` of them cycling by step."""
    if per_step <= 0 or per_step >= len(cheap):
        return list(cheap)
    if per_step == 1:
        return [cheap[step % len(cheap)]]
    others = cheap[1:]
    start = (step * (per_step - 1)) % len(others)
    return [cheap[0]] + [others[(start + j) % len(others)] for j in range(per_step - 1)]


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability target ``[batch, classes]`` (float32 maths)."""
    return -(target * logits.float().log_softmax(-1)).sum(-1).mean()


def level_losses(model: AtheViT, variant: Variant, x: torch.Tensor, y: torch.Tensor,
                 cfg: TrainConfig, step: int,
                 amp: tuple[str, torch.dtype, bool] = ("cpu", torch.bfloat16, False)
                 ) -> dict[str, torch.Tensor]:
    """One step's losses, with one backward over their sum.

    ``y`` is a probability target ``[batch, classes]`` (label smoothing and mixing applied).
    With stages, the chain runs once: its last exit is trained on ``y`` and every earlier exit
    on ``y`` and on the last exit's detached output (half each); when the chain is the dense
    level (no token selection, all heads) that forward also serves as the dense level's. The
    cheaper levels then learn from the dense level's detached output (in-place distillation).
    """
    device_type, dtype, enabled = amp
    if not y.is_floating_point():  # integer labels: smoothed one-hot targets
        y = smooth_targets(y, variant.backbone.num_classes, cfg.label_smoothing)
    dense = variant.dense_level
    losses: dict[str, torch.Tensor] = {}
    stages = variant.stages
    with torch.autocast(device_type, dtype=dtype, enabled=enabled):
        if stages:
            exits = model(x, exits=True)
            final = exits[-1]
            loss = soft_ce(final, y)
            teacher_exit = final.detach().float().softmax(-1)
            for st, logits in zip(stages[:-1], exits[:-1], strict=True):
                ex = 0.5 * soft_ce(logits, y) + 0.5 * soft_ce(logits, teacher_exit)
                loss = loss + cfg.exit_weight * ex
                losses[f"exit_{st.name}"] = ex.detach()
            if chain_is_dense(variant.backbone, stages):
                losses[dense.name] = soft_ce(final.detach(), y)
                dense_logits = final
            else:
                losses[f"exit_{stages[-1].name}"] = soft_ce(final.detach(), y)
                dense_logits = model(x, level=dense)
                dl = soft_ce(dense_logits, y)
                loss = loss + dl
                losses[dense.name] = dl.detach()
        else:
            dense_logits = model(x, level=dense)
            loss = soft_ce(dense_logits, y)
            losses[dense.name] = loss.detach()
    teacher = dense_logits.detach().float().softmax(-1)
    for lv in cheap_levels_for_step(list(variant.levels[:-1]), step, cfg.cheap_levels_per_step):
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            kd = soft_ce(model(x, level=lv), teacher)
        loss = loss + cfg.distill_weight * kd
        losses[lv.name] = kd.detach()
    # One backward per step: under DDP every parameter (the exit heads too) is then reduced
    # exactly once, although a cheap level's forward does not touch the exit heads.
    loss.backward()
    return losses


def resolve_precision(precision: str, device: torch.device) -> tuple[bool, torch.dtype]:
    """``(autocast on, dtype)`` for ``--precision`` (``auto``, ``bf16``, ``fp16``, ``fp32``)."""
    if precision == "fp32":
        return False, torch.float32
    if device.type == "cuda":
        if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
            return True, torch.float16
        return True, torch.bfloat16
    if precision == "fp16":
        raise ValueError("--precision fp16 needs a GPU; on CPU use bf16 or fp32")
    if precision == "bf16":
        return True, torch.bfloat16
    # auto on CPU: bf16 only where oneDNN has native bf16 kernels (AVX512-BF16 / AMX);
    # elsewhere emulated bf16 is slower than fp32.
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), torch.bfloat16


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (float32 copies).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the ``n`` updates so far, so
    the random initial weights do not linger in the average of a short run.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                      for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.state[k].copy_(v)


@torch.no_grad()
def evaluate(model: torch.nn.Module, variant: Variant, x_all: torch.Tensor, y_all: torch.Tensor,
             device: torch.device, batch_size: int = 500, dense_only: bool = False
             ) -> dict[str, float]:
    """Top-1 (%) of every level on preprocessed ``[N, 3, S, S]`` images."""
    model.eval()
    levels = [variant.dense_level] if dense_only else list(variant.levels)
    correct = {lv.name: 0 for lv in levels}
    stages = () if dense_only else getattr(model, "stages", ())
    correct.update({f"exit_{st.name}": 0 for st in stages})
    for s in range(0, len(y_all), batch_size):
        x = x_all[s:s + batch_size].to(device)
        y = y_all[s:s + batch_size].to(device)
        for lv in levels:
            correct[lv.name] += (model(x, level=lv).argmax(-1) == y).sum().item()
        if stages:
            for st, logits in zip(stages, model.forward_exits(x), strict=True):  # type: ignore[operator]
                correct[f"exit_{st.name}"] += (logits.argmax(-1) == y).sum().item()
    return {k: 100.0 * v / max(1, len(y_all)) for k, v in correct.items()}


@torch.no_grad()
def level_predictions(model: torch.nn.Module, variant: Variant, x_all: torch.Tensor,
                      device: torch.device, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """``{level: logits [N, classes]}`` for preprocessed images."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {lv.name: [] for lv in variant.levels}
    for s in range(0, len(x_all), batch_size):
        x = x_all[s:s + batch_size].to(device)
        for lv in variant.levels:
            out[lv.name].append(model(x, level=lv).float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


class _Progress:
    """A one-line progress report: a live bar on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int, epoch: int, epochs: int, enabled: bool, every: int) -> None:
        self.total, self.epoch, self.epochs, self.enabled, self.every = total, epoch, epochs, enabled, every
        self.start = time.time()
        self.tty = sys.stderr.isatty()

    def update(self, i: int, loss: float, lr: float, images: int) -> None:
        if not self.enabled:
            return
        el = time.time() - self.start
        ips = images / max(el, 1e-9)
        eta = (self.total - i) * el / max(i, 1)
        line = (f"epoch {self.epoch + 1}/{self.epochs} step {i}/{self.total} loss {loss:.4f} "
                f"lr {lr:.2e} {ips:.0f} img/s ETA {eta / 60:.1f} min")
        if self.tty:
            bar = "#" * int(30 * i / max(1, self.total))
            print(f"\r[{bar:<30}] {line}", end="", file=sys.stderr, flush=True)
        elif i % self.every == 0 or i == self.total:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_metrics(out: Path) -> list[dict]:
    """The per-epoch rows ``_append_metrics`` wrote to ``out/metrics.jsonl`` ([] if none yet)."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_metrics(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    csv_path = out / "metrics.csv"
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def prepare_data(cfg: TrainConfig, variant: Variant) -> tuple[ImageSet, dict[str, np.ndarray]]:
    images = load_imageset(cfg.data, cfg.dataset, download=cfg.download)
    check_labels(images, variant.backbone.num_classes, variant.name)
    split = make_split(len(images), cfg.val_size, cfg.router_size, cfg.split_seed)
    if cfg.limit is not None:  # a seeded random subset, not the first (class-sorted) files
        pick = np.random.default_rng(cfg.split_seed + 1).permutation(len(split["train"]))[: cfg.limit]
        split["train"] = np.sort(split["train"][pick])
    return images, split


def write_split(out: Path, images: ImageSet, split: dict[str, np.ndarray], seed: int) -> None:
    record = {"source": images.source, "seed": seed, "classes": images.classes,
              "counts": {k: int(len(v)) for k, v in split.items()},
              "skipped": images.skipped,
              **{k: v.tolist() for k, v in split.items()}}
    (out / "split.json").write_text(json.dumps(record))


def train_backbone(cfg: TrainConfig, variant: Variant, resume: bool = False) -> dict:
    """Train (or resume) a backbone run in ``cfg.out``; returns the last epoch's metrics."""
    device = setup_distributed()
    rank, world = _rank(), _world()
    out = Path(cfg.out)
    ckpt_path = out / "last.pt"
    state = None
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {str(ckpt_path)!r}; start without --resume")
        state = read_checkpoint(ckpt_path)
        saved = TrainConfig(**state["config"])
        for key in ("variant", "batch_size", "lr", "split_seed", "val_size", "router_size", "seed",
                    "teacher", "teacher_weight", "teacher_kind", "augment"):
            if getattr(saved, key) != getattr(cfg, key):
                raise ValueError(
                    f"--resume: {key}={getattr(cfg, key)!r} differs from the run's {getattr(saved, key)!r}; "
                    "resume with the same settings or start a new --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    images, split = prepare_data(cfg, variant)
    if rank == 0 and not resume:
        write_split(out, images, split, cfg.split_seed)
    pre = variant.preprocess
    array_mode = is_array_ready(images, pre)
    val_x = eval_tensor(images, pre, split["val"]) if len(split["val"]) else None
    val_y = torch.from_numpy(images.labels[split["val"]])

    seed_everything(cfg.seed)  # the initial weights depend on the seed only
    init = cfg.init
    model = load_model(variant, init if init not in (None, "timm") else None,
                       timm_pretrained=(init == "timm" and state is None))
    model.to(device)
    if device.type == "cpu":
        # On CPU the explicit softmax(QK^T)V path trains ~25 % faster than SDPA (measured).
        for blk in model.ablocks():
            blk.attn.set_fused_attn(False)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    train_idx = split["train"]
    steps_per_epoch = len(train_idx) // (cfg.batch_size * world)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_idx)} training images cannot fill one batch of {cfg.batch_size} x {world}")
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(total, int(cfg.warmup_epochs * steps_per_epoch)))
    start_epoch, step = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"], state["step"]
    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model = torch.compile(ddp_model) if cfg.compile else ddp_model
    amp, amp_dtype = resolve_precision(cfg.precision, device)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    if ema is not None and state is not None and "ema" in state:
        ema.state = state["ema"]
        ema.updates = int(state.get("ema_updates", state["step"]))
    num_classes = variant.backbone.num_classes
    teacher = None
    if cfg.teacher is not None:
        from athe.training.teacher import load_teacher

        teacher = load_teacher(cfg.teacher).to(device)
        if teacher.head.out_features != num_classes:
            raise ValueError(f"teacher {cfg.teacher!r} has {teacher.head.out_features} classes, "
                             f"variant {variant.name!r} {num_classes}; train a teacher on this run's data")

    pil_loader = None
    if not array_mode:
        pil_loader = PilDataset(images.subset(train_idx), train_transform(pre))
    metrics: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch * 101 + rank)
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 101 + rank)
        # The sampler only takes len() of its dataset: shuffle positions 0..n-1 of train_idx.
        positions = cast("Dataset[int]", range(len(train_idx)))
        sampler: DistributedSampler[int] = DistributedSampler(
            positions, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
            drop_last=True)
        sampler.set_epoch(epoch)
        order = np.asarray(list(sampler))
        if pil_loader is not None:
            loader = DataLoader(pil_loader, batch_size=cfg.batch_size, sampler=order.tolist(),
                                num_workers=cfg.workers, drop_last=True,
                                persistent_workers=False, pin_memory=device.type == "cuda")
            batches = iter(loader)
        model.train()
        progress = _Progress(steps_per_epoch, epoch, cfg.epochs, rank == 0, cfg.log_every)
        t0, loss_sum, n_seen = time.time(), 0.0, 0
        level_sums: dict[str, float] = {}
        for i in range(steps_per_epoch):
            if pil_loader is None:
                if images.array is None:
                    raise RuntimeError("array-mode training needs decoded same-size images "
                                       "(ImageSet.array is None)")
                idx = train_idx[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
                x = train_batch(torch.from_numpy(images.array[idx]), pre, gen, cfg.augment,
                                cfg.erase_prob).to(device, non_blocking=True)
                y = torch.from_numpy(images.labels[idx]).to(device)
            else:
                x, y = next(batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            target = smooth_targets(y, num_classes, cfg.label_smoothing)
            if cfg.mix_prob > 0:
                x, target = mix_batch(x, target, cfg.mix_prob,
                                      np.random.default_rng([cfg.seed, epoch, i, rank]))
            if teacher is not None:
                target = teacher_targets(teacher, x, target, cfg, amp=(device.type, amp_dtype, amp))
            opt.zero_grad(set_to_none=True)
            losses = level_losses(train_model, variant, x, target, cfg, step,  # type: ignore[arg-type]
                                  amp=(device.type, amp_dtype, amp))
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            step += 1
            dense_loss = losses[variant.dense_level.name].item()
            loss_sum += dense_loss
            for k, v in losses.items():
                level_sums[k] = level_sums.get(k, 0.0) + v.item()
            n_seen += len(y) * world
            progress.update(i + 1, dense_loss, float(sched.get_last_lr()[0]), n_seen)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        progress.close()
        epoch_time = time.time() - t0
        done_steps = i + 1
        val: dict[str, float] = {}
        if rank == 0 and val_x is not None:
            val = evaluate(model, variant, val_x, val_y, device, dense_only=ema is not None)
            if ema is not None:
                live = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.load_state_dict(ema.state)
                val = {**{f"raw_{k}": v for k, v in val.items()},
                       **evaluate(model, variant, val_x, val_y, device)}
                model.load_state_dict(live)
        metrics = {
            "epoch": epoch + 1, "step": step, "train_loss": loss_sum / done_steps,
            **{f"loss_{k}": v / done_steps for k, v in level_sums.items()},
            **{f"val_top1_{k}": v for k, v in val.items()},
            "lr": sched.get_last_lr()[0], "epoch_seconds": round(epoch_time, 1),
            "images_per_second": round(n_seen / max(epoch_time, 1e-9), 1),
        }
        if rank == 0:
            _append_metrics(out, metrics)
            print(json.dumps(metrics), file=sys.stderr, flush=True)
            _save_atomic({
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch + 1, "step": step,
                "config": asdict(cfg), "variant": variant.name, "classes": images.classes,
                "metrics": metrics, **({"ema": ema.state, "ema_updates": ema.updates} if ema is not None else {}),
            }, ckpt_path)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    if _is_dist():
        dist.barrier()
    return metrics


def teacher_targets(teacher: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, cfg: TrainConfig,
                    amp: tuple[str, torch.dtype, bool] = ("cpu", torch.bfloat16, False)) -> torch.Tensor:
    """Distillation folded into the target: ``(1 - w) * target + w * t`` where ``t`` is the
    teacher's smoothed argmax (``teacher_kind="hard"``, DeiT) or its softmax (``"soft"``, function
    matching), the teacher seeing the same augmented, mixed batch as the student."""
    device_type, dtype, enabled = amp
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
        logits = teacher(x.contiguous(memory_format=torch.channels_last)).float()
    if cfg.teacher_kind == "soft":
        t = logits.softmax(-1)
    else:
        t = smooth_targets(logits.argmax(-1), target.shape[-1], cfg.label_smoothing)
    w = cfg.teacher_weight
    return (1 - w) * target + w * t


def smooth_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Integer labels -> label-smoothed probability targets ``[batch, classes]``."""
    t = torch.full((len(y), num_classes), smoothing / num_classes, device=y.device)
    return t.scatter_(1, y.view(-1, 1), 1.0 - smoothing + smoothing / num_classes)


def mix_batch(x: torch.Tensor, target: torch.Tensor, prob: float, rng: np.random.Generator,
              mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """With probability ``prob``, mixup or cutmix (half each) the batch with its reverse.

    The random draws come from ``rng`` (seeded per step), so a resumed run mixes exactly as a
    straight one.
    """
    if rng.random() >= prob:
        return x, target
    perm = torch.arange(len(x) - 1, -1, -1, device=x.device)
    if rng.random() < 0.5:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
    H, W = x.shape[-2:]
    ch, cw = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    y0, y1 = max(0, cy - ch // 2), min(H, cy + ch // 2)
    x0, x1 = max(0, cx - cw // 2), min(W, cx + cw // 2)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    return out, lam * target + (1 - lam) * target[perm]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

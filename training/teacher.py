"""A small CNN teacher for CIFAR-sized variants, trained on the backbone run's own split.

DeiT made ViTs data-efficient by distilling from a CNN; at 32x32 a ResNet-style net of ~2 M
parameters learns the image prior a ViT lacks in a few epochs. The net (airbench-style, written
here): a 2x2 patch-whitening convolution (24 frozen filters from the eigenvectors of the training
patches' covariance, and their negatives; its bias learns for the first epochs), then three groups
``conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU`` (64, 256, 256 channels; each
conv's first filters start as the identity; BatchNorm scales frozen at 1), a 3x3 max-pool and a
linear head. Trained with SGD + Nesterov (momentum 0.85, weight decay decoupled from the lr, the
BatchNorm shifts at 64x the lr), label smoothing 0.2, flip + 2-pixel translation, a triangular
learning-rate schedule, a lookahead pull towards a slow copy of the weights every 5 steps, bf16
autocast and channels-last on CPUs with native bf16; evaluated with flip + 1-pixel-translate
test-time augmentation (6 views). Hyper-parameters follow Keller Jordan's published airbench94
recipe (the numbers, not its code).

It trains on the ``train`` indices of the backbone run's ``split.json`` only (never on the
router/val images the gates and the test half are measured on), and writes ``teacher.pt``
(weights_only-readable) and a card ``teacher.json``. ``athe train backbone --teacher`` then adds
its hard labels to the exits' targets.

Example::

    athe train teacher --run runs/athe-mini --out runs/teacher --epochs 10
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from athe.training.data import load_imageset
from athe.training.transforms import augment_batch, normalize_batch
from athe.variants import Preprocess

TEACHER_FORMAT = "athe-teacher/1"
DEFAULT_WIDTHS = (64, 256, 256)  # channels of the three conv groups; `athe train teacher --widths`
TTA_MODES = ("flip", "flip-translate")


def _check_tta(tta: str) -> None:
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}: use one of {', '.join(TTA_MODES)}")


class _Group(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = _bn(cout)
        for conv in (self.conv1, self.conv2):  # the first cin filters start as the identity
            nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.bn2(self.conv2(x)))


def _bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with its scale frozen at 1 (only the shift learns, at a raised rate)."""
    bn = nn.BatchNorm2d(channels, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


class TeacherNet(nn.Module):
    """``[B, 3, 32, 32]`` normalised images -> ``[B, classes]`` logits."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.groups = nn.Sequential(_Group(24, widths[0]), _Group(widths[0], widths[1]),
                                    _Group(widths[1], widths[2]))
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.widths = widths
        self.logit_scale = 0.125  # measured: lr 0.3 with 1/8 trains fastest; 1.0 diverges

    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen first layer from ``x`` (normalised ``[N, 3, H, W]``): it maps each 2x2
        patch onto the covariance's eigenvectors, scaled to unit variance, and their negatives."""
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1)  # [N, 3, H-1, W-1, 2, 2]
        p = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
        p = p - p.mean(0, keepdim=True)
        eigval, eigvec = torch.linalg.eigh(p.T @ p / len(p))
        w = (eigvec.T / torch.sqrt(eigval.clamp_min(0) + eps).view(-1, 1)).reshape(12, 3, 2, 2)
        with torch.no_grad():
            self.whiten.weight.copy_(torch.cat([w, -w]).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(F.max_pool2d(x, x.shape[-1]).flatten(1)) * self.logit_scale

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 500, tta: str = "flip-translate") -> torch.Tensor:
        """Eval-mode logits with test-time augmentation: ``flip``, the mean over the image and its
        mirror; ``flip-translate``, half that plus a quarter each of the same for the image shifted
        one pixel up-left and one down-right (reflect padding)."""
        _check_tta(tta)
        was = self.training
        self.eval()
        out = []
        for s in range(0, len(x), batch_size):
            b = x[s:s + batch_size].contiguous(memory_format=torch.channels_last)
            logits = (self(b) + self(b.flip(-1))).float() / 2
            if tta == "flip-translate":
                h, w = b.shape[-2:]
                padded = F.pad(b, (1, 1, 1, 1), mode="reflect")
                for shifted in (padded[..., :h, :w], padded[..., 2:, 2:]):
                    shifted = shifted.contiguous(memory_format=torch.channels_last)
                    logits = logits + 0.5 * (self(shifted) + self(shifted.flip(-1))).float() / 2
                logits = logits / 2
            out.append(logits)
        self.train(was)
        return torch.cat(out)


@dataclass
class TeacherConfig:
    """Everything that defines a teacher run (saved in its checkpoint and card)."""

    run: str  # the backbone run whose split.json says which images are train
    out: str
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1.5  # peak, for the batch-mean loss
    momentum: float = 0.85
    weight_decay: float = 2e-3  # per step at the peak lr, decoupled from lr (torch's = this / lr)
    bias_lr_scale: float = 64.0  # BatchNorm shifts and the whitening bias learn this much faster
    whiten_bias_epochs: int = 3  # the whitening bias learns for these first epochs, then freezes
    lookahead: bool = True  # every 5 steps pull the weights towards their slow EMA (decay rises as t^3)
    label_smoothing: float = 0.2
    translate: int = 2
    seed: int = 0
    limit: int | None = None
    precision: str = "auto"
    tta: str = "flip-translate"
    widths: tuple[int, int, int] = DEFAULT_WIDTHS  # channels of the three groups

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths must be three positive channel counts, got {self.widths!r}")
        _check_tta(self.tta)


def _lr_at(step: int, total: int, peak: float) -> float:
    """Triangular: 0.2 x peak up to peak at 23 % of the steps, then linearly to 0.07 x peak."""
    rise = max(1, int(0.23 * total))
    if step < rise:
        return peak * (0.2 + 0.8 * step / rise)
    return peak * (1.0 - 0.93 * min(1.0, (step - rise) / max(1, total - rise)))


def _lookahead_decay(step: int, total: int) -> float:
    """How much of the slow weights a pull keeps: 0 at the start, rising as t^3 to 0.95^5."""
    return 0.95 ** 5 * (step / total) ** 3


class _Lookahead:
    """A slow copy of the weights (and BatchNorm statistics); ``pull`` moves it ``1 - decay`` of
    the way to the fast weights and sets the fast weights to it."""

    def __init__(self, model: nn.Module) -> None:
        self.pairs = [(v, v.detach().clone()) for v in model.state_dict().values() if v.is_floating_point()]

    @torch.no_grad()
    def pull(self, decay: float) -> None:
        for fast, slow in self.pairs:
            slow.lerp_(fast, 1.0 - decay)
            fast.copy_(slow)


def _split(run: Path) -> dict:
    path = run / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: --run takes a backbone run folder "
                                "(athe train backbone writes its split.json)")
    return json.loads(path.read_text())


def train_teacher(cfg: TeacherConfig, pre: Preprocess, num_classes: int, data: str) -> dict:
    """Train the teacher on the run's ``train`` images; returns its card (also written)."""
    from athe.training.train import resolve_precision, seed_everything

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    split = _split(Path(cfg.run))
    images = load_imageset(data)
    if images.array is None or images.array.shape[1:3] != (pre.crop_size, pre.crop_size):
        raise ValueError(f"the teacher trains on {pre.crop_size}x{pre.crop_size} images held as one array; "
                         f"{data!r} has images of other or mixed sizes")
    if list(images.classes) != list(split["classes"]):
        raise ValueError(f"classes in {data!r} differ from the run's split.json; pass the run's data")
    train_idx = np.asarray(split["train"], dtype=np.int64)
    if cfg.limit is not None:
        train_idx = np.sort(np.random.default_rng(cfg.seed + 1).permutation(train_idx)[: cfg.limit])
    held = {k: np.asarray(split[k], dtype=np.int64) for k in ("calib", "test") if k in split}
    if not held:
        held = {"val": np.asarray(split["val"], dtype=np.int64)}
    seed_everything(cfg.seed)
    model = TeacherNet(num_classes, cfg.widths).to(memory_format=torch.channels_last)
    labels = torch.from_numpy(images.labels)
    model.init_whitening(normalize_batch(torch.from_numpy(images.array[train_idx[:5000]]), pre))
    amp, dtype = resolve_precision(cfg.precision, torch.device("cpu"))
    bn_shifts = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    shift_ids = {id(p) for p in bn_shifts} | {id(model.whiten.bias)}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in shift_ids]
    bias_lr = cfg.lr * cfg.bias_lr_scale
    groups = [{"params": [model.whiten.bias], "peak": bias_lr, "weight_decay": cfg.weight_decay / bias_lr,
               "last_epoch": cfg.whiten_bias_epochs - 1},  # frozen after it
              {"params": bn_shifts, "peak": bias_lr, "weight_decay": cfg.weight_decay / bias_lr},
              {"params": others, "peak": cfg.lr, "weight_decay": cfg.weight_decay / cfg.lr}]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    lookahead = _Lookahead(model) if cfg.lookahead else None
    steps = len(train_idx) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"{len(train_idx)} training images cannot fill one batch of {cfg.batch_size}")
    total, step, curve = steps * cfg.epochs, 0, []
    held_x = {k: normalize_batch(torch.from_numpy(images.array[v]), pre) for k, v in held.items()}
    start = time.time()
    for epoch in range(cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        model.train()
        t0, loss_sum = time.time(), 0.0
        for i in range(steps):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x = augment_batch(normalize_batch(torch.from_numpy(images.array[idx]), pre), gen,
                              pad=cfg.translate, erase_prob=0.0).contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = 0.0 if epoch > g.get("last_epoch", epoch) else _lr_at(step, total, g["peak"])
            with torch.autocast("cpu", dtype=dtype, enabled=amp):
                loss = F.cross_entropy(model(x).float(), labels[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if lookahead is not None and step % 5 == 0:
                lookahead.pull(_lookahead_decay(step, total))
            loss_sum += loss.item()
        if lookahead is not None and epoch == cfg.epochs - 1:
            lookahead.pull(1.0)  # the run ends on the slow weights
        seconds = time.time() - t0
        with torch.autocast("cpu", dtype=dtype, enabled=amp):
            acc = {k: float(100 * (model.predict(x, tta=cfg.tta).argmax(-1) == labels[held[k]]).float().mean())
                   for k, x in held_x.items()}
        row = {"epoch": epoch + 1, "train_loss": loss_sum / steps, **{f"top1_{k}": v for k, v in acc.items()},
               "epoch_seconds": round(seconds, 1), "images_per_second": round(steps * cfg.batch_size / seconds, 1)}
        curve.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    card = {
        "format": TEACHER_FORMAT, "net": f"TeacherNet{model.widths}",
        "params": sum(p.numel() for p in model.parameters()),
        "config": asdict(cfg), "data": data, "train_images": int(len(train_idx)),
        "held_out_top1": {k: curve[-1][f"top1_{k}"] for k in held},
        "tta": cfg.tta, "precision": "bf16 autocast" if amp else "fp32",
        "wall_seconds": round(time.time() - start, 1), "curve": curve,
        "command": (f"athe train teacher --run {cfg.run} --out {cfg.out} --epochs {cfg.epochs}"
                    + ("" if cfg.widths == DEFAULT_WIDTHS else f" --widths {','.join(map(str, cfg.widths))}")),
    }
    torch.save({"format": TEACHER_FORMAT, "state_dict": model.state_dict(), "num_classes": num_classes,
                "widths": list(model.widths), "card": card}, out / "teacher.pt")
    (out / "teacher.json").write_text(json.dumps(card, indent=2))
    return card


def load_teacher(path: str | Path) -> TeacherNet:
    """A trained ``teacher.pt`` (weights_only), in eval mode; one-line ValueError otherwise."""
    from athe.training.model import read_checkpoint

    blob = read_checkpoint(Path(path))
    if not isinstance(blob, dict) or blob.get("format") != TEACHER_FORMAT:
        raise ValueError(f"{str(path)!r} is not a teacher checkpoint (athe train teacher writes teacher.pt)")
    model = TeacherNet(int(blob["num_classes"]), tuple(blob["widths"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(memory_format=torch.channels_last).eval()

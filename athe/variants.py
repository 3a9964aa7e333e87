"""The variant registry: every recipe ATHE Edge knows, as frozen dataclasses.

A *variant* names a whole recipe: the backbone shape, the preprocessing, the levels (execution
paths of the one weight set), the router, the training recipe and the default checkpoint.
Training, conversion and the runtime all read the same object (``get_variant``), so there is
never a second table that has to agree with this one.

Example::

    >>> from athe.variants import get_variant
    >>> v = get_variant("athe-mini")
    >>> [level.name for level in v.levels]
    ['simple', 'complex', 'dense']
    >>> v.tokens_per_block("simple")
    [65, 34, 34, 18, 18, 18]

This module imports nothing heavy (no torch, no numpy): ``athe --help`` and the Pi runner
import it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

#: The installed ``athe`` package folder; default checkpoints ship inside it as package data.
PACKAGE_DIR = Path(__file__).resolve().parent

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of the timm VisionTransformer behind a variant.

    Attributes:
        img_size: square input side in pixels.
        patch_size: side of one patch token in pixels (total stride of the stem).
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads per block (head width = embed_dim / num_heads).
        mlp_ratio: MLP hidden width / embed_dim.
        num_classes: classifier outputs.
        stem: ``"patch"`` (timm's single strided conv) or ``"conv"`` (a small stack of 3x3
            convolutions with the same total stride; far more data-efficient at 32x32).
        drop_path_rate: stochastic depth used in training.
    """

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    stem: str = "patch"
    drop_path_rate: float = 0.0

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing, reproduced exactly by training's eval transform and the runtime.

    The rule is: convert to RGB, resize so the shorter side equals ``resize_size`` with
    ``interpolation`` (PIL), center-crop ``crop_size`` square, scale to [0, 1], subtract
    ``mean`` and divide by ``std`` per channel, layout NCHW float32.
    """

    crop_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def to_dict(self) -> dict:
        return {
            "rule": "resize_shorter_center_crop",
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 1.0 / 255.0,
        }


@dataclass(frozen=True)
class Level:
    """One execution path of the backbone.

    Attributes:
        name: level name used everywhere (CLI, manifest, reports).
        keep: ``((block_index, keep_ratio), ...)``: after the attention of ``block_index``,
            keep the top ``round(keep_ratio * n)`` of the ``n`` non-CLS tokens entering that
            block, ranked by CLS attention averaged over the active heads. Sorted by block.
        heads: number of heads used in every block (the first ``heads`` heads).
        fuse: fuse the dropped tokens into one extra token, weighted by their CLS attention
            (EViT's "inattentive token fusion").
    """

    name: str
    keep: tuple[tuple[int, float], ...] = ()
    heads: int | None = None
    fuse: bool = False

    @property
    def keep_schedule(self) -> dict[int, float]:
        return dict(self.keep)

    @property
    def is_dense(self) -> bool:
        return not self.keep


@dataclass(frozen=True)
class Stage:
    """One link of the multi-exit chain: consecutive blocks at a fixed token and head count.

    Attributes:
        name: stage name (manifest, reports); its exit has the same name.
        blocks: ``(start, stop)``: blocks ``start..stop-1`` of the backbone.
        keep: keep ratio of the non-CLS tokens on entry, ranked by the CLS attention of the
            previous stage's last block (averaged over its heads); ``1.0`` keeps every token.
            Ignored for the first stage (it starts from the image).
        fuse: on entry, append one token, the CLS-attention-weighted mean of the dropped ones.
        heads: heads used in every block of the stage (the first ``heads``); None = all.

    Every stage ends in an exit. The last stage's exit is the backbone's own norm + head (so a
    chain of full-token, all-head stages ends in exactly the dense level); earlier exits are a
    LayerNorm + linear on CLS concatenated with the mean of the other tokens.
    """

    name: str
    blocks: tuple[int, int]
    keep: float = 1.0
    fuse: bool = False
    heads: int | None = None


@dataclass(frozen=True)
class RouterConfig:
    """The tiny CNN that predicts, per level, whether that level will be right.

    Attributes:
        input_size: side of the downscaled image the router sees.
        width: MobileNet-style width multiplier.
        target_delta: calibration target, accuracy points below the dense level allowed.
    """

    input_size: int
    width: float = 0.25
    target_delta: float = 1.0


@dataclass(frozen=True)
class TrainRecipe:
    """Defaults for ``athe train backbone``; each can be overridden on the command line."""

    dataset: str
    data_path: str | None
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    val_size: int = 5000
    router_size: int = 5000
    split_seed: int = 0
    augment: str = "crop_flip"  # one of AUGMENTS
    distill_weight: float = 1.0
    mix_prob: float = 0.0
    ema_decay: float = 0.0


#: Array-path training augmentations (``TrainRecipe.augment``, ``athe train backbone --augment``):
#: crop/flip/erasing, or TrivialAugment before them. The PIL path always uses RandAugment.
AUGMENTS = ("crop_flip", "trivial")


@dataclass(frozen=True)
class Variant:
    """A whole ATHE recipe. Levels are ordered cheapest first; the last is the richest."""

    name: str
    description: str
    backbone: BackboneConfig
    preprocess: Preprocess
    levels: tuple[Level, ...]
    router: RouterConfig | None
    train: TrainRecipe
    timm_init: str | None = None
    default_checkpoint: str | None = None
    labels: tuple[str, ...] = field(default=(), repr=False)
    stages: tuple[Stage, ...] = ()

    def level(self, name: str) -> Level:
        """Return the level called ``name``; unknown names raise with the valid ones."""
        for level in self.levels:
            if level.name == name:
                return level
        names = [lv.name for lv in self.levels]
        hint = difflib.get_close_matches(name, names, n=1)
        more = f" Did you mean {hint[0]!r}?" if hint else ""
        raise LookupError(f"Variant {self.name!r} has no level {name!r}; levels: {', '.join(names)}.{more}")

    @property
    def level_names(self) -> list[str]:
        return [lv.name for lv in self.levels]

    @property
    def dense_level(self) -> Level:
        return self.levels[-1]

    def default_checkpoint_path(self) -> Path | None:
        if self.default_checkpoint is None:
            return None
        return PACKAGE_DIR / self.default_checkpoint

    def tokens_per_block(self, level: str | Level) -> list[int]:
        """Tokens (CLS included) entering each block's MLP for ``level``; see ``Level.keep``."""
        lv = self.level(level) if isinstance(level, str) else level
        return token_schedule(self.backbone, lv)[1]

    def macs(self, level: str | Level) -> int:
        """Multiply-accumulates of one image through ``level`` (stem, blocks, head)."""
        lv = self.level(level) if isinstance(level, str) else level
        return level_macs(self.backbone, lv)

    @property
    def stage_names(self) -> list[str]:
        return [st.name for st in self.stages]

    def stage_tokens(self) -> list[int]:
        """Tokens (CLS included) inside each stage."""
        return [t for t, _ in _stage_shapes(self.backbone, self.stages)]

    def stage_macs(self) -> list[int]:
        """Multiply-accumulates of one image through each stage, its exit included."""
        return stage_macs(self.backbone, self.stages)


def keep_count(n_tokens: int, ratio: float) -> int:
    """Number of non-CLS tokens kept out of ``n_tokens`` at ``ratio`` (at least 1)."""
    return max(1, min(n_tokens, int(round(ratio * n_tokens))))


def token_schedule(cfg: BackboneConfig, level: Level) -> tuple[list[int], list[int]]:
    """Token counts per block for ``level``.

    Returns:
        ``(attn_tokens, mlp_tokens)``: tokens (CLS included) entering each block's attention,
        and tokens entering its MLP (after any pruning in that block).
    """
    schedule = level.keep_schedule
    n = cfg.num_patches  # non-CLS tokens
    attn_tokens, mlp_tokens = [], []
    for i in range(cfg.depth):
        attn_tokens.append(n + 1)
        if i in schedule:
            n = keep_count(n, schedule[i]) + (1 if level.fuse else 0)
        mlp_tokens.append(n + 1)
    return attn_tokens, mlp_tokens


def level_macs(cfg: BackboneConfig, level: Level) -> int:
    """Analytic MACs for one image (matmuls and convolutions; norms/softmax ignored)."""
    d, hd = cfg.embed_dim, cfg.head_dim
    heads = level.heads or cfg.num_heads
    inner = heads * hd
    hidden = int(cfg.embed_dim * cfg.mlp_ratio)
    attn_tokens, mlp_tokens = token_schedule(cfg, level)
    total = stem_macs(cfg)
    for i, (na, nm) in enumerate(zip(attn_tokens, mlp_tokens, strict=True)):
        total += na * d * 3 * inner  # qkv
        total += 2 * heads * na * na * hd  # q@k^T and attn@v
        total += na * inner * d  # proj
        if i in level.keep_schedule:
            total += heads * na * hd  # separately recomputed CLS attention row
        total += 2 * nm * d * hidden  # mlp
    total += d * cfg.num_classes
    return total


def _stage_shapes(cfg: BackboneConfig, stages: tuple[Stage, ...]) -> list[tuple[int, int]]:
    """``(tokens incl. CLS, non-CLS tokens before selection)`` of each stage."""
    n = cfg.num_patches
    out = []
    for i, st in enumerate(stages):
        before = n
        if i > 0 and st.keep < 1.0:
            n = keep_count(n, st.keep) + (1 if st.fuse else 0)
        out.append((n + 1, before))
    return out


def stage_macs(cfg: BackboneConfig, stages: tuple[Stage, ...]) -> list[int]:
    """Analytic MACs per stage (stem in the first, exit head in each)."""
    d = cfg.embed_dim
    hidden = int(d * cfg.mlp_ratio)
    out = []
    for i, (st, (tokens, before)) in enumerate(zip(stages, _stage_shapes(cfg, stages), strict=True)):
        heads = st.heads or cfg.num_heads
        inner = heads * cfg.head_dim
        total = stem_macs(cfg) if i == 0 else 0
        if i > 0 and st.keep < 1.0:
            total += (before + 1) * d  # fused-token weighted sum (negligible)
        per_block = tokens * d * 3 * inner + 2 * heads * tokens * tokens * cfg.head_dim
        per_block += tokens * inner * d + 2 * tokens * d * hidden
        total += per_block * (st.blocks[1] - st.blocks[0])
        last = i == len(stages) - 1
        total += d * cfg.num_classes if last else 2 * d * cfg.num_classes
        out.append(total)
    return out


def conv_stem_channels(cfg: BackboneConfig) -> list[int]:
    """Channel widths of the conv stem: one stride-2 conv per halving of the patch size."""
    n_down = int(math.log2(cfg.patch_size))
    if 2**n_down != cfg.patch_size:
        raise ValueError(f"conv stem needs a power-of-two patch size, got {cfg.patch_size}")
    widths = [cfg.embed_dim // (2 ** (n_down - i)) for i in range(n_down)]
    return [max(16, w) for w in widths]


def stem_macs(cfg: BackboneConfig) -> int:
    if cfg.stem == "patch":
        return cfg.num_patches * 3 * cfg.patch_size**2 * cfg.embed_dim
    total, c_in, side = 0, 3, cfg.img_size
    for c_out in conv_stem_channels(cfg):
        side //= 2
        total += side * side * c_in * c_out * 9
        c_in = c_out
    return total + cfg.num_patches * c_in * cfg.embed_dim  # final 1x1 projection


CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

CIFAR100_LABELS = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)

_DEIT_TINY = BackboneConfig(
    img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
    num_classes=100, stem="patch", drop_path_rate=0.1,
)
_DEIT_PREPROCESS = Preprocess(
    crop_size=224, resize_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic",
)
_CIFAR100_RECIPE = TrainRecipe(
    dataset="cifar100", data_path=None, epochs=30, batch_size=128, lr=5e-4, weight_decay=0.05,
    warmup_epochs=2.0, label_smoothing=0.1, val_size=5000, router_size=5000,
)

def check_stages(variant: Variant) -> None:
    """Stages must tile the blocks in order, with sane keep ratios, heads and unique names."""
    stages, depth = variant.stages, variant.backbone.depth
    names = [st.name for st in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"variant {variant.name!r} has duplicate stage names {names}")
    at = 0
    for st in stages:
        start, stop = st.blocks
        if start != at or stop <= start:
            raise ValueError(f"{variant.name}/{st.name}: blocks {st.blocks} must start at block {at} "
                             "and hold at least one block (stages tile the backbone in order)")
        if not 0.0 < st.keep <= 1.0:
            raise ValueError(f"{variant.name}/{st.name}: keep={st.keep} must be in (0, 1]")
        if st.heads is not None and not 1 <= st.heads <= variant.backbone.num_heads:
            raise ValueError(f"{variant.name}/{st.name}: heads={st.heads} out of range")
        at = stop
    if at != depth:
        raise ValueError(f"variant {variant.name!r}: stages end at block {at}, the backbone has {depth}")


VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} registered twice")
    names = [lv.name for lv in variant.levels]
    if len(set(names)) != len(names):
        raise ValueError(f"variant {variant.name!r} has duplicate level names {names}")
    for lv in variant.levels:
        for block, ratio in lv.keep:
            if not 0 <= block < variant.backbone.depth or not 0.0 < ratio <= 1.0:
                raise ValueError(f"{variant.name}/{lv.name}: bad keep entry ({block}, {ratio})")
        if lv.heads is not None and not 1 <= lv.heads <= variant.backbone.num_heads:
            raise ValueError(f"{variant.name}/{lv.name}: heads={lv.heads} out of range")
    if variant.stages:
        check_stages(variant)
    VARIANTS[variant.name] = variant
    return variant


register(Variant(
    name="athe-simple",
    description="Paper recipe: DeiT-Tiny 224/16 on CIFAR-100, levels simple/complex/dense + binary router",
    backbone=_DEIT_TINY,
    preprocess=_DEIT_PREPROCESS,
    levels=(
        # 196 -> 137 -> 96 -> 67 patch tokens (66 % dropped), 2 of 3 heads.
        Level("simple", keep=((3, 0.7), (6, 0.7), (9, 0.7)), heads=2, fuse=True),
        # 196 -> 176 -> 158 -> 142 patch tokens (28 % dropped), all heads.
        Level("complex", keep=((3, 0.9), (6, 0.9), (9, 0.9)), heads=3, fuse=True),
        Level("dense", keep=(), heads=3),
    ),
    router=RouterConfig(input_size=56, width=0.25, target_delta=1.0),
    train=_CIFAR100_RECIPE,
    timm_init="deit_tiny_patch16_224.fb_in1k",
    labels=CIFAR100_LABELS,
    # Exits after blocks 4, 8 and 12; 196 -> 137 -> 96 patch tokens kept on entry to s2, s3.
    stages=(
        Stage("s1", blocks=(0, 4)),
        Stage("s2", blocks=(4, 8), keep=0.7, fuse=True),
        Stage("s3", blocks=(8, 12), keep=0.7, fuse=True),
    ),
))

register(Variant(
    name="athe-mini",
    description="CIFAR-native 32x32, conv stem + patch 4, 6 blocks x 192, trains on 2 CPU cores",
    backbone=BackboneConfig(
        img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=2.0,
        num_classes=10, stem="conv", drop_path_rate=0.05,
    ),
    preprocess=Preprocess(
        crop_size=32, resize_size=32, mean=CIFAR_MEAN, std=CIFAR_STD, interpolation="bicubic",
    ),
    levels=(
        # 64 -> 32 -> 16 patch tokens (+1 fused token), 2 of 3 heads: 0.45x dense MACs.
        Level("simple", keep=((1, 0.5), (3, 0.5)), heads=2, fuse=True),
        # 64 -> 48 patch tokens (+1 fused), all heads: 0.83x dense MACs.
        Level("complex", keep=((1, 0.75),), heads=3, fuse=True),
        Level("dense", keep=(), heads=3),
    ),
    router=RouterConfig(input_size=32, width=0.25, target_delta=1.0),
    train=TrainRecipe(
        dataset="imagefolder-archive", data_path="../shared/data/cifar10-train.tar.gz",
        epochs=30, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_epochs=1.0,
        label_smoothing=0.1, val_size=5000, router_size=5000,
    ),
    default_checkpoint="checkpoints/athe-mini.pt",
    labels=CIFAR10_LABELS,
    # Exits after blocks 2, 4 and 6, every token and head kept: at 32x32 and batch 1 token
    # selection between stages did not pay (see README), and the last exit is the dense level.
    stages=(
        Stage("s1", blocks=(0, 2)),
        Stage("s2", blocks=(2, 4)),
        Stage("s3", blocks=(4, 6)),
    ),
))

register(Variant(
    name="dense-deit-tiny",
    description="Baseline: DeiT-Tiny 224/16 on CIFAR-100, dense only, no router",
    backbone=_DEIT_TINY,
    preprocess=_DEIT_PREPROCESS,
    levels=(Level("dense", keep=(), heads=3),),
    router=None,
    train=_CIFAR100_RECIPE,
    timm_init="deit_tiny_patch16_224.fb_in1k",
    labels=CIFAR100_LABELS,
))


def get_variant(name: str) -> Variant:
    """Look up a variant; an unknown name raises with the known names and a close match."""
    try:
        return VARIANTS[name]
    except KeyError:
        known = sorted(VARIANTS)
        hint = difflib.get_close_matches(name, known, n=1)
        more = f" Did you mean {hint[0]!r}?" if hint else ""
        raise LookupError(
            f"Unknown variant {name!r}; known variants: {', '.join(known)}.{more}"
        ) from None


def replace(variant: Variant, **changes) -> Variant:
    """A changed copy of ``variant`` (``dataclasses.replace``), e.g. for tiny test configs."""
    return dataclasses.replace(variant, **changes)

"""The ATHE model: timm's VisionTransformer with per-call levels (token keeping + head subsets).

We patch timm, we do not fork it (as ToMe's ``tome/patch/timm.py`` does): ``AtheAttention``
and ``AtheBlock`` subclass timm's ``Attention`` and ``Block`` and add one method each,
``forward_level``; ``AtheViT`` subclasses ``VisionTransformer`` and builds its blocks with them.
With the dense level the computation is exactly timm's (tested against a stock timm model).

Example::

    >>> import torch
    >>> from athe.variants import get_variant
    >>> from athe.training.model import build_model
    >>> model = build_model(get_variant("athe-mini")).eval()
    >>> logits = model(torch.randn(2, 3, 32, 32), level="simple")   # [2, 10]

Head order: a level with ``heads=h`` uses heads ``0..h-1`` of every block (the rows of ``qkv``
for those heads and the matching columns of ``proj``). Training samples the cheap levels in
every step (nested head dropout), so the prefix is what gets trained to work alone; for weights
trained elsewhere (timm's ImageNet DeiT), ``reorder_heads`` permutes heads by measured
importance so the prefix is the best ``h``-head subset, without changing the dense output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from athe.variants import BackboneConfig, Level, Stage, Variant, conv_stem_channels, keep_count

_logger = logging.getLogger(__name__)


class AtheAttention(Attention):
    """timm ``Attention`` plus head subsets and the CLS-attention scores.

    Modified: adds ``forward_level(x, heads, need_scores)``, which uses only the first
    ``heads`` heads (slices of ``qkv.weight`` rows and ``proj.weight`` columns) and can return
    the CLS row of the attention averaged over those heads. ``forward`` is timm's, unchanged.
    """

    def set_fused_attn(self, fused: bool) -> None:
        """Choose SDPA (True) or the explicit softmax(QK^T)V path (False) for this layer."""
        # timm declares ``fused_attn`` Final (a TorchScript constant, set in __init__); it is a
        # plain per-instance bool that ``forward``/``forward_level`` read on every call.
        self.fused_attn = fused  # type: ignore[misc]

    def forward_level(
        self, x: torch.Tensor, heads: int, need_scores: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention with the first ``heads`` heads.

        Args:
            x: tokens ``[batch, tokens, dim]`` (already normalised by the block).
            heads: number of heads to use, ``1..num_heads``.
            need_scores: also return CLS attention over the non-CLS tokens.

        Returns:
            ``(out [batch, tokens, dim], scores [batch, tokens - 1] or None)``.
        """
        B, N, _ = x.shape
        hd = self.head_dim
        if heads == self.num_heads:
            qkv = self.qkv(x)
        else:
            inner = self.attn_dim
            rows = torch.cat([torch.arange(j * inner, j * inner + heads * hd) for j in range(3)])
            rows = rows.to(x.device)
            bias = self.qkv.bias[rows] if self.qkv.bias is not None else None
            qkv = F.linear(x, self.qkv.weight[rows], bias)
        qkv = qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [batch, heads, tokens, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0
            )
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            out = self.attn_drop(attn.softmax(dim=-1)) @ v
        scores = None
        if need_scores:
            # The CLS row, recomputed on its own (the export form must do so for XNNPACK).
            cls_attn = ((q[:, :, :1] * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            scores = cls_attn[:, :, 0, 1:].mean(dim=1)  # [batch, tokens - 1]
        out = out.transpose(1, 2).reshape(B, N, heads * hd)
        if heads == self.num_heads:
            out = self.proj(out)
        else:
            out = F.linear(out, self.proj.weight[:, : heads * hd], self.proj.bias)
        return self.proj_drop(out), scores


def select_tokens(
    x: torch.Tensor, scores: torch.Tensor, k: int, fuse: bool
) -> torch.Tensor:
    """Keep CLS + the ``k`` highest-scoring other tokens (EViT-style), optionally fusing the rest.

    Args:
        x: tokens ``[batch, tokens, dim]``, CLS first.
        scores: CLS attention ``[batch, tokens - 1]`` over the non-CLS tokens.
        k: tokens kept besides CLS (fixed per level: static shapes).
        fuse: append one token, the score-weighted mean of the dropped tokens.

    Returns:
        ``[batch, 1 + k (+1 if fuse), dim]``; kept tokens in descending score order.
    """
    B, _, D = x.shape
    cls_tok, patches = x[:, :1], x[:, 1:]
    idx = scores.topk(k, dim=1).indices  # [batch, k]
    kept = patches.gather(1, idx.unsqueeze(-1).expand(B, k, D))
    if not fuse:
        return torch.cat([cls_tok, kept], dim=1)
    kept_w = scores.gather(1, idx)  # [batch, k]
    # Sum over dropped = sum over all - sum over kept: no complement indices, static shapes.
    num = (scores.unsqueeze(-1) * patches).sum(1) - (kept_w.unsqueeze(-1) * kept).sum(1)
    den = (scores.sum(1) - kept_w.sum(1)).clamp_min(1e-6).unsqueeze(-1)
    fused = (num / den).unsqueeze(1)  # [batch, 1, dim]
    return torch.cat([cls_tok, kept, fused], dim=1)


class AtheBlock(Block):
    """timm ``Block`` whose attention is ``AtheAttention``.

    Modified: adds ``forward_level(x, heads, keep_k, fuse)``: attention with ``heads`` heads,
    then (when ``keep_k`` is set) token selection between attention and MLP, as EViT does.
    ``forward`` is timm's, unchanged.
    """

    # timm types ``Block.attn`` as a plain ``nn.Module``; ours is always an ``AtheAttention``.
    attn: AtheAttention

    def __init__(self, *args, **kwargs) -> None:
        kwargs["attn_layer"] = AtheAttention
        super().__init__(*args, **kwargs)

    def forward_level(
        self, x: torch.Tensor, heads: int, keep_k: int | None, fuse: bool
    ) -> torch.Tensor:
        """``[batch, tokens, dim]`` -> ``[batch, tokens', dim]`` (tokens' = 1 + keep_k (+1))."""
        out, scores = self.attn.forward_level(self.norm1(x), heads, keep_k is not None)
        x = x + self.drop_path1(self.ls1(out))
        if keep_k is not None:
            assert scores is not None
            x = select_tokens(x, scores, keep_k, fuse)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def forward_scored(self, x: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The block with ``heads`` heads, also returning its CLS attention ``[batch, tokens-1]``
        (what the next stage's token keeping ranks by); no token is dropped here."""
        out, scores = self.attn.forward_level(self.norm1(x), heads, True)
        assert scores is not None
        x = x + self.drop_path1(self.ls1(out))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))), scores


class ExitHead(nn.Module):
    """An early exit: LayerNorm + linear on CLS concatenated with the mean of the other tokens."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim, eps=1e-6)
        self.fc = nn.Linear(2 * dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, tokens, dim]`` -> normalised ``[batch, 2 * dim]``."""
        return self.norm(torch.cat([x[:, 0], x[:, 1:].mean(dim=1)], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ConvStemPatchEmbed(PatchEmbed):
    """timm ``PatchEmbed`` whose single strided conv is replaced by a small conv stem.

    Modified: ``proj`` is ``log2(patch)`` stride-2 3x3 conv+BN+ReLU stages and a 1x1 conv to
    ``embed_dim`` (same output grid as a ``patch_size`` patchify; much more data-efficient on
    32x32 images). Everything else (size checks, flatten) is timm's.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, **kwargs) -> None:
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         embed_dim=embed_dim, **kwargs)
        cfg = BackboneConfig(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                             depth=1, num_heads=1)
        layers: list[nn.Module] = []
        c_in = in_chans
        for c_out in conv_stem_channels(cfg):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        # timm types ``proj`` as the single ``Conv2d``; the stem replaces it by design (only
        # ``forward`` calls it here; timm's patch-size resampling, which needs the Conv2d, is
        # not supported with the conv stem).
        self.proj = nn.Sequential(*layers)  # type: ignore[assignment]


def resolve_level(variant_levels: dict[str, Level], level: str | Level | None) -> Level | None:
    if level is None or isinstance(level, Level):
        return level
    if level not in variant_levels:
        raise KeyError(f"Unknown level {level!r}; levels: {', '.join(variant_levels)}")
    return variant_levels[level]


class AtheViT(VisionTransformer):
    """timm ``VisionTransformer`` whose forward takes a level.

    Modified: blocks are ``AtheBlock``; ``forward(x, level=None)`` runs the given level
    (``None`` = dense, all heads); ``forward_level`` is the training-mode level forward.
    Construction, weight init, checkpoint layout and ``forward_features`` are timm's.
    """

    def __init__(self, cfg: BackboneConfig, levels: Sequence[Level] = (),
                 stages: Sequence[Stage] = (), **kwargs) -> None:
        embed_layer = ConvStemPatchEmbed if cfg.stem == "conv" else PatchEmbed
        super().__init__(
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
            depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
            num_classes=cfg.num_classes, qkv_bias=True, drop_path_rate=cfg.drop_path_rate,
            embed_layer=embed_layer, block_fn=AtheBlock, global_pool="token", **kwargs,
        )
        self.cfg = cfg
        self.levels = {lv.name: lv for lv in levels}
        self.stages: tuple[Stage, ...] = tuple(stages)
        # One exit head per stage but the last (whose exit is the backbone's norm + head).
        self.exit_heads = nn.ModuleList(
            ExitHead(cfg.embed_dim, cfg.num_classes) for _ in self.stages[:-1])
        #: False when the loaded weights had no exit heads (they are then random).
        self.exits_trained = True

    def ablock(self, i: int) -> AtheBlock:
        """Block ``i`` typed as the ``AtheBlock`` it is (timm types ``blocks`` as Sequential)."""
        return cast(AtheBlock, self.blocks[i])

    def ablocks(self) -> list[AtheBlock]:
        """Every block, in order, typed as ``AtheBlock``."""
        return [self.ablock(i) for i in range(len(self.blocks))]

    def keep_counts(self, level: Level) -> dict[int, int]:
        """``{block: tokens kept besides CLS}`` for ``level`` (static, from the schedule)."""
        counts, n = {}, self.patch_embed.num_patches
        schedule = level.keep_schedule
        for i in range(len(self.blocks)):
            if i in schedule:
                counts[i] = keep_count(n, schedule[i])
                n = counts[i] + (1 if level.fuse else 0)
        return counts

    def forward_level(self, x: torch.Tensor, level: Level | None,
                      token_trace: list[int] | None = None) -> torch.Tensor:
        """Logits ``[batch, classes]`` of images ``[batch, 3, H, W]`` through ``level``.

        ``token_trace``, when given, receives the token count entering each block's MLP.
        """
        heads = (level.heads if level is not None else None) or self.cfg.num_heads
        counts = self.keep_counts(level) if level is not None else {}
        fuse = bool(level is not None and level.fuse)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.norm_pre(self.patch_drop(x))
        for i, blk in enumerate(self.ablocks()):
            x = blk.forward_level(x, heads, counts.get(i), fuse)
            if token_trace is not None:
                token_trace.append(x.shape[1])
        x = self.norm(x)
        return self.forward_head(x)

    def forward(self, x: torch.Tensor, level: str | Level | None = None,  # type: ignore[override]
                exits: bool = False):
        """Logits of ``level`` (None = dense), or with ``exits=True`` the list of every exit's."""
        if exits:
            return self.forward_exits(x)
        return self.forward_level(x, resolve_level(self.levels, level))

    # -- the multi-exit chain ------------------------------------------------------------

    def stage_keep(self, index: int) -> int | None:
        """Non-CLS tokens kept on entry to stage ``index`` (None: no selection there)."""
        st = self.stages[index]
        if index == 0 or st.keep >= 1.0:
            return None
        n = self.patch_embed.num_patches
        for prev in self.stages[1:index]:
            if prev.keep < 1.0:
                n = keep_count(n, prev.keep) + (1 if prev.fuse else 0)
        return keep_count(n, st.keep)

    def needs_scores(self, index: int) -> bool:
        """Whether stage ``index`` must hand CLS-attention scores to the next stage."""
        return index + 1 < len(self.stages) and self.stage_keep(index + 1) is not None

    def forward_stage(self, index: int, x: torch.Tensor, scores: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One stage: ``(tokens out, exit logits, scores for the next stage or None)``.

        Args:
            index: stage index.
            x: images ``[batch, 3, H, W]`` for stage 0, else the previous stage's tokens.
            scores: the previous stage's CLS attention when this stage keeps tokens on entry.
        """
        st = self.stages[index]
        if index == 0:
            x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        keep = self.stage_keep(index)
        if keep is not None:
            if scores is None:
                raise ValueError(f"stage {st.name!r} keeps tokens on entry and needs scores")
            x = select_tokens(x, scores, keep, st.fuse)
        heads = st.heads or self.cfg.num_heads
        out_scores = None
        start, stop = st.blocks
        for b in range(start, stop):
            if b == stop - 1 and self.needs_scores(index):
                x, out_scores = self.ablock(b).forward_scored(x, heads)
            else:
                x = self.ablock(b).forward_level(x, heads, None, False)
        if index == len(self.stages) - 1:
            logits = self.forward_head(self.norm(x))
        else:
            logits = self.exit_heads[index](x)
        return x, logits, out_scores

    def forward_exits(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Logits of every exit (or of the first ``upto``), in chain order."""
        if not self.stages:
            raise ValueError("this variant declares no stages")
        n = len(self.stages) if upto is None else upto
        out, scores = [], None
        for i in range(n):
            x, logits, scores = self.forward_stage(i, x, scores)
            out.append(logits)
        return out

    @property
    def chain_is_dense(self) -> bool:
        """True when the last exit of the chain computes exactly the dense level."""
        return chain_is_dense(self.cfg, self.stages)


def chain_is_dense(cfg: BackboneConfig, stages: Sequence[Stage]) -> bool:
    """Whether a stage chain keeps every token and head (its last exit is the dense level)."""
    return bool(stages) and all(
        st.keep >= 1.0 and (st.heads or cfg.num_heads) == cfg.num_heads for st in stages)


def build_model(variant: Variant, **kwargs) -> AtheViT:
    """A randomly initialised ``AtheViT`` for ``variant`` (timm's init)."""
    return AtheViT(variant.backbone, variant.levels, variant.stages, **kwargs)


def _shape_error(variant: Variant, key: str, got: tuple, want: tuple, source: str) -> ValueError:
    return ValueError(
        f"{source}: tensor {key!r} has shape {list(got)} but variant {variant.name!r} expects "
        f"{list(want)}; the checkpoint was made for another backbone configuration"
    )


def load_backbone_weights(model: AtheViT, variant: Variant, state: dict, source: str) -> None:
    """Load a state dict, refusing shape mismatches with the tensor and variant named."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise _shape_error(variant, key, tuple(value.shape), tuple(own[key].shape), source)
    missing, unexpected = model.load_state_dict(state, strict=False)
    exit_keys = [k for k in missing if k.startswith("exit_heads.")]
    if exit_keys:
        # Weights from before the exits existed (or a plain timm state dict): the exits stay
        # random and say so; everything else must fit exactly.
        _logger.warning("%s: no exit heads in these weights; the early exits are untrained", source)
        model.exits_trained = False
        missing = [k for k in missing if not k.startswith("exit_heads.")]
    if missing or unexpected:
        raise ValueError(
            f"{source}: does not fit variant {variant.name!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def load_model(variant: Variant, checkpoint: str | Path | None = None, *,
               timm_pretrained: bool = False) -> AtheViT:
    """Build ``variant`` and load weights.

    Args:
        variant: the recipe.
        checkpoint: a local file: an ATHE checkpoint (``{"model": state_dict, ...}``) or a bare
            state dict (e.g. saved from a timm model).
        timm_pretrained: load timm's pretrained ``variant.timm_init`` weights (needs network
            access to the model hub); the classifier head is re-initialised when its size differs.
    """
    model = build_model(variant)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        blob = read_checkpoint(path)
        state = blob.get("model", blob)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        load_backbone_weights(model, variant, state, str(path))
    elif timm_pretrained:
        if variant.timm_init is None:
            raise ValueError(f"variant {variant.name!r} has no timm_init to load pretrained weights from")
        import timm

        ref = timm.create_model(variant.timm_init, pretrained=True)
        state = ref.state_dict()
        if state["head.weight"].shape[0] != variant.backbone.num_classes:
            _logger.info("re-initialising the classifier head for %d classes", variant.backbone.num_classes)
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            state.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
        load_backbone_weights(model, variant, state, f"timm:{variant.timm_init}")
    return model


@torch.no_grad()
def permute_heads(model: AtheViT, block: int, order: Sequence[int]) -> None:
    """Reorder the heads of one block in place; the dense output is unchanged.

    Args:
        model: the model to edit.
        block: block index.
        order: new head ``i`` is old head ``order[i]``.
    """
    attn = model.ablock(block).attn
    hd, inner = attn.head_dim, attn.attn_dim
    cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in order])
    rows = torch.cat([cols + j * inner for j in range(3)])
    attn.qkv.weight.copy_(attn.qkv.weight[rows])
    if attn.qkv.bias is not None:
        attn.qkv.bias.copy_(attn.qkv.bias[rows])
    attn.proj.weight.copy_(attn.proj.weight[:, cols])


@torch.no_grad()
def head_importance(model: AtheViT, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss increase when each head alone is masked: ``[blocks, heads]`` (higher = more needed)."""
    model.eval()
    base = F.cross_entropy(model(images), labels).item()
    H = model.cfg.num_heads
    out = torch.zeros(len(model.blocks), H)
    for b, blk in enumerate(model.ablocks()):
        attn = blk.attn
        hd = attn.head_dim
        saved = attn.proj.weight.clone()
        for h in range(H):
            attn.proj.weight[:, h * hd:(h + 1) * hd] = 0
            out[b, h] = F.cross_entropy(model(images), labels).item() - base
            attn.proj.weight.copy_(saved)
    return out


def reorder_heads(model: AtheViT, images: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Sort every block's heads by importance (most important first); returns the orders."""
    importance = head_importance(model, images, labels)
    orders = []
    for b in range(len(model.blocks)):
        order = torch.argsort(importance[b], descending=True).tolist()
        permute_heads(model, b, order)
        orders.append(order)
    return orders


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and dicts only.

    A full unpickle (``weights_only=False``) can run any code a crafted file holds; the
    checkpoints 'athe train' writes need nothing more than weights_only.

    Raises:
        ValueError: not a PyTorch checkpoint, truncated, holding other objects, or not a dict.
    """
    import pickle
    import re
    import zipfile

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if "unsupported global" not in str(exc).lower():  # garbage bytes, a plain pickle, …
            raise ValueError(f"checkpoint {str(path)!r} is not a PyTorch checkpoint (not a torch.save file "
                             "of weights); pass a checkpoint written by 'athe train'") from None
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(f"checkpoint {str(path)!r} holds objects{what} that only a full unpickle could "
                         "rebuild, which can run code: refused (checkpoints load with weights_only=True); "
                         "pass a checkpoint written by 'athe train'") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError,
            AttributeError, TypeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"checkpoint {str(path)!r} is not a readable PyTorch checkpoint (truncated, "
                         f"corrupt or another kind of file: {type(exc).__name__}: {first}); "
                         "pass a checkpoint written by 'athe train'") from None
    if not isinstance(blob, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(blob).__name__}, not a checkpoint dict; "
                         "pass a checkpoint written by 'athe train'")
    return blob

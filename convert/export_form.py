"""Export forms: one plain ``nn.Module`` per level, with static shapes and no data-dependent branching.

Each export form computes exactly what ``AtheViT.forward_level`` computes for its level (tested
to 1e-5), rewritten so mobile delegates take the whole graph (the reasons are in
``athe.convert.backend_quirks``):

* weights are sliced per level at construction (only the level's heads exist in the graph);
* attention is 3-D ``bmm`` per head on slices of one q/k/v projection (no 4-D matmul, no unbind);
* the CLS attention row used for token ranking is recomputed on its own, ``softmax(q_cls Kᵀ)``;
* LayerNorm is written with mean/var; the conv stem's BatchNorm is folded into its convs;
* token keeping is ``topk`` + ``gather`` with a fixed k.

Every export form states its example input (``get_example_inputs``), as ExecuTorch's
``model_base.py`` does, so conversion never special-cases a model.

Example::

    >>> import torch
    >>> from athe.variants import get_variant
    >>> from athe.training.model import build_model
    >>> from athe.convert.export_form import LevelExport
    >>> v = get_variant("athe-mini")
    >>> form = LevelExport(build_model(v).eval(), v.level("simple"))
    >>> ep = torch.export.export(form, form.get_example_inputs())
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from athe.training.model import AtheViT, ConvStemPatchEmbed
from athe.variants import Level, token_schedule


class MeanVarLayerNorm(nn.Module):
    """LayerNorm over the last dim written as mean/var, the means as matmuls with ``1/D``.

    XNNPACK has no native layer_norm, and its ``mean`` takes only 4-D spatial reductions, so
    a ``mean(dim=-1)`` falls out of the delegate; ``x @ (1/D)`` is delegated as a matmul.
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        dim = norm.weight.shape[0]
        self.weight = nn.Parameter(norm.weight.detach().clone())
        self.bias = nn.Parameter(norm.bias.detach().clone())
        self.register_buffer("avg", torch.full((dim, 1), 1.0 / dim))
        self.eps = norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.matmul(x, self.avg)  # [..., 1]
        centered = x - mean
        var = torch.matmul(centered * centered, self.avg)
        return centered * torch.rsqrt(var + self.eps) * self.weight + self.bias


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn.eval())
    return fused


def export_stem(patch_embed: nn.Module) -> nn.Sequential:
    """The patch embedding as a plain conv stack (BatchNorm folded), output ``[B, D, g, g]``."""
    proj = patch_embed.proj
    if not isinstance(patch_embed, ConvStemPatchEmbed):
        return nn.Sequential(copy.deepcopy(proj))
    layers: list[nn.Module] = []
    mods = list(proj)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
            layers.append(_fold_bn(copy.deepcopy(m), copy.deepcopy(mods[i + 1])))
            i += 2
        else:
            layers.append(copy.deepcopy(m))
            i += 1
    return nn.Sequential(*layers)


class BlockExport(nn.Module):
    """One transformer block of one level: ``[B, N, D] -> [B, N', D]``."""

    def __init__(self, block: nn.Module, heads: int, keep_k: int | None, fuse: bool,
                 tokens_in: int) -> None:
        super().__init__()
        # Score sums as linear layers with constant all-ones weights (delegated as fully
        # connected), not sum.dim or an mm against a sliced buffer (both stay on portable).
        self.register_buffer("ones_all", torch.ones(1, tokens_in - 1))
        self.register_buffer("ones_kept", torch.ones(1, keep_k or 1))
        attn = block.attn
        hd, inner, dim = attn.head_dim, attn.attn_dim, block.norm1.weight.shape[0]
        self.heads, self.head_dim, self.scale = heads, hd, attn.head_dim ** -0.5
        self.keep_k, self.fuse = keep_k, fuse
        self.norm1 = MeanVarLayerNorm(block.norm1)
        self.norm2 = MeanVarLayerNorm(block.norm2)
        w, b = attn.qkv.weight.detach(), attn.qkv.bias.detach()
        rows = torch.cat([torch.arange(j * inner, j * inner + heads * hd) for j in range(3)])
        self.qkv = nn.Linear(dim, 3 * heads * hd)
        self.qkv.weight.data.copy_(w[rows])
        self.qkv.bias.data.copy_(b[rows])
        self.proj = nn.Linear(heads * hd, dim)
        self.proj.weight.data.copy_(attn.proj.weight.detach()[:, : heads * hd])
        self.proj.bias.data.copy_(attn.proj.bias.detach())
        self.mlp = copy.deepcopy(block.mlp)
        self.ls1 = copy.deepcopy(block.ls1)
        self.ls2 = copy.deepcopy(block.ls2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, hd = self.heads, self.head_dim
        qkv = self.qkv(self.norm1(x))  # [B, N, 3*h*hd]
        inner = h * hd
        outs, cls_rows = [], []
        for i in range(h):
            q = qkv[:, :, i * hd:(i + 1) * hd] * self.scale  # [B, N, hd]
            k = qkv[:, :, inner + i * hd: inner + (i + 1) * hd]
            v = qkv[:, :, 2 * inner + i * hd: 2 * inner + (i + 1) * hd]
            kt = k.transpose(1, 2)  # [B, hd, N]
            attn = torch.softmax(torch.bmm(q, kt), dim=-1)  # [B, N, N]
            outs.append(torch.bmm(attn, v))
            if self.keep_k is not None:
                cls_rows.append(torch.softmax(torch.bmm(q[:, :1], kt), dim=-1))  # [B, 1, N]
        out = outs[0] if h == 1 else torch.cat(outs, dim=-1)
        x = x + self.ls1(self.proj(out))
        if self.keep_k is not None:
            row = cls_rows[0]
            for extra in cls_rows[1:]:
                row = row + extra
            B, _, N = row.shape
            scores = (row[:, :, 1:] / h).reshape(B, N - 1)  # slice + reshape: no select_copy
            x = self._select(x, scores)
        return x + self.ls2(self.mlp(self.norm2(x)))

    def _select(self, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = self.keep_k
        assert k is not None
        B, _, D = x.shape
        cls_tok, patches = x[:, :1], x[:, 1:]
        idx = torch.topk(scores, k, dim=1).indices
        kept = torch.gather(patches, 1, idx.unsqueeze(-1).expand(B, k, D))
        if not self.fuse:
            return torch.cat([cls_tok, kept], dim=1)
        kept_w = torch.gather(scores, 1, idx)
        n = scores.shape[1]
        # Weighted sums as bmm (XNNPACK delegates bmm, not sum.dim): dropped = all - kept.
        s_all, s_kept = scores.reshape(B, 1, n), kept_w.reshape(B, 1, k)
        num = torch.bmm(s_all, patches) - torch.bmm(s_kept, kept)  # [B, 1, D]
        den = F.linear(scores, self.ones_all) - F.linear(kept_w, self.ones_kept)  # [B, 1]
        fused = num / torch.clamp(den, min=1e-6).reshape(B, 1, 1)
        return torch.cat([cls_tok, kept, fused], dim=1)


class LevelExport(nn.Module):
    """One level of an ``AtheViT`` as a static-shape module: images ``[B, 3, S, S]`` -> logits."""

    def __init__(self, model: AtheViT, level: Level | None, batch_size: int = 1) -> None:
        super().__init__()
        model = model.eval()
        cfg = model.cfg
        heads = (level.heads if level is not None else None) or cfg.num_heads
        counts = model.keep_counts(level) if level is not None else {}
        fuse = bool(level is not None and level.fuse)
        self.level_name = level.name if level is not None else "dense"
        self.img_size, self.batch_size = cfg.img_size, batch_size
        self.stem = export_stem(model.patch_embed)
        # CLS token pre-expanded to the fixed batch (an expand would stay outside XNNPACK).
        self.cls_token = nn.Parameter(model.cls_token.detach().expand(batch_size, -1, -1).clone())
        self.pos_embed = nn.Parameter(model.pos_embed.detach().clone())
        attn_tokens, _ = token_schedule(cfg, level or Level("dense"))
        self.blocks = nn.ModuleList(
            BlockExport(blk, heads, counts.get(i), fuse, attn_tokens[i])
            for i, blk in enumerate(model.blocks)
        )
        self.norm = MeanVarLayerNorm(model.norm)
        self.head = copy.deepcopy(model.head)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # [B, D, g, g]
        B, D = x.shape[0], x.shape[1]
        x = x.reshape(B, D, -1).transpose(1, 2)  # [B, g*g, D]
        x = torch.cat([self.cls_token, x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        cls_out = self.norm(x)[:, 0:1].reshape(B, D)  # slice + reshape: no select_copy
        return self.head(cls_out)

    def get_eager_model(self) -> nn.Module:
        return self

    def get_example_inputs(self) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(self.batch_size, 3, self.img_size, self.img_size, generator=gen),)


class PlainLevel(nn.Module):
    """One level as the training forward writes it (4-D attention, ``nn.LayerNorm``, topk/gather).

    No rewrites: LiteRT's converter maps these ops onto fused TFLite kernels, and at 224 px the
    plain form ran 1.2-1.5x faster than ``LevelExport`` through LiteRT (``athe.convert.benchmark``,
    athe-simple), while ExecuTorch needs ``LevelExport`` to keep the graph inside XNNPACK. The
    model is copied, so switching off SDPA (it lowers to neither runtime) leaves the caller's alone.
    """

    def __init__(self, model: AtheViT, level: Level | None, batch_size: int = 1) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        for blk in self.model.blocks:
            blk.attn.fused_attn = False
        self.level = level or Level("dense")
        self.level_name = self.level.name
        self.img_size, self.batch_size = model.cfg.img_size, batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_level(x, self.level)

    def get_example_inputs(self) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(self.batch_size, 3, self.img_size, self.img_size, generator=gen),)


#: Export forms by name: ``rewrite`` (XNNPACK-friendly, ``LevelExport``) and ``plain`` (``PlainLevel``).
EXPORT_FORMS: dict[str, type[nn.Module]] = {"rewrite": LevelExport, "plain": PlainLevel}


def level_exports(model: AtheViT, levels: list[Level], batch_size: int = 1) -> dict[str, LevelExport]:
    """``{level name: export form}`` for each level."""
    return {lv.name: LevelExport(model, lv, batch_size) for lv in levels}

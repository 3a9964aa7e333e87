"""Export forms: plain ``nn.Module``s with static shapes and no data-dependent branching.

One form per level (``LevelExport`` / ``PlainLevel``: image -> logits) and one per stage of the
exit chain (``StageExport`` / ``PlainStage``: image or tokens -> tokens, scores, logits). Each
computes exactly what ``AtheViT.forward_level`` / ``AtheViT.forward_stage`` computes (tested to
1e-5). The ``rewrite`` forms (``LevelExport``, ``StageExport``) are rewritten so XNNPACK takes
the whole graph (the reasons are in ``athe.convert.backend_quirks``):

* weights are sliced per level / stage at construction (only its heads exist in the graph);
* attention is 3-D ``bmm`` per head on slices of one q/k/v projection (no 4-D matmul, no unbind);
* the CLS attention row used for token ranking is recomputed on its own, ``softmax(q_cls Kᵀ)``;
* LayerNorm is written with mean/var; the conv stem's BatchNorm is folded into its convs;
* token keeping is ``topk`` + ``gather`` with a fixed k.

The ``plain`` forms (``PlainLevel``, ``PlainStage``) run the training forward as written; LiteRT
fuses its ops itself and runs them faster.

Every export form states its example inputs (``get_example_inputs``), as ExecuTorch's
``model_base.py`` does, so conversion never special-cases a model; a stage form also names its
inputs and outputs (``inputs`` / ``outputs``, from ``athe.runtime.manifest.STAGE_IO``) in its
tensor order.

Example::

    >>> import torch
    >>> from athe.variants import get_variant
    >>> from athe.training.model import build_model
    >>> from athe.convert.export_form import LevelExport, StageExport
    >>> v = get_variant("athe-mini")
    >>> model = build_model(v).eval()
    >>> form = LevelExport(model, v.level("simple"))
    >>> ep = torch.export.export(form, form.get_example_inputs())
    >>> s1 = StageExport(model, 0)
    >>> s1.inputs, s1.outputs
    (('image',), ('tokens', 'logits'))
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from athe.training.model import AtheBlock, AtheViT, ConvStemPatchEmbed, ExitHead
from athe.variants import Level, token_schedule


class MeanVarLayerNorm(nn.Module):
    """LayerNorm over the last dim written as mean/var, the means as matmuls with ``1/D``.

    XNNPACK has no native layer_norm, and its ``mean`` takes only 4-D spatial reductions, so
    a ``mean(dim=-1)`` falls out of the delegate; ``x @ (1/D)`` is delegated as a matmul.
    """

    avg: torch.Tensor  # buffer registered in __init__

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
    proj = cast(nn.Module, patch_embed.proj)
    if not isinstance(patch_embed, ConvStemPatchEmbed):
        return nn.Sequential(copy.deepcopy(proj))
    layers: list[nn.Module] = []
    mods = list(cast(nn.Sequential, proj))  # the conv stem's proj is a Sequential
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
            layers.append(_fold_bn(copy.deepcopy(m), copy.deepcopy(cast(nn.BatchNorm2d, mods[i + 1]))))
            i += 2
        else:
            layers.append(copy.deepcopy(m))
            i += 1
    return nn.Sequential(*layers)


class TokenSelect(nn.Module):
    """Keep CLS + the ``k`` top-scoring tokens (``select_tokens``), fused sums as ``bmm``/``linear``.

    ``[B, 1 + n, D]`` tokens and ``[B, n]`` scores -> ``[B, 1 + k (+1 if fuse), D]``.
    """

    ones_all: torch.Tensor  # buffers registered in __init__
    ones_kept: torch.Tensor

    def __init__(self, n: int, k: int, fuse: bool) -> None:
        super().__init__()
        # Score sums as linear layers with constant all-ones weights (delegated as fully
        # connected), not sum.dim or an mm against a sliced buffer (both stay on portable).
        self.register_buffer("ones_all", torch.ones(1, n))
        self.register_buffer("ones_kept", torch.ones(1, k))
        self.k, self.fuse = k, fuse

    def forward(self, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = self.k
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


class BlockExport(nn.Module):
    """One transformer block of one level or stage: ``[B, N, D] -> [B, N', D]``.

    ``keep_k``: select tokens between attention and MLP (a level's keep point).
    ``emit_scores``: also return the CLS attention ``[B, N - 1]`` (the last block of a stage
    whose successor keeps tokens); the forward then returns ``(tokens, scores)``.
    """

    def __init__(self, block: AtheBlock, heads: int, keep_k: int | None, fuse: bool,
                 tokens_in: int, emit_scores: bool = False) -> None:
        super().__init__()
        attn = block.attn
        norm1, norm2 = cast(nn.LayerNorm, block.norm1), cast(nn.LayerNorm, block.norm2)
        hd, inner, dim = attn.head_dim, attn.attn_dim, norm1.weight.shape[0]
        self.heads, self.head_dim, self.scale = heads, hd, attn.head_dim ** -0.5
        self.keep_k, self.emit_scores = keep_k, emit_scores
        self.select = TokenSelect(tokens_in - 1, keep_k, fuse) if keep_k is not None else None
        self.norm1 = MeanVarLayerNorm(norm1)
        self.norm2 = MeanVarLayerNorm(norm2)
        assert attn.qkv.bias is not None  # AtheViT is built with qkv_bias=True
        w, b = attn.qkv.weight.detach(), attn.qkv.bias.detach()
        rows = torch.cat([torch.arange(j * inner, j * inner + heads * hd) for j in range(3)])
        self.qkv = nn.Linear(dim, 3 * heads * hd)
        self.qkv.weight.data.copy_(w[rows])
        self.qkv.bias.data.copy_(b[rows])
        self.proj = nn.Linear(heads * hd, dim)
        self.proj.weight.data.copy_(attn.proj.weight.detach()[:, : heads * hd])
        self.proj.bias.data.copy_(attn.proj.bias.detach())
        self.mlp: nn.Module = copy.deepcopy(block.mlp)
        self.ls1: nn.Module = copy.deepcopy(block.ls1)
        self.ls2: nn.Module = copy.deepcopy(block.ls2)

    def forward(self, x: torch.Tensor):
        h, hd = self.heads, self.head_dim
        qkv = self.qkv(self.norm1(x))  # [B, N, 3*h*hd]
        inner = h * hd
        need_scores = self.select is not None or self.emit_scores
        outs, cls_rows = [], []
        for i in range(h):
            q = qkv[:, :, i * hd:(i + 1) * hd] * self.scale  # [B, N, hd]
            k = qkv[:, :, inner + i * hd: inner + (i + 1) * hd]
            v = qkv[:, :, 2 * inner + i * hd: 2 * inner + (i + 1) * hd]
            kt = k.transpose(1, 2)  # [B, hd, N]
            attn = torch.softmax(torch.bmm(q, kt), dim=-1)  # [B, N, N]
            outs.append(torch.bmm(attn, v))
            if need_scores:
                cls_rows.append(torch.softmax(torch.bmm(q[:, :1], kt), dim=-1))  # [B, 1, N]
        out = outs[0] if h == 1 else torch.cat(outs, dim=-1)
        x = x + self.ls1(self.proj(out))
        scores = None
        if need_scores:
            row = cls_rows[0]
            for extra in cls_rows[1:]:
                row = row + extra
            B, _, N = row.shape
            # slice + reshape: no select_copy; times a float: ``/ h`` adds an int->float cast
            # of the constant outside the delegate
            scores = (row[:, :, 1:] * (1.0 / h)).reshape(B, N - 1)
        if self.select is not None:
            assert scores is not None  # a select implies need_scores, so scores were computed
            x = self.select(x, scores)
        x = x + self.ls2(self.mlp(self.norm2(x)))
        if self.emit_scores:
            return x, scores
        return x


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
        # AtheViT always has a CLS token and a learned position embedding (timm's defaults).
        assert model.cls_token is not None and model.pos_embed is not None
        self.cls_token = nn.Parameter(model.cls_token.detach().expand(batch_size, -1, -1).clone())
        self.pos_embed = nn.Parameter(model.pos_embed.detach().clone())
        attn_tokens, _ = token_schedule(cfg, level or Level("dense"))
        self.blocks = nn.ModuleList(
            BlockExport(blk, heads, counts.get(i), fuse, attn_tokens[i])
            for i, blk in enumerate(model.ablocks())
        )
        self.norm = MeanVarLayerNorm(cast(nn.LayerNorm, model.norm))
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
        for blk in self.model.ablocks():
            blk.attn.set_fused_attn(False)
        self.level = level or Level("dense")
        self.level_name = self.level.name
        self.img_size, self.batch_size = model.cfg.img_size, batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_level(x, self.level)

    def get_example_inputs(self) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(self.batch_size, 3, self.img_size, self.img_size, generator=gen),)


def stage_token_counts(model: AtheViT) -> list[int]:
    """Tokens (CLS included) inside each stage of ``model``'s chain (``Variant.stage_tokens``)."""
    out, n = [], model.patch_embed.num_patches
    for i, st in enumerate(model.stages):
        keep = model.stage_keep(i)
        if keep is not None:
            n = keep + (1 if st.fuse else 0)
        out.append(n + 1)
    return out


def stage_io(model: AtheViT, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(inputs, outputs)`` of stage ``index``, names from ``STAGE_IO``, in tensor order.

    Stage 0 takes the image, a later stage the previous stage's tokens (and its CLS-attention
    scores when it keeps tokens on entry). Every stage but the last gives its tokens (the exit
    gate reads the CLS token; the next stage goes on from them), its scores when the next stage
    keeps tokens, and its exit logits; the last stage gives logits only.
    """
    if index == 0:
        inputs: tuple[str, ...] = ("image",)
    else:
        inputs = ("tokens", "scores") if model.stage_keep(index) is not None else ("tokens",)
    if index == len(model.stages) - 1:
        return inputs, ("logits",)
    return inputs, ("tokens", "scores", "logits") if model.needs_scores(index) else ("tokens", "logits")


class _StageForm(nn.Module):
    """What both stage forms share: names, shapes and example inputs of stage ``index``."""

    def _init_stage(self, model: AtheViT, index: int, batch_size: int) -> None:
        if not model.stages:
            raise ValueError("this model declares no stages")
        if not 0 <= index < len(model.stages):
            raise IndexError(f"stage {index} out of range: the chain has {len(model.stages)} stages")
        self.index, self.batch_size = index, batch_size
        self.stage_name = model.stages[index].name
        self.inputs, self.outputs = stage_io(model, index)
        tokens = stage_token_counts(model)
        cfg = model.cfg
        #: the previous stage's token count (what this stage's ``tokens`` input holds)
        self.tokens_in = tokens[index - 1] if index > 0 else None
        self.tokens = tokens[index]
        t_in = cast(int, self.tokens_in)  # read only for a "tokens"/"scores" input: index > 0
        shapes = {"image": (batch_size, 3, cfg.img_size, cfg.img_size),
                  "logits": (batch_size, cfg.num_classes)}
        self.input_shapes = tuple(
            shapes["image"] if n == "image" else
            (batch_size, t_in, cfg.embed_dim) if n == "tokens" else
            (batch_size, t_in - 1) for n in self.inputs)
        self.output_shapes = tuple(
            shapes["logits"] if n == "logits" else
            (batch_size, self.tokens, cfg.embed_dim) if n == "tokens" else
            (batch_size, self.tokens - 1) for n in self.outputs)

    def _arrange(self, tokens: torch.Tensor, logits: torch.Tensor, scores: torch.Tensor | None):
        named = {"tokens": tokens, "scores": scores, "logits": logits}
        out = tuple(named[n] for n in self.outputs)
        return out[0] if len(out) == 1 else out

    def get_example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Seeded inputs of the stage's shapes (scores: a softmax row, as the previous stage gives)."""
        gen = torch.Generator().manual_seed(self.index)
        out = []
        for name, shape in zip(self.inputs, self.input_shapes, strict=True):
            t = torch.randn(*shape, generator=gen)
            out.append(torch.softmax(t, dim=-1) if name == "scores" else t)
        return tuple(out)


class ExitHeadExport(nn.Module):
    """``ExitHead`` rewritten: CLS by slice, the token mean as a ``linear`` with ``1/(N-1)`` weights."""

    avg_tokens: torch.Tensor  # buffer registered in __init__

    def __init__(self, head: ExitHead, tokens: int) -> None:
        super().__init__()
        self.register_buffer("avg_tokens", torch.full((1, tokens - 1), 1.0 / (tokens - 1)))
        self.norm = MeanVarLayerNorm(head.norm)
        self.fc = copy.deepcopy(head.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, D = x.shape
        cls_tok = x[:, 0:1].reshape(B, D)  # slice + reshape: no select_copy
        mean = F.linear(x[:, 1:].transpose(1, 2), self.avg_tokens).reshape(B, D)  # no mean.dim
        return self.fc(self.norm(torch.cat([cls_tok, mean], dim=-1)))


class StageExport(_StageForm):
    """Stage ``index`` of an ``AtheViT``'s exit chain, rewritten for XNNPACK (as ``LevelExport``).

    Inputs and outputs are named in ``inputs`` / ``outputs`` (see ``stage_io``); a single output
    is returned as a tensor, several as a tuple in that order.
    """

    def __init__(self, model: AtheViT, index: int, batch_size: int = 1) -> None:
        super().__init__()
        model = model.eval()
        self._init_stage(model, index, batch_size)
        cfg, st = model.cfg, model.stages[index]
        heads = st.heads or cfg.num_heads
        self.first, self.last = index == 0, index == len(model.stages) - 1
        if self.first:
            self.stem = export_stem(model.patch_embed)
            # CLS token pre-expanded to the fixed batch (an expand would stay outside XNNPACK).
            # AtheViT always has a CLS token and a learned position embedding (timm's defaults).
            assert model.cls_token is not None and model.pos_embed is not None
            self.cls_token = nn.Parameter(model.cls_token.detach().expand(batch_size, -1, -1).clone())
            self.pos_embed = nn.Parameter(model.pos_embed.detach().clone())
        keep = model.stage_keep(index)
        self.select = TokenSelect(cast(int, self.tokens_in) - 1, keep, st.fuse) if keep is not None else None
        start, stop = st.blocks
        emit = model.needs_scores(index)
        self.blocks = nn.ModuleList(
            BlockExport(model.ablock(b), heads, None, False, self.tokens,
                        emit_scores=emit and b == stop - 1)
            for b in range(start, stop))
        if self.last:
            self.norm = MeanVarLayerNorm(cast(nn.LayerNorm, model.norm))
            self.head = copy.deepcopy(model.head)
        else:
            self.exit = ExitHeadExport(cast(ExitHead, model.exit_heads[index]), self.tokens)
        self.eval()

    def forward(self, x: torch.Tensor, scores: torch.Tensor | None = None):
        if self.first:
            x = self.stem(x)  # [B, D, g, g]
            B, D = x.shape[0], x.shape[1]
            x = x.reshape(B, D, -1).transpose(1, 2)  # [B, g*g, D]
            x = torch.cat([self.cls_token, x], dim=1) + self.pos_embed
        if self.select is not None:
            assert scores is not None
            x = self.select(x, scores)
        out_scores = None
        for blk in self.blocks:
            if blk.emit_scores:
                x, out_scores = blk(x)
            else:
                x = blk(x)
        if self.last:
            B, _, D = x.shape
            # LayerNorm is per token: normalise only the CLS token the head reads.
            logits = self.head(self.norm(x[:, 0:1]).reshape(B, D))
        else:
            logits = self.exit(x)
        return self._arrange(x, logits, out_scores)


class PlainStage(_StageForm):
    """Stage ``index`` as the training forward writes it (``AtheViT.forward_stage``), for LiteRT.

    Only what the stage runs is kept (the other blocks and exit heads are dropped from the
    copy, so the artifact holds this stage's weights alone); SDPA is switched off, as in
    ``PlainLevel``.
    """

    def __init__(self, model: AtheViT, index: int, batch_size: int = 1) -> None:
        super().__init__()
        self._init_stage(model, index, batch_size)
        keep = copy.copy(model)  # shallow: swap out the unused submodules without touching model's
        keep._modules = dict(model._modules)
        start, stop = model.stages[index].blocks
        keep._modules["blocks"] = nn.ModuleList(
            blk if start <= b < stop else nn.Identity() for b, blk in enumerate(model.blocks))
        keep._modules["exit_heads"] = nn.ModuleList(
            h if i == index else nn.Identity() for i, h in enumerate(model.exit_heads))
        self.model = copy.deepcopy(keep).eval()
        for b in range(start, stop):
            self.model.ablock(b).attn.set_fused_attn(False)

    def forward(self, x: torch.Tensor, scores: torch.Tensor | None = None):
        tokens, logits, out_scores = self.model.forward_stage(self.index, x, scores)
        return self._arrange(tokens, logits, out_scores)


#: Export forms by name: ``rewrite`` (XNNPACK-friendly, ``LevelExport``) and ``plain`` (``PlainLevel``).
EXPORT_FORMS: dict[str, type[nn.Module]] = {"rewrite": LevelExport, "plain": PlainLevel}
#: Stage export forms by the same names: ``rewrite`` (``StageExport``) and ``plain`` (``PlainStage``).
STAGE_FORMS: dict[str, type[_StageForm]] = {"rewrite": StageExport, "plain": PlainStage}


def level_exports(model: AtheViT, levels: list[Level], batch_size: int = 1) -> dict[str, LevelExport]:
    """``{level name: export form}`` for each level."""
    return {lv.name: LevelExport(model, lv, batch_size) for lv in levels}

"""The ATHE model: dense == timm, levels, head slicing, export forms, torch.export, weights."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from conftest import tiny_variant

from athe.convert.export_form import LevelExport, PlainStage, StageExport
from athe.training.model import (
    build_model,
    head_importance,
    load_model,
    permute_heads,
    reorder_heads,
)
from athe.training.router import RouterExport, build_router
from athe.variants import VARIANTS, get_variant, replace


def small(name: str):
    """The registered variant at 2 blocks (same levels where blocks allow) for fast tests."""
    v = get_variant(name)
    depth = 4
    levels = tuple(dataclasses.replace(lv, keep=tuple((b % depth, r) for b, r in lv.keep)) for lv in v.levels)
    levels = tuple(dataclasses.replace(lv, keep=tuple(sorted(dict(lv.keep).items()))) for lv in levels)
    return replace(v, backbone=dataclasses.replace(v.backbone, depth=depth), levels=levels)


def test_dense_level_equals_timm_forward():
    v = get_variant("athe-simple")
    torch.manual_seed(0)
    model = build_model(v).eval()
    ref = timm.create_model("deit_tiny_patch16_224", num_classes=100).eval()
    # The early-exit heads are ATHE's additions; everything else is timm's layout.
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("exit_heads.")})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x, level="dense"), ref(x), atol=1e-5)
        assert torch.allclose(model(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_token_counts_match_schedule(name):
    v = small(name)
    model = build_model(v).eval()
    x = torch.randn(1, 3, v.backbone.img_size, v.backbone.img_size)
    for lv in v.levels:
        trace: list[int] = []
        with torch.no_grad():
            model.forward_level(x, lv, trace)
        assert trace == v.tokens_per_block(lv), lv.name


def test_head_subset_uses_only_the_first_heads():
    v = get_variant("athe-mini")
    torch.manual_seed(0)
    model = build_model(v).eval()
    x = torch.randn(2, 3, 32, 32)
    simple = v.level("simple")  # 2 of 3 heads
    with torch.no_grad():
        before = model(x, level=simple)
        hd = model.blocks[0].attn.head_dim
        for blk in model.blocks:  # scribble on head 2 only: a 2-head level must not notice
            inner = blk.attn.attn_dim
            for j in range(3):
                blk.attn.qkv.weight[j * inner + 2 * hd: j * inner + 3 * hd] = 7.0
            blk.attn.proj.weight[:, 2 * hd:] = 7.0
        after = model(x, level=simple)
        dense_after = model(x, level="dense")
    assert torch.allclose(before, after, atol=1e-6)
    assert not torch.allclose(before, dense_after, atol=1e-2)


def test_permute_heads_keeps_dense_output_and_reorder_puts_best_first():
    v = get_variant("athe-mini")
    torch.manual_seed(0)
    model = build_model(v).eval()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with torch.no_grad():
        dense = model(x)
        permute_heads(model, 0, [2, 0, 1])
        assert torch.allclose(model(x), dense, atol=1e-5)
    reorder_heads(model, x, y)
    imp = head_importance(model, x, y)
    assert torch.all(imp[:, :-1] >= imp[:, 1:] - 1e-6)  # most important heads first
    with torch.no_grad():
        assert torch.allclose(model(x), dense, atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_export_form_equals_training_form_and_torch_export_works(name):
    v = small(name)
    torch.manual_seed(0)
    model = build_model(v).eval()
    for lv in v.levels:
        form = LevelExport(model, lv)
        (x,) = form.get_example_inputs()
        with torch.no_grad():
            assert torch.allclose(form(x), model(x, level=lv), atol=1e-5), lv.name
        exported = torch.export.export(form, (x,))
        with torch.no_grad():
            assert torch.allclose(exported.module()(x), form(x), atol=1e-5)


def test_export_form_batch_n():
    v = small("athe-mini")
    model = build_model(v).eval()
    form = LevelExport(model, v.level("simple"), batch_size=4)
    (x,) = form.get_example_inputs()
    assert x.shape[0] == 4
    with torch.no_grad():
        assert torch.allclose(form(x), model(x, level="simple"), atol=1e-5)


@pytest.mark.parametrize("variant", [tiny_variant(), get_variant("athe-mini"), get_variant("athe-simple")],
                         ids=lambda v: v.name)
def test_stage_export_forms_equal_forward_stage_and_torch_export_works(variant):
    """Both stage forms (rewrite for .pte, plain for .tflite) give forward_stage's tokens, scores
    and logits to 1e-5, named in their tensor order; the rewrite exports with torch.export."""
    torch.manual_seed(0)
    model = build_model(variant).eval()
    S = variant.backbone.img_size
    x = torch.randn(1, 3, S, S)
    tokens, scores = x, None
    for i in range(len(variant.stages)):
        with torch.no_grad():
            ref_tokens, ref_logits, ref_scores = model.forward_stage(i, tokens, scores)
        ref = {"tokens": ref_tokens, "logits": ref_logits, "scores": ref_scores}
        feed = {"image": x, "tokens": tokens, "scores": scores}
        last = i == len(variant.stages) - 1
        for cls in (StageExport, PlainStage):
            form = cls(model, i)
            assert form.outputs[-1] == "logits" and ("tokens" in form.outputs) != last
            assert ("scores" in form.outputs) == model.needs_scores(i)
            assert ("scores" in form.inputs) == (model.stage_keep(i) is not None)
            args = tuple(feed[n] for n in form.inputs)
            assert [tuple(a.shape) for a in args] == list(form.input_shapes)
            assert [tuple(a.shape) for a in form.get_example_inputs()] == list(form.input_shapes)
            with torch.no_grad():
                out = form(*args)
            out = out if isinstance(out, tuple) else (out,)
            assert [tuple(o.shape) for o in out] == list(form.output_shapes)
            for name, got in zip(form.outputs, out, strict=True):
                assert torch.allclose(got, ref[name], atol=1e-5), (variant.name, i, cls.__name__, name)
        if variant.name != "athe-simple":  # 224 px: eager parity is enough there
            form = StageExport(model, i)
            exported = torch.export.export(form, args)
            with torch.no_grad():
                got = exported.module()(*args)
                want = form(*args)
            for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                            strict=True):
                assert torch.allclose(a, b, atol=1e-5)
        tokens, scores = ref_tokens, ref_scores


def test_plain_stage_keeps_only_its_own_weights():
    v = get_variant("athe-mini")
    model = build_model(v).eval()
    form = PlainStage(model, 1)
    n_form = sum(p.numel() for p in form.parameters())
    blocks = sum(p.numel() for b in range(*v.stages[1].blocks) for p in model.blocks[b].parameters())
    assert blocks < n_form < blocks + sum(p.numel() for p in model.exit_heads[1].parameters()) + 200_000
    assert all(not isinstance(b, torch.nn.Identity) for b in model.blocks)  # the model is untouched


def test_router_export_equals_router():
    v = get_variant("athe-simple")
    router = build_router(v).eval()
    for m in router.modules():  # non-trivial BN statistics so folding is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    form = RouterExport(router)
    (x,) = form.get_example_inputs()
    with torch.no_grad():
        assert torch.allclose(form(x), router(x), atol=1e-5)
    assert router(x).shape == (1, 3)


def test_load_local_timm_checkpoint_and_shape_mismatch(tmp_path):
    v = get_variant("athe-simple")
    ref = timm.create_model("deit_tiny_patch16_224", num_classes=100)
    path = tmp_path / "deit.pt"
    torch.save(ref.state_dict(), path)
    model = load_model(v, path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), ref.eval()(x), atol=1e-5)
    wrong = timm.create_model("deit_tiny_patch16_224", num_classes=10)
    torch.save(wrong.state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"'head.weight'.*\[10, 192\].*athe-simple"):
        load_model(v, tmp_path / "wrong.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(v, tmp_path / "missing.pt")


def test_timm_pretrained_path_calls_timm(monkeypatch):
    """The pretrained code path asks timm for the variant's weights (no network in tests)."""
    calls = {}

    def fake_create(name, pretrained=False, **kw):
        calls["args"] = (name, pretrained)
        return timm.models.vision_transformer.VisionTransformer(
            img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=1000)

    monkeypatch.setattr(timm, "create_model", fake_create)
    model = load_model(get_variant("athe-simple"), timm_pretrained=True)
    assert calls["args"] == ("deit_tiny_patch16_224.fb_in1k", True)
    assert model.head.weight.shape == (100, 192)


@pytest.mark.parametrize("name", ["athe-mini", "athe-simple"])
def test_stage_chain_runs_stage_by_stage(name):
    """forward_exits == forward_stage called one stage at a time; a chain that keeps every
    token and head ends in exactly the dense level."""
    v = get_variant(name)
    torch.manual_seed(0)
    model = build_model(v).eval()
    S = v.backbone.img_size
    x = torch.randn(2, 3, S, S)
    with torch.no_grad():
        exits = model.forward_exits(x)
        tokens, scores = x, None
        for i in range(len(v.stages)):
            tokens, logits, scores = model.forward_stage(i, tokens, scores)
            assert torch.equal(logits, exits[i])
            assert tokens.shape[1] == v.stage_tokens()[i]
            assert (scores is not None) == model.needs_scores(i)
        dense = model(x)
    assert len(exits) == len(v.stages)
    if model.chain_is_dense:
        assert torch.equal(exits[-1], dense)


def test_checkpoint_without_exit_heads_loads_and_says_so(tmp_path):
    v = get_variant("athe-mini")
    state = {k: t for k, t in build_model(v).state_dict().items() if not k.startswith("exit_heads.")}
    torch.save({"model": state}, tmp_path / "old.pt")
    model = load_model(v, tmp_path / "old.pt")
    assert model.exits_trained is False
    assert load_model(v).exits_trained is True

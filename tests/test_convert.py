"""Conversion: parity through the runtime, delegation, manifest round-trip, atomicity, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from athe.cli import cli
from athe.convert import bundle as bundle_mod
from athe.convert.backend_quirks import ALLOWED_NON_DELEGATED
from athe.convert.bundle import ConvertError, ConvertOptions, convert_bundle
from athe.convert.export_form import LevelExport
from athe.runtime.backends import load_backend
from athe.runtime.bundle import Bundle
from athe.runtime.manifest import Manifest
from athe.training.model import load_model

pytestmark = pytest.mark.slow


def test_bundle_has_every_level_and_router_in_both_formats(converted_bundle, tiny):
    b = Bundle.open(converted_bundle)
    assert b.level_names == tiny.level_names
    assert set(b.formats) >= {"tflite", "pte"}
    m = b.manifest
    assert m.router is not None and set(m.router.files) >= {"tflite", "pte"}
    for lv, spec in zip(tiny.levels, m.levels, strict=True):
        assert list(spec.tokens_per_block) == tiny.tokens_per_block(lv)
        assert spec.macs == tiny.macs(lv)
        for fmt in ("tflite", "pte"):
            assert spec.files[fmt].parity["max_abs_diff"] <= 1e-4
            assert spec.files[fmt].parity["top1_agreement"] == 1.0


def test_manifest_round_trip(converted_bundle):
    text = (converted_bundle / "manifest.json").read_text()
    m = Manifest.from_dict(json.loads(text))
    assert json.loads(m.dumps()) == json.loads(text)
    assert m.created_with["torch"] == torch.__version__.split("+")[0]
    assert m.checkpoint["sha256"] and m.random_weights is False


def test_pte_delegation_only_token_selection_outside_xnnpack(converted_bundle, tiny):
    m = Manifest.load(converted_bundle / "manifest.json")
    for spec in m.levels:
        d = spec.files["pte"].delegation
        assert d["disallowed_non_delegated"] == []
        assert set(d["non_delegated_ops"]) <= ALLOWED_NON_DELEGATED
        assert d["delegated_ops"] > 50
        pruning_stages = len(spec.keep)
        assert d["delegate_calls"] == pruning_stages + 1, spec.name  # one piece between selections
        if not spec.keep:
            assert d["non_delegated_ops"] == {}
    assert m.router.files["pte"].delegation["non_delegated_ops"] == {}


@pytest.mark.parametrize("fmt", ["tflite", "pte"])
def test_artifacts_agree_with_pytorch_through_runtime(converted_bundle, tiny, tiny_checkpoint, fmt):
    model = load_model(tiny, tiny_checkpoint).eval()
    backend = load_backend({"tflite": "litert", "pte": "executorch"}[fmt], threads=1)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for lv in tiny.levels:
        got = backend.load(converted_bundle / f"{lv.name}.{fmt}").run(x.numpy())
        with torch.no_grad():
            ref = LevelExport(model, lv)(x).numpy()
        assert np.abs(got - ref).max() < 1e-4


def test_random_weights_bundle_is_marked(tmp_path, tiny, monkeypatch):
    # Convert only the router-free tflite path for speed: a variant without router.
    from athe.variants import replace
    v = replace(tiny, name="tiny-dense", levels=tiny.levels[-1:], router=None)
    out = convert_bundle(ConvertOptions(variant=v.name, variant_obj=v, out=tmp_path / "b",
                                        random_weights=True, formats=("tflite",), parity_samples=2))
    m = Manifest.load(out / "manifest.json")
    assert m.random_weights and m.checkpoint["random_weights"] and m.router is None
    assert m.calibration == {"exits_calibrated": False}  # random weights: exits never taken early
    assert {st.threshold for st in m.stages[:-1]} == {1.0}


def test_failure_midway_leaves_no_bundle(tmp_path, tiny, tiny_checkpoint, monkeypatch):
    calls = {"n": 0}
    real = bundle_mod.CONVERTERS["tflite"]

    def flaky(module, example, path, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(module, example, path, **kw)

    monkeypatch.setitem(bundle_mod.CONVERTERS, "tflite", flaky)
    out = tmp_path / "b"
    with pytest.raises(ConvertError, match="complex.tflite failed: RuntimeError: simulated crash"):
        convert_bundle(ConvertOptions(variant=tiny.name, variant_obj=tiny, out=out,
                                      checkpoint=tiny_checkpoint, formats=("tflite",), parity_samples=1))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial folder left either


def test_parity_failure_names_the_artifact(tmp_path, tiny, tiny_checkpoint, monkeypatch):
    real = bundle_mod.CONVERTERS["tflite"]

    def wrong_weights(module, example, path, **kw):
        import copy
        bad = copy.deepcopy(module)
        head = bad.head if hasattr(bad, "head") else bad.model.head  # rewrite or plain form
        with torch.no_grad():
            head.bias += 1.0
        return real(bad, example, path, **kw)

    monkeypatch.setitem(bundle_mod.CONVERTERS, "tflite", wrong_weights)
    with pytest.raises(ConvertError, match=r"simple.tflite differs from PyTorch"):
        convert_bundle(ConvertOptions(variant=tiny.name, variant_obj=tiny, out=tmp_path / "b",
                                      checkpoint=tiny_checkpoint, formats=("tflite",), parity_samples=1))
    assert not (tmp_path / "b").exists()


def test_clear_errors(tmp_path, tiny):
    runner = CliRunner()
    r = runner.invoke(cli, ["convert", "--variant", "athe-mni"])
    assert r.exit_code != 0 and "athe-mini" in r.output
    r = runner.invoke(cli, ["convert", "--variant", "athe-simple", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "--random-weights" in r.output and "athe train backbone" in r.output
    r = runner.invoke(cli, ["convert", "--variant", "athe-mini", "--checkpoint", str(tmp_path / "nope.pt"),
                            "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "does not exist" in r.output
    wrong = tmp_path / "wrong.pt"
    from athe.training.model import build_model
    from athe.variants import get_variant
    torch.save({"model": build_model(get_variant("athe-simple")).state_dict()}, wrong)
    r = runner.invoke(cli, ["convert", "--variant", "athe-mini", "--checkpoint", str(wrong),
                            "--out", str(tmp_path / "z")])
    assert r.exit_code == 1 and "athe-mini" in r.output and "shape" in r.output
    blocker = tmp_path / "a-file"  # a parent that is a file: unwritable even for root
    blocker.write_text("x")
    r = runner.invoke(cli, ["convert", "--variant", "athe-mini", "--random-weights",
                            "--out", str(blocker / "b")])
    # refused when the options are parsed (a usage error, exit 2), naming the option and the file
    assert r.exit_code == 2 and "--out" in r.output and "which is a file" in r.output
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(ConvertError, match="--force"):
        bundle_mod._check_out(existing, force=False)


def test_channels_last_example_still_gives_an_nchw_pte(tmp_path):
    """Regression: a permuted (channels-last) example input made a .pte that misread NCHW input."""
    from athe.convert.executorch import to_pte

    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU()).eval()
    nhwc = torch.randn(1, 8, 8, 3)
    example = nhwc.permute(0, 3, 1, 2)  # what normalize_batch used to return: not contiguous
    assert not example.is_contiguous()
    path = tmp_path / "conv.pte"
    report = to_pte(conv, (example,), path)
    assert report["delegate_calls"] == 1 and report["non_delegated_ops"] == {}
    got = load_backend("executorch", threads=1).load(path).run(example.contiguous().numpy())
    with torch.no_grad():
        assert np.abs(got - conv(example).numpy()).max() < 1e-5


def test_export_form_per_format(converted_bundle):
    """.tflite levels come from the plain form (fastest on LiteRT), .pte from the XNNPACK rewrite."""
    import json

    m = json.loads((converted_bundle / "manifest.json").read_text())
    for lv in m["levels"]:
        assert lv["files"]["tflite"]["parity"]["export_form"] == "plain"
        assert lv["files"]["pte"]["parity"]["export_form"] == "rewrite"
        assert lv["files"]["tflite"]["parity"]["max_abs_diff"] <= 1e-4


def test_unknown_export_form(tmp_path, tiny, tiny_checkpoint):
    with pytest.raises(ConvertError, match="unknown export form 'fast' for tflite"):
        convert_bundle(ConvertOptions(variant=tiny.name, variant_obj=tiny, out=tmp_path / "b",
                                      checkpoint=tiny_checkpoint, forms={"tflite": "fast"}))


# -- stages: the exit chain -----------------------------------------------------------------


def test_stages_in_both_formats_match_pytorch_alone_and_as_a_chain(converted_bundle, tiny):
    """Each stage artifact alone (fed the PyTorch chain's inputs) and each format's whole chain of
    artifacts (each fed the previous one) match PyTorch to 1e-4; the manifest describes them."""
    m = Manifest.load(converted_bundle / "manifest.json")
    assert m.stage_names == tiny.stage_names
    assert [st.tokens for st in m.stages] == tiny.stage_tokens()
    assert [st.macs for st in m.stages] == tiny.stage_macs()
    assert [st.inputs for st in m.stages] == [("image",), ("tokens", "scores"), ("tokens",)]
    assert [st.outputs for st in m.stages] == [("tokens", "scores", "logits"), ("tokens", "logits"), ("logits",)]
    assert [st.token_selection for st in m.stages] == ["none", "in-graph", "none"]
    assert [st.blocks for st in m.stages] == [(0, 1), (1, 2), (2, 3)]
    assert "pt2" in m.formats()
    for st in m.stages:
        for fmt in ("tflite", "pte", "pt2"):
            p = st.files[fmt].parity
            assert p["chain_max_abs_diff"] <= 1e-4, (st.name, fmt, p)
            assert p["chain_top1_agreement"] == 1.0, (st.name, fmt, p)
            if fmt != "pt2":
                assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0, (st.name, fmt, p)
                assert p["export_form"] == {"tflite": "plain", "pte": "rewrite"}[fmt]
                if len(st.outputs) > 1:
                    assert set(p["max_abs_diff_per_output"]) == set(st.outputs)


def test_stage_pte_delegation(converted_bundle):
    """A stage lowers to one XNNPACK delegate with nothing outside; a stage that keeps tokens on
    entry to two, with only topk/gather and their index plumbing between them."""
    m = Manifest.load(converted_bundle / "manifest.json")
    for st in m.stages:
        d = st.files["pte"].delegation
        assert d["disallowed_non_delegated"] == [] and d["delegated_ops"] > 50, st.name
        if st.token_selection == "in-graph":
            assert d["delegate_calls"] == 2, (st.name, d)
            assert {"aten.topk.default", "aten.gather.default"} <= set(d["non_delegated_ops"])
            assert set(d["non_delegated_ops"]) <= ALLOWED_NON_DELEGATED
        else:
            assert d["delegate_calls"] == 1 and d["non_delegated_ops"] == {}, (st.name, d)


@pytest.mark.parametrize("fmt", ["tflite", "pte", "pt2"])
def test_stage_chain_through_the_runtime_equals_forward_exits(converted_bundle, tiny, tiny_checkpoint, fmt):
    """On a new image, the chain of artifacts run through the runtime backend (inputs and outputs
    in the manifest's order) gives every exit's logits of the PyTorch model to 1e-4."""
    model = load_model(tiny, tiny_checkpoint).eval()
    m = Manifest.load(converted_bundle / "manifest.json")
    backend = load_backend({"tflite": "litert", "pte": "executorch", "pt2": "torch"}[fmt], threads=1)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        ref = model.forward_exits(x)
        ref_tokens, scores = x, None
        for i in range(len(tiny.stages)):
            ref_tokens, _, scores = model.forward_stage(i, ref_tokens, scores)
            if i == 0:
                first_scores = scores
    feed = {"image": x.numpy()}
    for i, st in enumerate(m.stages):
        loaded = backend.load(converted_bundle / st.files[fmt].path)
        assert len(loaded.input_shapes) == len(st.inputs) and len(loaded.output_shapes) == len(st.outputs)
        outs = dict(zip(st.outputs, loaded.run_many([feed[n] for n in st.inputs]), strict=True))
        assert np.abs(outs["logits"] - ref[i].numpy()).max() < 1e-4, (st.name, fmt)
        if i == 0:  # the scores the next stage selects by come out too, in their place
            assert np.abs(outs["scores"] - first_scores.numpy()).max() < 1e-5
        feed = outs


def test_uncalibrated_exits_never_exit_early_and_say_so(converted_bundle):
    """The tiny checkpoint has no gates: every gate is max_softmax at 1.0, and the calibration
    records that the exits are not calibrated."""
    m = Manifest.load(converted_bundle / "manifest.json")
    assert m.calibration["exits_calibrated"] is False
    for st in m.stages[:-1]:
        assert st.gate.kind == "max_softmax" and st.threshold == 1.0
    assert m.stages[-1].gate is None and m.stages[-1].threshold is None


def test_exit_gates_come_from_the_checkpoint(tiny):
    from athe.convert.bundle import LoadedWeights, exit_gates
    from athe.training.model import build_model

    model = build_model(tiny).eval()
    gate = {"kind": "logistic", "features": ["max_prob", "margin"], "mean": [0.5, 0.2], "std": [0.1, 0.1],
            "weights": [2.0, 1.0], "bias": -0.5, "auroc": 0.8}
    w = LoadedWeights(model, None, None, [], None, {"random_weights": False},
                      gates={"s1": gate, "s2": {"kind": "max_softmax"}}, exit_thresholds={"s1": 0.7, "s2": 0.9})
    gates, ths, calibrated, why = exit_gates(w, tiny)
    assert calibrated and why == "" and ths == {"s1": 0.7, "s2": 0.9}
    assert gates["s1"].kind == "logistic" and gates["s1"].features == ("max_prob", "margin")
    assert gates["s1"].weights == (2.0, 1.0) and gates["s2"].kind == "max_softmax"
    # without gates, with random weights, or with untrained exits: never exit early, and say why
    for weights, reason in (
        (LoadedWeights(model, None, None, [], None, {"random_weights": False}), "no exit gates"),
        (LoadedWeights(model, None, None, [], None, {"random_weights": True}, gates=w.gates,
                       exit_thresholds=w.exit_thresholds), "random weights"),
    ):
        gates, ths, calibrated, why = exit_gates(weights, tiny)
        assert not calibrated and reason in why
        assert ths == {"s1": 1.0, "s2": 1.0} and {g.kind for g in gates.values()} == {"max_softmax"}
    model.exits_trained = False
    gates, ths, calibrated, why = exit_gates(w, tiny)
    assert not calibrated and "no trained exit heads" in why
    model.exits_trained = True
    partial = LoadedWeights(model, None, None, [], None, {"random_weights": False},
                            gates={"s1": gate}, exit_thresholds={"s1": 0.7})
    with pytest.raises(ConvertError, match=r"lack stage\(s\) \['s2'\]"):
        exit_gates(partial, tiny)

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
    assert r.exit_code == 1 and "cannot write" in r.output and "--out" in r.output
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

"""Backends on real artifacts: LiteRT and ExecuTorch agree with the torch reference.

A session fixture converts a tiny ATHE variant (2 blocks x 48 wide; levels ``simple`` and
``dense``) and a stand-in router CNN to ``.tflite`` (litert-torch), ``.pte`` (ExecuTorch +
XNNPACK) and ``.pt2`` (``torch.export.save``), writes them as a bundle, and the tests run that
bundle through every backend and the dispatcher. Conversion happens once per session.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from athe.runtime import BackendError, Bundle, Dispatcher, Preprocessor, load_backend
from athe.runtime.benchmark import main as benchmark_main
from athe.runtime.benchmark import run_benchmark
from athe.runtime.manifest import (
    SCHEMA_VERSION,
    InputSpec,
    LevelSpec,
    Manifest,
    RouterSpec,
    artifact_for_file,
)

ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train.tar.gz"
FORMATS = ("tflite", "pte", "pt2")


def _images(n: int = 8) -> list[bytes]:
    if ARCHIVE.exists():
        out = []
        with tarfile.open(ARCHIVE, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg"):
                    out.append(tar.extractfile(member).read())
                    if len(out) == n:
                        return out
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _export(module, example, folder: Path, owner: str) -> None:
    import litert_torch
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    litert_torch.convert(module, example).export(str(folder / f"{owner}.tflite"))
    program = torch.export.export(module, example)
    torch.export.save(program, str(folder / f"{owner}.pt2"))
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    (folder / f"{owner}.pte").write_bytes(lowered.buffer)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    pytest.importorskip("executorch.exir")
    from torch import nn

    from athe.convert.export_form import LevelExport
    from athe.training.model import build_model
    from athe.variants import get_variant, replace

    base = get_variant("athe-mini")
    variant = replace(
        base, backbone=dataclasses.replace(base.backbone, embed_dim=48, depth=2, num_heads=3),
        levels=(dataclasses.replace(base.levels[0], keep=((1, 0.5),)), base.levels[-1]),
    )
    torch.manual_seed(0)
    model = build_model(variant).eval()

    class StandInRouter(nn.Module):
        """Router-shaped CNN: preprocessed image -> per-level probability of being right."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8, len(variant.levels))

        def forward(self, x):
            return torch.sigmoid(self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3))))

    folder = tmp_path_factory.mktemp("tiny-bundle")
    example = (torch.randn(1, 3, 32, 32),)
    with torch.no_grad():
        for level in variant.levels:
            _export(LevelExport(model, level), example, folder, level.name)
        _export(StandInRouter().eval(), example, folder, "router")

    def files(owner):
        return {fmt: artifact_for_file(folder, f"{owner}.{fmt}") for fmt in FORMATS}

    pre = variant.preprocess.to_dict()
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, variant="athe-mini-tiny", created_with={"test": True},
        checkpoint={}, random_weights=True, precision="fp32",
        input=InputSpec(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])}),
        labels=variant.labels,
        levels=tuple(LevelSpec(name=lv.name, keep=lv.keep, heads=lv.heads or 3, fuse=lv.fuse,
                               tokens_per_block=tuple(variant.tokens_per_block(lv)),
                               macs=variant.macs(lv), files=files(lv.name)) for lv in variant.levels),
        router=RouterSpec(files=files("router"), outputs=tuple(variant.level_names),
                          thresholds={"simple": 0.5}, input_size=32, macs=0),
    )
    (folder / "manifest.json").write_text(manifest.dumps())
    return folder


@pytest.fixture(scope="session")
def inputs(tiny_bundle) -> list[np.ndarray]:
    pre = Preprocessor(Bundle.open(tiny_bundle, formats=["tflite"]).input)
    return [pre(data) for data in _images()]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["litert", "executorch"])
def test_backend_agrees_with_torch_reference(tiny_bundle, inputs, backend):
    bundle = Bundle.open(tiny_bundle)
    ref_backend = load_backend("torch", threads=1)
    fast = load_backend(backend, threads=2)
    assert fast.threads == 2
    fmt = {"litert": "tflite", "executorch": "pte"}[backend]
    for owner in ("router", *bundle.level_names):
        ref = ref_backend.load(bundle.artifact_path(owner, "pt2"))
        model = fast.load(bundle.artifact_path(owner, fmt))
        assert model.input_shape == ref.input_shape == (1, 3, 32, 32)
        assert model.output_shape == ref.output_shape
        for x in inputs:
            got, want = model.run(x), ref.run(x)
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"{backend} {owner}")
            assert np.argmax(got) == np.argmax(want)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["litert", "executorch"])
def test_dispatcher_matches_the_torch_reference_dispatcher(tiny_bundle, inputs, backend):
    images = _images()
    # threshold at the median reference score, so both levels serve some images
    probe = Dispatcher(tiny_bundle, backend="torch", threads=1, policy="fixed:dense")
    scores = [float(probe.router.run(x)[0, 0]) for x in inputs]
    thresholds = {"simple": float(np.median(scores))}
    reference = Dispatcher(tiny_bundle, backend="torch", threads=1, thresholds=thresholds)
    dispatcher = Dispatcher(tiny_bundle, backend=backend, threads=2, thresholds=thresholds)
    assert [load.owner for load in dispatcher.loads] == ["router", "simple", "dense"]
    levels = set()
    for data in images:
        p, r = dispatcher.predict(data), reference.predict(data)
        levels.add(r.level)
        assert (p.level, p.label) == (r.level, r.label)
        assert p.router_scores == pytest.approx(r.router_scores, abs=1e-4)
        np.testing.assert_allclose(p.logits, r.logits, atol=1e-4, rtol=0)
        assert 0.0 < p.probability <= 1.0
    assert levels == {"simple", "dense"}


@pytest.mark.slow
def test_model_errors(tiny_bundle, tmp_path):
    litert = load_backend("litert", threads=1)
    model = litert.load(tiny_bundle / "dense.tflite")
    with pytest.raises(BackendError, match=r"input shape \(1, 3, 16, 16\) does not match"):
        model.run(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(BackendError, match="must be a float32 numpy array"):
        model.run(np.zeros((1, 3, 32, 32), np.uint8))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(BackendError, match="LiteRT cannot load"):
        litert.load(bad)
    with pytest.raises(BackendError, match="not found"):
        litert.load(tmp_path / "missing.tflite")


@pytest.mark.slow
def test_benchmark_reports_router_levels_and_overhead(tiny_bundle, tmp_path):
    result = run_benchmark(tiny_bundle, backend="litert", threads=1, count=5, warmup=1)
    assert len(result.router_ms) == 5 and set(result.level_ms) == {"simple", "dense"}
    assert sum(result.level_counts.values()) == 5
    text = result.format()
    assert "router alone" in text and "level dense alone" in text
    assert "dispatcher overhead (total - route - infer)" in text and "router + preprocess + glue" in text
    from click.testing import CliRunner

    out = tmp_path / "bench.json"
    run = CliRunner().invoke(benchmark_main, ["--bundle", str(tiny_bundle), "--threads", "1", "--count", "3",
                                              "--warmup", "0", "--policy", "fixed:simple", "--json", str(out)])
    assert run.exit_code == 0, run.output
    data = json.loads(out.read_text())
    assert data["summary"]["level_counts"] == {"simple": 3, "dense": 0}
    assert len(data["samples_ms"]["stages"]["total"]) == 3
    bad = CliRunner().invoke(benchmark_main, ["--bundle", str(tiny_bundle), "--policy", "fixed:nope"])
    assert bad.exit_code != 0 and "no level 'nope'" in bad.output


def test_missing_litert_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(BackendError, match=r"ai-edge-litert is not installed: pip install 'athe\[pi\]'"):
        load_backend("litert")


def test_unknown_backend_and_bad_threads():
    with pytest.raises(BackendError, match="unknown backend 'tflite'.*litert, executorch, torch"):
        load_backend("tflite")
    with pytest.raises(BackendError, match="threads must be a positive integer"):
        load_backend("litert", threads=0)


# -- several inputs and outputs (stage artifacts) ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["litert", "executorch", "torch"])
def test_run_many_on_stage_artifacts(converted_bundle, backend):
    """Stage artifacts take and give several tensors in the manifest's order; every backend
    agrees with the torch reference on them and checks what it is fed."""
    bundle = Bundle.open(converted_bundle)
    fmt = {"litert": "tflite", "executorch": "pte", "torch": "pt2"}[backend]
    fast, ref_backend = load_backend(backend, threads=1), load_backend("torch", threads=1)
    rng = np.random.default_rng(3)
    feed = {"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    for st in bundle.stages:
        model = fast.load(bundle.artifact_path(f"stage:{st.name}", fmt))
        ref = ref_backend.load(bundle.artifact_path(f"stage:{st.name}", "pt2"))
        assert model.input_shapes == ref.input_shapes and model.output_shapes == ref.output_shapes
        assert len(model.input_shapes) == len(st.inputs) and len(model.output_shapes) == len(st.outputs)
        assert model.input_shape == model.input_shapes[0] and model.output_shape == model.output_shapes[0]
        args = [feed[n] for n in st.inputs]
        got, want = model.run_many(args), ref.run_many(tuple(args))
        assert [g.shape for g in got] == list(model.output_shapes)
        for name, g, w in zip(st.outputs, got, want, strict=True):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"{backend} {st.name} {name}")
        outs = dict(zip(st.outputs, got, strict=True))
        if len(st.inputs) > 1 or len(st.outputs) > 1:
            with pytest.raises(BackendError, match="run it with run_many"):
                model.run(args[0])
        else:
            np.testing.assert_array_equal(model.run(args[0]), got[0])
        with pytest.raises(BackendError, match=rf"takes {len(st.inputs)} input\(s\).*got {len(st.inputs) + 1}"):
            model.run_many([*args, args[0]])
        with pytest.raises(BackendError, match="got one array"):
            model.run_many(args[0])
        if len(args) > 1:
            bad = [args[0], np.zeros((1, 5), np.float32)]
            with pytest.raises(BackendError, match=r"input 1 shape \(1, 5\) does not match.*previous stage"):
                model.run_many(bad)
        feed = outs


def test_litert_signature_order_is_positional():
    """litert-torch names outputs output_0..N after the PyTorch positions; the interpreter's own
    list (and a name sort: output_10 < output_2) may differ, so the backend orders by N."""
    from athe.runtime.backends import _positional

    details = {f"output_{i}": {"index": 100 - i} for i in (2, 10, 0, 1)}
    assert [d["index"] for d in _positional(details, "output_")] == [100, 99, 98, 90]
    assert _positional({"logits": {}, "output_0": {}}, "output_") is None

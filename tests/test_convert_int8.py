"""int8 conversion: dynamic-range for both formats, static (tflite) calibrated on real images.

A two-level tiny variant (one pruned level + dense, with the router and the three-stage exit
chain) keeps this to a few minutes. The checks: the artifacts are int8 (smaller than fp32, precision recorded), they run
through the runtime, they agree with the fp32 PyTorch form on real CIFAR-10 images (top-1
agreement and |logit diff| recorded in the manifest), and int8-static refuses an artifact that
loses more than 2 points, naming the measured drop.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from athe.convert.bundle import (
    STATIC_INT8_MAX_DROP,
    ConvertError,
    ConvertOptions,
    _check_static_drop,
    convert_bundle,
)
from athe.runtime.bundle import Bundle
from athe.runtime.dispatcher import Dispatcher
from athe.runtime.manifest import Artifact
from athe.variants import Level, replace


@pytest.fixture(scope="module")
def two_level(tiny):
    return replace(tiny, name="tiny-int8", levels=(
        Level("simple", keep=((0, 0.5), (1, 0.5)), heads=2, fuse=True),
        Level("dense", keep=(), heads=3),
    ))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, two_level):
    from athe.training.model import build_model
    from athe.training.router import build_router
    from athe.training.router_train import save_athe_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("int8") / "tiny.pt"
    save_athe_checkpoint(path, two_level, build_model(two_level).state_dict(), build_router(two_level),
                         {"simple": 0.5}, list(two_level.labels), None, {"note": "test"})
    return path


def _convert(tmp_path_factory, variant, checkpoint, data, **kw):
    out = tmp_path_factory.mktemp("bundles") / kw.get("quantize", "fp32")
    return convert_bundle(ConvertOptions(variant=variant.name, variant_obj=variant, out=out, checkpoint=checkpoint,
                                         data=data, parity_samples=12, **kw))


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, two_level, checkpoint, cifar_archive):
    return _convert(tmp_path_factory, two_level, checkpoint, cifar_archive, formats=("tflite", "pte"))


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory, two_level, checkpoint, cifar_archive):
    return _convert(tmp_path_factory, two_level, checkpoint, cifar_archive, formats=("tflite", "pte"),
                    quantize="int8-dynamic")


def test_int8_dynamic_is_smaller_and_recorded(dynamic_bundle, fp32_bundle):
    q = json.loads((dynamic_bundle / "manifest.json").read_text())
    f = json.loads((fp32_bundle / "manifest.json").read_text())
    assert q["precision"] == "int8-dynamic"
    assert {a["precision"] for a in q["router"]["files"].values()} == {"fp32"}  # the router stays fp32
    for lq, lf in zip(q["levels"], f["levels"], strict=True):
        for fmt in ("tflite", "pte"):
            a, b = lq["files"][fmt], lf["files"][fmt]
            assert a["precision"] == "int8-dynamic"
            assert a["bytes"] < 0.6 * b["bytes"], (lq["name"], fmt, a["bytes"], b["bytes"])
            p = a["parity"]
            assert p["inputs"] == "real" and p["samples"] == 12
            # int8 vs the fp32 PyTorch form: close but not identical
            assert 1e-6 < p["max_abs_diff"] < 0.1, p
            assert p["top1_agreement"] >= 0.75, p
            assert abs(p["top1_artifact"] - p["top1_fp32_pytorch"]) <= 100 * 3 / 12, p
    for sq, sf in zip(q["stages"], f["stages"], strict=True):  # stages are int8 like the levels
        for fmt in ("tflite", "pte"):
            a, b = sq["files"][fmt], sf["files"][fmt]
            assert a["precision"] == "int8-dynamic" and a["bytes"] < 0.6 * b["bytes"], (sq["name"], fmt)
            p = a["parity"]
            assert 1e-6 < p["max_abs_diff"] < 0.1, p
            # the whole int8 chain vs fp32 PyTorch: recorded (token selection may pick differently)
            assert 0.0 <= p["chain_top1_agreement"] <= 1.0 and p["chain_max_abs_diff"] > 1e-6, p
            assert b["parity"]["chain_max_abs_diff"] <= 1e-4


def test_int8_dynamic_runs_through_runtime(dynamic_bundle, fp32_bundle):
    """Both formats load and dispatch; their logits track fp32's on the same input."""
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for backend in ("litert", "executorch"):
        q = Dispatcher(Bundle.open(dynamic_bundle), backend=backend, threads=1, policy="fixed:dense")
        f = Dispatcher(Bundle.open(fp32_bundle), backend=backend, threads=1, policy="fixed:dense")
        lq, lf = q.levels["dense"].run(x).reshape(-1), f.levels["dense"].run(x).reshape(-1)
        assert np.corrcoef(lq, lf)[0, 1] > 0.95, (backend, lq, lf)
        assert np.abs(lq - lf).max() < 0.1


def test_int8_static_tflite_keeps_float_io(tmp_path_factory, two_level, checkpoint, cifar_archive):
    out = _convert(tmp_path_factory, two_level, checkpoint, cifar_archive, formats=("tflite",),
                   quantize="int8-static", calibration_samples=16)
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "int8-static"
    d = Dispatcher(Bundle.open(out), backend="litert", threads=1)  # float32 in, float32 out
    pred = d.predict(np.full((32, 32, 3), 120, np.uint8))
    assert pred.logits.dtype == np.float32 and np.isfinite(pred.logits).all()
    for lv in m["levels"] + m["stages"]:  # stages are calibrated on the chain's own inputs
        p = lv["files"]["tflite"]["parity"]
        assert lv["files"]["tflite"]["precision"] == "int8-static"
        assert p["top1_fp32_pytorch"] - p["top1_artifact"] <= STATIC_INT8_MAX_DROP
        assert p["max_abs_diff"] > 1e-5  # activations really are int8


def test_int8_static_needs_data(two_level, checkpoint, tmp_path):
    with pytest.raises(ConvertError, match="needs real calibration data"):
        convert_bundle(ConvertOptions(variant=two_level.name, variant_obj=two_level, out=tmp_path / "b",
                                      checkpoint=checkpoint, quantize="int8-static"))
    assert not (tmp_path / "b").exists()


def test_static_drop_refusal_names_the_drop():
    good = Artifact(path="simple.tflite", sha256="0" * 64, bytes=1, precision="int8-static",
                    parity={"top1_fp32_pytorch": 70.0, "top1_artifact": 68.5, "samples": 200})
    bad = dataclasses.replace(good, path="simple.pte",
                              parity={"top1_fp32_pytorch": 70.0, "top1_artifact": 61.0, "samples": 200})
    _check_static_drop({"tflite": good}, dataclasses.make_dataclass("V", ["name"])("athe-mini"), "simple")
    with pytest.raises(ConvertError, match=r"int8-static simple.pte loses 9.0 top-1 points .*61.0 vs 70.0 % on 200"):
        _check_static_drop({"tflite": good, "pte": bad}, dataclasses.make_dataclass("V", ["name"])("athe-mini"),
                           "simple")

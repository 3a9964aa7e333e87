"""Hostile input (issue 15): every refusal is one line naming the field, option or file; no
traceback, no silent wrong number, no unbounded read, nothing already written lost.

Torch-free and fast: bundles are hand-written manifests over tiny placeholder artifacts, runs
use a fake backend (``load_backend`` patched), signals go to a subprocess running the real CLI
with that fake backend. Cases that need a change outside this module's owner's files (the
dispatcher's tensor checks, ``athe convert``'s options) run once that change is in the tree.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from athe.cli import cli, is_user_error
from athe.pi_runner import inputs as runner_inputs
from athe.runtime import dispatcher as dispatcher_module
from athe.runtime import readers, routing
from athe.runtime.bundle import Bundle, BundleError
from athe.runtime.manifest import (
    MAX_INPUT_SIZE,
    NEVER_THRESHOLD,
    InputSpec,
    Manifest,
    ManifestError,
)
from athe.runtime.preprocess import ImageError, Preprocessor, decode

REPO = Path(__file__).resolve().parents[1]
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LEVELS = ["simple", "complex", "dense"]
#: Words of a fix or of what was expected, one of which every refusal carries.
FIX_WORDS = ("re-run", "re-convert", "expected", "must", "use ", "give", "pass", "pick", "copy",
             "write", "convert", "refus", "name")


# -- a bundle written by hand ----------------------------------------------------------------
def _artifact(folder: Path, name: str) -> dict[str, Any]:
    data = (name.encode() + b"-placeholder ") * 40
    (folder / name).write_bytes(data)
    return {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "precision": "fp32", "parity": {}, "delegation": None}


def manifest_dict(folder: Path, stages: bool = True) -> dict[str, Any]:
    """A valid schema-2 manifest (router, three levels, two stages) with its artifacts written."""
    folder.mkdir(parents=True, exist_ok=True)
    levels = [{"name": n, "keep": [[1, 0.5]] if i < 2 else [], "heads": 3, "fuse": i < 2,
               "tokens_per_block": [65, 34], "macs": 1000 * (i + 1),
               "files": {"tflite": _artifact(folder, f"{n}.tflite")}, "val_accuracy": 70.0}
              for i, n in enumerate(LEVELS)]
    d: dict[str, Any] = {
        "schema_version": 2, "variant": "test-mini", "created_with": {"athe": "test"},
        "checkpoint": {}, "random_weights": False, "precision": "fp32",
        "input": {"rule": "resize_shorter_center_crop", "resize_size": 32, "crop_size": 32,
                  "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                  "layout": "NCHW", "dtype": "float32", "scale": 1 / 255, "batch_size": 1},
        "labels": list(LABELS), "levels": levels,
        "router": {"files": {"tflite": _artifact(folder, "router.tflite")}, "outputs": list(LEVELS),
                   "thresholds": {"simple": 0.6, "complex": 0.5}, "input_size": 32, "macs": 100,
                   "calibration_target": {}, "accuracy": 70.0},
        "calibration": None, "stages": [],
    }
    if stages:
        d["stages"] = [
            {"name": "s1", "blocks": [0, 2], "keep": 1.0, "fuse": False, "heads": 3, "tokens": 65,
             "macs": 500, "inputs": ["image"], "outputs": ["tokens", "logits"], "token_selection": "none",
             "files": {"tflite": _artifact(folder, "stage-s1.tflite")},
             "gate": {"kind": "logistic", "features": ["max_prob", "margin", "entropy"],
                      "mean": [0.5, 0.3, 1.0], "std": [0.2, 0.2, 0.5], "weights": [1.0, 0.5, -0.5],
                      "bias": 0.1, "auroc": 0.8},
             "threshold": 0.8, "val_accuracy": None},
            {"name": "s2", "blocks": [2, 4], "keep": 1.0, "fuse": False, "heads": 3, "tokens": 65,
             "macs": 500, "inputs": ["tokens"], "outputs": ["logits"], "token_selection": "none",
             "files": {"tflite": _artifact(folder, "stage-s2.tflite")}, "gate": None, "threshold": None,
             "val_accuracy": None},
        ]
    return d


def write_manifest(folder: Path, d: Any) -> Path:
    (folder / "manifest.json").write_text(json.dumps(d))  # NaN / Infinity written as JSON accepts them
    return folder


def _at(d: Any, path: str) -> tuple[Any, Any]:
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        d = d[k]
    return d, keys[-1]


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        parent, key = _at(d, path)
        parent[key] = copy.deepcopy(value)
    return edit


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        parent, key = _at(d, path)
        del parent[key]
    return edit


def both(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        for e in edits:
            e(d)
    return edit


NAN, INF = float("nan"), float("inf")
LOGISTIC = "stages.0.gate"

#: (case id, edit of the valid manifest, text the message must contain: the field's name)
MANIFEST_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("version-string", put("schema_version", "2"), "schema_version"),
    ("version-bool", put("schema_version", True), "schema_version"),
    ("version-3", put("schema_version", 3), "schema_version"),
    ("variant-int", put("variant", 5), "variant"),
    ("variant-empty", put("variant", ""), "variant"),
    ("variant-missing", drop("variant"), "variant"),
    ("created-with-list", put("created_with", []), "created_with"),
    ("checkpoint-string", put("checkpoint", "x"), "checkpoint"),
    ("random-weights-string", put("random_weights", "false"), "random_weights"),
    ("random-weights-int", put("random_weights", 0), "random_weights"),
    ("random-weights-null", put("random_weights", None), "random_weights"),
    ("precision-fp16", put("precision", "fp16"), "precision"),
    ("precision-int", put("precision", 1), "precision"),
    ("calibration-string", put("calibration", "x"), "calibration"),
    ("input-string", put("input", "x"), "input"),
    ("input-missing", drop("input"), "input"),
    ("resize-60000", put("input.resize_size", 60000), "input.resize_size"),
    ("resize-4097", put("input.resize_size", MAX_INPUT_SIZE + 1), "input.resize_size"),
    ("resize-0", put("input.resize_size", 0), "input.resize_size"),
    ("resize-negative", put("input.resize_size", -1), "input.resize_size"),
    ("resize-string", put("input.resize_size", "12"), "input.resize_size"),
    ("resize-float", put("input.resize_size", 32.5), "input.resize_size"),
    ("resize-bool", put("input.resize_size", True), "input.resize_size"),
    ("resize-huge-int", put("input.resize_size", 10**30), "input.resize_size"),
    ("resize-null", put("input.resize_size", None), "input.resize_size"),
    ("crop-5000", put("input.crop_size", 5000), "input.crop_size"),
    ("crop-0", put("input.crop_size", 0), "input.crop_size"),
    ("crop-null", put("input.crop_size", None), "input.crop_size"),
    ("crop-list", put("input.crop_size", [32]), "input.crop_size"),
    ("interpolation-lanczos", put("input.interpolation", "lanczos"), "interpolation"),
    ("interpolation-int", put("input.interpolation", 3), "interpolation"),
    ("mean-2-values", put("input.mean", [0.5, 0.5]), "input.mean"),
    ("mean-4-values", put("input.mean", [0.5] * 4), "input.mean"),
    ("mean-string", put("input.mean", "0.5"), "input.mean"),
    ("mean-nan", put("input.mean", [NAN, 0.5, 0.5]), "input.mean[0]"),
    ("mean-inf", put("input.mean", [0.5, INF, 0.5]), "input.mean[1]"),
    ("mean-text", put("input.mean", [0.5, 0.5, "a"]), "input.mean[2]"),
    ("std-zero", put("input.std", [0, 0.25, 0.25]), "input.std[0]"),
    ("std-negative", put("input.std", [0.25, -1, 0.25]), "input.std[1]"),
    ("std-nan", put("input.std", [0.25, 0.25, NAN]), "input.std[2]"),
    ("std-2-values", put("input.std", [0.25, 0.25]), "input.std"),
    ("std-null", put("input.std", None), "input.std"),
    ("scale-zero", put("input.scale", 0), "input.scale"),
    ("scale-negative", put("input.scale", -1 / 255), "input.scale"),
    ("scale-nan", put("input.scale", NAN), "input.scale"),
    ("scale-string", put("input.scale", "x"), "input.scale"),
    ("scale-5", put("input.scale", 5), "input.scale"),
    ("layout-chw", put("input.layout", "CHW"), "input.layout"),
    ("dtype-float16", put("input.dtype", "float16"), "input.dtype"),
    ("batch-size-0", put("input.batch_size", 0), "input.batch_size"),
    ("batch-size-string", put("input.batch_size", "1"), "input.batch_size"),
    ("rule-unknown", put("input.rule", "stretch"), "input.rule"),
    ("input-unknown-field", put("input.gamma", 2.2), "gamma"),
    ("input-mean-missing", drop("input.mean"), "mean"),
    ("labels-string", put("labels", "airplane,automobile"), "labels"),
    ("labels-dict", put("labels", {"0": "airplane"}), "labels"),
    ("labels-ints", put("labels", list(range(10))), "labels[0]"),
    ("labels-repeat", put("labels", ["cat", "cat", *LABELS[2:]]), "labels"),
    ("labels-empty-string", put("labels.3", ""), "labels[3]"),
    ("labels-null", put("labels", None), "labels"),
    ("labels-nested", put("labels.0", ["a"]), "labels[0]"),
    ("levels-object", put("levels", {}), "levels"),
    ("levels-empty", put("levels", []), "levels"),
    ("level-string", put("levels.0", "x"), "levels[0]"),
    ("level-name-int", put("levels.0.name", 5), "levels[0].name"),
    ("level-name-empty", put("levels.0.name", ""), "levels[0].name"),
    ("level-name-router", both(put("levels.0.name", "router"),
                               put("router.outputs", ["router", "complex", "dense"])), "router"),
    ("level-name-comma", put("levels.0.name", "a,b"), "levels[0].name"),
    ("level-name-space", put("levels.1.name", "com plex"), "levels[1].name"),
    ("level-names-repeat", both(put("levels.1.name", "simple"),
                                put("router.outputs", ["simple", "simple", "dense"])), "repeat"),
    ("level-keep-string", put("levels.0.keep", "x"), "levels[0].keep"),
    ("level-keep-single", put("levels.0.keep", [[1]]), "levels[0].keep[0]"),
    ("level-keep-ratio-1.5", put("levels.0.keep", [[1, 1.5]]), "levels[0].keep[0][1]"),
    ("level-keep-ratio-0", put("levels.0.keep", [[1, 0]]), "levels[0].keep[0][1]"),
    ("level-keep-ratio-nan", put("levels.0.keep", [[1, NAN]]), "levels[0].keep[0][1]"),
    ("level-keep-block-string", put("levels.0.keep", [["a", 0.5]]), "levels[0].keep[0][0]"),
    ("level-heads-0", put("levels.0.heads", 0), "levels[0].heads"),
    ("level-heads-string", put("levels.0.heads", "3"), "levels[0].heads"),
    ("level-fuse-string", put("levels.0.fuse", "yes"), "levels[0].fuse"),
    ("level-fuse-int", put("levels.0.fuse", 1), "levels[0].fuse"),
    ("level-tokens-string", put("levels.0.tokens_per_block", "65"), "levels[0].tokens_per_block"),
    ("level-tokens-zero", put("levels.0.tokens_per_block", [0]), "levels[0].tokens_per_block[0]"),
    ("level-macs-negative", put("levels.0.macs", -1), "levels[0].macs"),
    ("level-macs-string", put("levels.0.macs", "1000"), "levels[0].macs"),
    ("level-macs-float", put("levels.0.macs", 1.5), "levels[0].macs"),
    ("level-accuracy-150", put("levels.0.val_accuracy", 150), "levels[0].val_accuracy"),
    ("level-accuracy-string", put("levels.0.val_accuracy", "high"), "levels[0].val_accuracy"),
    ("level-files-empty", put("levels.0.files", {}), "levels[0].files"),
    ("level-files-string", put("levels.0.files", "x"), "levels[0].files"),
    ("level-files-onnx", put("levels.0.files.onnx", {"path": "x", "sha256": "0" * 64, "bytes": 1}),
     "onnx"),
    ("level-missing-heads", drop("levels.0.heads"), "heads"),
    ("sha256-int", put("levels.0.files.tflite.sha256", 123), "levels[0].files.tflite.sha256"),
    ("sha256-short", put("levels.0.files.tflite.sha256", "abc"), "levels[0].files.tflite.sha256"),
    ("sha256-not-hex", put("levels.1.files.tflite.sha256", "z" * 64), "levels[1].files.tflite.sha256"),
    ("sha256-missing", drop("levels.1.files.tflite.sha256"), "sha256"),
    ("bytes-string", put("levels.0.files.tflite.bytes", "12"), "levels[0].files.tflite.bytes"),
    ("bytes-negative", put("levels.0.files.tflite.bytes", -5), "levels[0].files.tflite.bytes"),
    ("bytes-zero", put("levels.0.files.tflite.bytes", 0), "levels[0].files.tflite.bytes"),
    ("bytes-float", put("levels.0.files.tflite.bytes", 1.5), "levels[0].files.tflite.bytes"),
    ("bytes-bool", put("levels.0.files.tflite.bytes", True), "levels[0].files.tflite.bytes"),
    ("path-int", put("levels.0.files.tflite.path", 5), "levels[0].files.tflite.path"),
    ("path-empty", put("levels.0.files.tflite.path", ""), "levels[0].files.tflite.path"),
    ("path-absolute", put("levels.0.files.tflite.path", "/etc/passwd"), "relative"),
    ("path-escapes", put("levels.0.files.tflite.path", "../x.tflite"), "relative"),
    ("path-nul", put("levels.0.files.tflite.path", "a\x00b"), "levels[0].files.tflite.path"),
    ("path-dot", put("levels.0.files.tflite.path", "."), "levels[0].files.tflite.path"),
    ("artifact-precision", put("levels.0.files.tflite.precision", "int4"), "precision"),
    ("artifact-parity-string", put("levels.0.files.tflite.parity", "x"), "parity"),
    ("artifact-delegation-int", put("levels.0.files.tflite.delegation", 5), "delegation"),
    ("artifact-unknown-field", put("levels.0.files.tflite.surprise", 1), "surprise"),
    ("artifact-string", put("levels.0.files.tflite", "simple.tflite"), "levels[0].files.tflite"),
    ("router-string", put("router", "x"), "router"),
    ("router-outputs-string", put("router.outputs", "simple"), "router.outputs"),
    ("router-outputs-ints", put("router.outputs", [1, 2, 3]), "router.outputs"),
    ("router-outputs-order", put("router.outputs", ["complex", "simple", "dense"]), "router.outputs"),
    ("threshold-1.5", put("router.thresholds.simple", 1.5), "router.thresholds.simple"),
    ("threshold-negative", put("router.thresholds.simple", -0.5), "router.thresholds.simple"),
    ("threshold-nan", put("router.thresholds.complex", NAN), "router.thresholds.complex"),
    ("threshold-inf", put("router.thresholds.complex", INF), "router.thresholds.complex"),
    ("threshold-string", put("router.thresholds.simple", "0.5"), "router.thresholds.simple"),
    ("threshold-bool", put("router.thresholds.simple", True), "router.thresholds.simple"),
    ("threshold-huge-int", put("router.thresholds.simple", 10**400), "router.thresholds.simple"),
    ("threshold-near-never", put("router.thresholds.simple", 1e9 + 1), "router.thresholds.simple"),
    ("thresholds-list", put("router.thresholds", [0.5]), "router.thresholds"),
    ("thresholds-lacking", drop("router.thresholds.complex"), "router.thresholds"),
    ("thresholds-richest", put("router.thresholds.dense", 0.5), "dense"),
    ("thresholds-unknown", put("router.thresholds.medium", 0.5), "medium"),
    ("router-input-size", put("router.input_size", 64), "router.input_size"),
    ("router-input-size-0", put("router.input_size", 0), "router.input_size"),
    ("router-macs-string", put("router.macs", "x"), "router.macs"),
    ("router-accuracy-500", put("router.accuracy", 500), "router.accuracy"),
    ("router-calibration-target", put("router.calibration_target", 5), "calibration_target"),
    ("router-missing-files", drop("router.files"), "files"),
    ("stages-string", put("stages", "x"), "stages"),
    ("stage-string", put("stages.0", "x"), "stages[0]"),
    ("stage-names-repeat", put("stages.1.name", "s1"), "repeat"),
    ("stage-name-router", put("stages.0.name", "router"), "router"),
    ("stage-name-int", put("stages.0.name", 5), "stages[0].name"),
    ("stage-blocks-short", put("stages.0.blocks", [0]), "stages[0].blocks"),
    ("stage-blocks-reversed", put("stages.0.blocks", [2, 1]), "stages[0].blocks[1]"),
    ("stage-blocks-string", put("stages.0.blocks", ["a", 2]), "stages[0].blocks[0]"),
    ("stage-blocks-gap", put("stages.1.blocks", [3, 4]), "stages[1].blocks"),
    ("stage-keep-0", put("stages.0.keep", 0), "stages[0].keep"),
    ("stage-keep-2", put("stages.0.keep", 2), "stages[0].keep"),
    ("stage-fuse-string", put("stages.0.fuse", "no"), "stages[0].fuse"),
    ("stage-heads-0", put("stages.0.heads", 0), "stages[0].heads"),
    ("stage-tokens-0", put("stages.0.tokens", 0), "stages[0].tokens"),
    ("stage-macs-negative", put("stages.0.macs", -1), "stages[0].macs"),
    ("stage-inputs-unknown", put("stages.0.inputs", ["pixels"]), "stages[0].inputs"),
    ("stage-inputs-string", put("stages.0.inputs", "image"), "stages[0].inputs"),
    ("stage-inputs-empty", put("stages.0.inputs", []), "stages[0].inputs"),
    ("stage-inputs-twice", put("stages.0.inputs", ["image", "image"]), "stages[0].inputs"),
    ("stage-outputs-no-logits", put("stages.0.outputs", ["tokens"]), "stages[0].outputs"),
    ("stage-first-reads-tokens", put("stages.0.inputs", ["tokens"]), "stages[0].inputs"),
    ("stage-reads-missing", put("stages.1.inputs", ["scores"]), "stages[1].inputs"),
    ("stage-token-selection", put("stages.0.token_selection", "all"), "stages[0].token_selection"),
    ("stage-threshold-1.5", put("stages.0.threshold", 1.5), "stages[0].threshold"),
    ("stage-threshold-nan", put("stages.0.threshold", NAN), "stages[0].threshold"),
    ("stage-threshold-string", put("stages.0.threshold", "0.5"), "stages[0].threshold"),
    ("stage-threshold-null", put("stages.0.threshold", None), "stages[0]"),
    ("stage-gate-null", put("stages.0.gate", None), "stages[0]"),
    ("gate-kind", put(f"{LOGISTIC}.kind", "svm"), "stages[0].gate.kind"),
    ("gate-features-string", put(f"{LOGISTIC}.features", "max_prob"), "stages[0].gate.features"),
    ("gate-features-unknown", put(f"{LOGISTIC}.features", ["bogus", "margin", "entropy"]),
     "stages[0].gate.features"),
    ("gate-lengths", put(f"{LOGISTIC}.mean", [0.5]), "stages[0].gate"),
    ("gate-std-zero", put(f"{LOGISTIC}.std", [0.2, 0, 0.5]), "stages[0].gate.std"),
    ("gate-weights-nan", put(f"{LOGISTIC}.weights", [NAN, 0.5, -0.5]), "stages[0].gate.weights[0]"),
    ("gate-bias-string", put(f"{LOGISTIC}.bias", "x"), "stages[0].gate.bias"),
    ("gate-weights-vs-features", put(f"{LOGISTIC}.features", ["max_prob", "margin"]), "stages[0].gate"),
    ("gate-auroc-2", put(f"{LOGISTIC}.auroc", 2), "stages[0].gate.auroc"),
    ("gate-cls-without-tokens", both(put(f"{LOGISTIC}.features", ["max_prob", "cls"]),
                                     put("stages.0.outputs", ["logits"]),
                                     put("stages.1.inputs", ["image"])), "stages[0]"),
    ("gate-cls-not-last", put(f"{LOGISTIC}.features", ["cls", "max_prob", "margin"]), "stages[0].gate"),
    ("stage-accuracy-negative", put("stages.1.val_accuracy", -1), "stages[1].val_accuracy"),
    ("stage-missing-outputs", drop("stages.1.outputs"), "outputs"),
]


def _message_ok(message: str, field: str) -> None:
    assert "\n" not in message.strip(), message
    assert field in message, f"{field!r} not named in: {message}"
    assert any(w in message for w in FIX_WORDS), f"no fix in: {message}"


def test_the_base_manifest_is_valid(tmp_path: Path) -> None:
    folder = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b"))
    bundle = Bundle.open(folder)
    assert bundle.stage_names == ["s1", "s2"] and bundle.level_names == LEVELS
    assert Manifest.from_dict(json.loads(bundle.manifest.dumps())) == bundle.manifest


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.5, NEVER_THRESHOLD])
def test_router_threshold_edges_and_never_are_accepted(tmp_path: Path, value: float) -> None:
    """Calibration writes ``routing.NEVER`` for a level it never takes: the one value beyond 1."""
    assert NEVER_THRESHOLD == routing.NEVER
    d = manifest_dict(tmp_path / "b")
    d["router"]["thresholds"]["simple"] = value
    assert Bundle.open(write_manifest(tmp_path / "b", d)).thresholds["simple"] == value


@pytest.mark.parametrize("case,edit,field", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_manifest_field_is_refused_naming_it(tmp_path: Path, case: str, edit: Callable, field: str) -> None:
    d = manifest_dict(tmp_path / "b")
    edit(d)
    folder = write_manifest(tmp_path / "b", d)
    with pytest.raises(BundleError) as info:
        Bundle.open(folder)
    _message_ok(str(info.value), field)
    assert isinstance(info.value.__cause__, ManifestError)


# -- the manifest file itself ------------------------------------------------------------------
def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


MANIFEST_FILE_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("directory", lambda m: m.mkdir(), "directory"),
    ("symlink-loop", lambda m: m.symlink_to(m.name), "symlink loop"),
    ("dangling-symlink", lambda m: m.symlink_to("nowhere.json"), "not found"),
    ("fifo", lambda m: os.mkfifo(m), "FIFO"),
    ("dev-null", lambda m: m.symlink_to("/dev/null"), "character device"),
    ("dev-zero", lambda m: m.symlink_to("/dev/zero"), "character device"),
    ("huge", lambda m: m.write_bytes(b" " * (16 * 2**20 + 1)), "limit"),
    ("deep-100000", lambda m: m.write_text(_deep_json(100_000)), "deeply"),
    ("deep-object", lambda m: m.write_text('{"a":' * 50_000 + "1" + "}" * 50_000), "deeply"),
    ("not-utf8", lambda m: m.write_bytes(b'{"variant": "\xff\xfe"}'), "UTF-8"),
    ("empty", lambda m: m.write_bytes(b""), "not valid JSON"),
    ("garbage", lambda m: m.write_bytes(os.urandom(64).replace(b"{", b"x")), "manifest.json"),
    ("top-level-list", lambda m: m.write_text("[]"), "top level"),
    ("top-level-null", lambda m: m.write_text("null"), "top level"),
    ("huge-integer", lambda m: m.write_text('{"schema_version": ' + "9" * 5000 + "}"), "manifest.json"),
]


@pytest.mark.parametrize("case,make,text", MANIFEST_FILE_CASES, ids=[c[0] for c in MANIFEST_FILE_CASES])
def test_manifest_file_is_refused_cleanly(tmp_path: Path, case: str, make: Callable, text: str) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    make(folder / "manifest.json")
    with pytest.raises(BundleError) as info:
        Bundle.open(folder)
    assert text in str(info.value) and "\n" not in str(info.value)


ARTIFACT_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("fifo", lambda p: (p.unlink(), os.mkfifo(p)), "FIFO"),
    ("directory", lambda p: (p.unlink(), p.mkdir()), "directory"),
    ("symlink-loop", lambda p: (p.unlink(), p.symlink_to(p.name)), "symlink loop"),
    ("dev-zero", lambda p: (p.unlink(), p.symlink_to("/dev/zero")), "character device"),
    ("missing", lambda p: p.unlink(), "missing"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:10]), "truncated"),
    ("tampered", lambda p: p.write_bytes(p.read_bytes()[::-1]), "sha256"),
]


@pytest.mark.parametrize("case,make,text", ARTIFACT_CASES, ids=[c[0] for c in ARTIFACT_CASES])
def test_artifact_that_is_not_a_regular_file_is_refused(tmp_path: Path, case: str, make: Callable,
                                                       text: str) -> None:
    folder = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b"))
    make(folder / "complex.tflite")
    with pytest.raises(BundleError) as info:
        Bundle.open(folder)
    assert text in str(info.value) and "complex.tflite" in str(info.value)


@pytest.mark.parametrize("path,formats,text", [
    (123, None, "folder path"), ("", None, "folder path"), (None, None, "folder path"),
    ("OK", "tflite", "list of format names"), ("OK", [1], "list of format names"),
    ("OK", ["onnx"], "unknown format"),
])
def test_bundle_open_api_refuses_bad_arguments(tmp_path: Path, path: Any, formats: Any, text: str) -> None:
    if path == "OK":
        path = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b"))
    with pytest.raises(BundleError, match=text):
        Bundle.open(path, formats=formats)


# -- input spec in code --------------------------------------------------------------------------
def _spec(**kw: Any) -> InputSpec:
    base = {"rule": "resize_shorter_center_crop", "resize_size": 32, "crop_size": 32,
            "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    return InputSpec(**{**base, **kw})


@pytest.mark.parametrize("kw,field", [
    ({"resize_size": 60000}, "resize_size"), ({"resize_size": 0}, "resize_size"),
    ({"crop_size": 10_000}, "crop_size"), ({"crop_size": -3}, "crop_size"),
    ({"mean": (NAN, 0.5, 0.5)}, "mean[0]"), ({"mean": (0.5, 0.5)}, "mean"),
    ({"std": (0.0, 0.25, 0.25)}, "std[0]"), ({"std": (0.25, INF, 0.25)}, "std[1]"),
    ({"scale": 0.0}, "scale"), ({"scale": NAN}, "scale"), ({"batch_size": 0}, "batch_size"),
    ({"interpolation": "lanczos"}, "interpolation 'lanczos' unknown"),
    ({"rule": "stretch"}, "rule"), ({"layout": "CHW"}, "layout"), ({"dtype": "float16"}, "dtype"),
])
def test_preprocessor_refuses_a_bad_input_spec(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        Preprocessor(_spec(**kw))
    assert field in str(info.value)
    assert type(info.value) in (ValueError, ManifestError)


@pytest.mark.parametrize("bad", ["x", None, {"resize_size": 32}])
def test_preprocessor_needs_an_input_spec(bad: Any) -> None:
    with pytest.raises(ValueError, match="InputSpec"):
        Preprocessor(bad)


# -- images: bounded reads, bounded pixel buffers ------------------------------------------------
def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _float_tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(buf, format="TIFF")
    return buf.getvalue()


@pytest.fixture()
def pre() -> Preprocessor:
    return Preprocessor(_spec())


IMAGE_CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("fifo", lambda d: (os.mkfifo(d / "x.png"), d / "x.png")[1], "FIFO"),
    ("dev-zero", lambda d: "/dev/zero", "character device"),
    ("dev-null", lambda d: "/dev/null", "character device"),
    ("symlink-to-dev-zero", lambda d: ((d / "z.png").symlink_to("/dev/zero"), d / "z.png")[1],
     "character device"),
    ("symlink-loop", lambda d: ((d / "l.png").symlink_to("l.png"), d / "l.png")[1], "symlink loop"),
    ("directory", lambda d: d, "directory"),
    ("missing", lambda d: d / "missing.png", "not found"),
    ("empty-file", lambda d: ((d / "e.png").write_bytes(b""), d / "e.png")[1], "empty"),
    ("garbage", lambda d: os.urandom(300), "cannot be decoded"),
    ("truncated-png", lambda d: _png((64, 64))[:60], "decoded"),
    ("strip-1x2000000", lambda d: _png((1, 2_000_000), "L"), "aspect ratio"),
    ("strip-2000000x1", lambda d: _png((2_000_000, 1), "L"), "aspect ratio"),
    ("float-tiff", lambda d: _float_tiff(), "floating-point"),
    ("float-pil", lambda d: Image.new("F", (8, 8)), "floating-point"),
    ("float-array", lambda d: np.zeros((8, 8, 3), np.float32), "uint8"),
    ("nan-array", lambda d: np.full((8, 8, 3), np.nan), "uint8"),
    ("empty-array", lambda d: np.zeros((0, 8, 3), np.uint8), "no pixels"),
    ("huge-array-shape", lambda d: np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (20_000, 20_000, 3),
                                                                  (0, 0, 0)), "exceeds"),
    ("5d-array", lambda d: np.zeros((2, 2, 2, 2, 2), np.uint8), "HxW"),
    ("an-int", lambda d: 5, "pass a path, bytes"),
    ("a-list", lambda d: [1, 2, 3], "pass a path, bytes"),
    ("nul-path", lambda d: "a\x00b.png", "a"),
]


@pytest.mark.parametrize("case,make,text", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_is_an_image_error(tmp_path: Path, pre: Preprocessor, case: str, make: Callable,
                                     text: str) -> None:
    image = make(tmp_path)
    start = time.monotonic()
    with pytest.raises(ImageError) as info:
        pre(image)
    assert text in str(info.value)
    assert time.monotonic() - start < 5  # bounded: never reads /dev/zero, never blocks on a FIFO


def test_oversized_image_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "MAX_IMAGE_BYTES", 1000)
    monkeypatch.setattr(sys.modules["athe.runtime.preprocess"], "MAX_IMAGE_BYTES", 1000)
    (tmp_path / "big.png").write_bytes(b"\0" * 5000)
    with pytest.raises(ImageError, match="more than the 1,000-byte limit"):
        decode(tmp_path / "big.png")


@pytest.mark.parametrize("max_pixels", [0, -1, 1.5, "80", True])
def test_max_pixels_must_be_a_positive_integer(max_pixels: Any) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode(_png((4, 4)), max_pixels=max_pixels)


def test_normal_images_still_work(pre: Preprocessor) -> None:
    x = pre(_png((40, 30)))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()
    assert pre(np.zeros((5, 7, 3), np.uint8)).shape == (1, 3, 32, 32)


# -- readers: bounded, strict archives, counted skips ----------------------------------------------
def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def twenty() -> dict[str, bytes]:
    return {f"train/{LABELS[i % 2]}/{i:02d}.png": _png((8 + i, 8)) for i in range(20)}


@pytest.mark.parametrize("fraction", [0.2, 0.45, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w", ".tar")])
def test_truncated_archive_is_an_error_not_fewer_images(tmp_path: Path, twenty: dict[str, bytes],
                                                        fraction: float, mode: str, suffix: str) -> None:
    full = _tar(tmp_path / f"full{suffix}", twenty, mode)
    assert len(readers.tar_image_names(full)) == 20
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    if mode == "w":  # cut inside the members, not in the zero padding after the end marker
        with tarfile.open(full) as tar:
            last = tar.getmembers()[-1]
        size = last.offset_data + last.size
    else:
        size = len(data)
    cut.write_bytes(data[: int(size * fraction)])
    with pytest.raises((tarfile.TarError, EOFError, OSError)) as info:
        readers.tar_image_names(cut)
    assert str(info.value)
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        list(readers.iter_tar_images(cut))


@pytest.mark.parametrize("blocks", [3, 6, 10])
def test_tar_cut_at_a_member_boundary_is_truncated(tmp_path: Path, blocks: int) -> None:
    full = _tar(tmp_path / "full.tar", {f"c/{i}.png": b"x" * 512 for i in range(10)}, "w")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[: 512 * 2 * blocks])  # header + one data block per member
    with pytest.raises(tarfile.ReadError, match="truncated"):
        readers.tar_image_names(cut)


def test_corrupt_member_header_is_an_error(tmp_path: Path) -> None:
    full = _tar(tmp_path / "full.tar", {f"c/{i}.png": b"x" * 512 for i in range(6)}, "w")
    data = bytearray(full.read_bytes())
    data[1024 * 3 + 10] ^= 0xFF  # the 4th member's header: bad checksum
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError, match="corrupt"):
        readers.tar_image_names(tmp_path / "bad.tar")


@pytest.mark.parametrize("case,make", [
    ("fifo", lambda p: os.mkfifo(p)), ("dev-zero", lambda p: p.symlink_to("/dev/zero")),
    ("dev-null", lambda p: p.symlink_to("/dev/null")), ("directory", lambda p: p.mkdir()),
])
def test_archive_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, case: str,
                                                               make: Callable) -> None:
    path = tmp_path / "data.tar.gz"
    make(path)
    start = time.monotonic()
    with pytest.raises(tarfile.ReadError, match="not a regular file"):
        readers.tar_image_names(path)
    assert time.monotonic() - start < 5


def test_oversized_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _tar(tmp_path / "a.tar", {"c/big.png": b"x" * 3000}, "w")
    monkeypatch.setattr(readers, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(tarfile.ReadError, match="big.png"):
        readers.read_tar_members(path, ["c/big.png"])


def test_listings_count_what_they_skip(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(_png((4, 4)))
    (root / "cat" / "b.gif").write_bytes(b"GIF89a")
    (root / "cat" / "notes.txt").write_text("x")
    os.mkfifo(root / "cat" / "pipe.png")
    (root / ".hidden.gif").write_bytes(b"GIF89a")
    listing = readers.list_folder(root)
    assert listing.nested == ("cat/a.png",)
    assert listing.skipped == ("cat/b.gif", "cat/notes.txt", "cat/pipe.png")
    tar = _tar(tmp_path / "a.tar", {"c/a.png": _png((4, 4)), "c/b.gif": b"GIF89a", "c/.x.gif": b"x"}, "w")
    assert readers.list_tar(tar).images == ("c/a.png",) and readers.list_tar(tar).skipped == ("c/b.gif",)


@pytest.mark.parametrize("target", ["/dev/null", "FILE", "FIFO"])
def test_list_folder_refuses_what_is_not_a_folder(tmp_path: Path, target: str) -> None:
    path: Path | str = target
    if target == "FILE":
        path = tmp_path / "f.txt"
        path.write_text("x")
    elif target == "FIFO":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    with pytest.raises(readers.ReadError, match="not a folder"):
        readers.list_folder(path)


@pytest.mark.parametrize("case", ["fifo", "dev-zero", "too-large"])
def test_read_regular_file_is_bounded(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x"
    if case == "fifo":
        os.mkfifo(path)
    elif case == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(b"x" * 100)
    with pytest.raises(readers.ReadError, match="refusing"):
        readers.read_regular_file(path, 10, what="thing")


# -- the CLI: every option validated when parsed ---------------------------------------------------
def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args)


def _one_line_error(result: Any, code: int, *texts: str) -> None:
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out and not (result.exception and not isinstance(result.exception, SystemExit)), out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    for text in texts:
        assert text in out, f"{text!r} not in {out!r}"


def _a_file(tmp: Path) -> str:
    path = tmp / "a-file.txt"
    path.write_text("x")
    return str(path)


#: (id, option, value, text the message must contain besides the option). Values may name the
#: placeholders FILE (a regular file) and LONG (a name of 300 characters).
RUN_OPTION_CASES: list[tuple[str, str, str, str]] = [
    ("threads-0", "--threads", "0", "threads"), ("threads-negative", "--threads", "-1", "threads"),
    ("threads-10000", "--threads", "10000", "4 x"), ("threads-too-many", "--threads", str(4 * (os.cpu_count() or 1) + 1), "4 x"),
    ("threads-text", "--threads", "abc", "abc"), ("threads-float", "--threads", "1.5", "1.5"),
    ("threads-empty", "--threads", "", "--threads"),
    ("thresholds-empty", "--thresholds", "", "empty"), ("thresholds-space", "--thresholds", "  ", "empty"),
    ("thresholds-comma", "--thresholds", ",", "empty"), ("thresholds-1.5", "--thresholds", "simple=1.5", "[0, 1]"),
    ("thresholds-negative", "--thresholds", "simple=-0.1", "[0, 1]"),
    ("thresholds-nan", "--thresholds", "simple=nan", "[0, 1]"), ("thresholds-inf", "--thresholds", "simple=inf", "[0, 1]"),
    ("thresholds-text", "--thresholds", "simple=x", "not a number"), ("thresholds-no-value", "--thresholds", "simple", "NAME=P"),
    ("thresholds-no-name", "--thresholds", "=0.5", "NAME=P"),
    ("thresholds-repeat", "--thresholds", "simple=0.5,simple=0.6", "twice"),
    ("thresholds-trailing-comma", "--thresholds", "simple=0.5,", "empty entry"),
    ("thresholds-double-comma", "--thresholds", "simple=0.5,,complex=0.2", "empty entry"),
    ("out-empty", "--out", "", "empty"), ("out-space", "--out", "   ", "empty"),
    ("out-proc", "--out", "/proc/athe-run", "/proc"), ("out-proc-root", "--out", "/proc", "/proc"),
    ("out-sys", "--out", "/sys/kernel/athe", "/sys"), ("out-dev-null", "--out", "/dev/null", "/dev"),
    ("out-dev", "--out", "/dev/athe", "/dev"), ("out-under-file", "--out", "FILE/sub", "which is a file"),
    ("out-is-file", "--out", "FILE", "not a folder"), ("out-long-name", "--out", "LONG", "at most 255"),
    ("out-long-path", "--out", "x/" * 2100, "at most 4095"), ("out-nul", "--out", "a\x00b", "NUL"),
    ("energy-empty", "--energy", "", "empty"), ("energy-estimate-bare", "--energy", "estimate", "watts"),
    ("energy-estimate-colon", "--energy", "estimate:", "watts"), ("energy-estimate-text", "--energy", "estimate:abc", "watts"),
    ("energy-estimate-negative", "--energy", "estimate:-1", "(0, 10000]"),
    ("energy-estimate-zero", "--energy", "estimate:0", "(0, 10000]"),
    ("energy-estimate-nan", "--energy", "estimate:nan", "(0, 10000]"),
    ("energy-estimate-inf", "--energy", "estimate:inf", "(0, 10000]"),
    ("energy-estimate-huge", "--energy", "estimate:1e9", "(0, 10000]"),
    ("energy-ina-text", "--energy", "ina219:abc", "BUS"), ("energy-ina-address-text", "--energy", "ina219:1:zz", "ADDR"),
    ("energy-ina-shunt-text", "--energy", "ina219:1:0x40:abc", "SHUNT_OHMS"),
    ("energy-ina-shunt-negative", "--energy", "ina219:1:0x40:-1", "SHUNT_OHMS"),
    ("energy-ina-too-many", "--energy", "ina219:1:0x40:0.1:9", "ina219[:BUS"),
    ("energy-ina-address-range", "--energy", "ina226:1:0x99", "0x03-0x77"),
    ("energy-ina-bus-negative", "--energy", "ina219:-1", "bus"),
    ("energy-ina-empty-part", "--energy", "ina219::0x40", "ina219[:BUS"),
    ("energy-ina260-shunt", "--energy", "ina260:1:0x40:0.1", "ina260[:BUS"),
    ("energy-csv-bare", "--energy", "csv", "csv:PATH"), ("energy-csv-colon", "--energy", "csv:", "csv:PATH"),
    ("energy-none-arg", "--energy", "none:x", "no argument"), ("energy-auto-arg", "--energy", "auto:1", "no argument"),
    ("energy-pmic-arg", "--energy", "pmic:3", "no argument"),
    ("shuffle-negative", "--shuffle", "-1", "-1"), ("shuffle-text", "--shuffle", "x", "x"),
    ("shuffle-float", "--shuffle", "1.5", "1.5"),
    ("seed-negative", "--seed", "-1", "-1"), ("seed-text", "--seed", "x", "x"),
    ("idle-nan", "--idle-seconds", "nan", "finite"), ("idle-inf", "--idle-seconds", "inf", "finite"),
    ("idle-negative", "--idle-seconds", "-1", "finite"), ("idle-huge", "--idle-seconds", "1e9", "finite"),
    ("idle-text", "--idle-seconds", "x", "x"),
    ("warmup-negative", "--warmup", "-1", "-1"), ("repeat-0", "--repeat", "0", "0"),
    ("limit-0", "--limit", "0", "0"), ("limit-negative", "--limit", "-5", "-5"),
    ("input-empty", "--input", "", "empty"), ("input-space", "--input", "  ", "empty"),
    ("input-nul", "--input", "a\x00b", "NUL"),
    ("backend-unknown", "--backend", "tflite", "litert"), ("split-unknown", "--split", "val", "test"),
]


def _value(value: str, tmp: Path) -> str:
    if value.startswith("FILE"):
        return _a_file(tmp) + value[4:]
    return str(tmp / ("n" * 300)) if value == "LONG" else value


def _run_args(tmp: Path, option: str, value: str, command: str = "measure") -> list[str]:
    base = {"--input": str(tmp / "in.png"), "--energy": "none", "--out": str(tmp / "out")}
    base[option] = _value(value, tmp)
    args = ["run", command, *((str(tmp / "b"),) if command == "measure" else (str(tmp / "b"), str(tmp / "c")))]
    for k, v in base.items():
        args += [k, v]
    if option not in base:
        args += [option, _value(value, tmp)]
    return args


@pytest.mark.parametrize("case,option,value,text", RUN_OPTION_CASES, ids=[c[0] for c in RUN_OPTION_CASES])
def test_run_option_is_validated_when_parsed(tmp_path: Path, case: str, option: str, value: str,
                                             text: str) -> None:
    result = _invoke(_run_args(tmp_path, option, value))
    _one_line_error(result, 2, option, text)
    assert not (tmp_path / "out").exists()  # refused before anything is written


COMPARE_CASES = [c for c in RUN_OPTION_CASES if c[0] in {
    "threads-10000", "thresholds-empty", "thresholds-repeat", "thresholds-1.5", "out-proc", "out-under-file",
    "energy-estimate-text", "shuffle-negative", "idle-nan", "input-empty"}]


@pytest.mark.parametrize("case,option,value,text", COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
def test_compare_option_is_validated_when_parsed(tmp_path: Path, case: str, option: str, value: str,
                                                 text: str) -> None:
    _one_line_error(_invoke(_run_args(tmp_path, option, value, "compare")), 2, option, text)


DEMO_CASES = [
    ("threads-0", ["--threads", "0"], "--threads"), ("threads-10000", ["--threads", "10000"], "--threads"),
    ("threads-text", ["--threads", "x"], "--threads"), ("bundle-empty", ["--bundle", ""], "--bundle"),
    ("bundle-file", ["--bundle", "FILE"], "--bundle"), ("bundle-proc", ["--bundle", "/proc/demo"], "--bundle"),
    ("limit-0", ["--limit", "0"], "--limit"),
]


@pytest.mark.parametrize("case,args,option", DEMO_CASES, ids=[c[0] for c in DEMO_CASES])
def test_demo_option_is_validated_when_parsed(tmp_path: Path, case: str, args: list[str], option: str) -> None:
    args = [_value(a, tmp_path) for a in args]
    _one_line_error(_invoke(["demo", *args]), 2, option)


@pytest.mark.parametrize("port", ["70000", "-1", "x"])
def test_demo_serve_port_is_validated(tmp_path: Path, port: str) -> None:
    _one_line_error(_invoke(["demo", "serve", "--bundle", str(tmp_path), "--port", port]), 2, "--port")


TRAIN_CASES = [
    ("epochs-0", ["--epochs", "0"], "--epochs"), ("batch-size-0", ["--batch-size", "0"], "--batch-size"),
    ("lr-nan", ["--lr", "nan"], "--lr"), ("lr-negative", ["--lr", "-1"], "--lr"), ("lr-inf", ["--lr", "inf"], "--lr"),
    ("workers-negative", ["--workers", "-1"], "--workers"), ("limit-0", ["--limit", "0"], "--limit"),
    ("max-steps-0", ["--max-steps", "0"], "--max-steps"), ("seed-negative", ["--seed", "-1"], "--seed"),
    ("exit-weight-nan", ["--exit-weight", "nan"], "--exit-weight"),
    ("exit-weight-negative", ["--exit-weight", "-1"], "--exit-weight"),
    ("mix-prob-2", ["--mix-prob", "2"], "--mix-prob"), ("cheap-levels-negative", ["--cheap-levels-per-step", "-1"],
                                                          "--cheap-levels-per-step"),
    ("out-empty", ["--out", ""], "--out"), ("out-proc", ["--out", "/proc/train"], "--out"),
    ("out-under-file", ["--out", "FILE/run"], "--out"),
]


@pytest.mark.parametrize("case,args,option", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_backbone_option_is_validated_when_parsed(tmp_path: Path, case: str, args: list[str],
                                                        option: str) -> None:
    base = {"--variant": "athe-mini", "--out": str(tmp_path / "run")}
    args = [_value(a, tmp_path) for a in args]
    full = ["train", "backbone"] + [x for k, v in base.items() if k not in args for x in (k, v)] + args
    _one_line_error(_invoke(full), 2, option)


@pytest.mark.parametrize("args,option", [
    (["--epochs", "0"], "--epochs"), (["--delta", "nan"], "--delta"), (["--delta", "-1"], "--delta"),
    (["--delta", "inf"], "--delta"), (["--out", "/proc/r"], "--out"), (["--out", ""], "--out"),
])
def test_train_router_option_is_validated_when_parsed(tmp_path: Path, args: list[str], option: str) -> None:
    _one_line_error(_invoke(["train", "router", "--backbone", str(tmp_path), *args]), 2, option)


@pytest.mark.parametrize("content,text", [
    (b"root:x:0:0:root:/root:/bin/bash\n", "is not a"),  # e.g. --backbone /etc/passwd
    (b"", "is not a"),
])
def test_train_router_refuses_a_file_that_is_no_checkpoint(tmp_path: Path, content: bytes, text: str) -> None:
    bad = tmp_path / "last.pt"
    bad.write_bytes(content)
    _one_line_error(_invoke(["train", "router", "--backbone", str(bad)]), 1, text, "athe train")


def test_train_router_refuses_a_checkpoint_that_is_no_backbone_run(tmp_path: Path) -> None:
    import torch

    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "last.pt")
    _one_line_error(_invoke(["train", "router", "--backbone", str(tmp_path / "last.pt")]), 1,
                    "not a backbone run's last.pt")


@pytest.mark.parametrize("args,option", [
    (["--budget", "0"], "--budget"), (["--budget", "1.5"], "--budget"), (["--delta", "nan"], "--delta"),
    (["--z", "-1"], "--z"), (["--latency-from", "/nonexistent"], "--latency-from"),
])
def test_train_gates_option_is_validated_when_parsed(tmp_path: Path, args: list[str], option: str) -> None:
    _one_line_error(_invoke(["train", "gates", str(tmp_path), *args]), 2, option)


def test_train_gates_names_the_missing_run_file(tmp_path: Path) -> None:
    _one_line_error(_invoke(["train", "gates", str(tmp_path)]), 1, "athe-checkpoint.pt not found")


# -- runs with a fake backend: library errors are one line, nothing written is lost --------------------
class FakeModel:
    def __init__(self, output: np.ndarray) -> None:
        self.output = output
        self.input_shape = (1, 3, 32, 32)
        self.output_shape = tuple(output.shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.output.copy()


class FakeBackend:
    name, threads, format = "fake", 1, "tflite"

    def load(self, path: Path) -> FakeModel:
        stem = Path(path).stem
        if stem == "router":
            return FakeModel(np.asarray([[0.9, 0.9, 0.9]], np.float32))
        return FakeModel(np.eye(10, dtype=np.float32)[[LEVELS.index(stem) + 1]] * 5.0)

    def info(self) -> dict[str, Any]:
        return {"backend": "fake", "version": "0", "threads": 1}


@pytest.fixture()
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import athe.pi_runner.runner as runner

    monkeypatch.setattr(runner, "load_backend", lambda name, threads=None: FakeBackend())


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(_png((36 + i, 32)))
    return root


def _measure(tmp: Path, bundle: Path, inputs: Path | str, *extra: str) -> Any:
    return _invoke(["run", str(bundle), "--input", str(inputs), "--energy", "none", "--warmup", "1",
                    "--repeat", "1", "--no-progress", "--no-plots", "--out", str(tmp / "out"), *extra])


def test_a_run_with_the_fake_backend_works(tmp_path: Path, fake_backend: None, images: Path) -> None:
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    result = _measure(tmp_path, bundle, images)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] and summary["rows"] == 6


CLI_MANIFEST_CASES = [c for c in MANIFEST_CASES if not c[0].startswith(("stage", "gate"))][::3]


@pytest.mark.parametrize("case,edit,field", CLI_MANIFEST_CASES, ids=[c[0] for c in CLI_MANIFEST_CASES])
def test_run_with_a_bad_manifest_is_one_line(tmp_path: Path, fake_backend: None, images: Path, case: str,
                                             edit: Callable, field: str) -> None:
    d = manifest_dict(tmp_path / "b", stages=False)
    edit(d)
    result = _measure(tmp_path, write_manifest(tmp_path / "b", d), images)
    _one_line_error(result, 1, field)
    assert not (tmp_path / "out" / "per_image.jsonl").exists()


def _cut_archive(tmp: Path) -> Path:
    members = {f"cat/{i}.png": _png((8, 8 + i)) for i in range(10)}
    full = _tar(tmp / "full.tar.gz", members)
    cut = tmp / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    return cut


INPUT_CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("dev-null", lambda t: "/dev/null", "/dev/null"),
    ("dev-zero", lambda t: "/dev/zero", "/dev/zero"),
    ("fifo", lambda t: (os.mkfifo(t / "p.png"), t / "p.png")[1], "p.png"),
    ("fifo-tar", lambda t: (os.mkfifo(t / "p.tar.gz"), t / "p.tar.gz")[1], "p.tar.gz"),
    ("missing", lambda t: t / "nowhere", "nowhere"),
    ("truncated-archive", _cut_archive, "cut.tar.gz"),
    ("not-an-archive", lambda t: ((t / "x.tar.gz").write_bytes(os.urandom(200)), t / "x.tar.gz")[1], "x.tar.gz"),
    ("empty-folder", lambda t: ((t / "empty").mkdir(), t / "empty")[1], "empty"),
    ("only-gifs", lambda t: ((t / "g").mkdir(), (t / "g" / "a.gif").write_bytes(b"GIF89a"), t / "g")[2], "g"),
    ("unknown-classes", lambda t: ((t / "u" / "zebra").mkdir(parents=True),
                                   (t / "u" / "zebra" / "0.png").write_bytes(_png((4, 4))), t / "u")[2], "zebra"),
    ("a-text-file", lambda t: ((t / "notes.txt").write_text("x"), t / "notes.txt")[1], "notes.txt"),
]


@pytest.mark.parametrize("case,make,text", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_run_with_a_bad_input_is_one_line(tmp_path: Path, fake_backend: None, case: str, make: Callable,
                                          text: str) -> None:
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    start = time.monotonic()
    result = _measure(tmp_path, bundle, make(tmp_path))
    _one_line_error(result, 1, text)
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("bad", ["corrupt", "strip", "float"])
def test_bad_image_mid_run_keeps_the_rows_before_it(tmp_path: Path, fake_backend: None, images: Path,
                                                    bad: str) -> None:
    data = {"corrupt": os.urandom(100), "strip": _png((1, 2_000_000), "L"), "float": _float_tiff()}[bad]
    (images / "dog" / ("2.png" if bad != "float" else "2.tif")).write_bytes(data)
    if bad == "float":
        (images / "dog" / "2.png").unlink()
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    result = _measure(tmp_path, bundle, images, "--warmup", "0")
    _one_line_error(result, 1, "dog/2.", "rows so far kept")
    rows = (tmp_path / "out" / "per_image.jsonl").read_text().splitlines()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(rows) == 5 and summary["complete"] is False and summary["rows"] == 5


def test_out_holding_a_previous_run_is_refused_and_left_alone(tmp_path: Path, fake_backend: None,
                                                              images: Path) -> None:
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_image.jsonl").write_text('{"kept": 1}\n')
    result = _measure(tmp_path, bundle, images)
    _one_line_error(result, 1, "per_image.jsonl", "--out")
    assert (out / "per_image.jsonl").read_text() == '{"kept": 1}\n'


@pytest.mark.parametrize("thresholds", ["medium=0.5", "dense=0.5"])
def test_threshold_for_an_unknown_level_is_one_line(tmp_path: Path, fake_backend: None, images: Path,
                                                    thresholds: str) -> None:
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    _one_line_error(_measure(tmp_path, bundle, images, "--thresholds", thresholds), 1, thresholds.split("=")[0])


# -- user errors vs bugs ---------------------------------------------------------------------------
def _raise_numpy_value_error() -> None:
    np.reshape(np.zeros(3), (2, 2))


@pytest.mark.parametrize("exc,user", [
    (ManifestError("x"), True), (BundleError("x"), True), (ImageError("x"), True),
    (OSError(28, "No space left on device"), True), (TypeError("x"), False), (KeyError("x"), False),
    (ZeroDivisionError("x"), False), (ValueError(""), False),
])
def test_is_user_error(exc: BaseException, user: bool) -> None:
    assert is_user_error(exc) is user


def test_a_value_error_from_numpy_is_a_bug_one_from_athe_is_not() -> None:
    try:
        _raise_numpy_value_error()
    except ValueError as exc:
        assert not is_user_error(exc)
    try:
        readers.read_cifar(Path("."), "cifar-10-batches-py", "val")
    except ValueError as exc:
        assert is_user_error(exc)


@pytest.mark.parametrize("error", [TypeError, KeyError, AttributeError, ZeroDivisionError])
def test_internal_bugs_keep_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: Path,
                                            error: type[Exception]) -> None:
    import athe.pi_runner.runner as runner

    def broken(*args: Any, **kwargs: Any) -> None:
        raise error("a bug")

    monkeypatch.setattr(runner, "run_bundle", broken)
    result = _measure(tmp_path, tmp_path / "b", images)
    assert result.exit_code == 1 and isinstance(result.exception, error)


# -- signals: SIGTERM/SIGHUP like Ctrl-C, a second interrupt, an early Ctrl-C ------------------------
HELPER = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    import numpy as np
    DELAY_IMPORT = os.environ.get("ATHE_TEST_SLOW_IMPORT")
    import athe.cli
    if DELAY_IMPORT:
        load = athe.cli.LazyGroup._load
        def slow(name):
            sys.stderr.write("loading\\n"); sys.stderr.flush(); time.sleep(float(DELAY_IMPORT))
            return load(name)
        athe.cli.LazyGroup._load = staticmethod(slow)
    import athe.pi_runner.runner as runner

    class Model:
        def __init__(self, out):
            self.out, self.input_shape, self.output_shape = out, (1, 3, 32, 32), tuple(out.shape)
        def run(self, x):
            time.sleep(0.003)
            return self.out.copy()

    class Backend:
        name, threads, format = "fake", 1, "tflite"
        def load(self, path):
            stem = Path(path).stem
            if stem == "router":
                return Model(np.asarray([[0.9, 0.9, 0.9]], np.float32))
            return Model(np.eye(10, dtype=np.float32)[[1]] * 5.0)
        def info(self):
            return {"backend": "fake", "version": "0", "threads": 1}

    runner.load_backend = lambda name, threads=None: Backend()
    sys.argv = ["athe", *sys.argv[1:]]
    athe.cli.main()
''')


@pytest.fixture()
def helper(tmp_path: Path) -> Path:
    path = tmp_path / "helper.py"
    path.write_text(HELPER)
    return path


def _start(tmp: Path, helper: Path, images: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    bundle = write_manifest(tmp / "b", manifest_dict(tmp / "b", stages=False))
    cmd = [sys.executable, str(helper), "run", str(bundle), "--input", str(images), "--energy", "none",
           "--repeat", "100000", "--no-progress", "--no-plots", "--out", str(tmp / "out"), *extra]
    # A shell starts the command with the signals at their defaults; the test process may have
    # them ignored (SIG_IGN is inherited through exec, and Python then installs no SIGINT handler).
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            preexec_fn=_default_signals)


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _wait_rows(proc: subprocess.Popen, rows: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if rows.exists() and rows.read_text().count("\n") >= n:
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no {n} rows: {proc.communicate()}")


@pytest.mark.parametrize("signals,code,reason", [
    ((signal.SIGTERM,), 143, "Terminated: SIGTERM"),
    ((signal.SIGHUP,), 129, "Terminated: SIGHUP"),
    ((signal.SIGINT,), 130, "KeyboardInterrupt"),
    ((signal.SIGINT, signal.SIGINT, signal.SIGINT), 130, "KeyboardInterrupt"),
    ((signal.SIGTERM, signal.SIGINT, signal.SIGTERM), 143, "Terminated: SIGTERM"),
])
def test_signal_keeps_rows_and_writes_an_incomplete_summary(tmp_path: Path, helper: Path, images: Path,
                                                            signals: tuple[int, ...], code: int,
                                                            reason: str) -> None:
    proc = _start(tmp_path, helper, images, "--warmup", "1")
    rows_path = tmp_path / "out" / "per_image.jsonl"
    _wait_rows(proc, rows_path, 8)
    for i, sig in enumerate(signals):
        proc.send_signal(sig)
        time.sleep(0.005 * (i + 1))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = rows_path.read_text().splitlines()
    assert summary["complete"] is False and summary["incomplete_reason"].startswith(reason)
    assert summary["rows"] == len(rows) >= 8 and all(json.loads(r) for r in rows)
    assert "summary marked incomplete" in stderr
    assert len((tmp_path / "out" / "per_image.csv").read_text().splitlines()) == len(rows) + 1


def test_signal_during_warm_up_still_writes_the_summary(tmp_path: Path, helper: Path, images: Path) -> None:
    proc = _start(tmp_path, helper, images, "--warmup", "100000")
    rows_path = tmp_path / "out" / "per_image.jsonl"
    deadline = time.monotonic() + 60
    while not rows_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] is False and summary["rows"] == 0


def test_early_ctrl_c_exits_130(tmp_path: Path, helper: Path, images: Path) -> None:
    proc = _start(tmp_path, helper, images, env={"ATHE_TEST_SLOW_IMPORT": "5"})
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.strip() == "loading", line
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


# -- cases that need the dispatcher's checks (runtime.patch) and convert's options (convert.patch) -----
needs_dispatcher_checks = pytest.mark.skipif(
    not hasattr(dispatcher_module, "check_tensor"),
    reason="the dispatcher's tensor/threshold checks are not in this tree yet (runtime.patch)")
needs_convert_options = pytest.mark.skipif(
    "_formats_option" not in (REPO / "convert" / "cli.py").read_text(),
    reason="athe convert's option checks are not in this tree yet (convert.patch)")


@pytest.fixture()
def dispatcher(tmp_path: Path) -> Any:
    bundle = Bundle.open(write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False)))
    return dispatcher_module.Dispatcher(bundle, backend=FakeBackend(), fmt="tflite", policy="router")


@needs_dispatcher_checks
@pytest.mark.parametrize("case,x,text", [
    ("nan", np.full((1, 3, 32, 32), np.nan, np.float32), "NaN/inf"),
    ("inf", np.full((1, 3, 32, 32), np.inf, np.float32), "NaN/inf"),
    ("one-nan", np.where(np.arange(3072).reshape(1, 3, 32, 32) == 7, np.nan, 0).astype(np.float32), "1 NaN/inf"),
    ("float64", np.zeros((1, 3, 32, 32)), "float32"), ("shape", np.zeros((1, 3, 16, 16), np.float32), "float32"),
    ("list", [[0.0]], "numpy"), ("none", None, "numpy"),
])
def test_predict_tensor_refuses_non_finite_or_misshapen_tensors(dispatcher: Any, case: str, x: Any,
                                                               text: str) -> None:
    with pytest.raises(dispatcher_module.DispatchError, match=text):
        dispatcher.predict_tensor(x)


@needs_dispatcher_checks
@pytest.mark.parametrize("value", [1.5, -0.5, NAN, INF, "0.5", True, None])
def test_router_threshold_override_is_range_checked(tmp_path: Path, value: Any) -> None:
    bundle = Bundle.open(write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False)))
    with pytest.raises(dispatcher_module.DispatchError, match="simple"):
        dispatcher_module.Dispatcher(bundle, backend=FakeBackend(), fmt="tflite", policy="router",
                                     thresholds={"simple": value})


@needs_dispatcher_checks
@pytest.mark.parametrize("text", ["", "a=1.5", "a=nan", "a=0.5,a=0.6", "=0.5"])
def test_parse_thresholds_refuses_bad_text(text: str) -> None:
    with pytest.raises(dispatcher_module.DispatchError):
        dispatcher_module.parse_thresholds(text)


@needs_dispatcher_checks
@pytest.mark.parametrize("label", [[1], 1.5, float("nan"), True, {"a": 1}, "zebra", 10, -1])
def test_a_bad_label_is_a_dispatch_error(dispatcher: Any, label: Any) -> None:
    with pytest.raises(dispatcher_module.DispatchError, match="label"):
        dispatcher.predict(np.zeros((8, 8, 3), np.uint8), label)


@needs_dispatcher_checks
def test_non_finite_model_output_is_refused(dispatcher: Any) -> None:
    dispatcher.levels["simple"].output = np.full((1, 10), np.nan, np.float32)
    with pytest.raises(dispatcher_module.DispatchError, match="NaN"):
        dispatcher.predict(np.zeros((8, 8, 3), np.uint8))


@needs_convert_options
@pytest.mark.parametrize("args,option", [
    (["--format", ""], "--format"), (["--format", ","], "--format"), (["--format", "onnx"], "--format"),
    (["--format", "tflite,tflite"], "--format"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"), (["--out", ""], "--out"), (["--out", "/proc/b"], "--out"),
    (["--out", "FILE/x"], "--out"),
])
def test_convert_option_is_validated_when_parsed(tmp_path: Path, args: list[str], option: str) -> None:
    args = [_value(a, tmp_path) for a in args]
    _one_line_error(_invoke(["convert", "--variant", "athe-mini", "--random-weights", *args]), 2, option)


needs_input_counts = pytest.mark.skipif(
    not hasattr(runner_inputs, "skipped_note"),
    reason="the runner's input listing does not count skipped files yet (inputs.patch)")


@needs_input_counts
@pytest.mark.parametrize("kind", ["folder", "imagefolder", "tar"])
def test_skipped_files_are_counted_on_the_console_and_in_the_summary(tmp_path: Path, fake_backend: None,
                                                                     images: Path, kind: str) -> None:
    if kind == "folder":
        source = tmp_path / "flat"
        source.mkdir()
        (source / "a.png").write_bytes(_png((8, 8)))
        (source / "b.gif").write_bytes(b"GIF89a")
        (source / "c.gif").write_bytes(b"GIF89a")
    elif kind == "imagefolder":
        source = images
        (images / "cat" / "x.gif").write_bytes(b"GIF89a")
        (images / "dog" / "y.gif").write_bytes(b"GIF89a")
    else:
        source = _tar(tmp_path / "a.tar.gz", {"cat/0.png": _png((8, 8)), "cat/1.gif": b"GIF89a",
                                              "dog/2.gif": b"GIF89a", "dog/3.png": _png((9, 8))})
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    result = _measure(tmp_path, bundle, source, *(("--no-labels",) if kind == "folder" else ()))
    assert result.exit_code == 0, result.output
    assert "SKIPPED 2 file(s)" in result.output and ".gif" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("SKIPPED 2" in note for note in summary["inputs"]["notes"])


@needs_input_counts
def test_a_file_name_that_is_not_utf8_does_not_abort_the_run(tmp_path: Path, fake_backend: None) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "ok.png").write_bytes(_png((8, 8)))
    try:
        (root / os.fsdecode(b"caf\xe9.png")).write_bytes(_png((9, 8)))
    except (OSError, UnicodeError):
        pytest.skip("this filesystem refuses non-UTF-8 names")
    bundle = write_manifest(tmp_path / "b", manifest_dict(tmp_path / "b", stages=False))
    result = _measure(tmp_path, bundle, root)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"] == 2 and summary["complete"]


@needs_input_counts
@pytest.mark.parametrize("target", ["/dev/null", "/dev/zero", "FIFO"])
def test_open_inputs_refuses_what_is_neither_file_nor_folder(tmp_path: Path, target: str) -> None:
    from athe.pi_runner.inputs import InputError, open_inputs

    if target == "FIFO":
        target = str(tmp_path / "p.png")
        os.mkfifo(target)
    with pytest.raises(InputError, match="neither a regular file nor a folder"):
        open_inputs(target, LABELS)


def test_case_count_covers_the_issue() -> None:
    """The issue asks for at least 300 hostile cases over every category (this module's own count)."""
    counts = {
        "manifest fields": len(MANIFEST_CASES), "manifest file": len(MANIFEST_FILE_CASES),
        "artifacts": len(ARTIFACT_CASES), "images": len(IMAGE_CASES), "run options": len(RUN_OPTION_CASES),
        "inputs": len(INPUT_CASES), "train/demo options": len(TRAIN_CASES) + len(DEMO_CASES),
    }
    assert sum(counts.values()) >= 300, counts
    assert math.isfinite(sum(counts.values()))

"""Shared test vectors: what the Python runtime does, written down for the phone implementations.

The Android core (``android_demo/core``, Java) and the PWA (``android_demo/web``) reimplement the
dispatch rule, preprocessing, the softmax and manifest parsing. Every vector here is computed
by the Python runtime itself (``athe.runtime``), so the three implementations agree by test,
not by reading each other's code. ``tests/test_demo_vectors.py`` regenerates the vectors and
fails when the committed file differs (the vectors never drift from Python behaviour).

Run from the repository root::

    .venv/bin/python android_demo/vectors/make_vectors.py          # rewrites vectors.json
    .venv/bin/python android_demo/vectors/make_vectors.py --check  # exit 1 if it is stale

Sections of ``vectors.json``:

``choose_level``
    ``{name, level_names, thresholds, scores, expected}``; ``scores`` in level order.
``preprocess``
    ``{name, spec, width, height, rgb, resized_width, resized_height, resized_rgb, shape,
    expected}``: ``spec`` is a manifest ``input`` section; ``rgb`` / ``resized_rgb`` are flat
    row-major RGB uint8 (``resized_rgb`` is after the resize, before the crop); ``expected`` is
    the flat float32 tensor in ``spec.layout`` order (NCHW: channel, row, column).
``preprocess_errors``
    ``{name, spec, error_contains}``: specs the Python ``Preprocessor`` refuses.
``rgba_to_rgb``
    ``{name, width, height, rgba, expected_rgb}``: how a decoded image with alpha becomes RGB
    (composited on opaque black with Pillow's rounding), before preprocessing.
``exif_orientation``
    ``{name, orientation, width, height, rgb, expected_width, expected_height, expected_rgb}``:
    the EXIF orientation tag (1-8) applied as the runtime's decoder does
    (``ImageOps.exif_transpose``).
``softmax_top1``
    ``{name, logits, label, probability}`` as the dispatcher computes them.
``manifests``
    ``{name, manifest | text, expected}`` for valid ones, ``{..., error, error_contains, exact}``
    for invalid ones (``error`` is the whole Python message, ``error_contains`` the part another
    implementation must reproduce; ``exact``: the whole message must be reproduced). Schema 2:
    the valid ones include stage chains (``expected.stages``, ``stage_names``,
    ``default_policy``, ``exit_thresholds``), the invalid ones every stage and gate refusal.
``manifest_edit_base``, ``manifest_edits``
    a valid manifest, and cases ``{name, edits, expected | error, error_contains, exact,
    exact_js}`` with ``edits`` ``[["put", "a.0.b", value] | ["drop", "a.0.b"], ...]`` applied to a
    copy of the base (``apply_edits``): one field wrong at a time,
    after ``tests/test_hostile.py``. ``exact_js``: also JavaScript can print the message word for
    word (``JSON.parse`` reads 2.0 as 2 and rounds integers beyond 2**53).
``gate_score``
    ``{name, gate, logits, cls, features, score}``: the dispatcher's gate
    (``athe.runtime.gates.CompiledGate``, equal to ``gate_score`` within 1e-12, checked here) on
    one exit's float32 logits (and CLS token, ``null`` when the gate does not read it);
    ``features`` is ``softmax_features`` (max_prob, margin, entropy). ``{name, gate, logits,
    cls, error, error_contains}`` when the gate cannot be scored.
``exit_decisions``
    ``{name, stage_names, thresholds, scores, expected}``: the exit rule of
    ``Dispatcher._run_chain`` on given gate scores (``scores`` per stage but the last, float64):
    the first stage whose score is ``>=`` its threshold answers, else the last stage.
``chains``
    ``{name, manifest, image, outputs, policy, thresholds, expected}``: the whole exit chain of
    ``Dispatcher._run_chain`` with stand-in stage artifacts that return ``outputs[stage]``
    (flat float32 per output name). ``expected``: ``exit``, ``ran`` (stages run, in order),
    ``feeds`` (per stage, ``[source, tensor]`` for each input in order: ``["input", "image"]``
    or ``[previous stage, name]``), ``gate_scores``, ``logits``, ``label``, ``probability``.
``policies``
    ``{name, policy, level_names, stage_names, expected}`` with ``expected`` Python's parsed
    ``{kind, stage, level}`` (``phone`` false for the kinds the phones do not run), or
    ``{..., error, error_contains}`` for refused policies.

Float32 values are written as their shortest round-tripping decimal, so a float32 parser
(Java ``Float.parseFloat``, ``Math.fround`` in JS) recovers the exact value.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL
from PIL import Image

from athe.runtime.dispatcher import Dispatcher, DispatchError, parse_policy
from athe.runtime.gates import CompiledGate, gate_score, softmax_features
from athe.runtime.manifest import (
    SCHEMA_VERSION,
    Artifact,
    GateSpec,
    InputSpec,
    LevelSpec,
    Manifest,
    ManifestError,
    RouterSpec,
    StageSpec,
    choose_level,
)
from athe.runtime.preprocess import Preprocessor, decode, resized_size, to_rgb

VECTORS_PATH = Path(__file__).resolve().parent / "vectors.json"
FORMAT_VERSION = 2

#: The CIFAR-10 statistics athe-mini ships with (any values would do; these are realistic).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.2435, 0.2616)

#: Width of the vector chain's tokens (a real bundle's embed_dim; small keeps vectors.json small).
EMBED = 4
#: The vector chain: (name, blocks, keep, tokens, inputs, outputs, token_selection), as
#: ``athe convert`` writes a 3-stage chain whose second stage keeps half the tokens.
CHAIN = (
    ("s1", (0, 1), 1.0, 5, ("image",), ("tokens", "scores", "logits"), "none"),
    ("s2", (1, 2), 0.5, 3, ("tokens", "scores"), ("tokens", "logits"), "in-graph"),
    ("s3", (2, 3), 1.0, 3, ("tokens",), ("logits",), "none"),
)
#: s1's logistic gate over the softmax features and the CLS token (3 + EMBED weights).
LOGISTIC = GateSpec(kind="logistic", features=("max_prob", "margin", "entropy", "cls"),
                    mean=(0.55, 0.3, 0.9, 0.0, 0.1, -0.1, 0.05), std=(0.2, 0.25, 0.4, 1.0, 0.9, 1.1, 0.8),
                    weights=(1.4, 0.8, -0.9, 0.3, -0.2, 0.15, 0.05), bias=0.2, auroc=0.81)
MAX_SOFTMAX = GateSpec(kind="max_softmax")
CHAIN_GATES = {"s1": LOGISTIC, "s2": MAX_SOFTMAX}
CHAIN_THRESHOLDS = {"s1": 0.7, "s2": 0.6}


def f32(value: float | np.floating) -> float:
    """A float32 value as the Python float whose repr is its shortest float32 decimal."""
    v = np.float32(value)
    out = float(np.format_float_positional(v, unique=True))
    if np.float32(out) != v:  # never expected; guards the "exact for a float32 parser" promise
        raise AssertionError(f"{v!r} does not round-trip through {out!r}")
    return out


# -- choose_level ------------------------------------------------------------------------------
def choose_level_vectors() -> list[dict[str, Any]]:
    three = ["simple", "complex", "dense"]
    ths3 = {"simple": 0.6, "complex": 0.5}
    two = ["fast", "full"]
    ths2 = {"fast": 0.8}
    cases = [
        ("3 levels: cheapest passes", three, ths3, [0.7, 0.1, 0.2]),
        ("3 levels: score equal to the threshold passes (>=)", three, ths3, [0.6, 0.1, 0.2]),
        ("3 levels: second level equal to its threshold", three, ths3, [0.59, 0.5, 0.9]),
        ("3 levels: every threshold fails -> last level", three, ths3, [0.1, 0.2, 0.3]),
        ("3 levels: first passing wins even if a later score is higher", three, ths3, [0.61, 0.99, 0.99]),
        ("3 levels: the last level's score is never compared", three, ths3, [0.0, 0.0, 1.0]),
        ("3 levels: zero thresholds always pick the cheapest", three, {"simple": 0.0, "complex": 0.0},
         [0.0, 0.0, 0.0]),
        ("3 levels: thresholds above 1 never pass", three, {"simple": 1.01, "complex": 1.01}, [1.0, 1.0, 1.0]),
        ("2 levels: passes", two, ths2, [0.8, 0.0]),
        ("2 levels: just below fails", two, ths2, [0.79999, 1.0]),
        ("1 level: no thresholds, always that level", ["only"], {}, [0.25]),
        # Router outputs are float32; the comparison is done in float64 on the float32 value.
        ("float32 score 0.62 (0.6200000047...) passes threshold 0.62", three, {"simple": 0.62, "complex": 0.5},
         [f32(0.62), 0.0, 0.0]),
        ("float32 score 0.7 (0.6999999880...) fails threshold 0.7", three, {"simple": 0.7, "complex": 0.5},
         [f32(0.7), 0.0, 0.0]),
    ]
    out = []
    for name, names, ths, scores in cases:
        out.append({"name": name, "level_names": names, "thresholds": ths, "scores": scores,
                    "expected": choose_level(scores, names, ths)})
    return out


# -- preprocessing -----------------------------------------------------------------------------
def spec_dict(resize: int, crop: int, interpolation: str = "bicubic", layout: str = "NCHW",
              mean: tuple[float, float, float] = MEAN, std: tuple[float, float, float] = STD) -> dict[str, Any]:
    """A manifest ``input`` section, exactly as ``Manifest.to_dict`` writes it."""
    spec = InputSpec(rule="resize_shorter_center_crop", resize_size=resize, crop_size=crop,
                     interpolation=interpolation, mean=mean, std=std, layout=layout)
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _noise(seed: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(seed: int, width: int, height: int) -> np.ndarray:
    """A gradient plus mild noise: resampling of smooth content, not only of noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([255 * xx / max(width - 1, 1), 255 * yy / max(height - 1, 1),
                     127.5 + 127.5 * np.sin((xx + yy) / 2.0)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 12, base.shape)
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)


def _checker(width: int, height: int) -> np.ndarray:
    """0/255 checkerboard: bicubic overshoots both ways, so every clip path is exercised."""
    board = ((np.add.outer(np.arange(height), np.arange(width)) % 2) * 255).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


#: (name, spec, image) -- small sizes, every branch of resize / crop / pad / layout.
def _preprocess_cases() -> list[tuple[str, dict[str, Any], np.ndarray]]:
    return [
        ("bicubic downscale 23x17 -> shorter 8, crop 8", spec_dict(8, 8), _noise(1, 23, 17)),
        ("bicubic upscale 5x6 -> 8x9, crop 8", spec_dict(8, 8), _noise(2, 5, 6)),
        ("exact size 8x8: no resize", spec_dict(8, 8), _noise(3, 8, 8)),
        ("width already 8, height resized (vertical pass only)", spec_dict(8, 8), _noise(4, 8, 14)),
        ("bicubic tall 10x30 -> 8x24: Pillow >= 13 runs the vertical pass first",
         spec_dict(8, 8), _noise(5, 10, 30)),
        ("bicubic wide 31x12 -> 20x8", spec_dict(8, 8), _smooth(6, 31, 12)),
        ("bicubic checkerboard 9x7 (clipping at 0 and 255)", spec_dict(6, 6), _checker(9, 7)),
        ("bicubic 1x7 column upscaled -> 4x28", spec_dict(4, 4), _noise(7, 1, 7)),
        ("resize 10 crop 8 on 12x10 (crop inside the resized image)", spec_dict(10, 8), _noise(8, 12, 10)),
        ("crop offset (13-8)/2 = 2.5 rounds half to even -> 2", spec_dict(8, 8), _noise(9, 13, 8)),
        ("crop offset (11-8)/2 = 1.5 rounds half to even -> 2", spec_dict(8, 8), _noise(10, 8, 11)),
        ("crop larger than the resized image: zero padding on both axes", spec_dict(6, 8), _noise(11, 7, 9)),
        ("crop larger than the resized height only: pad rows, crop columns",
         spec_dict(6, 8), _noise(12, 20, 10)),
        ("odd padding 5 -> 8: torchvision puts the extra row at the bottom", spec_dict(5, 8), _noise(13, 5, 5)),
        ("bilinear downscale 19x13", spec_dict(8, 8, "bilinear"), _smooth(14, 19, 13)),
        ("bilinear upscale 4x3", spec_dict(6, 6, "bilinear"), _noise(15, 4, 3)),
        ("bilinear tall 9x40 (vertical first)", spec_dict(6, 6, "bilinear"), _noise(16, 9, 40)),
        ("nearest downscale 19x13", spec_dict(8, 8, "nearest"), _noise(17, 19, 13)),
        ("nearest upscale 3x5", spec_dict(7, 7, "nearest"), _noise(18, 3, 5)),
        ("nearest 7 -> 3 (pixel centres at 1.1666.., accumulated in float64)",
         spec_dict(3, 3, "nearest"), _noise(19, 7, 7)),
        ("NHWC layout", spec_dict(8, 8, layout="NHWC"), _noise(20, 11, 9)),
        ("mean 0 std 1: plain v / 255", spec_dict(4, 4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
         _noise(21, 6, 5)),
        ("a realistic 4:3 photo-like image 23x17 -> 21x16, crop 16", spec_dict(16, 16), _smooth(22, 23, 17)),
    ]


def preprocess_vectors() -> list[dict[str, Any]]:
    out = []
    for name, spec, arr in _preprocess_cases():
        input_spec = Manifest.from_dict(_manifest(input_section=spec)).input
        pre = Preprocessor(input_spec)
        img = Image.fromarray(arr, mode="RGB")
        size = resized_size(img.width, img.height, input_spec.resize_size)
        resample = Image.Resampling[spec["interpolation"].upper()]
        resized = img if size == img.size else img.resize(size, resample)
        x = pre.preprocess(img)
        out.append({
            "name": name, "spec": spec, "width": img.width, "height": img.height,
            "rgb": arr.reshape(-1).tolist(),
            "resized_width": size[0], "resized_height": size[1],
            "resized_rgb": np.asarray(resized).reshape(-1).tolist(),
            "shape": list(x.shape), "expected": [f32(v) for v in x.reshape(-1)],
        })
    return out


def preprocess_error_vectors() -> list[dict[str, Any]]:
    cases = [
        ("unknown interpolation", {**spec_dict(8, 8), "interpolation": "lanczos"}, "interpolation 'lanczos' unknown"),
        ("unknown layout", {**spec_dict(8, 8), "layout": "CHW"}, "layout/dtype CHW/float32 unsupported"),
        ("unknown dtype", {**spec_dict(8, 8), "dtype": "uint8"}, "layout/dtype NCHW/uint8 unsupported"),
    ]
    out = []
    for name, spec, contains in cases:
        try:
            Preprocessor(InputSpec(**{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"])}))
        except ValueError as exc:
            message = str(exc)
        else:
            raise AssertionError(f"Preprocessor accepted {name}")
        if contains not in message:
            raise AssertionError(f"{contains!r} not in {message!r}")
        out.append({"name": name, "spec": spec, "error": message, "error_contains": contains})
    return out


def rgba_vectors() -> list[dict[str, Any]]:
    """RGBA -> RGB as the runtime decodes it (composited on opaque black, Pillow's rounding)."""
    rng = np.random.default_rng(40)
    alpha_ramp = np.stack([rng.integers(0, 256, 16, dtype=np.uint8) for _ in range(3)]
                          + [np.arange(0, 256, 17, dtype=np.uint8)], axis=-1).reshape(4, 4, 4)
    cases = [
        ("every alpha from 0 to 255 in steps of 17", alpha_ramp),
        ("random colours and alphas", rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)),
        ("white at alpha 1, 127, 128, 254", np.array([[[255, 255, 255, a] for a in (1, 127, 128, 254)]],
                                                      dtype=np.uint8)),
    ]
    out = []
    for name, arr in cases:
        rgb = np.asarray(to_rgb(Image.fromarray(arr, mode="RGBA")))
        out.append({"name": name, "width": arr.shape[1], "height": arr.shape[0],
                    "rgba": arr.reshape(-1).tolist(), "expected_rgb": rgb.reshape(-1).tolist()})
    return out


def exif_vectors() -> list[dict[str, Any]]:
    """Every EXIF orientation, applied by the runtime's decoder to a PNG carrying the tag."""
    arr = _noise(50, 4, 3)
    out = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.fromarray(arr, mode="RGB").save(buf, "PNG", exif=exif)
        upright = np.asarray(decode(buf.getvalue()))
        out.append({"name": f"orientation {orientation}", "orientation": orientation,
                    "width": arr.shape[1], "height": arr.shape[0], "rgb": arr.reshape(-1).tolist(),
                    "expected_width": upright.shape[1], "expected_height": upright.shape[0],
                    "expected_rgb": upright.reshape(-1).tolist()})
    return out


# -- softmax -----------------------------------------------------------------------------------
def softmax_top1(logits: np.ndarray) -> tuple[int, float]:
    """Exactly what ``Dispatcher._dispatch`` computes from a level's logits."""
    index = int(np.argmax(logits))
    z = logits.astype(np.float64) - float(logits.max())
    return index, float(1.0 / np.exp(z).sum())


def softmax_vectors() -> list[dict[str, Any]]:
    rng = np.random.default_rng(30)
    cases = [
        ("ten classes", rng.normal(0, 2, 10)),
        ("a clear winner", [0.5, 9.0, -1.0, 2.0]),
        ("ties: the first maximum wins", [1.0, 3.0, 3.0, 0.0]),
        ("all equal: probability 1/n", [0.25] * 5),
        ("large logits do not overflow", [1000.0, 999.0, 998.0]),
        ("all negative", [-50.0, -49.5, -60.0]),
        ("one class", [-3.0]),
        ("float32 noise around a tie", [f32(0.1), f32(0.1) + 1e-7, 0.0]),
    ]
    out = []
    for name, logits in cases:
        arr = np.asarray(logits, dtype=np.float32)
        label, prob = softmax_top1(arr)
        out.append({"name": name, "logits": [f32(v) for v in arr], "label": label, "probability": prob})
    return out


# -- manifests ---------------------------------------------------------------------------------
def _artifact(name: str, fmt: str, size: int, full: bool) -> Artifact:
    """A plausible artifact entry (sha256 of the file name: the files are not verified here).

    ``full`` adds the parity and delegation reports a real bundle has; the invalid-manifest
    cases leave them out to keep vectors.json small.
    """
    if not full:
        return Artifact(path=f"{name}.{fmt}", sha256=_stable_sha(f"{name}.{fmt}"), bytes=size)
    return Artifact(path=f"{name}.{fmt}", sha256=_stable_sha(f"{name}.{fmt}"), bytes=size,
                    parity={"max_abs_diff": 4.4e-07, "top1_agreement": 1.0, "samples": 4, "inputs": "random"},
                    delegation={"delegated_ops": 120, "non_delegated_ops": [], "delegate_calls": 1}
                    if fmt == "pte" else None)


def _stable_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(levels: tuple[str, ...] = ("simple", "complex", "dense"),
              formats: tuple[str, ...] = ("tflite", "pte"), router: bool = True,
              thresholds: dict[str, float] | None = None, labels: tuple[str, ...] = ("cat", "dog", "ship"),
              input_section: dict[str, Any] | None = None, variant: str = "athe-demo",
              full: bool = True, stages: bool = True, gates: dict[str, GateSpec] | None = None,
              exit_thresholds: dict[str, float] | None = None,
              stage_formats: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A manifest dict as ``athe convert`` writes it (through the runtime's own dataclasses).

    ``stages``: the vector chain ``CHAIN`` with ``gates`` and ``exit_thresholds`` (default
    ``CHAIN_GATES`` / ``CHAIN_THRESHOLDS``) in ``stage_formats`` (default ``formats``)."""
    inp = input_section or spec_dict(32, 32)
    specs = tuple(
        LevelSpec(name=n, keep=((1, 0.5), (3, 0.5)) if i < len(levels) - 1 else (), heads=3, fuse=i == 0,
                  tokens_per_block=(65, 34, 34), macs=50_000_000 * (i + 1),
                  files={f: _artifact(n, f, 6_000_000 + 1000 * i, full) for f in formats}, val_accuracy=None)
        for i, n in enumerate(levels)
    )
    router_spec = None
    if router:
        router_spec = RouterSpec(
            files={f: _artifact("router", f, 90_000, full) for f in formats}, outputs=levels,
            thresholds=thresholds if thresholds is not None else {n: 0.5 for n in levels[:-1]},
            input_size=inp["crop_size"], macs=1_200_000,
            calibration_target={"accuracy_drop": 1.0}, accuracy=0.91,
        )
    gates = CHAIN_GATES if gates is None else gates
    exit_thresholds = CHAIN_THRESHOLDS if exit_thresholds is None else exit_thresholds
    stage_specs = tuple(
        StageSpec(name=n, blocks=blocks, keep=keep, fuse=False, heads=3, tokens=tokens,
                  macs=20_000_000 * (i + 1), inputs=ins, outputs=outs, token_selection=sel,
                  files={f: _artifact(f"stage-{n}", f, 2_000_000 + 1000 * i, full)
                         for f in (stage_formats or formats)},
                  gate=gates.get(n), threshold=exit_thresholds.get(n), val_accuracy=None)
        for i, (n, blocks, keep, tokens, ins, outs, sel) in enumerate(CHAIN)
    ) if stages else ()
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, variant=variant,
        created_with={"athe": "0.1.0", "executorch": "1.5.1", "ai-edge-litert": "2.3.0"},
        checkpoint={"path": None, "sha256": None, "random_weights": True, "seed": 0},
        random_weights=True, precision="fp32",
        input=InputSpec(**{**inp, "mean": tuple(inp["mean"]), "std": tuple(inp["std"])}),
        labels=labels, levels=specs, router=router_spec, stages=stage_specs,
    )
    return json.loads(manifest.dumps())


def _expected(m: Manifest) -> dict[str, Any]:
    return {
        "variant": m.variant,
        "precision": m.precision,
        "level_names": m.level_names,
        "has_router": m.router is not None,
        "router_outputs": list(m.router.outputs) if m.router is not None else [],
        "thresholds": dict(m.router.thresholds) if m.router is not None else {},
        "labels": list(m.labels),
        "input": json.loads(json.dumps(dataclasses.asdict(m.input))),
        "input_shape": list(Preprocessor(m.input).output_shape),
        "formats": m.formats(),
        "files": _files_by_owner(m),
        "schema_version": m.schema_version,
        "stage_names": m.stage_names,
        "default_policy": m.default_policy,
        "exit_thresholds": m.exit_thresholds(),
        "stages": [{"name": st.name, "inputs": list(st.inputs), "outputs": list(st.outputs),
                    "tokens": st.tokens, "token_selection": st.token_selection, "threshold": st.threshold,
                    "gate": None if st.gate is None else json.loads(json.dumps(dataclasses.asdict(st.gate)))}
                   for st in m.stages],
    }


def _files_by_owner(m: Manifest) -> dict[str, dict[str, str]]:
    """``{owner: {format: path}}``: levels cheapest first, ``stage:<name>`` in chain order, ``router``."""
    out: dict[str, dict[str, str]] = {}
    for owner, fmt, artifact in m.artifacts():
        out.setdefault(owner, {})[fmt] = artifact.path
    return out


def _edit(base: dict[str, Any], path: list[Any], value: Any = None, delete: bool = False) -> dict[str, Any]:
    d = json.loads(json.dumps(base))
    node = d
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


def manifest_vectors() -> list[dict[str, Any]]:
    base = _manifest(thresholds={"simple": 0.62, "complex": 0.55})
    lean = _manifest(thresholds={"simple": 0.62, "complex": 0.55}, formats=("tflite",), full=False, stages=False)
    # the stage and gate refusals: one level, no router, the vector chain (small vectors.json)
    slim = _manifest(levels=("only",), formats=("tflite",), router=False, full=False)
    uncalibrated = {"s1": GateSpec(kind="max_softmax"), "s2": GateSpec(kind="max_softmax")}
    valid = [
        ("3 levels, tflite + pte, router, a 3-stage exit chain", base),
        ("2 levels, tflite only, bilinear 16/14, no stages", _manifest(
            levels=("fast", "full"), formats=("tflite",), thresholds={"fast": 0.8},
            input_section=spec_dict(16, 14, "bilinear"), labels=("no", "yes"), stages=False)),
        ("no router (fixed-level bundle), pte only, NHWC", _manifest(levels=("simple", "dense"), formats=("pte",),
                                                                     router=False, stages=False,
                                                                     input_section=spec_dict(32, 32, layout="NHWC"))),
        ("with a pt2 reference file the runtime does not deploy",
         _edit(base, ["levels", 0, "files", "pt2"], {"path": "simple.pt2", "sha256": _stable_sha("pt2"),
                                                     "bytes": 10})),
        ("stages without a router: the exit policy is the default", slim),
        ("uncalibrated exits: max_softmax gates at threshold 1.0 (athe convert without gates)",
         _manifest(levels=("only",), formats=("tflite",), router=False, full=False, gates=uncalibrated,
                   exit_thresholds={"s1": 1.0, "s2": 1.0})),
        ("the last stage may carry a gate and a threshold; the chain never asks it",
         _edit(_edit(slim, ["stages", 2, "gate"], {"kind": "max_softmax"}), ["stages", 2, "threshold"], 0.5)),
        ("no stages field at all (schema 2 bundle without exits)", _edit(lean, ["stages"], delete=True)),
        ("a stage without .tflite: Python accepts it, the browser cannot run it",
         _manifest(levels=("only",), formats=("tflite", "pte"), stage_formats=("pte",), router=False, full=False)),
        ("threshold 0 and 1 are both in range", _edit(_edit(slim, ["stages", 0, "threshold"], 0), ["stages", 1,
                                                                                                   "threshold"], 1)),
    ]
    stage_where = "manifest: stages"
    invalid: list[tuple[str, dict[str, Any] | list[Any], str]] = [
        ("schema_version 1 (the previous schema)", _edit(lean, ["schema_version"], 1),
         "schema_version 1 is not supported; this athe reads schema_version 2"),
        ("schema_version 3", _edit(lean, ["schema_version"], 3), "schema_version 3 is not supported"),
        ("schema_version as a string", _edit(lean, ["schema_version"], "2"), "schema_version '2' is not supported"),
        ("schema_version missing", _edit(lean, ["schema_version"], delete=True), "is not supported"),
        ("top level is a list", [lean], "top level must be a JSON object"),
        ("labels missing", _edit(lean, ["labels"], delete=True), "missing field(s) ['labels']"),
        ("precision unknown", _edit(lean, ["precision"], "fp16"), "precision 'fp16' unknown"),
        ("input.crop_size missing", _edit(lean, ["input", "crop_size"], delete=True),
         "input: missing field(s) ['crop_size']"),
        ("input.rule unknown", _edit(lean, ["input", "rule"], "squash"), "input.rule 'squash' unknown"),
        ("input has an unknown field", _edit(lean, ["input", "gamma"], 2.2), "'gamma'"),
        ("levels empty", _edit(lean, ["levels"], []), "levels is empty"),
        ("level without files", _edit(lean, ["levels", 1, "files"], delete=True),
         "levels[1]: missing field(s) ['files']"),
        ("level with no formats", _edit(lean, ["levels", 0, "files"], {}), "files must name at least one format"),
        ("unknown format", _edit(lean, ["levels", 0, "files", "onnx"], {"path": "a.onnx", "sha256": "0", "bytes": 1}),
         "unknown format 'onnx'"),
        ("artifact without sha256", _edit(lean, ["levels", 2, "files", "tflite", "sha256"], delete=True),
         "missing field(s) ['sha256']"),
        ("absolute artifact path", _edit(lean, ["levels", 0, "files", "tflite", "path"], "/etc/simple.tflite"),
         "must be relative to the bundle folder"),
        ("artifact path escaping the bundle", _edit(lean, ["router", "files", "tflite", "path"], "../router.tflite"),
         "must be relative to the bundle folder"),
        ("router outputs differ from the levels", _edit(lean, ["router", "outputs"], ["simple", "dense"]),
         "router.outputs ['simple', 'dense'] must equal the levels ['simple', 'complex', 'dense']"),
        ("router threshold missing for a non-last level", _edit(lean, ["router", "thresholds", "complex"],
                                                                delete=True),
         "router.thresholds lacks ['complex']; re-run calibration"),
        ("router without input_size", _edit(lean, ["router", "input_size"], delete=True),
         "router: missing field(s) ['input_size']"),
        # -- stages and gates (schema 2) ------------------------------------------------------
        ("stages is an object, not a list", _edit(slim, ["stages"], {"s1": {}}),
         "stages must be a list (empty for a bundle without exits)"),
        ("stages is null", _edit(slim, ["stages"], None), "stages must be a list"),
        ("stage without token_selection", _edit(slim, ["stages", 1, "token_selection"], delete=True),
         f"{stage_where}[1]: missing field(s) ['token_selection']"),
        ("stage without inputs and files", _edit(_edit(slim, ["stages", 0, "inputs"], delete=True),
                                                 ["stages", 0, "files"], delete=True),
         "missing field(s) ['inputs', 'files']"),
        ("stage input tensor unknown", _edit(slim, ["stages", 1, "inputs"], ["tokens", "mask"]),
         f"{stage_where}[1].inputs: unknown tensor(s) ['mask']; expected names from "
         "('image', 'tokens', 'scores', 'logits')"),
        ("stage output tensor unknown", _edit(slim, ["stages", 0, "outputs"], ["tokens", "cls", "attn", "logits"]),
         f"{stage_where}[0].outputs: unknown tensor(s) ['cls', 'attn']"),
        ("gate kind unknown", _edit(slim, ["stages", 0, "gate", "kind"], "entropy"),
         f"{stage_where}[0].gate.kind: 'entropy' unknown; expected one of ('logistic', 'max_softmax')"),
        ("gate without kind", _edit(slim, ["stages", 1, "gate", "kind"], delete=True),
         f"{stage_where}[1].gate: missing field(s) ['kind']"),
        ("logistic gate without weights", _edit(_edit(_edit(slim, ["stages", 0, "gate", "weights"], []),
                                                      ["stages", 0, "gate", "mean"], []),
                                                ["stages", 0, "gate", "std"], []),
         f"{stage_where}[0].gate: weights, mean and std must have the same non-zero length (got 0, 0, 0)"),
        ("logistic gate lengths differ", _edit(slim, ["stages", 0, "gate", "mean"], list(LOGISTIC.mean[:6])),
         "must have the same non-zero length (got 7, 6, 7); re-run 'athe train router' (it fits the exit gates)"),
        ("logistic gate std 0", _edit(slim, ["stages", 0, "gate", "std", 2], 0.0),
         f"{stage_where}[0].gate.std: every value must be > 0; re-run 'athe train router'"),
        ("logistic gate std negative", _edit(slim, ["stages", 0, "gate", "std", 0], -0.5),
         f"{stage_where}[0].gate.std: every value must be > 0"),
        ("threshold above 1", _edit(slim, ["stages", 0, "threshold"], 1.5),
         f"{stage_where}[0].threshold: 1.5 must be a number in [0, 1]; re-run calibration"),
        ("threshold below 0", _edit(slim, ["stages", 1, "threshold"], -0.25),
         f"{stage_where}[1].threshold: -0.25 must be a number in [0, 1]"),
        ("threshold is a string", _edit(slim, ["stages", 1, "threshold"], "0.6"),
         f"{stage_where}[1].threshold: '0.6' must be a number in [0, 1]"),
        ("threshold is true", _edit(slim, ["stages", 0, "threshold"], True),
         f"{stage_where}[0].threshold: True must be a number in [0, 1]"),
        ("the last stage's threshold is checked too", _edit(slim, ["stages", 2, "threshold"], 1.25),
         f"{stage_where}[2].threshold: 1.25 must be a number in [0, 1]"),
        ("a non-last stage without a gate", _edit(slim, ["stages", 1, "gate"], None),
         f"{stage_where}[1]: every stage but the last needs a gate and a threshold; "
         "re-run 'athe convert' with a checkpoint that has gates"),
        ("a non-last stage without a threshold", _edit(slim, ["stages", 0, "threshold"], delete=True),
         f"{stage_where}[0]: every stage but the last needs a gate and a threshold"),
        ("the gate is checked before the threshold", _edit(_edit(slim, ["stages", 0, "gate", "kind"], "x"),
                                                           ["stages", 0, "threshold"], 7),
         f"{stage_where}[0].gate.kind: 'x' unknown"),
        ("tensor names are checked before the gate", _edit(_edit(slim, ["stages", 0, "gate", "kind"], "x"),
                                                           ["stages", 0, "inputs"], ["pixels"]),
         f"{stage_where}[0].inputs: unknown tensor(s) ['pixels']"),
        ("stage names repeat", _edit(slim, ["stages", 2, "name"], "s1"),
         "manifest: stage names ['s1', 's2', 's1'] repeat; each stage needs its own name"),
        ("stage with no formats", _edit(slim, ["stages", 1, "files"], {}),
         f"{stage_where}[1].files: files must name at least one format"),
        ("stage artifact of an unknown format", _edit(slim, ["stages", 0, "files", "onnx"],
                                                      {"path": "s1.onnx", "sha256": "0", "bytes": 1}),
         f"{stage_where}[0].files: unknown format 'onnx'; expected one of ('tflite', 'pte', 'pt2')"),
        ("stage artifact escaping the bundle", _edit(slim, ["stages", 2, "files", "tflite", "path"],
                                                     "../stage-s3.tflite"),
         f"{stage_where}[2].files.tflite: path '../stage-s3.tflite' must be relative to the bundle folder"),
        ("levels are checked before stages", _edit(_edit(slim, ["levels"], []), ["stages"], None),
         "manifest: levels is empty"),
    ]
    out: list[dict[str, Any]] = []
    for name, d in valid:
        out.append({"name": name, "manifest": d, "expected": _expected(Manifest.from_dict(d))})
    for name, d, contains in invalid:
        out.append({"name": name, "manifest": d, **_error(lambda d=d: Manifest.from_dict(d), contains)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        for name, text, contains in [("not JSON", "{not json", "is not valid JSON"),
                                     ("empty file", "", "is not valid JSON")]:
            path.write_text(text)
            case = _error(lambda: Manifest.load(path), contains)
            case["error"] = case["error"].replace(str(path), "manifest.json")
            case["exact"] = False  # the JSON parser's own words differ between implementations
            out.append({"name": name, "text": text, **case})
    return out


# -- manifest field edits (one field wrong at a time) ---------------------------------------------
LABELS10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _edit_base() -> dict[str, Any]:
    """A valid schema-2 manifest (router, three levels, two stages), the base of ``manifest_edits``."""
    def art(name: str) -> dict[str, Any]:
        return {"path": name, "sha256": _stable_sha(name), "bytes": 480, "precision": "fp32", "parity": {},
                "delegation": None}
    levels = [{"name": n, "keep": [[1, 0.5]] if i < 2 else [], "heads": 3, "fuse": i < 2,
               "tokens_per_block": [65, 34], "macs": 1000 * (i + 1), "files": {"tflite": art(f"{n}.tflite")},
               "val_accuracy": 70.5} for i, n in enumerate(("simple", "complex", "dense"))]
    return {
        "schema_version": 2, "variant": "test-mini", "created_with": {"athe": "test"}, "checkpoint": {},
        "random_weights": False, "precision": "fp32",
        "input": {"rule": "resize_shorter_center_crop", "resize_size": 32, "crop_size": 32,
                  "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                  "layout": "NCHW", "dtype": "float32", "scale": 1 / 255, "batch_size": 1},
        "labels": list(LABELS10), "levels": levels,
        "router": {"files": {"tflite": art("router.tflite")}, "outputs": ["simple", "complex", "dense"],
                   "thresholds": {"simple": 0.6, "complex": 0.5}, "input_size": 32, "macs": 100,
                   "calibration_target": {}, "accuracy": 70.5},
        "calibration": None,
        "stages": [
            {"name": "s1", "blocks": [0, 2], "keep": 0.75, "fuse": False, "heads": 3, "tokens": 65, "macs": 500,
             "inputs": ["image"], "outputs": ["tokens", "logits"], "token_selection": "none",
             "files": {"tflite": art("stage-s1.tflite")},
             "gate": {"kind": "logistic", "features": ["max_prob", "margin", "entropy"], "mean": [0.5, 0.3, 0.9],
                      "std": [0.2, 0.2, 0.5], "weights": [1.5, 0.5, -0.5], "bias": 0.1, "auroc": 0.8},
             "threshold": 0.8, "val_accuracy": None},
            {"name": "s2", "blocks": [2, 4], "keep": 0.75, "fuse": False, "heads": 3, "tokens": 65, "macs": 500,
             "inputs": ["tokens"], "outputs": ["logits"], "token_selection": "none",
             "files": {"tflite": art("stage-s2.tflite")}, "gate": None, "threshold": None, "val_accuracy": None},
        ],
    }


def _put(path: str, value: Any) -> list[Any]:
    return ["put", path, value]


def _drop(path: str) -> list[Any]:
    return ["drop", path]


def apply_edits(base: dict[str, Any], edits: list[list[Any]]) -> dict[str, Any]:
    """The base with ``edits`` applied: ``["put", "a.0.b", value]`` or ``["drop", "a.0.b"]``
    (dot-separated keys, list indices as digits). The phone tests apply them the same way."""
    d = json.loads(json.dumps(base))
    for edit in edits:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in edit[1].split(".")]
        node = d
        for k in keys[:-1]:
            node = node[k]
        if edit[0] == "put":
            node[keys[-1]] = json.loads(json.dumps(edit[2]))
        else:
            del node[keys[-1]]
    return d


GATE = "stages.0.gate"
#: (name, edits, what the message must contain), after tests/test_hostile.py's MANIFEST_CASES
#: (NaN and infinity left out: a strict JSON parser, as the phones use, refuses them as text).
EDIT_CASES: list[tuple[str, list[list[Any]], str]] = [
    ("version-string", [_put("schema_version", "2")], "schema_version"),
    ("version-bool", [_put("schema_version", True)], "schema_version"),
    ("version-float-2.0-is-2", [_put("schema_version", 2.0)], ""),
    ("variant-int", [_put("variant", 5)], "variant"),
    ("variant-empty", [_put("variant", " ")], "variant"),
    ("variant-missing", [_drop("variant")], "variant"),
    ("created-with-list", [_put("created_with", [])], "created_with"),
    ("checkpoint-string", [_put("checkpoint", "x")], "checkpoint"),
    ("random-weights-string", [_put("random_weights", "false")], "random_weights"),
    ("random-weights-int", [_put("random_weights", 0)], "random_weights"),
    ("random-weights-null", [_put("random_weights", None)], "random_weights"),
    ("precision-int", [_put("precision", 1)], "precision"),
    ("calibration-string", [_put("calibration", "x")], "calibration"),
    ("input-string", [_put("input", "x")], "input"),
    ("input-missing", [_drop("input")], "input"),
    ("resize-60000", [_put("input.resize_size", 60000)], "input.resize_size"),
    ("resize-4097", [_put("input.resize_size", 4097)], "input.resize_size"),
    ("resize-4096-is-fine", [_put("input.resize_size", 4096)], ""),
    ("resize-0", [_put("input.resize_size", 0)], "input.resize_size"),
    ("resize-negative", [_put("input.resize_size", -1)], "input.resize_size"),
    ("resize-string", [_put("input.resize_size", "12")], "input.resize_size"),
    ("resize-float", [_put("input.resize_size", 32.5)], "input.resize_size"),
    ("resize-bool", [_put("input.resize_size", True)], "input.resize_size"),
    ("resize-huge-int", [_put("input.resize_size", 10**30)], "input.resize_size"),
    ("resize-null", [_put("input.resize_size", None)], "input.resize_size"),
    ("crop-5000", [_put("input.crop_size", 5000)], "input.crop_size"),
    ("crop-0", [_put("input.crop_size", 0)], "input.crop_size"),
    ("crop-list", [_put("input.crop_size", [32])], "input.crop_size"),
    ("interpolation-lanczos", [_put("input.interpolation", "lanczos")], "interpolation"),
    ("interpolation-int", [_put("input.interpolation", 3)], "interpolation"),
    ("mean-2-values", [_put("input.mean", [0.5, 0.5])], "input.mean"),
    ("mean-string", [_put("input.mean", "0.5")], "input.mean"),
    ("mean-text", [_put("input.mean", [0.5, 0.5, "a"])], "input.mean[2]"),
    ("std-zero", [_put("input.std", [0, 0.25, 0.25])], "input.std[0]"),
    ("std-negative", [_put("input.std", [0.25, -1, 0.25])], "input.std[1]"),
    ("std-null", [_put("input.std", None)], "input.std"),
    ("scale-zero", [_put("input.scale", 0)], "input.scale"),
    ("scale-negative", [_put("input.scale", -0.5)], "input.scale"),
    ("scale-string", [_put("input.scale", "x")], "input.scale"),
    ("scale-5", [_put("input.scale", 5)], "input.scale"),
    ("layout-chw", [_put("input.layout", "CHW")], "input.layout"),
    ("layout-nhwc-is-fine", [_put("input.layout", "NHWC")], ""),
    ("dtype-float16", [_put("input.dtype", "float16")], "input.dtype"),
    ("batch-size-0", [_put("input.batch_size", 0)], "input.batch_size"),
    ("batch-size-string", [_put("input.batch_size", "1")], "input.batch_size"),
    ("rule-unknown", [_put("input.rule", "stretch")], "input.rule"),
    ("input-unknown-fields-sorted", [_put("input.gamma", 2.5), _put("input.alpha", 1)], "['alpha', 'gamma']"),
    ("input-mean-missing", [_drop("input.mean")], "mean"),
    ("labels-string", [_put("labels", "airplane,automobile")], "labels"),
    ("labels-dict", [_put("labels", {"0": "airplane"})], "labels"),
    ("labels-ints", [_put("labels", list(range(10)))], "labels[0]"),
    ("labels-repeat", [_put("labels", ["cat", "cat", "dog", "dog", *LABELS10[4:]])], "labels"),
    ("labels-empty-string", [_put("labels.3", "")], "labels[3]"),
    ("labels-null", [_put("labels", None)], "labels"),
    ("labels-nested", [_put("labels.0", ["a"])], "labels[0]"),
    ("levels-object", [_put("levels", {})], "levels"),
    ("level-string", [_put("levels.0", "x")], "levels[0]"),
    ("level-name-int", [_put("levels.0.name", 5)], "levels[0].name"),
    ("level-name-empty", [_put("levels.0.name", "")], "levels[0].name"),
    ("level-name-router", [_put("levels.0.name", "router"), _put("router.outputs", ["router", "complex", "dense"])],
     "router"),
    ("level-name-comma", [_put("levels.0.name", "a,b")], "levels[0].name"),
    ("level-name-space", [_put("levels.1.name", "com plex")], "levels[1].name"),
    ("level-name-64-chars-is-fine", [_put("levels.2.name", "d" * 64), _put("router.outputs.2", "d" * 64)], ""),
    ("level-name-65-chars", [_put("levels.2.name", "d" * 65)], "levels[2].name"),
    ("level-names-repeat", [_put("levels.1.name", "simple"), _put("router.outputs", ["simple", "simple", "dense"])],
     "repeat"),
    ("level-keep-string", [_put("levels.0.keep", "x")], "levels[0].keep"),
    ("level-keep-single", [_put("levels.0.keep", [[1]])], "levels[0].keep[0]"),
    ("level-keep-ratio-1.5", [_put("levels.0.keep", [[1, 1.5]])], "levels[0].keep[0][1]"),
    ("level-keep-ratio-0", [_put("levels.0.keep", [[1, 0]])], "levels[0].keep[0][1]"),
    ("level-keep-block-string", [_put("levels.0.keep", [["a", 0.5]])], "levels[0].keep[0][0]"),
    ("level-heads-0", [_put("levels.0.heads", 0)], "levels[0].heads"),
    ("level-heads-string", [_put("levels.0.heads", "3")], "levels[0].heads"),
    ("level-fuse-string", [_put("levels.0.fuse", "yes")], "levels[0].fuse"),
    ("level-fuse-int", [_put("levels.0.fuse", 1)], "levels[0].fuse"),
    ("level-tokens-string", [_put("levels.0.tokens_per_block", "65")], "levels[0].tokens_per_block"),
    ("level-tokens-zero", [_put("levels.0.tokens_per_block", [0])], "levels[0].tokens_per_block[0]"),
    ("level-macs-negative", [_put("levels.0.macs", -1)], "levels[0].macs"),
    ("level-macs-float", [_put("levels.0.macs", 1.5)], "levels[0].macs"),
    ("level-accuracy-150", [_put("levels.0.val_accuracy", 150)], "levels[0].val_accuracy"),
    ("level-accuracy-string", [_put("levels.0.val_accuracy", "high")], "levels[0].val_accuracy"),
    ("level-files-string", [_put("levels.0.files", "x")], "levels[0].files"),
    ("level-missing-heads", [_drop("levels.0.heads")], "heads"),
    ("sha256-int", [_put("levels.0.files.tflite.sha256", 123)], "levels[0].files.tflite.sha256"),
    ("sha256-short", [_put("levels.0.files.tflite.sha256", "abc")], "levels[0].files.tflite.sha256"),
    ("sha256-not-hex", [_put("levels.1.files.tflite.sha256", "z" * 64)], "levels[1].files.tflite.sha256"),
    ("bytes-string", [_put("levels.0.files.tflite.bytes", "12")], "levels[0].files.tflite.bytes"),
    ("bytes-zero", [_put("levels.0.files.tflite.bytes", 0)], "levels[0].files.tflite.bytes"),
    ("bytes-float", [_put("levels.0.files.tflite.bytes", 1.5)], "levels[0].files.tflite.bytes"),
    ("bytes-bool", [_put("levels.0.files.tflite.bytes", True)], "levels[0].files.tflite.bytes"),
    ("bytes-2**50-is-fine", [_put("levels.0.files.tflite.bytes", 2**50)], ""),
    ("bytes-2**50+1", [_put("levels.0.files.tflite.bytes", 2**50 + 1)], "levels[0].files.tflite.bytes"),
    ("path-int", [_put("levels.0.files.tflite.path", 5)], "levels[0].files.tflite.path"),
    ("path-empty", [_put("levels.0.files.tflite.path", "")], "levels[0].files.tflite.path"),
    ("path-nul", [_put("levels.0.files.tflite.path", "a\x00b")], "levels[0].files.tflite.path"),
    ("path-dot", [_put("levels.0.files.tflite.path", ".")], "levels[0].files.tflite.path"),
    ("path-quote", [_put("levels.0.files.tflite.path", "/it's.tflite")], "must be relative"),
    ("artifact-precision", [_put("levels.0.files.tflite.precision", "int4")], "precision"),
    ("artifact-parity-string", [_put("levels.0.files.tflite.parity", "x")], "parity"),
    ("artifact-parity-null", [_put("levels.0.files.tflite.parity", None)], "parity"),
    ("artifact-delegation-int", [_put("levels.0.files.tflite.delegation", 5)], "delegation"),
    ("artifact-unknown-field", [_put("levels.0.files.tflite.surprise", 1)], "surprise"),
    ("artifact-string", [_put("levels.0.files.tflite", "simple.tflite")], "levels[0].files.tflite"),
    ("router-string", [_put("router", "x")], "router"),
    ("router-outputs-string", [_put("router.outputs", "simple")], "router.outputs"),
    ("router-outputs-ints", [_put("router.outputs", [1, 2, 3])], "router.outputs"),
    ("router-outputs-order", [_put("router.outputs", ["complex", "simple", "dense"])], "router.outputs"),
    ("threshold-1.5", [_put("router.thresholds.simple", 1.5)], "router.thresholds.simple"),
    ("threshold-negative", [_put("router.thresholds.simple", -0.5)], "router.thresholds.simple"),
    ("threshold-string", [_put("router.thresholds.simple", "0.5")], "router.thresholds.simple"),
    ("threshold-bool", [_put("router.thresholds.simple", True)], "router.thresholds.simple"),
    ("threshold-never-is-fine", [_put("router.thresholds.simple", 1e9)], ""),
    ("threshold-near-never", [_put("router.thresholds.simple", 1e9 + 1)], "router.thresholds.simple"),
    ("thresholds-list", [_put("router.thresholds", [0.5])], "router.thresholds"),
    ("thresholds-richest", [_put("router.thresholds.dense", 0.5)], "dense"),
    ("thresholds-unknown", [_put("router.thresholds.medium", 0.5)], "medium"),
    ("router-input-size", [_put("router.input_size", 64)], "router.input_size"),
    ("router-input-size-16-divides", [_put("router.input_size", 16)], ""),
    ("router-input-size-0", [_put("router.input_size", 0)], "router.input_size"),
    ("router-macs-string", [_put("router.macs", "x")], "router.macs"),
    ("router-accuracy-500", [_put("router.accuracy", 500)], "router.accuracy"),
    ("router-calibration-target", [_put("router.calibration_target", 5)], "calibration_target"),
    ("router-missing-files", [_drop("router.files")], "files"),
    ("stage-string", [_put("stages.0", "x")], "stages[0]"),
    ("stage-names-repeat", [_put("stages.1.name", "s1")], "repeat"),
    ("stage-name-router", [_put("stages.0.name", "router")], "router"),
    ("stage-name-int", [_put("stages.0.name", 5)], "stages[0].name"),
    ("stage-blocks-short", [_put("stages.0.blocks", [0])], "stages[0].blocks"),
    ("stage-blocks-reversed", [_put("stages.0.blocks", [2, 1])], "stages[0].blocks[1]"),
    ("stage-blocks-string", [_put("stages.0.blocks", ["a", 2])], "stages[0].blocks[0]"),
    ("stage-blocks-gap", [_put("stages.1.blocks", [3, 4])], "stages[1].blocks"),
    ("stage-keep-0", [_put("stages.0.keep", 0)], "stages[0].keep"),
    ("stage-keep-2", [_put("stages.0.keep", 2)], "stages[0].keep"),
    ("stage-fuse-string", [_put("stages.0.fuse", "no")], "stages[0].fuse"),
    ("stage-heads-0", [_put("stages.0.heads", 0)], "stages[0].heads"),
    ("stage-tokens-0", [_put("stages.0.tokens", 0)], "stages[0].tokens"),
    ("stage-macs-negative", [_put("stages.0.macs", -1)], "stages[0].macs"),
    ("stage-inputs-string", [_put("stages.0.inputs", "image")], "stages[0].inputs"),
    ("stage-inputs-empty", [_put("stages.0.inputs", [])], "stages[0].inputs"),
    ("stage-inputs-twice", [_put("stages.0.inputs", ["image", "image"])], "stages[0].inputs"),
    ("stage-outputs-no-logits", [_put("stages.0.outputs", ["tokens"])], "stages[0].outputs"),
    ("stage-first-reads-tokens", [_put("stages.0.inputs", ["tokens"])], "stages[0].inputs"),
    ("stage-reads-missing", [_put("stages.1.inputs", ["scores"])], "stages[1].inputs"),
    ("stage-token-selection", [_put("stages.0.token_selection", "all")], "stages[0].token_selection"),
    ("stage-threshold-null", [_put("stages.0.threshold", None)], "stages[0]"),
    ("stage-gate-null", [_put("stages.0.gate", None)], "stages[0]"),
    ("gate-features-string", [_put(f"{GATE}.features", "max_prob")], "stages[0].gate.features"),
    ("gate-features-unknown", [_put(f"{GATE}.features", ["bogus", "margin", "entropy"])], "stages[0].gate.features"),
    ("gate-features-twice", [_put(f"{GATE}.features", ["margin", "margin", "entropy"])], "stages[0].gate.features"),
    ("gate-weights-string", [_put(f"{GATE}.weights", "x")], "stages[0].gate.weights"),
    ("gate-bias-string", [_put(f"{GATE}.bias", "x")], "stages[0].gate.bias"),
    ("gate-weights-vs-features", [_put(f"{GATE}.features", ["max_prob", "margin"])], "stages[0].gate"),
    ("gate-logistic-without-features", [_put(f"{GATE}.features", [])], "stages[0].gate"),
    ("gate-auroc-2", [_put(f"{GATE}.auroc", 2)], "stages[0].gate.auroc"),
    ("gate-cls-with-tokens-is-fine", [_put(f"{GATE}.features", ["max_prob", "cls"])], ""),
    ("gate-cls-without-tokens", [_put(f"{GATE}.features", ["max_prob", "cls"]), _put("stages.0.outputs", ["logits"]),
                                 _put("stages.1.inputs", ["image"])], "stages[0]"),
    ("gate-cls-not-last", [_put(f"{GATE}.features", ["cls", "max_prob", "margin"])], "stages[0].gate"),
    ("gate-max-softmax-needs-no-weights", [_put(GATE, {"kind": "max_softmax"})], ""),
    ("stage-accuracy-negative", [_put("stages.1.val_accuracy", -1)], "stages[1].val_accuracy"),
    ("stage-missing-outputs", [_drop("stages.1.outputs")], "outputs"),
    ("stage-last-threshold-checked", [_put("stages.1.threshold", 1.25)], "stages[1].threshold"),
    ("stages-absent", [_drop("stages")], ""),
]


def _js_lossy(value: Any) -> bool:
    """Whether JavaScript's JSON.parse loses how Python would print ``value`` (an integral float
    such as 2.0 reads as 2, an integer beyond 2**53 as a rounded float)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return False
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, int):
        return abs(value) >= 2**53
    if isinstance(value, list):
        return any(_js_lossy(v) for v in value)
    if isinstance(value, dict):
        return any(_js_lossy(v) for v in value.values())
    return True


def manifest_edit_vectors() -> list[dict[str, Any]]:
    base = _edit_base()
    Manifest.from_dict(base)
    cases = []
    for name, edits, contains in EDIT_CASES:
        d = apply_edits(base, edits)
        if not contains:
            m = Manifest.from_dict(d)
            cases.append({"name": name, "edits": edits, "expected": {"level_names": m.level_names,
                                                                     "stage_names": m.stage_names}})
            continue
        case = _error(lambda d=d: Manifest.from_dict(d), contains)
        case["exact_js"] = case["exact"] and not any(_js_lossy(e[2]) for e in edits if e[0] == "put")
        cases.append({"name": name, "edits": edits, **case})
    return cases


def _error(fn, contains: str) -> dict[str, str]:
    try:
        fn()
    except ManifestError as exc:
        message, exact = str(exc), True
    except TypeError as exc:  # an unknown input field (Bundle says "malformed"): other words elsewhere
        message, exact = str(exc), False
    else:
        raise AssertionError(f"expected an error containing {contains!r}")
    if contains not in message:
        raise AssertionError(f"{contains!r} not in {message!r}")
    return {"error": message, "error_contains": contains, "exact": exact}


# -- exit gates --------------------------------------------------------------------------------
def _gate_dict(gate: GateSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(gate)))


def gate_vectors() -> list[dict[str, Any]]:
    rng = np.random.default_rng(60)
    soft_only = GateSpec(kind="logistic", features=("max_prob", "margin", "entropy"), mean=(0.5, 0.2, 1.0),
                         std=(0.2, 0.15, 0.5), weights=(2.0, 1.0, -1.5), bias=-0.3)
    entropy_cls = GateSpec(kind="logistic", features=("entropy", "cls"), mean=(1.0, 0.0, 0.0, 0.0, 0.0),
                           std=(0.5, 1.0, 2.0, 0.5, 1.0), weights=(-1.0, 0.2, -0.1, 0.3, 0.05), bias=0.1)
    cls = [f32(v) for v in rng.normal(0, 1, EMBED)]
    cases: list[tuple[str, GateSpec, Any, Any]] = [
        ("max_softmax, ten classes (numpy sums 8 lanes at a time)", MAX_SOFTMAX, rng.normal(0, 2, 10), None),
        ("max_softmax, three classes", MAX_SOFTMAX, [0.3, 1.9, -0.4], None),
        ("max_softmax: a tie at the top gives margin 0", MAX_SOFTMAX, [2.0, 2.0, 0.0, -1.0], None),
        ("max_softmax: all equal gives 1/n", MAX_SOFTMAX, [0.5] * 4, None),
        ("max_softmax: logits [100, 0, 0] give exactly 1.0", MAX_SOFTMAX, [100.0, 0.0, 0.0], None),
        ("max_softmax ignores features and weights", GateSpec(kind="max_softmax", features=("entropy",),
                                                              mean=(9.0,), std=(1.0,), weights=(5.0,), bias=3.0),
         [1.0, 0.0, 0.5], None),
        ("logistic on the softmax features", soft_only, [1.2, -0.3, 0.4, 0.0, 2.2], None),
        ("logistic with the CLS token (the vector chain's s1 gate)", LOGISTIC, [0.8, 2.1, -0.5], cls),
        ("logistic on entropy and the CLS token", entropy_cls, [0.1, 0.2, 1.7], cls),
        ("logistic, 12 classes", soft_only, rng.normal(0, 1.5, 12), None),
        ("logistic, a tie at the top (margin 0)", soft_only, [1.5, 1.5, 0.0], None),
        ("logistic: z above 60 is clipped (score 1.0)", dataclasses.replace(soft_only, bias=500.0),
         [0.0, 1.0, 0.0], None),
        ("logistic: z below -60 is clipped", dataclasses.replace(soft_only, bias=-500.0), [0.0, 1.0, 0.0], None),
    ]
    out = []
    for name, gate, logits, cls_token in cases:
        lg = np.asarray(logits, dtype=np.float32).reshape(1, -1)
        cl = None if cls_token is None else np.asarray(cls_token, dtype=np.float32).reshape(1, -1)
        score = CompiledGate(gate).score(lg[0], None if cl is None else cl[0])
        reference = float(gate_score(gate, lg, cl)[0])
        if abs(score - reference) > 1e-12:
            raise AssertionError(f"{name}: CompiledGate {score!r} != gate_score {reference!r}")
        out.append({"name": name, "gate": _gate_dict(gate), "logits": [f32(v) for v in lg[0]],
                    "cls": None if cl is None else [f32(v) for v in cl[0]],
                    "features": [float(v) for v in softmax_features(lg)[0]], "score": score})
    errors = [
        ("the CLS feature on a stage without tokens", LOGISTIC, [0.8, 2.1, -0.5],
         "this gate reads the CLS token; pass the stage's tokens"),
    ]
    for name, gate, logits, contains in errors:
        lg = np.asarray(logits, dtype=np.float32).reshape(1, -1)
        try:
            CompiledGate(gate).score(lg[0], None)
        except ValueError as exc:
            message = str(exc)
        else:
            raise AssertionError(f"the gate scored {name}")
        if contains not in message:
            raise AssertionError(f"{contains!r} not in {message!r}")
        out.append({"name": name, "gate": _gate_dict(gate), "logits": [f32(v) for v in lg[0]], "cls": None,
                    "error": message, "error_contains": contains})
    return out


class _Stand:
    """A stage artifact stand-in: returns fixed outputs and records which arrays it was given."""

    def __init__(self, name: str, outputs: list[np.ndarray], sources: dict[int, list[str]],
                 log: dict[str, list[list[str]]]) -> None:
        self.name, self.outputs, self.sources, self.log = name, outputs, sources, log

    def run_many(self, args: list[np.ndarray]) -> list[np.ndarray]:
        self.log[self.name] = [self.sources[id(a)] for a in args]
        return self.outputs


class _GivenScore:
    """A gate that answers a given score (the exit rule alone)."""

    needs_cls = False

    def __init__(self, score: float) -> None:
        self.value = score

    def score(self, logits: np.ndarray, cls: np.ndarray | None = None) -> float:
        return self.value


def _run_chain(manifest: Manifest, x: np.ndarray, outputs: dict[str, dict[str, np.ndarray]],
               stop_at: str | None, thresholds: dict[str, float],
               scores: dict[str, float] | None = None) -> dict[str, Any]:
    """``Dispatcher._run_chain`` itself on stand-in stages, with the gates the dispatcher
    compiles (or gates that answer ``scores``)."""
    sources: dict[int, list[str]] = {id(x): ["input", "image"]}
    log: dict[str, list[list[str]]] = {}
    stages = {}
    for st in manifest.stages:
        outs = [np.asarray(outputs[st.name][n], dtype=np.float32) for n in st.outputs]
        for n, arr in zip(st.outputs, outs, strict=True):
            sources[id(arr)] = [st.name, n]
        stages[st.name] = _Stand(st.name, outs, sources, log)
    gates: dict[str, Any] = ({n: _GivenScore(v) for n, v in scores.items()} if scores is not None else
                             {st.name: CompiledGate(st.gate) for st in manifest.stages[:-1] if st.gate is not None})
    host = SimpleNamespace(bundle=SimpleNamespace(stages=manifest.stages), stages=stages,
                           exit_thresholds=thresholds, _gates=gates)
    exit_name, logits, _, asked, _ = Dispatcher._run_chain(host, x, stop_at)
    return {"exit": exit_name, "ran": list(log), "feeds": log, "gate_scores": asked, "logits": logits}


def exit_decision_vectors() -> list[dict[str, Any]]:
    three = ["s1", "s2", "s3"]
    ths = {"s1": 0.7, "s2": 0.6}
    below, above = float(np.nextafter(0.7, 0.0)), float(np.nextafter(0.7, 1.0))
    cases = [
        ("score equal to the threshold exits (>=)", three, ths, {"s1": 0.7, "s2": 0.0}),
        ("one ulp below the threshold goes on", three, ths, {"s1": below, "s2": 0.0}),
        ("one ulp above the threshold exits", three, ths, {"s1": above, "s2": 0.0}),
        ("first fails, second exactly at its threshold", three, ths, {"s1": 0.69, "s2": 0.6}),
        ("the first passing stage wins even if a later score is higher", three, ths, {"s1": 0.71, "s2": 0.99}),
        ("every gate fails: the last stage answers", three, ths, {"s1": 0.1, "s2": 0.59}),
        ("threshold 1.0 (uncalibrated): only a score of exactly 1.0 exits", three, {"s1": 1.0, "s2": 1.0},
         {"s1": 1.0, "s2": 0.0}),
        ("threshold 1.0: 0.9999999999999999 goes on", three, {"s1": 1.0, "s2": 1.0},
         {"s1": float(np.nextafter(1.0, 0.0)), "s2": float(np.nextafter(1.0, 0.0))}),
        ("threshold 0: the first stage always answers", three, {"s1": 0.0, "s2": 0.0}, {"s1": 0.0, "s2": 0.0}),
        ("two stages: passes", ["a", "b"], {"a": 0.5}, {"a": 0.5}),
        ("two stages: fails", ["a", "b"], {"a": 0.5}, {"a": 0.49999}),
    ]
    out = []
    for name, names, thresholds, scores in cases:
        chain = _vector_chain(names)
        x = np.zeros((1, 3, 2, 2), dtype=np.float32)
        outputs = {n: {"tokens": np.zeros((1, 2, EMBED), np.float32), "logits": np.full((1, 3), i, np.float32)}
                   for i, n in enumerate(names)}
        got = _run_chain(chain, x, outputs, None, thresholds, scores)
        if got["exit"] != choose_level([*scores.values(), 0.0], names, thresholds):
            raise AssertionError(f"{name}: the chain and choose_level disagree")
        out.append({"name": name, "stage_names": names, "thresholds": thresholds, "scores": scores,
                    "expected": got["exit"]})
    return out


def _vector_chain(names: list[str]) -> Manifest:
    """A chain of ``names`` (tokens in, tokens + logits out; the last logits only) for the rule alone."""
    d = _manifest(levels=("only",), formats=("tflite",), router=False, full=False)
    template = d["stages"][1]
    d["stages"] = [{**template, "name": n, "blocks": [i, i + 1], "inputs": ["image"] if i == 0 else ["tokens"],
                    "outputs": ["logits"] if i == len(names) - 1 else ["tokens", "logits"],
                    "gate": None if i == len(names) - 1 else _gate_dict(MAX_SOFTMAX),
                    "threshold": None if i == len(names) - 1 else 0.5} for i, n in enumerate(names)]
    return Manifest.from_dict(d)


def chain_vectors() -> list[dict[str, Any]]:
    rng = np.random.default_rng(70)
    d = _manifest(levels=("only",), formats=("tflite",), router=False, full=False)
    manifest = Manifest.from_dict(d)
    x = np.asarray(rng.normal(0, 1, (1, 3, 2, 2)), dtype=np.float32)

    def outputs(s1: list[float], s2: list[float], s3: list[float]) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for (name, _, _, tokens, _, outs, _), logits in zip(CHAIN, (s1, s2, s3), strict=True):
            named = {"tokens": rng.normal(0, 1, (1, tokens, EMBED)), "scores": rng.dirichlet(np.ones(tokens - 1))[None],
                     "logits": np.asarray(logits)[None]}
            out[name] = {n: np.asarray(named[n], dtype=np.float32) for n in outs}
        return out

    confident, unsure, clear = [4.0, 0.0, -1.0], [0.2, 0.1, 0.0], [0.0, 3.0, 0.0]

    def score(outs: dict[str, dict[str, np.ndarray]], stage: str) -> float:
        st = manifest.stages[manifest.stage_names.index(stage)]
        cls = outs[stage]["tokens"][:, 0] if "tokens" in outs[stage] else None
        assert st.gate is not None
        return float(gate_score(st.gate, outs[stage]["logits"], cls)[0])  # the batched reference

    cases: list[tuple[str, dict[str, dict[str, np.ndarray]], str, dict[str, float] | None]] = []
    o = outputs(confident, unsure, unsure)
    cases.append(("s1's logistic gate passes: exit at s1", o, "exit", {"s1": score(o, "s1") - 1e-6}))
    o = outputs(unsure, clear, unsure)
    cases.append(("s1 fails, s2's max_softmax passes: exit at s2", o, "exit",
                  {"s1": score(o, "s1") + 1e-6, "s2": score(o, "s2") - 1e-6}))
    o = outputs(unsure, unsure, clear)
    cases.append(("every gate fails: s3 answers, tokens and scores passed through", o, "exit",
                  {"s1": score(o, "s1") + 1e-6, "s2": score(o, "s2") + 1e-6}))
    o = outputs(confident, clear, unsure)
    cases.append(("the manifest's thresholds (no override)", o, "exit", None))
    o = outputs(confident, [100.0, 0.0, 0.0], unsure)
    cases.append(("uncalibrated threshold 1.0: a softmax of exactly 1.0 exits at s2", o, "exit",
                  {"s1": 1.0, "s2": 1.0}))
    o = outputs(confident, clear, unsure)
    cases.append(("exit:s1 answers at s1 without asking the gate", o, "exit:s1", None))
    cases.append(("exit:s2 runs s1 and s2, no gate", o, "exit:s2", None))
    cases.append(("exit:s3 runs the whole chain, no gate", o, "exit:s3", None))
    out = []
    for name, outs, policy, override in cases:
        pol = parse_policy(policy, manifest.level_names, manifest.stage_names)
        thresholds = {**manifest.exit_thresholds(), **(override or {})}
        got = _run_chain(manifest, x, outs, pol.stage, thresholds)
        label, prob = softmax_top1(got["logits"])
        out.append({
            "name": name, "manifest": d, "image": [f32(v) for v in x.reshape(-1)],
            "outputs": {st: {n: [f32(v) for v in a.reshape(-1)] for n, a in named.items()} for st, named in outs.items()},
            "policy": policy, "thresholds": override,
            "expected": {"exit": got["exit"], "ran": got["ran"], "feeds": got["feeds"],
                         "gate_scores": got["gate_scores"], "logits": [f32(v) for v in got["logits"]],
                         "label": label, "probability": prob},
        })
    return out


# -- policies ----------------------------------------------------------------------------------
#: What the phones run; Python's other policies (random, oracle) are evaluation tools.
PHONE_KINDS = ("exit", "fixed-exit", "router", "fixed")


def policy_vectors() -> list[dict[str, Any]]:
    levels, stages = ["simple", "complex", "dense"], ["s1", "s2", "s3"]
    cases = [
        ("exit", stages, None), ("EXIT (kinds are case-insensitive)", stages, None),
        (" exit : s2 (spaces are stripped)", stages, None), ("exit:s3", stages, None),
        ("exit: (empty stage: the adaptive chain)", stages, None), ("router", stages, None),
        ("router on a bundle without stages", [], None), ("fixed:dense", stages, None),
        ("Fixed:simple", [], None), ("random:0.5", stages, None), ("oracle", [], None),
        ("exit:s9", stages, "policy 'exit:s9': no stage 's9'; stages: s1, s2, s3."),
        ("exit on a bundle without stages", [], "policy 'exit': this bundle has no stage chain"),
        ("exit:s1 on a bundle without stages", [], "policy 'exit:s1': this bundle has no stage chain"),
        ("router:x", stages, "policy 'router:x': 'router' takes no argument"),
        ("fixed:medium", stages, "policy 'fixed:medium': no level 'medium'; levels: simple, complex, dense."),
        ("fixed:", stages, "policy 'fixed:': no level ''; levels: simple, complex, dense."),
        ("adaptive", stages, "unknown policy 'adaptive'"),
    ]
    out = []
    for name, stage_names, contains in cases:
        text = name.split(" (")[0] if "(" in name else name.split(" on a bundle")[0]
        if contains is None:
            p = parse_policy(text, levels, stage_names)
            out.append({"name": name, "policy": text, "level_names": levels, "stage_names": stage_names,
                        "expected": {"kind": p.kind, "stage": p.stage, "level": p.level,
                                     "phone": p.kind in PHONE_KINDS}})
            continue
        try:
            parse_policy(text, levels, stage_names)
        except DispatchError as exc:
            message = str(exc)
        else:
            raise AssertionError(f"parse_policy accepted {text!r}")
        if contains not in message:
            raise AssertionError(f"{contains!r} not in {message!r}")
        out.append({"name": name, "policy": text, "level_names": levels, "stage_names": stage_names,
                    "error": message, "error_contains": contains})
    return out


# -- the file ----------------------------------------------------------------------------------
def build_vectors() -> dict[str, Any]:
    """Every vector, as plain JSON-ready data (computed now by the Python runtime)."""
    return {
        "format_version": FORMAT_VERSION,
        "generated_by": "android_demo/vectors/make_vectors.py",
        "pillow": PIL.__version__,
        "notes": [
            "preprocess.expected and resized_rgb are from Pillow " + PIL.__version__ + "; Pillow >= 13 "
            "runs the vertical resampling pass first when (H - h) > 2 * (W - w) and H > h, older "
            "Pillow always horizontal first, which can change a resized pixel by 1.",
            "choose_level compares the float32 router score, widened to float64, with the float64 "
            "threshold using >=.",
            "gate_score is computed in float64 from the float32 logits and CLS token; another "
            "implementation's exp/log may differ in the last bit, so scores agree to ~1e-15, not "
            "bit for bit: the exit_decisions cases test the >= rule on given scores, the chains "
            "cases keep thresholds 1e-6 away from the scores (or at an exact 1.0).",
        ],
        "choose_level": choose_level_vectors(),
        "preprocess": preprocess_vectors(),
        "preprocess_errors": preprocess_error_vectors(),
        "rgba_to_rgb": rgba_vectors(),
        "exif_orientation": exif_vectors(),
        "softmax_top1": softmax_vectors(),
        "manifests": manifest_vectors(),
        "manifest_edit_base": _edit_base(),
        "manifest_edits": manifest_edit_vectors(),
        "gate_score": gate_vectors(),
        "exit_decisions": exit_decision_vectors(),
        "chains": chain_vectors(),
        "policies": policy_vectors(),
    }


def dumps(vectors: dict[str, Any]) -> str:
    """The committed text: compact JSON with one case per line (readable diffs), trailing newline."""

    def one(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)

    lines = []
    for key, value in vectors.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            body = ",\n".join(one(v) for v in value)
            lines.append(f"{one(key)}:[\n{body}\n]")
        else:
            lines.append(f"{one(key)}:{one(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if vectors.json is not up to date")
    parser.add_argument("--out", type=Path, default=VECTORS_PATH)
    args = parser.parse_args(argv)
    text = dumps(build_vectors())
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run {Path(__file__).name} to regenerate it", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
    ``{name, manifest | text, expected}`` for valid ones, ``{..., error, error_contains}`` for
    invalid ones (``error`` is the whole Python message, ``error_contains`` the part another
    implementation must reproduce).

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
from typing import Any

import numpy as np
import PIL
from PIL import Image

from athe.runtime.manifest import (
    SCHEMA_VERSION,
    Artifact,
    InputSpec,
    LevelSpec,
    Manifest,
    ManifestError,
    RouterSpec,
    choose_level,
)
from athe.runtime.preprocess import Preprocessor, decode, resized_size, to_rgb

VECTORS_PATH = Path(__file__).resolve().parent / "vectors.json"
FORMAT_VERSION = 1

#: The CIFAR-10 statistics athe-mini ships with (any values would do; these are realistic).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.2435, 0.2616)


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
              full: bool = True) -> dict[str, Any]:
    """A manifest dict as ``athe convert`` writes it (through the runtime's own dataclasses)."""
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
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, variant=variant,
        created_with={"athe": "0.1.0", "executorch": "1.5.1", "ai-edge-litert": "2.3.0"},
        checkpoint={"path": None, "sha256": None, "random_weights": True, "seed": 0},
        random_weights=True, precision="fp32",
        input=InputSpec(**{**inp, "mean": tuple(inp["mean"]), "std": tuple(inp["std"])}),
        labels=labels, levels=specs, router=router_spec,
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
    }


def _files_by_owner(m: Manifest) -> dict[str, dict[str, str]]:
    """``{owner: {format: path}}``, levels cheapest first, then ``router``."""
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
    lean = _manifest(thresholds={"simple": 0.62, "complex": 0.55}, formats=("tflite",), full=False)
    valid = [
        ("3 levels, tflite + pte, router", base),
        ("2 levels, tflite only, bilinear 16/14", _manifest(levels=("fast", "full"), formats=("tflite",),
                                                            thresholds={"fast": 0.8},
                                                            input_section=spec_dict(16, 14, "bilinear"),
                                                            labels=("no", "yes"))),
        ("no router (fixed-level bundle), pte only, NHWC", _manifest(levels=("simple", "dense"), formats=("pte",),
                                                                     router=False,
                                                                     input_section=spec_dict(32, 32, layout="NHWC"))),
        ("with a pt2 reference file the runtime does not deploy",
         _edit(base, ["levels", 0, "files", "pt2"], {"path": "simple.pt2", "sha256": _stable_sha("pt2"),
                                                     "bytes": 10})),
    ]
    invalid: list[tuple[str, dict[str, Any] | list[Any], str]] = [
        ("schema_version 2", _edit(lean, ["schema_version"], 2), "schema_version 2 is not supported"),
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
            out.append({"name": name, "text": text, **case})
    return out


def _error(fn, contains: str) -> dict[str, str]:
    try:
        fn()
    except (ManifestError, TypeError) as exc:  # TypeError: an unknown input field (Bundle says "malformed")
        message = str(exc)
    else:
        raise AssertionError(f"expected an error containing {contains!r}")
    if contains not in message:
        raise AssertionError(f"{contains!r} not in {message!r}")
    return {"error": message, "error_contains": contains}


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
        ],
        "choose_level": choose_level_vectors(),
        "preprocess": preprocess_vectors(),
        "preprocess_errors": preprocess_error_vectors(),
        "rgba_to_rgb": rgba_vectors(),
        "exif_orientation": exif_vectors(),
        "softmax_top1": softmax_vectors(),
        "manifests": manifest_vectors(),
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

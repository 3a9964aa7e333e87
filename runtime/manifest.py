"""The bundle manifest: the one contract between ``athe.convert`` (writer) and the runtime (reader).

A bundle is a folder: ``manifest.json`` + artifacts. This module defines the manifest as frozen
dataclasses, parses and validates it (torch-free, numpy-free) and serialises it back, so writer
and reader cannot drift apart. ``SCHEMA_VERSION`` changes whenever a field changes meaning.

Example::

    >>> from athe.runtime.manifest import Manifest
    >>> m = Manifest.load("bundles/athe-mini/manifest.json")
    >>> [lv.name for lv in m.levels], m.router.thresholds
    (['simple', 'complex', 'dense'], {'simple': 0.62, 'complex': 0.55})

Dispatch rule (shared by the Python dispatcher, the PWA and the Android core): levels are
ordered cheapest first; run the router; pick the first level whose router probability is
``>= thresholds[level]``; the last level (richest) is the fallback and has no threshold.

Exit rule (schema 2, bundles with ``stages``; the default policy there): run stage 1 on the
image; after every stage but the last, compute its gate score (``athe.runtime.gates``) from the
stage's exit logits and CLS token; stop when ``score >= stage.threshold`` and answer with that
exit, else feed the stage's outputs (tokens, and scores when the next stage keeps tokens) to
the next stage. The last stage always answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
FORMATS = ("tflite", "pte")
#: Formats a bundle may also list that are not deployment artifacts: ``pt2`` is the
#: ``torch.export.save`` file of a level's export form, the PyTorch reference for parity checks
#: (``athe.runtime.backends``'s ``torch`` backend). Verified like any other artifact.
REFERENCE_FORMATS = ("pt2",)
ALL_FORMATS = FORMATS + REFERENCE_FORMATS
PRECISIONS = ("fp32", "int8-dynamic", "int8-static")
#: The largest ``resize_size`` / ``crop_size`` (pixels per side) a manifest may ask for: bounds
#: the resize and crop buffers of every image.
MAX_INPUT_SIZE = 4096
#: The largest ``manifest.json`` read (bytes); real ones are a few KiB.
MAX_MANIFEST_BYTES = 16 * 2**20
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
LAYOUTS = ("NCHW", "NHWC")
TOKEN_SELECTIONS = ("none", "in-graph")
#: The router threshold calibration writes for a level it never takes (``athe.runtime.routing.NEVER``):
#: the one value outside [0, 1] a router threshold may have.
NEVER_THRESHOLD = 1e9
#: The features a logistic exit gate may read (``athe.runtime.gates``).
GATE_FEATURES = ("max_prob", "margin", "entropy", "cls")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class InputSpec:
    """Preprocessing, reproduced by the runtime exactly (see ``athe.runtime.preprocess``)."""

    rule: str
    resize_size: int
    crop_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: str = "NCHW"
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    batch_size: int = 1


@dataclass(frozen=True)
class Artifact:
    """One model file of one format.

    Attributes:
        path: file name relative to the bundle folder.
        sha256: hex digest, verified before loading.
        bytes: file size.
        precision: ``fp32`` / ``int8-dynamic`` / ``int8-static``.
        parity: ``{"max_abs_diff", "top1_agreement", "samples", "inputs"}`` vs the PyTorch
            export form (``inputs`` is ``"real"`` or ``"random"``); for int8 this is the
            agreement with fp32. With labelled images also ``top1_fp32_pytorch`` and
            ``top1_artifact`` (%, on those ``samples`` images).
        delegation: for ``.pte``: ``{"delegated_ops", "non_delegated_ops": [...], "delegate_calls"}``.
    """

    path: str
    sha256: str
    bytes: int
    precision: str = "fp32"
    parity: dict[str, Any] = field(default_factory=dict)
    delegation: dict[str, Any] | None = None


@dataclass(frozen=True)
class LevelSpec:
    name: str
    keep: tuple[tuple[int, float], ...]
    heads: int
    fuse: bool
    tokens_per_block: tuple[int, ...]
    macs: int
    files: dict[str, Artifact]
    val_accuracy: float | None = None


@dataclass(frozen=True)
class RouterSpec:
    """The difficulty router: input is the same preprocessed tensor as the levels.

    ``outputs[i]`` names the level whose probability of being right is output ``i`` (sigmoid
    applied inside the artifact). ``thresholds`` has one entry per level except the last.
    """

    files: dict[str, Artifact]
    outputs: tuple[str, ...]
    thresholds: dict[str, float]
    input_size: int
    macs: int
    calibration_target: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None


GATE_KINDS = ("logistic", "max_softmax")
#: What a stage artifact can take and give, by name, in this order.
STAGE_IO = ("image", "tokens", "scores", "logits")


@dataclass(frozen=True)
class GateSpec:
    """The exit gate of one stage: a score in [0, 1] that this exit is right.

    ``max_softmax``: the exit's top softmax probability. ``logistic``:
    ``sigmoid(weights . (f - mean) / std + bias)`` with ``f`` the features named in
    ``features`` (``max_prob``, ``margin``, ``entropy``: of the exit's softmax; ``cls``: the
    stage's output CLS token, ``embed_dim`` values), computed by ``athe.runtime.gates``.
    """

    kind: str
    features: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    auroc: float | None = None


@dataclass(frozen=True)
class StageSpec:
    """One stage artifact of the exit chain.

    Attributes:
        blocks: ``(start, stop)`` backbone blocks it runs.
        keep / fuse: token keeping on entry (``keep`` 1.0: none).
        tokens: tokens inside the stage (CLS included).
        inputs / outputs: names from ``STAGE_IO`` in the artifact's tensor order.
        token_selection: ``none`` or ``in-graph`` (topk/gather inside this stage's artifact).
        gate / threshold: the exit gate and its calibrated threshold; None for the last stage.
    """

    name: str
    blocks: tuple[int, int]
    keep: float
    fuse: bool
    heads: int
    tokens: int
    macs: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    token_selection: str
    files: dict[str, Artifact]
    gate: GateSpec | None = None
    threshold: float | None = None
    val_accuracy: float | None = None


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    variant: str
    created_with: dict[str, Any]
    checkpoint: dict[str, Any]
    random_weights: bool
    precision: str
    input: InputSpec
    labels: tuple[str, ...]
    levels: tuple[LevelSpec, ...]
    router: RouterSpec | None
    calibration: dict[str, Any] | None = None
    stages: tuple[StageSpec, ...] = ()

    @property
    def level_names(self) -> list[str]:
        return [lv.name for lv in self.levels]

    @property
    def stage_names(self) -> list[str]:
        return [st.name for st in self.stages]

    @property
    def default_policy(self) -> str:
        """``exit`` for bundles with a stage chain, else ``router`` (or the richest level)."""
        if self.stages:
            return "exit"
        return "router" if self.router is not None else f"fixed:{self.levels[-1].name}"

    def exit_thresholds(self) -> dict[str, float]:
        """``{stage: threshold}`` for every stage but the last."""
        return {st.name: float(st.threshold) for st in self.stages[:-1] if st.threshold is not None}

    def level(self, name: str) -> LevelSpec:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise ManifestError(f"bundle has no level {name!r}; levels: {', '.join(self.level_names)}")

    def formats(self) -> list[str]:
        """Formats every level (and the router) has, reference formats (``pt2``) included."""
        fmts = set(ALL_FORMATS)
        for lv in self.levels:
            fmts &= set(lv.files)
        for st in self.stages:
            fmts &= set(st.files)
        if self.router is not None:
            fmts &= set(self.router.files)
        return sorted(fmts)

    def artifacts(self) -> list[tuple[str, str, Artifact]]:
        """``(owner, format, artifact)`` for every file (owner: level name or ``router``)."""
        out = [(lv.name, fmt, a) for lv in self.levels for fmt, a in lv.files.items()]
        out += [(f"stage:{st.name}", fmt, a) for st in self.stages for fmt, a in st.files.items()]
        if self.router is not None:
            out += [("router", fmt, a) for fmt, a in self.router.files.items()]
        return out

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = [
            {**asdict(lv), "keep": [list(k) for k in lv.keep], "tokens_per_block": list(lv.tokens_per_block)}
            for lv in self.levels
        ]
        d["stages"] = [{**asdict(st), "blocks": list(st.blocks), "inputs": list(st.inputs),
                        "outputs": list(st.outputs)} for st in self.stages]
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate ``manifest.json`` (a regular file of at most ``MAX_MANIFEST_BYTES``).

        Raises:
            ManifestError: missing, not a regular file, too large, not UTF-8 JSON, nested too
                deeply, or any field of the wrong type or range (the message names the field).
        """
        from .readers import ReadError, read_regular_file

        path = Path(path)
        try:
            raw = read_regular_file(path, MAX_MANIFEST_BYTES, what="manifest")
        except FileNotFoundError:
            raise ManifestError(f"{str(path)!r} not found: a bundle folder needs manifest.json; re-run 'athe convert'") from None
        except ReadError as exc:
            raise ManifestError(f"{exc}; a bundle folder holds a manifest.json file written by 'athe convert'") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                "re-run 'athe convert'") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{str(path)!r} is not valid JSON ({exc}); re-run 'athe convert'") from None
        except RecursionError:
            raise ManifestError(f"{str(path)!r} nests JSON too deeply to be a bundle manifest; "
                                "re-run 'athe convert'") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise ManifestError(f"{str(path)!r} is not valid JSON ({exc}); re-run 'athe convert'") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        """Validate a parsed manifest (types, ranges, cross-checks) and build it.

        Raises:
            ManifestError: the first field that is wrong, named with its path
                (``levels[0].files.tflite.sha256``), what it must be, what it is, and the fix.
        """
        if not isinstance(d, dict):
            raise ManifestError(f"{source}: top level must be a JSON object")
        version = d.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {version!r} is not supported; this athe reads schema_version "
                f"{SCHEMA_VERSION}: re-convert the bundle with this athe version or install the athe that made it"
            )
        _require(d, ["variant", "created_with", "checkpoint", "random_weights", "precision",
                     "input", "labels", "levels", "router"], source)
        variant = _text(d["variant"], f"{source}: variant")
        created_with = _object(d["created_with"], f"{source}: created_with")
        checkpoint = _object(d["checkpoint"], f"{source}: checkpoint")
        random_weights = _flag(d["random_weights"], f"{source}: random_weights")
        if not isinstance(d["precision"], str) or d["precision"] not in PRECISIONS:
            raise ManifestError(f"{source}: precision {d['precision']!r} unknown; expected one of {PRECISIONS}")
        input_spec = _input(d["input"], f"{source}: input")
        labels = _labels(d["labels"], f"{source}: labels")
        if not isinstance(d["levels"], list):
            raise ManifestError(f"{source}: levels must be a list of level objects, got {_kind(d['levels'])}; "
                                f"{_CONVERT}")
        if not d["levels"]:
            raise ManifestError(f"{source}: levels is empty; a bundle needs at least one level")
        levels = tuple(_level(lv, f"{source}: levels[{i}]") for i, lv in enumerate(d["levels"]))
        names = [lv.name for lv in levels]
        _unique_names(names, f"{source}: levels", "level")
        router = _router(d["router"], f"{source}: router") if d["router"] is not None else None
        if router is not None:
            if list(router.outputs) != names:
                raise ManifestError(f"{source}: router.outputs {list(router.outputs)} must equal the levels {names}")
            missing = [n for n in names[:-1] if n not in router.thresholds]
            if missing:
                raise ManifestError(f"{source}: router.thresholds lacks {missing}; re-run calibration")
            extra = [n for n in router.thresholds if n not in names[:-1]]
            if extra:
                raise ManifestError(f"{source}: router.thresholds names {extra}, which are not levels with a "
                                    f"threshold (levels {names[:-1]}; the richest, {names[-1]!r}, is the "
                                    "fallback and has none); re-run calibration")
            # (router.input_size may be smaller than the crop: the router pools the shared
            # tensor down itself, so it only has to divide the crop size.)
            if router.input_size <= 0 or input_spec.crop_size % router.input_size:
                raise ManifestError(f"{source}: router.input_size {router.input_size} does not divide "
                                    f"input.crop_size {input_spec.crop_size} (the router pools the levels' "
                                    f"tensor down to it); {_CONVERT}")
        raw_stages = d.get("stages", [])
        if not isinstance(raw_stages, list):
            raise ManifestError(f"{source}: stages must be a list (empty for a bundle without exits)")
        stages = tuple(_stage(st, f"{source}: stages[{i}]", last=i == len(raw_stages) - 1)
                       for i, st in enumerate(raw_stages))
        names = [st.name for st in stages]
        if len(set(names)) != len(names):
            raise ManifestError(f"{source}: stage names {names} repeat; each stage needs its own name")
        _check_chain(stages, f"{source}: stages")
        calibration = d.get("calibration")
        if calibration is not None:
            calibration = _object(calibration, f"{source}: calibration")
        return cls(
            schema_version=SCHEMA_VERSION, variant=variant, created_with=created_with,
            checkpoint=checkpoint, random_weights=random_weights,
            precision=d["precision"], input=input_spec, labels=labels, levels=levels,
            router=router, calibration=calibration, stages=stages,
        )


def _require(d: dict, keys: list[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: expected an object, got {_kind(d)}; {_CONVERT}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}; re-run 'athe convert' to write a complete manifest")


# -- field validators: each names the field, what it must be, what it is, and the fix ----------
_CONVERT = "re-run 'athe convert'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _kind(value: Any) -> str:
    """What a JSON value is, for messages: ``'12' (a string)``."""
    if value is None:
        return "null"
    kind = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, int | float)
            else "a string" if isinstance(value, str) else "a list" if isinstance(value, list)
            else "an object" if isinstance(value, dict) else f"a {type(value).__name__}")
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


def _bad(where: str, want: str, value: Any, fix: str = _CONVERT) -> ManifestError:
    return ManifestError(f"{where} must be {want}, got {_kind(value)}; {fix}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "an object", value)
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, "a non-empty string", value)
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(where, "true or false (a JSON boolean, not a string or number)", value)
    return value


def _integer(value: Any, where: str, lo: int = 0, hi: int | None = None, fix: str = _CONVERT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        want = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise _bad(where, want, value, fix)
    return value


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, None when it is not a finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > 2**1000:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _number(value: Any, where: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, fix: str = _CONVERT) -> float:
    number = _finite(value)
    if (number is None or (lo is not None and (number <= lo if lo_open else number < lo))
            or (hi is not None and number > hi)):
        if lo is not None and hi is not None:
            want = f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        elif lo is not None:
            want = f"a finite number {'>' if lo_open else '>='} {lo:g}"
        else:
            want = "a finite number"
        raise _bad(where, want, value, fix)
    return number


def _optional_number(value: Any, where: str, lo: float, hi: float) -> float | None:
    return None if value is None else _number(value, where, lo, hi)


def _numbers(value: Any, where: str, length: int | None = None, fix: str = _CONVERT) -> tuple[float, ...]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = f"a list of {length} numbers" if length is not None else "a list of numbers"
        raise _bad(where, want, value, fix)
    return tuple(_number(v, f"{where}[{i}]", fix=fix) for i, v in enumerate(value))


def _name(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _bad(where, f"a {what} name: 1-64 letters, digits, '_', '.' or '-', starting with a letter "
                          "or digit", value)
    return value


def _unique_names(names: list[str], where: str, what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(f"{where}: {what} name(s) {repeated} repeat ({names}); each {what} needs its "
                            f"own name; {_CONVERT}")


def _labels(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _bad(where, "a list of class-name strings (in the model's output order)", value)
    for i, label in enumerate(value):
        if not isinstance(label, str) or not label.strip():
            raise _bad(f"{where}[{i}]", "a non-empty string (a class name)", label)
    repeated = sorted({lb for lb in value if value.count(lb) > 1}) if len(set(value)) != len(value) else []
    if repeated:
        raise ManifestError(f"{where}: {repeated} appear more than once; each model output needs its own "
                            f"class name; {_CONVERT}")
    return tuple(value)


def _input(d: Any, where: str) -> InputSpec:
    _require(d, ["rule", "resize_size", "crop_size", "interpolation", "mean", "std"], where)
    if d["rule"] != "resize_shorter_center_crop":
        raise ManifestError(f"{where.rsplit(': ', 1)[0]}: input.rule {d['rule']!r} unknown; "
                            "expected 'resize_shorter_center_crop'")
    unknown = sorted(set(d) - {f.name for f in fields(InputSpec)})
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown} (malformed, or written by a newer athe); "
                            f"{_CONVERT}")
    size_fix = (f"a side of at most {MAX_INPUT_SIZE} pixels bounds the resize buffer; {_CONVERT}")
    resize = _integer(d["resize_size"], f"{where}.resize_size", 1, MAX_INPUT_SIZE, size_fix)
    crop = _integer(d["crop_size"], f"{where}.crop_size", 1, MAX_INPUT_SIZE, size_fix)
    interpolation = d["interpolation"]
    if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
        raise ManifestError(f"{where}.interpolation: interpolation {interpolation!r} unknown; expected one "
                            f"of {list(INTERPOLATIONS)}")
    channels = "3 finite numbers, one per RGB channel"
    if not isinstance(d["mean"], list) or len(d["mean"]) != 3:
        raise _bad(f"{where}.mean", channels, d["mean"])
    if not isinstance(d["std"], list) or len(d["std"]) != 3:
        raise _bad(f"{where}.std", channels, d["std"])
    mean = tuple(_number(v, f"{where}.mean[{i}]") for i, v in enumerate(d["mean"]))
    std = tuple(_number(v, f"{where}.std[{i}]", 0.0, lo_open=True,
                        fix=f"a standard deviation of 0 divides by zero; {_CONVERT}")
                for i, v in enumerate(d["std"]))
    layout = d.get("layout", "NCHW")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ManifestError(f"{where}.layout: {layout!r} unknown; expected one of {list(LAYOUTS)}")
    dtype = d.get("dtype", "float32")
    if dtype != "float32":
        raise ManifestError(f"{where}.dtype: {dtype!r} unsupported; this runtime feeds float32 tensors")
    scale = _number(d.get("scale", 1.0 / 255.0), f"{where}.scale", 0.0, 1.0, lo_open=True,
                    fix=f"pixels are multiplied by it (1/255 for 8-bit images); {_CONVERT}")
    batch = _integer(d.get("batch_size", 1), f"{where}.batch_size", 1, 4096)
    return InputSpec(rule=d["rule"], resize_size=resize, crop_size=crop, interpolation=interpolation,
                     mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]), layout=layout,
                     dtype=dtype, scale=scale, batch_size=batch)


def validate_input_spec(spec: InputSpec, where: str = "input") -> InputSpec:
    """The checks ``Manifest.load`` applies to ``input``, for an ``InputSpec`` built in code.

    Raises:
        ManifestError: a field of the wrong type or range, named.
    """
    d = asdict(spec)
    d["mean"], d["std"] = list(spec.mean), list(spec.std)
    return _input(d, where)


def _artifact(fmt: str, a: Any, where: str) -> Artifact:
    _require(a, ["path", "sha256", "bytes"], where)
    unknown = sorted(set(a) - {f.name for f in fields(Artifact)})
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown} (malformed, or written by a newer "
                            f"athe); {_CONVERT}")
    path = a["path"]
    if not isinstance(path, str) or not path.strip() or "\x00" in path or path in (".", ".."):
        raise _bad(f"{where}.path", "a file name relative to the bundle folder", path)
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise ManifestError(f"{where}: path {path!r} must be relative to the bundle folder")
    sha = a["sha256"]
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise _bad(f"{where}.sha256", "the file's sha256 as 64 hex digits", sha)
    size = _integer(a["bytes"], f"{where}.bytes", 1, 2**50)
    precision = a.get("precision", "fp32")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ManifestError(f"{where}.precision: {precision!r} unknown; expected one of {PRECISIONS}")
    parity = _object(a.get("parity", {}), f"{where}.parity")
    delegation = a.get("delegation")
    if delegation is not None:
        delegation = _object(delegation, f"{where}.delegation")
    return Artifact(path=path, sha256=sha, bytes=size, precision=precision, parity=parity,
                    delegation=delegation)


def _files(d: dict, where: str) -> dict[str, Artifact]:
    if not isinstance(d, dict) or not d:
        raise ManifestError(f"{where}: files must name at least one format")
    out = {}
    for fmt, a in d.items():
        if fmt not in ALL_FORMATS:
            raise ManifestError(f"{where}: unknown format {fmt!r}; expected one of {ALL_FORMATS}")
        out[fmt] = _artifact(fmt, a, f"{where}.{fmt}")
    return out


def _owner_name(value: Any, where: str, what: str) -> str:
    name = _name(value, where, what)
    if name == "router":
        raise ManifestError(f"{where}: a {what} may not be named 'router' (that name is the router's "
                            f"artifacts); {_CONVERT} with another name")
    return name


def _level(d: dict, where: str) -> LevelSpec:
    _require(d, ["name", "keep", "heads", "fuse", "tokens_per_block", "macs", "files"], where)
    name = _owner_name(d["name"], f"{where}.name", "level")
    keep_raw = d["keep"]
    if not isinstance(keep_raw, list):
        raise _bad(f"{where}.keep", "a list of [block, ratio] pairs ([] keeps every token)", keep_raw)
    keep = []
    for i, pair in enumerate(keep_raw):
        if not isinstance(pair, list) or len(pair) != 2:
            raise _bad(f"{where}.keep[{i}]", "a [block, ratio] pair", pair)
        keep.append((_integer(pair[0], f"{where}.keep[{i}][0]", 0, 4096),
                     _number(pair[1], f"{where}.keep[{i}][1]", 0.0, 1.0, lo_open=True)))
    tokens = d["tokens_per_block"]
    if not isinstance(tokens, list):
        raise _bad(f"{where}.tokens_per_block", "a list of token counts", tokens)
    return LevelSpec(
        name=name, keep=tuple(keep), heads=_integer(d["heads"], f"{where}.heads", 1, 4096),
        fuse=_flag(d["fuse"], f"{where}.fuse"),
        tokens_per_block=tuple(_integer(t, f"{where}.tokens_per_block[{i}]", 1) for i, t in enumerate(tokens)),
        macs=_integer(d["macs"], f"{where}.macs", 0), files=_files(d["files"], f"{where}.files"),
        val_accuracy=_optional_number(d.get("val_accuracy"), f"{where}.val_accuracy", 0.0, 100.0),
    )


def _unit(value: Any, where: str) -> float:
    """A finite number in [0, 1] (thresholds, gate scores)."""
    if _finite(value) is None or not 0.0 <= float(value) <= 1.0:
        raise ManifestError(f"{where}: {value!r} must be a number in [0, 1]; re-run calibration")
    return float(value)


def _router_threshold(value: Any, where: str) -> float:
    """A finite number in [0, 1], or ``NEVER_THRESHOLD`` (calibration's "never take this level")."""
    if _finite(value) == NEVER_THRESHOLD:
        return NEVER_THRESHOLD
    if _finite(value) is None or not 0.0 <= float(value) <= 1.0:
        raise ManifestError(f"{where}: {value!r} must be a number in [0, 1] (or {NEVER_THRESHOLD:g}: never "
                            "take this level); re-run calibration")
    return float(value)


def _gate(d: dict, where: str) -> GateSpec:
    _require(d, ["kind"], where)
    if d["kind"] not in GATE_KINDS:
        raise ManifestError(f"{where}.kind: {d['kind']!r} unknown; expected one of {GATE_KINDS}")
    fix = "re-run 'athe train router' (it fits the exit gates)"
    features = d.get("features", [])
    if not isinstance(features, list) or any(f not in GATE_FEATURES for f in features):
        raise _bad(f"{where}.features", f"a list of names from {GATE_FEATURES}", features, fix)
    if len(set(features)) != len(features) or ("cls" in features and features[-1] != "cls"):
        raise ManifestError(f"{where}.features: {features} must name each feature once, 'cls' (the CLS "
                            f"token's values) last; {fix}")
    gate = GateSpec(kind=d["kind"], features=tuple(features),
                    mean=_numbers(d.get("mean", []), f"{where}.mean", fix=fix),
                    std=_numbers(d.get("std", []), f"{where}.std", fix=fix),
                    weights=_numbers(d.get("weights", []), f"{where}.weights", fix=fix),
                    bias=_number(d.get("bias", 0.0), f"{where}.bias", fix=fix),
                    auroc=_optional_number(d.get("auroc"), f"{where}.auroc", 0.0, 1.0))
    if gate.kind == "logistic":
        n = len(gate.weights)
        if n == 0 or len(gate.mean) != n or len(gate.std) != n:
            raise ManifestError(f"{where}: weights, mean and std must have the same non-zero length "
                                f"(got {n}, {len(gate.mean)}, {len(gate.std)}); re-run 'athe train router' (it fits the exit gates)")
        if any(not s > 0 for s in gate.std):
            raise ManifestError(f"{where}.std: every value must be > 0; re-run 'athe train router' (it fits the exit gates)")
        scalars = [f for f in gate.features if f != "cls"]
        if not gate.features or (n <= len(scalars) if "cls" in gate.features else n != len(scalars)):
            raise ManifestError(f"{where}: {n} weights for features {list(gate.features)} (one weight per "
                                f"softmax feature, plus one per CLS value with 'cls'); {fix}")
    return gate


def _names_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
        raise _bad(where, f"a non-empty list of tensor names from {STAGE_IO}", value)
    return tuple(value)


def _stage(d: dict, where: str, last: bool) -> StageSpec:
    _require(d, ["name", "blocks", "keep", "fuse", "heads", "tokens", "macs", "inputs", "outputs",
                 "token_selection", "files"], where)
    for key in ("inputs", "outputs"):
        _names_list(d[key], f"{where}.{key}")
        bad = [n for n in d[key] if n not in STAGE_IO]
        if bad:
            raise ManifestError(f"{where}.{key}: unknown tensor(s) {bad}; expected names from {STAGE_IO}")
        if len(set(d[key])) != len(d[key]):
            raise ManifestError(f"{where}.{key}: {d[key]} names a tensor twice; {_CONVERT}")
    if "logits" not in d["outputs"]:
        raise ManifestError(f"{where}.outputs: {d['outputs']} lacks 'logits': every stage answers at its "
                            f"exit; {_CONVERT}")
    gate = _gate(d["gate"], f"{where}.gate") if d.get("gate") is not None else None
    threshold = _unit(d["threshold"], f"{where}.threshold") if d.get("threshold") is not None else None
    if not last and (gate is None or threshold is None):
        raise ManifestError(f"{where}: every stage but the last needs a gate and a threshold; "
                            "re-run 'athe convert' with a checkpoint that has gates")
    if gate is not None and "cls" in gate.features and "tokens" not in d["outputs"]:
        raise ManifestError(f"{where}.gate.features: the gate reads the CLS token but the stage outputs "
                            f"{d['outputs']} have no 'tokens'; {_CONVERT}")
    blocks = d["blocks"]
    if not isinstance(blocks, list) or len(blocks) != 2:
        raise _bad(f"{where}.blocks", "a [start, stop] pair of block indices", blocks)
    start = _integer(blocks[0], f"{where}.blocks[0]", 0, 4096)
    stop = _integer(blocks[1], f"{where}.blocks[1]", start + 1, 4096)
    selection = d["token_selection"]
    if not isinstance(selection, str) or selection not in TOKEN_SELECTIONS:
        raise ManifestError(f"{where}.token_selection: {selection!r} unknown; expected one of "
                            f"{list(TOKEN_SELECTIONS)}")
    return StageSpec(
        name=_owner_name(d["name"], f"{where}.name", "stage"), blocks=(start, stop),
        keep=_number(d["keep"], f"{where}.keep", 0.0, 1.0, lo_open=True),
        fuse=_flag(d["fuse"], f"{where}.fuse"), heads=_integer(d["heads"], f"{where}.heads", 1, 4096),
        tokens=_integer(d["tokens"], f"{where}.tokens", 1), macs=_integer(d["macs"], f"{where}.macs", 0),
        inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]),
        token_selection=selection, files=_files(d["files"], f"{where}.files"),
        gate=gate, threshold=threshold,
        val_accuracy=_optional_number(d.get("val_accuracy"), f"{where}.val_accuracy", 0.0, 100.0),
    )


def _check_chain(stages: tuple[StageSpec, ...], where: str) -> None:
    """Each stage reads what the one before it gave (the first: the image), blocks in sequence."""
    available: tuple[str, ...] = ("image",)
    previous: StageSpec | None = None
    for i, st in enumerate(stages):
        missing = [n for n in st.inputs if n not in available]
        if missing:
            given = "the image" if previous is None else f"stages[{i - 1}] outputs {list(available)}"
            raise ManifestError(f"{where}[{i}].inputs: {missing} not available ({given} only); {_CONVERT}")
        if previous is not None and st.blocks[0] != previous.blocks[1]:
            raise ManifestError(f"{where}[{i}].blocks: starts at block {st.blocks[0]} but stages[{i - 1}] "
                                f"stops at {previous.blocks[1]}; the chain runs the blocks in sequence; {_CONVERT}")
        available, previous = st.outputs, st


def _router(d: dict, where: str) -> RouterSpec:
    _require(d, ["files", "outputs", "thresholds", "input_size", "macs"], where)
    outputs = d["outputs"]
    if not isinstance(outputs, list) or not all(isinstance(n, str) for n in outputs):
        raise _bad(f"{where}.outputs", "a list of level names", outputs)
    raw = d["thresholds"]
    if not isinstance(raw, dict):
        raise _bad(f"{where}.thresholds", "an object {level: threshold}", raw, "re-run calibration")
    thresholds = {str(k): _router_threshold(v, f"{where}.thresholds.{k}") for k, v in raw.items()}
    target = d.get("calibration_target", {})
    return RouterSpec(
        files=_files(d["files"], f"{where}.files"), outputs=tuple(outputs), thresholds=thresholds,
        input_size=_integer(d["input_size"], f"{where}.input_size", 1, MAX_INPUT_SIZE),
        macs=_integer(d["macs"], f"{where}.macs", 0),
        calibration_target=_object(target if target is not None else {}, f"{where}.calibration_target"),
        accuracy=_optional_number(d.get("accuracy"), f"{where}.accuracy", 0.0, 100.0),
    )


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_for_file(folder: str | Path, path: str, **fields: Any) -> Artifact:
    """The ``Artifact`` entry of the file ``folder / path`` (sha256 and size computed).

    Args:
        folder: the bundle folder.
        path: file name relative to ``folder``.
        fields: the other ``Artifact`` fields (``precision``, ``parity``, ``delegation``).
    """
    file = Path(folder) / path
    return Artifact(path=path, sha256=sha256_file(file), bytes=file.stat().st_size, **fields)


def choose_level(probabilities: dict[str, float] | list[float], level_names: list[str],
                 thresholds: dict[str, float]) -> str:
    """The dispatch rule: first (cheapest) level whose probability passes its threshold.

    Args:
        probabilities: router output per level, by name or in ``level_names`` order.
        level_names: levels cheapest first; the last is the fallback.
        thresholds: per level except the last.
    """
    probs = probabilities if isinstance(probabilities, dict) else dict(zip(level_names, probabilities, strict=False))
    for name in level_names[:-1]:
        if probs[name] >= thresholds[name]:
            return name
    return level_names[-1]

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
from dataclasses import asdict, dataclass, field
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
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ManifestError(f"{str(path)!r} not found: a bundle folder needs manifest.json; re-run 'athe convert'") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{str(path)!r} is not valid JSON ({exc}); re-run 'athe convert'") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        if not isinstance(d, dict):
            raise ManifestError(f"{source}: top level must be a JSON object")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {version!r} is not supported; this athe reads schema_version "
                f"{SCHEMA_VERSION}: re-convert the bundle with this athe version or install the athe that made it"
            )
        _require(d, ["variant", "created_with", "checkpoint", "random_weights", "precision",
                     "input", "labels", "levels", "router"], source)
        if d["precision"] not in PRECISIONS:
            raise ManifestError(f"{source}: precision {d['precision']!r} unknown; expected one of {PRECISIONS}")
        inp = d["input"]
        _require(inp, ["rule", "resize_size", "crop_size", "interpolation", "mean", "std"], f"{source}: input")
        if inp["rule"] != "resize_shorter_center_crop":
            raise ManifestError(f"{source}: input.rule {inp['rule']!r} unknown; expected 'resize_shorter_center_crop'")
        input_spec = InputSpec(**{**inp, "mean": tuple(inp["mean"]), "std": tuple(inp["std"])})
        if not d["levels"]:
            raise ManifestError(f"{source}: levels is empty; a bundle needs at least one level")
        levels = tuple(_level(lv, f"{source}: levels[{i}]") for i, lv in enumerate(d["levels"]))
        router = _router(d["router"], f"{source}: router") if d["router"] is not None else None
        if router is not None:
            names = [lv.name for lv in levels]
            if list(router.outputs) != names:
                raise ManifestError(f"{source}: router.outputs {list(router.outputs)} must equal the levels {names}")
            missing = [n for n in names[:-1] if n not in router.thresholds]
            if missing:
                raise ManifestError(f"{source}: router.thresholds lacks {missing}; re-run calibration")
        labels = tuple(d["labels"])
        raw_stages = d.get("stages", [])
        if not isinstance(raw_stages, list):
            raise ManifestError(f"{source}: stages must be a list (empty for a bundle without exits)")
        stages = tuple(_stage(st, f"{source}: stages[{i}]", last=i == len(raw_stages) - 1)
                       for i, st in enumerate(raw_stages))
        names = [st.name for st in stages]
        if len(set(names)) != len(names):
            raise ManifestError(f"{source}: stage names {names} repeat; each stage needs its own name")
        return cls(
            schema_version=version, variant=d["variant"], created_with=d["created_with"],
            checkpoint=d["checkpoint"], random_weights=bool(d["random_weights"]),
            precision=d["precision"], input=input_spec, labels=labels, levels=levels,
            router=router, calibration=d.get("calibration"), stages=stages,
        )


def _require(d: dict, keys: list[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: expected an object")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}; re-run 'athe convert' to write a complete manifest")


def _files(d: dict, where: str) -> dict[str, Artifact]:
    if not isinstance(d, dict) or not d:
        raise ManifestError(f"{where}: files must name at least one format")
    out = {}
    for fmt, a in d.items():
        if fmt not in ALL_FORMATS:
            raise ManifestError(f"{where}: unknown format {fmt!r}; expected one of {ALL_FORMATS}")
        _require(a, ["path", "sha256", "bytes"], f"{where}.{fmt}")
        if Path(a["path"]).is_absolute() or ".." in Path(a["path"]).parts:
            raise ManifestError(f"{where}.{fmt}: path {a['path']!r} must be relative to the bundle folder")
        out[fmt] = Artifact(**a)
    return out


def _level(d: dict, where: str) -> LevelSpec:
    _require(d, ["name", "keep", "heads", "fuse", "tokens_per_block", "macs", "files"], where)
    return LevelSpec(
        name=d["name"], keep=tuple((int(b), float(r)) for b, r in d["keep"]), heads=int(d["heads"]),
        fuse=bool(d["fuse"]), tokens_per_block=tuple(d["tokens_per_block"]), macs=int(d["macs"]),
        files=_files(d["files"], f"{where}.files"), val_accuracy=d.get("val_accuracy"),
    )


def _unit(value: Any, where: str) -> float:
    """A finite number in [0, 1] (thresholds, gate scores)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ManifestError(f"{where}: {value!r} must be a number in [0, 1]; re-run calibration")
    return float(value)


def _gate(d: dict, where: str) -> GateSpec:
    _require(d, ["kind"], where)
    if d["kind"] not in GATE_KINDS:
        raise ManifestError(f"{where}.kind: {d['kind']!r} unknown; expected one of {GATE_KINDS}")
    gate = GateSpec(kind=d["kind"], features=tuple(d.get("features", ())),
                    mean=tuple(float(v) for v in d.get("mean", ())),
                    std=tuple(float(v) for v in d.get("std", ())),
                    weights=tuple(float(v) for v in d.get("weights", ())),
                    bias=float(d.get("bias", 0.0)), auroc=d.get("auroc"))
    if gate.kind == "logistic":
        n = len(gate.weights)
        if n == 0 or len(gate.mean) != n or len(gate.std) != n:
            raise ManifestError(f"{where}: weights, mean and std must have the same non-zero length "
                                f"(got {n}, {len(gate.mean)}, {len(gate.std)}); re-run 'athe train router' (it fits the exit gates)")
        if any(not s > 0 for s in gate.std):
            raise ManifestError(f"{where}.std: every value must be > 0; re-run 'athe train router' (it fits the exit gates)")
    return gate


def _stage(d: dict, where: str, last: bool) -> StageSpec:
    _require(d, ["name", "blocks", "keep", "fuse", "heads", "tokens", "macs", "inputs", "outputs",
                 "token_selection", "files"], where)
    for key in ("inputs", "outputs"):
        bad = [n for n in d[key] if n not in STAGE_IO]
        if bad:
            raise ManifestError(f"{where}.{key}: unknown tensor(s) {bad}; expected names from {STAGE_IO}")
    gate = _gate(d["gate"], f"{where}.gate") if d.get("gate") is not None else None
    threshold = _unit(d["threshold"], f"{where}.threshold") if d.get("threshold") is not None else None
    if not last and (gate is None or threshold is None):
        raise ManifestError(f"{where}: every stage but the last needs a gate and a threshold; "
                            "re-run 'athe convert' with a checkpoint that has gates")
    return StageSpec(
        name=str(d["name"]), blocks=(int(d["blocks"][0]), int(d["blocks"][1])), keep=float(d["keep"]),
        fuse=bool(d["fuse"]), heads=int(d["heads"]), tokens=int(d["tokens"]), macs=int(d["macs"]),
        inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]),
        token_selection=str(d["token_selection"]), files=_files(d["files"], f"{where}.files"),
        gate=gate, threshold=threshold, val_accuracy=d.get("val_accuracy"),
    )


def _router(d: dict, where: str) -> RouterSpec:
    _require(d, ["files", "outputs", "thresholds", "input_size", "macs"], where)
    return RouterSpec(
        files=_files(d["files"], f"{where}.files"), outputs=tuple(d["outputs"]),
        thresholds={k: float(v) for k, v in d["thresholds"].items()}, input_size=int(d["input_size"]),
        macs=int(d["macs"]), calibration_target=d.get("calibration_target", {}),
        accuracy=d.get("accuracy"),
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

"""Write a verified bundle: every level, every stage and the router as fixed-shape artifacts +
``manifest.json``.

Each artifact is converted from its export form, run through the runtime backend that will
serve it on sample inputs (real images when data is given, else seeded random) and compared
with the PyTorch export form; the max |logit diff| and top-1 agreement go into the manifest,
and fp32 conversion fails above ``PARITY_TOLERANCE`` naming the artifact. ``.pte`` files get a
delegation report; an fp32 op outside XNNPACK other than token selection fails the conversion.

Stages (variants with an exit chain) are checked twice: each stage artifact alone against its
export form, fed the PyTorch chain's own inputs (``max_abs_diff`` over all its outputs), and the
whole chain of artifacts of one format, each fed by the previous artifact, against
``AtheViT.forward_exits`` (``chain_max_abs_diff`` of each exit's logits). Exit gates and
thresholds come from the checkpoint; without trained exits or gates every gate is
``max_softmax`` at threshold 1.0 (never exit early) and the calibration says
``exits_calibrated: false``.
The bundle is built in a temporary folder beside ``out`` and renamed into place only when
complete, so a failed or interrupted conversion never leaves a half bundle that looks valid.

Example::

    >>> from athe.convert.bundle import ConvertOptions, convert_bundle
    >>> convert_bundle(ConvertOptions(variant="athe-mini", out="bundles/athe-mini"))
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from athe import __version__
from athe.convert.executorch import to_pte
from athe.convert.export_form import EXPORT_FORMS, STAGE_FORMS, LevelExport, StageExport
from athe.convert.litert import to_tflite
from athe.runtime.backends import BACKEND_FORMATS, load_backend
from athe.runtime.manifest import (
    SCHEMA_VERSION,
    GateSpec,
    InputSpec,
    LevelSpec,
    Manifest,
    RouterSpec,
    StageSpec,
    artifact_for_file,
    sha256_file,
)
from athe.training.model import AtheViT, build_model, load_backbone_weights
from athe.training.router import RouterCNN, RouterExport, build_router, router_macs
from athe.variants import Variant, get_variant

_logger = logging.getLogger(__name__)

#: fp32 artifacts must match the PyTorch export form to this max |diff| (logits/probabilities).
PARITY_TOLERANCE = 1e-4
#: int8-static is refused when it loses more top-1 than this (points) vs fp32 on calibration data.
STATIC_INT8_MAX_DROP = 2.0

#: One converter per format, same signature: (module, example_inputs, path, quantize, calibration);
#: the ``.pte`` one returns its delegation report.
CONVERTERS: dict[str, Callable[..., Any]] = {"tflite": to_tflite, "pte": to_pte}
#: Export form per format, from the conversion benchmark (athe-simple at 224, README "Benchmarks"):
#: ExecuTorch needs the rewrite to stay inside XNNPACK (1.15-11x faster than the plain form);
#: LiteRT runs the plain form 1.2-1.5x faster than the rewrite.
DEFAULT_FORMS = {"tflite": "plain", "pte": "rewrite"}
#: The runtime backend that serves each format (used for parity), from the runtime's own table.
BACKEND_FOR_FORMAT = {fmt: backend for backend, fmt in BACKEND_FORMATS.items()}


class ConvertError(RuntimeError):
    """Conversion failed; the message names the variant, the artifact and the fix."""


@dataclass
class ConvertOptions:
    variant: str
    out: str | Path
    checkpoint: str | Path | None = None
    random_weights: bool = False
    formats: tuple[str, ...] = ("tflite", "pte")
    quantize: str = "none"
    data: str | Path | None = None  # images for parity (and calibration for int8-static)
    parity_samples: int = 8
    calibration_samples: int = 64  # int8-static: images for calibration, disjoint from the parity ones
    batch_size: int = 1
    seed: int = 0
    force: bool = False
    write_reference: bool = False  # also write <level>.pt2 for the torch reference backend
    #: export form per format (see ``athe.convert.export_form.EXPORT_FORMS``)
    forms: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FORMS))
    variant_obj: Variant | None = field(default=None, repr=False)  # tests: a tiny variant


@dataclass
class LoadedWeights:
    model: AtheViT
    router: RouterCNN | None
    thresholds: dict[str, float] | None
    classes: list[str]
    calibration: dict | None
    checkpoint: dict[str, Any]
    #: exit gates ``{stage: GateSpec fields}`` and thresholds ``{stage: float}`` from the checkpoint
    gates: dict[str, dict] | None = None
    exit_thresholds: dict[str, float] | None = None


def resolve_weights(variant: Variant, checkpoint: str | Path | None, random_weights: bool,
                    seed: int = 0) -> LoadedWeights:
    """Build the model and router and load their weights (or seeded random ones)."""
    if checkpoint is None and not random_weights:
        default = variant.default_checkpoint_path()
        if default is None or not default.exists():
            raise ConvertError(
                f"variant {variant.name!r} has no trained checkpoint; train one with "
                f"'athe train backbone --variant {variant.name} ...' then 'athe train router', and pass "
                "--checkpoint PATH, or pass --random-weights for latency-only artifacts"
            )
        checkpoint = default
    torch.manual_seed(seed)
    model = build_model(variant).eval()
    router = build_router(variant).eval() if variant.router is not None else None
    if random_weights:
        ths = {n: 0.5 for n in variant.level_names[:-1]} if router is not None else None
        return LoadedWeights(model, router, ths, list(variant.labels) or _numbered(variant),
                             None, {"path": None, "sha256": None, "random_weights": True, "seed": seed})
    path = Path(checkpoint)  # type: ignore[arg-type]
    if not path.is_file():
        raise ConvertError(f"checkpoint {str(path)!r} does not exist or is not a regular file; check --checkpoint")
    blob = load_checkpoint_blob(path)
    state = blob.get("model", blob)
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConvertError(f"checkpoint {str(path)!r} holds no model state dict (name -> tensor); pass a "
                           "checkpoint written by 'athe train backbone' or 'athe train router'")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        load_backbone_weights(model, variant, state, str(path))
    except ValueError as exc:
        raise ConvertError(str(exc)) from None
    model.eval()
    ths = None
    if isinstance(blob, dict) and blob.get("router") is not None and router is not None:
        router.load_state_dict(blob["router"])
        router.eval()
        ths = blob.get("thresholds")
    else:
        router = None
    classes = blob.get("classes") if isinstance(blob, dict) else None
    meta = blob if isinstance(blob, dict) else {}
    return LoadedWeights(
        model, router, ths, list(classes or variant.labels or _numbered(variant)),
        meta.get("calibration"),
        {"path": str(path), "sha256": sha256_file(path), "random_weights": False,
         "card": meta.get("card")},
        gates=meta.get("gates"), exit_thresholds=meta.get("exit_thresholds"),
    )


def load_checkpoint_blob(path: Path) -> dict[str, Any]:
    """``athe.training.model.read_checkpoint`` (weights_only, one-line refusals) as ``ConvertError``."""
    from athe.training.model import read_checkpoint

    try:
        return read_checkpoint(path)
    except ValueError as exc:
        raise ConvertError(str(exc)) from None


def _numbered(variant: Variant) -> list[str]:
    return [f"class_{i}" for i in range(variant.backbone.num_classes)]


def sample_inputs(variant: Variant, data: str | Path | None, n: int, seed: int, batch_size: int = 1,
                  extra: int = 0) -> tuple[list[torch.Tensor], np.ndarray | None, str, list[torch.Tensor]]:
    """``n`` preprocessed input batches: real images from ``data`` when given, else seeded random.

    ``extra`` more batches come back separately (int8-static calibration), drawn from images
    disjoint from the first ``n`` so the accuracy check never sees its own calibration images.
    """
    size = variant.backbone.img_size
    if data is None:
        gen = torch.Generator().manual_seed(seed)
        xs = [torch.randn(batch_size, 3, size, size, generator=gen) for _ in range(n + extra)]
        return xs[:n], None, "random", xs[n:]
    from athe.training.data import load_imageset
    from athe.training.transforms import eval_tensor

    images = load_imageset(data)
    need = (n + extra) * batch_size
    if need > len(images):
        raise ConvertError(f"{data}: {len(images)} images, but --parity-samples {n} + calibration {extra} "
                           f"batches of {batch_size} need {need}; lower them or give more images")
    perm = np.random.default_rng(seed).permutation(len(images))
    idx, cal_idx = np.sort(perm[: n * batch_size]), np.sort(perm[n * batch_size: need])
    x = eval_tensor(images, variant.preprocess, idx)
    cal = eval_tensor(images, variant.preprocess, cal_idx).split(batch_size) if extra else []
    return ([t.contiguous() for t in x.split(batch_size)], images.labels[idx], "real",
            [t.contiguous() for t in cal])


def _outputs(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _top1s(ref_pred: list[np.ndarray], got_pred: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    out = {}
    for key, preds in (("top1_fp32_pytorch", ref_pred), ("top1_artifact", got_pred)):
        pred = np.concatenate(preds)
        out[key] = round(100.0 * float((pred == labels[: len(pred)]).mean()), 2)
    return out


def _compare(model_fn: Callable[[list[np.ndarray]], list[np.ndarray]], reference: torch.nn.Module,
             inputs: list[tuple[torch.Tensor, ...]], labels: np.ndarray | None = None,
             output_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Max |diff| (over every output) and top-1 agreement (of the ``logits`` output, else the
    first) of an artifact vs its PyTorch form; with class ``labels`` also both top-1s (%) on
    those images. With ``output_names`` also the max |diff| of each output by name."""
    names = output_names or ("logits",)
    at = names.index("logits") if "logits" in names else 0
    diffs, per, agree, ref_pred, got_pred = [], {n: 0.0 for n in names}, 0, [], []
    with torch.no_grad():
        for args in inputs:
            ref = [t.numpy() for t in _outputs(reference(*args))]
            got = model_fn([t.numpy() for t in args])
            if len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref, strict=False)):
                raise ConvertError(f"the artifact gives outputs {[g.shape for g in got]}, its PyTorch form "
                                   f"{[r.shape for r in ref]}")
            d = [float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True)]
            diffs.append(max(d))
            for n, v in zip(names, d, strict=False):
                per[n] = max(per[n], v)
            agree += int((got[at].argmax(-1) == ref[at].argmax(-1)).all())
            ref_pred.append(ref[at].argmax(-1))
            got_pred.append(got[at].argmax(-1))
    out: dict[str, Any] = {"max_abs_diff": max(diffs), "top1_agreement": agree / len(inputs), "samples": len(inputs)}
    if output_names is not None and len(output_names) > 1:
        out["max_abs_diff_per_output"] = per
    if labels is not None:
        out.update(_top1s(ref_pred, got_pred, labels))
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"athe": __version__}
    for dist in ("torch", "timm", "litert-torch", "executorch", "ai-edge-litert", "ai-edge-quantizer"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["git_commit"] = _git_commit()
    out["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return out


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ConvertError(f"output folder {str(out)!r} already exists; pass --force to replace it or choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".athe-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise ConvertError(f"cannot write to {str(parent)!r} ({exc.strerror}); choose a writable --out") from None


def convert_artifact(owner: str, module: torch.nn.Module, fmt: str, folder: Path, opts: ConvertOptions,
                     inputs: list[torch.Tensor] | list[tuple[torch.Tensor, ...]],
                     calibration: list[tuple[torch.Tensor, ...]] | None,
                     variant: Variant, labels: np.ndarray | None = None) -> Any:
    """Convert one artifact, check parity (and delegation), return its manifest entry.

    ``inputs``: one tensor per sample, or (multi-input stages) one tuple of tensors per sample
    in the form's input order. ``labels``: class labels of ``inputs`` (levels and stages), to
    record both top-1s in the parity."""
    name = f"{owner}.{fmt}"
    path = folder / name
    inputs = [x if isinstance(x, tuple) else (x,) for x in inputs]
    example = inputs[0]
    t0 = time.time()
    try:
        report = CONVERTERS[fmt](module, example, path, quantize=opts.quantize, calibration=calibration)
    except ConvertError:
        raise
    except Exception as exc:  # add the variant and artifact, keep the cause
        raise ConvertError(f"{variant.name}: converting {name} failed: {type(exc).__name__}: {exc}") from exc
    seconds = time.time() - t0
    delegation = dict(report) if fmt == "pte" else None  # to_pte returns its delegation report
    backend = load_backend(BACKEND_FOR_FORMAT[fmt], threads=1)
    loaded = backend.load(path)
    try:
        parity = _compare(loaded.run_many, module, inputs, labels, getattr(module, "outputs", None))
    except ConvertError as exc:
        raise ConvertError(f"{variant.name}: {name}: {exc}; the artifact is not written") from None
    parity["inputs"] = "real" if opts.data is not None else "random"
    parity["convert_seconds"] = round(seconds, 1)
    precision = "fp32" if opts.quantize == "none" else opts.quantize
    if precision == "fp32" and parity["max_abs_diff"] > PARITY_TOLERANCE:
        raise ConvertError(
            f"{variant.name}: {name} differs from PyTorch by {parity['max_abs_diff']:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the artifact is not written"
        )
    if precision == "fp32" and delegation is not None and delegation["disallowed_non_delegated"]:
        raise ConvertError(
            f"{variant.name}: {name} leaves {delegation['disallowed_non_delegated']} outside XNNPACK; "
            "rewrite them in the export form (see convert/backend_quirks.py)"
        )
    _logger.info("%s: %.1fs, max|diff| %.2e, top-1 agreement %.2f", name, seconds,
                 parity["max_abs_diff"], parity["top1_agreement"])
    return artifact_for_file(folder, name, precision=precision, parity=parity, delegation=delegation)


def convert_bundle(opts: ConvertOptions) -> Path:
    """Convert every level (and the router) of ``opts.variant``; returns the bundle folder."""
    variant = opts.variant_obj or get_variant(opts.variant)
    out = Path(opts.out)
    for fmt in opts.formats:
        if fmt not in CONVERTERS:
            raise ConvertError(f"unknown format {fmt!r}; choose from {', '.join(CONVERTERS)}")
    if opts.quantize not in ("none", "int8-dynamic", "int8-static"):
        raise ConvertError(f"unknown --quantize {opts.quantize!r}; use none, int8-dynamic or int8-static")
    for fmt, name in opts.forms.items():
        if name not in EXPORT_FORMS:
            raise ConvertError(f"unknown export form {name!r} for {fmt}; choose from {', '.join(EXPORT_FORMS)}")
    if opts.quantize == "int8-static" and opts.data is None:
        raise ConvertError("--quantize int8-static needs real calibration data: pass --calibration-data PATH")
    _check_out(out, opts.force)
    weights = resolve_weights(variant, opts.checkpoint, opts.random_weights, opts.seed)
    static = opts.quantize == "int8-static"
    inputs, labels, kind, cal = sample_inputs(variant, opts.data, opts.parity_samples, opts.seed, opts.batch_size,
                                              extra=opts.calibration_samples if static else 0)
    calibration: list[tuple[torch.Tensor, ...]] | None = [(x,) for x in cal] if static else None

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        levels = []
        for lv in variant.levels:
            files = {}
            for fmt in opts.formats:
                form_name = opts.forms.get(fmt, "rewrite")
                fmt_form = EXPORT_FORMS[form_name](weights.model, lv, batch_size=opts.batch_size)
                files[fmt] = convert_artifact(lv.name, fmt_form, fmt, tmp, opts, inputs, calibration, variant, labels)
                files[fmt].parity["export_form"] = form_name
            if static and labels is not None:
                _check_static_drop(files, variant, lv.name)
            if opts.write_reference:
                form = LevelExport(weights.model, lv, batch_size=opts.batch_size)
                torch.export.save(torch.export.export(form, (inputs[0],)), str(tmp / f"{lv.name}.pt2"))
                files["pt2"] = artifact_for_file(tmp, f"{lv.name}.pt2", precision="fp32")
            cal_acc = (weights.calibration or {}).get("test", {}).get("level_accuracy", {}).get(lv.name)
            levels.append(LevelSpec(
                name=lv.name, keep=lv.keep, heads=lv.heads or variant.backbone.num_heads, fuse=lv.fuse,
                tokens_per_block=tuple(variant.tokens_per_block(lv)), macs=variant.macs(lv),
                files=files, val_accuracy=cal_acc))
        stages: tuple[StageSpec, ...] = ()
        exits_calibrated: bool | None = None
        if variant.stages:
            stages, exits_calibrated = convert_stages(weights, variant, tmp, opts, inputs, labels,
                                                      cal if static else None)
        router_spec = None
        if weights.router is not None and variant.router is not None:
            rform = RouterExport(weights.router)
            rfiles = {}
            # The router stays fp32: it is tiny (~1.5 M MACs), and dynamic int8 turned its convolutions
            # into slow kernels (athe-mini, LiteRT: 9.5 ms instead of 0.2 ms per image).
            ropts = dataclasses.replace(opts, quantize="none")
            for fmt in opts.formats:
                rfiles[fmt] = convert_artifact("router", rform, fmt, tmp, ropts, inputs, None, variant)
            if opts.write_reference:
                torch.export.save(torch.export.export(rform, (inputs[0],)), str(tmp / "router.pt2"))
                rfiles["pt2"] = artifact_for_file(tmp, "router.pt2", precision="fp32")
            rcal = weights.calibration or {}
            router_spec = RouterSpec(
                files=rfiles, outputs=tuple(variant.level_names), thresholds=dict(weights.thresholds or {}),
                input_size=variant.router.input_size, macs=router_macs(weights.router),
                calibration_target=rcal.get("target", {"random_weights": True}),
                accuracy=None if not rcal else float(np.mean(list(rcal.get("router_accuracy", {}).values()) or [0])))
        pre = variant.preprocess
        manifest = Manifest(
            schema_version=SCHEMA_VERSION, variant=variant.name, created_with=_versions(),
            checkpoint=weights.checkpoint, random_weights=opts.random_weights,
            precision="fp32" if opts.quantize == "none" else opts.quantize,
            input=InputSpec(rule="resize_shorter_center_crop", resize_size=pre.resize_size,
                            crop_size=pre.crop_size, interpolation=pre.interpolation, mean=pre.mean,
                            std=pre.std, batch_size=opts.batch_size),
            labels=tuple(weights.classes), levels=tuple(levels), router=router_spec,
            calibration=weights.calibration, stages=stages,
        )
        if exits_calibrated is not None:
            manifest = dataclasses.replace(
                manifest, calibration={**(weights.calibration or {}), "exits_calibrated": exits_calibrated})
        Manifest.from_dict(json.loads(manifest.dumps()))  # round-trip through the reader
        (tmp / "manifest.json").write_text(manifest.dumps())
        _install(tmp, out, opts.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def stage_file(name: str) -> str:
    """The file stem of stage ``name``'s artifacts (``stage-s1.tflite``)."""
    return f"stage-{name}"


def chain_inputs(model: AtheViT, images: list[torch.Tensor]) -> list[list[tuple[torch.Tensor, ...]]]:
    """Per stage, per image: the stage's inputs (its ``stage_io`` order) as the PyTorch chain
    (``AtheViT.forward_stage``) computes them."""
    from athe.convert.export_form import stage_io

    k = len(model.stages)
    names = [stage_io(model, i)[0] for i in range(k)]
    out: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in range(k)]
    with torch.no_grad():
        for x in images:
            tokens, scores = x, None
            for i in range(k):
                feed = {"image": x, "tokens": tokens, "scores": scores}
                # a stage takes "scores" only when the previous stage gave them (never None there)
                out[i].append(tuple(cast(torch.Tensor, feed[n]) for n in names[i]))
                tokens, _, scores = model.forward_stage(i, tokens, scores)
    return out


def chain_parity(loaded: list[Any], ios: list[tuple[tuple[str, ...], tuple[str, ...]]],
                 model: AtheViT, images: list[torch.Tensor]) -> list[dict[str, Any]]:
    """The whole chain of stage artifacts of one format, each fed the previous one's outputs, vs
    ``AtheViT.forward_exits``: per exit ``chain_max_abs_diff`` and ``chain_top1_agreement`` of
    its logits."""
    k = len(loaded)
    diffs, agree = [0.0] * k, [0] * k
    with torch.no_grad():
        for x in images:
            ref = [t.numpy() for t in model.forward_exits(x)]
            feed: dict[str, np.ndarray] = {"image": x.numpy()}
            for i, (m, (ins, outs)) in enumerate(zip(loaded, ios, strict=True)):
                feed = dict(zip(outs, m.run_many([feed[n] for n in ins]), strict=True))
                diffs[i] = max(diffs[i], float(np.abs(feed["logits"] - ref[i]).max()))
                agree[i] += int((feed["logits"].argmax(-1) == ref[i].argmax(-1)).all())
    return [{"chain_max_abs_diff": diffs[i], "chain_top1_agreement": agree[i] / len(images)}
            for i in range(k)]


def exit_gates(weights: LoadedWeights, variant: Variant
               ) -> tuple[dict[str, GateSpec], dict[str, float], bool, str]:
    """``(gates, thresholds, calibrated, why)`` for every stage but the last.

    From the checkpoint's ``gates`` / ``exit_thresholds`` when its exits were trained; else
    (no checkpoint, weights from before the exits, no gates) ``max_softmax`` at 1.0 everywhere:
    the chain then never exits early, and ``why`` says so.
    """
    names = variant.stage_names[:-1]
    why = ""
    if weights.checkpoint.get("random_weights"):
        why = "random weights"
    elif not getattr(weights.model, "exits_trained", True):
        why = "the checkpoint has no trained exit heads"
    elif not weights.gates or not weights.exit_thresholds:
        why = "the checkpoint has no exit gates (run 'athe train router' on a run with stages)"
    if why:
        return ({n: GateSpec(kind="max_softmax") for n in names}, {n: 1.0 for n in names}, False, why)
    assert weights.gates is not None and weights.exit_thresholds is not None  # why == "" implies both set
    missing = [n for n in names if n not in weights.gates or n not in weights.exit_thresholds]
    if missing:
        raise ConvertError(f"{variant.name}: the checkpoint's exit gates/thresholds lack stage(s) {missing} "
                           f"(it has gates {sorted(weights.gates)}, thresholds "
                           f"{sorted(weights.exit_thresholds)}); it was made for other stages: retrain the gates")
    gates = {}
    for n in names:
        g = dict(weights.gates[n])
        for key in ("features", "mean", "std", "weights"):
            if key in g:
                g[key] = tuple(g[key])
        try:
            gates[n] = GateSpec(**g)
        except TypeError as exc:
            raise ConvertError(f"{variant.name}: the checkpoint's gate for stage {n!r} is malformed ({exc})") from None
    return gates, {n: float(weights.exit_thresholds[n]) for n in names}, True, ""


def convert_stages(weights: LoadedWeights, variant: Variant, folder: Path, opts: ConvertOptions,
                   images: list[torch.Tensor], labels: np.ndarray | None,
                   calibration_images: list[torch.Tensor] | None) -> tuple[tuple[StageSpec, ...], bool]:
    """Convert every stage in every format, check each stage and each format's whole chain;
    returns the ``StageSpec``s and whether the exits are calibrated."""
    model = weights.model
    gates, thresholds, calibrated, why = exit_gates(weights, variant)
    if not calibrated:
        _logger.warning("%s: exits not calibrated (%s): every exit gate is max_softmax at threshold 1.0, "
                        "so the chain never exits early; calibration records exits_calibrated: false",
                        variant.name, why)
    per_stage = chain_inputs(model, images)
    per_stage_cal = chain_inputs(model, calibration_images) if calibration_images else None
    ios = []
    specs_files: list[dict[str, Any]] = []
    precision = "fp32" if opts.quantize == "none" else opts.quantize
    for i, st in enumerate(variant.stages):
        files: dict[str, Any] = {}
        io = None
        for fmt in opts.formats:
            form_name = opts.forms.get(fmt, "rewrite")
            form = STAGE_FORMS[form_name](model, i, batch_size=opts.batch_size)
            io = io or (form.inputs, form.outputs)
            assert (form.inputs, form.outputs) == io
            cal = per_stage_cal[i] if per_stage_cal else None
            files[fmt] = convert_artifact(stage_file(st.name), form, fmt, folder, opts, per_stage[i], cal,
                                          variant, labels)
            files[fmt].parity["export_form"] = form_name
        assert io is not None
        if opts.quantize == "int8-static" and labels is not None:
            _check_static_drop(files, variant, stage_file(st.name))
        if opts.write_reference:
            form = StageExport(model, i, batch_size=opts.batch_size)
            ref = f"{stage_file(st.name)}.pt2"
            torch.export.save(torch.export.export(form, per_stage[i][0]), str(folder / ref))
            files["pt2"] = artifact_for_file(folder, ref, precision="fp32")
        ios.append(io)
        specs_files.append(files)
    for fmt in (*opts.formats, *(("pt2",) if opts.write_reference else ())):
        backend = load_backend(BACKEND_FOR_FORMAT.get(fmt, "torch"), threads=1)
        loaded = [backend.load(folder / files[fmt].path) for files in specs_files]
        chain = chain_parity(loaded, ios, model, images)
        for files, rec in zip(specs_files, chain, strict=True):
            files[fmt].parity.update(rec)
        worst = max(r["chain_max_abs_diff"] for r in chain)
        _logger.info("stage chain .%s: max|diff| per exit %s vs PyTorch", fmt,
                     ", ".join(f"{r['chain_max_abs_diff']:.2e}" for r in chain))
        fp32 = precision == "fp32" or fmt == "pt2"
        if fp32 and worst > PARITY_TOLERANCE:
            bad = [variant.stages[j].name for j, r in enumerate(chain) if r["chain_max_abs_diff"] > PARITY_TOLERANCE]
            raise ConvertError(f"{variant.name}: the .{fmt} stage chain differs from PyTorch by {worst:.2e} at "
                               f"exit(s) {bad} (tolerance {PARITY_TOLERANCE:.0e}); the bundle is not written")
    tokens, macs = variant.stage_tokens(), variant.stage_macs()
    exit_acc = ((weights.calibration or {}).get("exits") or {}).get("exit_accuracy_test") or {}
    last = len(variant.stages) - 1
    specs = tuple(
        StageSpec(name=st.name, blocks=cast(tuple[int, int], tuple(st.blocks)), keep=float(st.keep), fuse=bool(st.fuse),
                  heads=st.heads or variant.backbone.num_heads, tokens=tokens[i], macs=macs[i],
                  inputs=ios[i][0], outputs=ios[i][1],
                  token_selection="in-graph" if model.stage_keep(i) is not None else "none",
                  files=specs_files[i], gate=gates.get(st.name) if i < last else None,
                  threshold=thresholds.get(st.name) if i < last else None,
                  val_accuracy=exit_acc.get(st.name))
        for i, st in enumerate(variant.stages))
    return specs, calibrated


def _check_static_drop(files: dict[str, Any], variant: Variant, level: str) -> None:
    """Refuse int8-static artifacts that lose more than ``STATIC_INT8_MAX_DROP`` points vs fp32."""
    for fmt, art in files.items():
        fp, acc_q, n = art.parity["top1_fp32_pytorch"], art.parity["top1_artifact"], art.parity["samples"]
        if fp - acc_q > STATIC_INT8_MAX_DROP:
            raise ConvertError(
                f"{variant.name}: int8-static {level}.{fmt} loses {fp - acc_q:.1f} top-1 points vs fp32 "
                f"({acc_q:.1f} vs {fp:.1f} % on {n} held-out images; limit "
                f"{STATIC_INT8_MAX_DROP}); use --quantize int8-dynamic"
            )


def _install(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished bundle into place atomically (replacing ``out`` only with ``force``)."""
    if out.exists():
        if not force:
            raise ConvertError(f"output folder {str(out)!r} appeared during conversion; nothing was replaced")
        old = out.with_name(f".{out.name}.old-{hashlib.sha1(str(time.time()).encode()).hexdigest()[:8]}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)

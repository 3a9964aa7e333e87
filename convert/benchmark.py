"""Conversion benchmark: our export forms vs a naive export of the same weights, side by side.

For every level of each variant (random weights are fine for latency) it converts:

* ``ours``: the export form (``LevelExport``) -> ``.tflite`` and ``.pte``;
* ``naive``: the training-mode ``AtheViT`` at that level (``PlainLevel``: stock timm attention
  with 4-D matmul, ``nn.LayerNorm``, ``topk``/``gather`` as written for training) -> the same
  formats. LiteRT runs this form faster than the rewrite, so ``athe convert`` now uses it for
  ``.tflite`` (``--tflite-form``); the ``.pte`` files keep the rewrite;
* ``ours-int8`` / ``naive-int8``: dynamic-range int8 of the rewrite / of the plain form (the latter
  only for formats whose bundles ship the plain form, i.e. ``.tflite``);

then times batch-1 inference through the runtime backends with 1 and 2 threads in one process
(median of ``--repeat`` runs after warm-up, the kinds of one level interleaved run by run) and
prints ratios.

For variants with an exit chain it also converts every stage in the form each format ships
(``DEFAULT_FORMS``) and times the chain with 1 thread, stage by stage in every round, then
prints each stage's share of the full-chain latency next to its share of the MACs
(``Variant.stage_macs``). For every stage that keeps tokens on entry it measures where token
selection should run: ``in-graph`` (topk/gather inside the stage artifact, what bundles ship)
against ``runtime`` (numpy ``argpartition`` + ``take`` + the fused token, then the same stage
converted without selection, fed the kept tokens), interleaved in the same rounds and checked
to give the same logits.

Raw samples go to ``--json``. Conversion is slow and timing wants a quiet machine, so the two
can be split::

    python -m athe.convert.benchmark --variants athe-mini --threads 1,2 --json bench.json
    python -m athe.convert.benchmark --variants athe-simple --workdir /tmp/b --convert-only
    python -m athe.convert.benchmark --variants athe-simple --workdir /tmp/b --reuse --json bench.json
    python -m athe.convert.benchmark --what stages --variants athe-mini,athe-simple
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch

from athe.convert.bundle import BACKEND_FOR_FORMAT as BACKENDS
from athe.convert.bundle import CONVERTERS, DEFAULT_FORMS
from athe.convert.export_form import (
    STAGE_FORMS,
    LevelExport,
    PlainLevel,
    PlainStage,
    StageExport,
    _StageForm,
)
from athe.runtime.backends import load_backend
from athe.training.model import AtheViT, build_model
from athe.variants import get_variant


def time_group(paths: dict[str, Path], fmt: str, threads: int, x: np.ndarray, warmup: int,
               repeat: int) -> dict[str, list[float]]:
    """Batch-1 latency samples (ms) of several artifacts, interleaved run by run.

    Every model is loaded first; then each round runs each model once, so a slow spell of the
    machine hits all of them alike and the ratios stay fair.
    """
    models = {kind: load_backend(BACKENDS[fmt], threads=threads).load(p) for kind, p in paths.items()}
    for model in models.values():
        for _ in range(warmup):
            model.run(x)
    samples: dict[str, list[float]] = {kind: [] for kind in models}
    for _ in range(repeat):
        for kind, model in models.items():
            t0 = time.perf_counter()
            model.run(x)
            samples[kind].append((time.perf_counter() - t0) * 1e3)
    return samples


def convert_all(v, model: AtheViT, x: torch.Tensor, formats: list[str], int8: bool, workdir: Path,
                reuse: bool) -> dict[tuple[str, str, str], dict]:
    """Convert ours / naive / ours-int8 of every level; ``reuse`` keeps artifacts already in ``workdir``."""
    out: dict[tuple[str, str, str], dict] = {}
    for lv in v.levels:
        kinds = {"ours": (LevelExport(model, lv), "none"), "naive": (PlainLevel(model, lv), "none")}
        if int8:
            kinds["ours-int8"] = (LevelExport(model, lv), "int8-dynamic")
            kinds["naive-int8"] = (PlainLevel(model, lv), "int8-dynamic")
        for fmt in formats:
            for kind, (module, quant) in kinds.items():
                if kind == "naive-int8" and DEFAULT_FORMS.get(fmt) != "plain":
                    continue  # int8 of the plain form only where bundles ship the plain form
                path = workdir / f"{v.name}-{lv.name}-{kind}.{fmt}"
                info_path = path.with_name(path.name + ".json")
                if reuse and path.exists() and info_path.exists():
                    out[(lv.name, fmt, kind)] = json.loads(info_path.read_text())
                    continue
                t0 = time.time()
                report = CONVERTERS[fmt](module, (x,), path, quantize=quant)
                delegation = report if fmt == "pte" else None
                info = {"path": str(path), "bytes": path.stat().st_size, "convert_s": round(time.time() - t0, 1),
                        "delegate_calls": delegation and delegation["delegate_calls"]}
                info_path.write_text(json.dumps(info))
                out[(lv.name, fmt, kind)] = info
                print(f"converted {path.name} in {info['convert_s']} s", flush=True)
    return out


def benchmark(variants: list[str], threads: list[int], formats: list[str], int8: bool,
              warmup: int, repeat: int, workdir: Path, reuse: bool = False, convert_only: bool = False) -> list[dict]:
    rows = []
    for name in variants:
        v = get_variant(name)
        torch.manual_seed(0)
        model = build_model(v).eval()
        x = torch.randn(1, 3, v.backbone.img_size, v.backbone.img_size)
        arts = convert_all(v, model, x, formats, int8, workdir, reuse)
        if convert_only:
            continue
        for lv in v.levels:
            for fmt in formats:
                kinds = [k for (level, f, k) in arts if level == lv.name and f == fmt]
                for th in threads:
                    group = time_group({k: Path(arts[(lv.name, fmt, k)]["path"]) for k in kinds}, fmt, th,
                                       x.numpy(), warmup, repeat)
                    for kind, samples in group.items():
                        info = arts[(lv.name, fmt, kind)]
                        rows.append({"variant": name, "level": lv.name, "format": fmt, "kind": kind,
                                     "threads": th, "median_ms": statistics.median(samples),
                                     "samples_ms": samples, "bytes": info["bytes"],
                                     "convert_s": info["convert_s"], "delegate_calls": info["delegate_calls"]})
                        print(f"{name:12s} {lv.name:8s} {fmt:6s} {kind:9s} {th}T "
                              f"{rows[-1]['median_ms']:8.2f} ms", flush=True)
    return rows


def ratios(rows: list[dict]) -> list[str]:
    """One line per (variant, level, format, threads): rewrite vs plain, and int8 vs fp32 of the
    form ``athe convert`` ships for that format (``DEFAULT_FORMS``)."""
    key = {(r["variant"], r["level"], r["format"], r["kind"], r["threads"]): r["median_ms"] for r in rows}
    nan = float("nan")
    lines = ["variant      level    fmt    thr  ours ms  naive ms  naive/ours  shipped  fp32 ms  int8 ms  fp32/int8"]
    for (var, lv, fmt, kind, th), ms in key.items():
        if kind != "ours":
            continue
        naive = key.get((var, lv, fmt, "naive", th))
        plain = DEFAULT_FORMS.get(fmt) == "plain"
        fp = naive if plain else ms
        q = key.get((var, lv, fmt, "naive-int8" if plain else "ours-int8", th))
        lines.append(f"{var:12s} {lv:8s} {fmt:6s} {th:3d} {ms:8.2f} {naive or nan:9.2f} "
                     f"{(naive or nan) / ms:10.2f}x  {'plain' if plain else 'rewrite':7s} {fp or nan:8.2f} "
                     f"{q or nan:8.2f} {(fp or nan) / q if q else nan:9.2f}x")
    return lines


# -- stages ----------------------------------------------------------------------------------


def without_selection(form: _StageForm) -> _StageForm:
    """The stage form ``form`` with its on-entry token selection taken out: it takes the kept
    tokens (``[B, tokens, D]``, selected by ``select_numpy``) and no scores."""
    form.inputs = ("tokens",)
    form.input_shapes = ((form.batch_size, form.tokens, form.input_shapes[0][2]),)
    form.tokens_in = form.tokens
    if hasattr(form, "select"):  # StageExport
        cast(StageExport, form).select = None
    else:  # PlainStage: the copied model skips selection for this stage only
        model, index = cast(PlainStage, form).model, form.index
        keep_of = type(model).stage_keep.__get__(model)
        model.stage_keep = lambda j: None if j == index else keep_of(j)  # type: ignore[method-assign, assignment]  # per-instance override on the copy
    return form


def select_numpy(tokens: np.ndarray, scores: np.ndarray, k: int, fuse: bool) -> np.ndarray:
    """``select_tokens`` in numpy for batch 1 (what a runtime would do between two artifacts):
    CLS + the ``k`` top-scoring tokens in descending order (+ the score-weighted mean of the rest)."""
    s, patches = scores[0], tokens[0, 1:]
    idx = np.argpartition(-s, k - 1)[:k]
    idx = idx[np.argsort(-s[idx], kind="stable")]
    kept = np.take(patches, idx, axis=0)
    parts = [tokens[0, :1], kept]
    if fuse:
        w = np.take(s, idx)
        den = max(float(s.sum() - w.sum()), 1e-6)
        parts.append(((s @ patches - w @ kept) / den)[None])
    return np.concatenate(parts, axis=0)[None]


def convert_stages(v, model: AtheViT, formats: list[str], workdir: Path, reuse: bool,
                   with_runtime_selection: bool = True) -> dict[tuple[str, str, str], dict]:
    """Every stage (and, for stages that keep tokens, the same stage without selection, kind
    ``runtime-select``) in each format's shipped form; ``reuse`` keeps what ``workdir`` has."""
    out: dict[tuple[str, str, str], dict] = {}
    for fmt in formats:
        form_cls = STAGE_FORMS[DEFAULT_FORMS.get(fmt, "rewrite")]
        for i, st in enumerate(v.stages):
            kinds = {"stage": False}
            if with_runtime_selection and model.stage_keep(i) is not None:
                kinds["runtime-select"] = True
            for kind, strip in kinds.items():
                path = workdir / f"{v.name}-stage-{st.name}-{kind}.{fmt}"
                info_path = path.with_name(path.name + ".json")
                if reuse and path.exists() and info_path.exists():
                    out[(st.name, fmt, kind)] = json.loads(info_path.read_text())
                    continue
                form = form_cls(model, i)
                if strip:
                    form = without_selection(form)
                t0 = time.time()
                report = CONVERTERS[fmt](form, form.get_example_inputs(), path)
                info = {"path": str(path), "bytes": path.stat().st_size, "convert_s": round(time.time() - t0, 1),
                        "inputs": list(form.inputs), "outputs": list(form.outputs),
                        "delegate_calls": report["delegate_calls"] if fmt == "pte" else None}
                info_path.write_text(json.dumps(info))
                out[(st.name, fmt, kind)] = info
                print(f"converted {path.name} in {info['convert_s']} s", flush=True)
    return out


def time_chain(v, model: AtheViT, arts: dict, fmt: str, x: np.ndarray, warmup: int,
               repeat: int) -> dict[str, list[float]]:
    """Latency samples (ms, 1 thread) of every stage of the chain and, per stage that keeps
    tokens, of runtime selection (``<stage>:select``) + the stage without it
    (``<stage>:runtime-select``); one round runs all of them once, so they are interleaved."""
    backend = load_backend(BACKENDS[fmt], threads=1)
    stages = [(st, arts[(st.name, fmt, "stage")]) for st in v.stages]
    loaded = {st.name: backend.load(info["path"]) for st, info in stages}
    bare = {st.name: backend.load(arts[(st.name, fmt, "runtime-select")]["path"])
            for st in v.stages if (st.name, fmt, "runtime-select") in arts}
    samples: dict[str, list[float]] = {st.name: [] for st in v.stages}
    for name in bare:
        samples[f"{name}:select"], samples[f"{name}:runtime-select"] = [], []
    keep = {st.name: (model.stage_keep(i), st.fuse) for i, st in enumerate(v.stages)}
    worst = 0.0
    for r in range(warmup + repeat):
        feed = {"image": x}
        for st, info in stages:
            args = [feed[n] for n in info["inputs"]]
            if st.name in bare:  # the runtime path, fed the same tokens and scores
                k, fuse = keep[st.name]
                assert k is not None  # a runtime-select artifact exists only for stages that keep tokens
                t0 = time.perf_counter()
                kept = select_numpy(feed["tokens"], feed["scores"], k, fuse)
                t1 = time.perf_counter()
                outs_bare = bare[st.name].run_many([kept])
                t2 = time.perf_counter()
                if r >= warmup:
                    samples[f"{st.name}:select"].append((t1 - t0) * 1e3)
                    samples[f"{st.name}:runtime-select"].append((t2 - t1) * 1e3)
            t0 = time.perf_counter()
            outs = loaded[st.name].run_many(args)
            dt = (time.perf_counter() - t0) * 1e3
            if r >= warmup:
                samples[st.name].append(dt)
            feed = dict(zip(info["outputs"], outs, strict=True))
            if st.name in bare:
                got = dict(zip(arts[(st.name, fmt, "runtime-select")]["outputs"], outs_bare, strict=True))
                worst = max(worst, float(np.abs(got["logits"] - feed["logits"]).max()))
    if worst > 1e-3:
        print(f"warning: runtime selection differs from in-graph selection by {worst:.2e} ({fmt})")
    return samples


def stage_benchmark(variants: list[str], formats: list[str], warmup: int, repeat: int, workdir: Path,
                    reuse: bool = False, convert_only: bool = False) -> list[dict]:
    """Per stage: median ms (1 thread), share of the chain's latency and of its MACs; per stage
    that keeps tokens, in-graph vs runtime token selection."""
    rows = []
    for name in variants:
        v = get_variant(name)
        if not v.stages:
            print(f"{name}: no stages")
            continue
        torch.manual_seed(0)
        model = build_model(v).eval()
        x = torch.randn(1, 3, v.backbone.img_size, v.backbone.img_size, generator=torch.Generator().manual_seed(0))
        arts = convert_stages(v, model, formats, workdir, reuse)
        if convert_only:
            continue
        macs = v.stage_macs()
        for fmt in formats:
            samples = time_chain(v, model, arts, fmt, x.numpy(), warmup, repeat)
            med = {k: statistics.median(s) for k, s in samples.items()}
            chain = sum(med[st.name] for st in v.stages)
            for i, st in enumerate(v.stages):
                info = arts[(st.name, fmt, "stage")]
                row = {"variant": name, "format": fmt, "stage": st.name, "threads": 1, "median_ms": med[st.name],
                       "latency_share": med[st.name] / chain, "macs": macs[i], "macs_share": macs[i] / sum(macs),
                       "samples_ms": samples[st.name], "bytes": info["bytes"],
                       "delegate_calls": info["delegate_calls"], "token_selection": "in-graph"
                       if model.stage_keep(i) is not None else "none"}
                if f"{st.name}:select" in med:
                    row["runtime_select_ms"] = med[f"{st.name}:select"]
                    row["runtime_stage_ms"] = med[f"{st.name}:runtime-select"]
                    row["runtime_total_ms"] = row["runtime_select_ms"] + row["runtime_stage_ms"]
                    row["runtime_samples_ms"] = {k: samples[f"{st.name}:{k}"] for k in ("select", "runtime-select")}
                rows.append(row)
    return rows


def stage_lines(rows: list[dict]) -> list[str]:
    """The per-stage table: latency share next to MAC share, and the selection comparison."""
    lines = ["variant      fmt    stage  select    ms (1T)  latency share  MAC share  latency/MAC share"]
    for r in rows:
        lines.append(f"{r['variant']:12s} {r['format']:6s} {r['stage']:6s} {r['token_selection']:8s} "
                     f"{r['median_ms']:8.2f} {100 * r['latency_share']:12.1f} % {100 * r['macs_share']:8.1f} % "
                     f"{r['latency_share'] / r['macs_share']:10.2f}x")
    sel = [r for r in rows if "runtime_total_ms" in r]
    if sel:
        lines.append("token selection on entry: in-graph (topk/gather in the stage) vs runtime (numpy + stage without)")
        lines.append("variant      fmt    stage  in-graph ms  runtime ms (select + stage)  runtime/in-graph")
        for r in sel:
            lines.append(f"{r['variant']:12s} {r['format']:6s} {r['stage']:6s} {r['median_ms']:11.3f} "
                         f"{r['runtime_total_ms']:11.3f} ({r['runtime_select_ms']:.3f} + {r['runtime_stage_ms']:.3f})"
                         f" {r['runtime_total_ms'] / r['median_ms']:10.3f}x")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="athe-mini,athe-simple")
    ap.add_argument("--what", default="levels,stages",
                    help="levels (export forms, ours vs naive), stages (per-stage shares, token selection), or both")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--formats", default="tflite,pte")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="Keep the converted artifacts here (default: a temporary folder).")
    ap.add_argument("--reuse", action="store_true", help="Time artifacts already in --workdir, convert the rest.")
    ap.add_argument("--convert-only", action="store_true",
                    help="Convert into --workdir and stop (time later, on a quiet machine, with --reuse).")
    args = ap.parse_args()
    if (args.reuse or args.convert_only) and args.workdir is None:
        ap.error("--reuse and --convert-only need --workdir DIR")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        what = set(args.what.split(","))
        unknown = what - {"levels", "stages"}
        if unknown:
            ap.error(f"--what: unknown {sorted(unknown)}; use levels, stages or both")
        variants, formats = args.variants.split(","), args.formats.split(",")
        rows: list[dict] = []
        stage_rows: list[dict] = []
        if "levels" in what:
            rows = benchmark(variants, [int(t) for t in args.threads.split(",")], formats, not args.no_int8,
                             args.warmup, args.repeat, workdir, reuse=args.reuse, convert_only=args.convert_only)
        if "stages" in what:
            stage_rows = stage_benchmark(variants, formats, args.warmup, args.repeat, workdir,
                                         reuse=args.reuse, convert_only=args.convert_only)
    if args.convert_only:
        return
    if rows:
        print("\n".join(ratios(rows)))
    if stage_rows:
        print("\n".join(stage_lines(stage_rows)))
    if args.json:
        args.json.write_text(json.dumps({"levels": rows, "stages": stage_rows}, indent=1))


if __name__ == "__main__":
    main()

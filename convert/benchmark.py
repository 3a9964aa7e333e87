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
prints ratios. Raw samples go to ``--json``. Conversion is slow and timing wants a quiet machine,
so the two can be split::

    python -m athe.convert.benchmark --variants athe-mini --threads 1,2 --json bench.json
    python -m athe.convert.benchmark --variants athe-simple --workdir /tmp/b --convert-only
    python -m athe.convert.benchmark --variants athe-simple --workdir /tmp/b --reuse --json bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from athe.convert.bundle import BACKEND_FOR_FORMAT as BACKENDS
from athe.convert.bundle import CONVERTERS, DEFAULT_FORMS
from athe.convert.export_form import LevelExport, PlainLevel
from athe.runtime.backends import load_backend
from athe.training.model import build_model
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


def convert_all(v, model: torch.nn.Module, x: torch.Tensor, formats: list[str], int8: bool, workdir: Path,
                reuse: bool) -> dict[tuple[str, str, str], dict]:
    """Convert ours / naive / ours-int8 of every level; ``reuse`` keeps artifacts already in ``workdir``."""
    out = {}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="athe-mini,athe-simple")
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
        rows = benchmark(args.variants.split(","), [int(t) for t in args.threads.split(",")],
                         args.formats.split(","), not args.no_int8, args.warmup, args.repeat, workdir,
                         reuse=args.reuse, convert_only=args.convert_only)
    if args.convert_only:
        return
    print("\n".join(ratios(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

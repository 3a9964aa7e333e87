"""Conversion benchmark: our export forms vs a naive export of the same weights, side by side.

For every level of each variant (random weights are fine for latency) it converts:

* ``ours``: the export form (``LevelExport``) -> ``.tflite`` and ``.pte``;
* ``naive``: the training-mode ``AtheViT`` at that level (stock timm attention with 4-D matmul /
  SDPA, ``nn.LayerNorm``, ``topk``/``gather`` as written for training) -> the same formats;
* ``ours int8``: dynamic-range int8 of the export form (``--int8``);

then times batch-1 inference through the runtime backends with 1 and 2 threads in one process
(median of ``--repeat`` runs after warm-up) and prints ratios. Raw samples go to ``--json``.

    python -m athe.convert.benchmark --variants athe-mini --threads 1,2 --json bench.json
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
from athe.convert.bundle import CONVERTERS
from athe.convert.executorch import LAST_DELEGATION
from athe.runtime.backends import load_backend
from athe.training.export_form import LevelExport
from athe.training.model import build_model
from athe.variants import Level, get_variant


class NaiveLevel(torch.nn.Module):
    """The training-mode forward of one level, exported as is (no export rewrites)."""

    def __init__(self, model: torch.nn.Module, level: Level) -> None:
        super().__init__()
        self.model, self.level = model.eval(), level
        for blk in self.model.blocks:
            blk.attn.fused_attn = False  # SDPA does not lower to either runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_level(x, self.level)


def time_model(path: Path, fmt: str, threads: int, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
    model = load_backend(BACKENDS[fmt], threads=threads).load(path)
    for _ in range(warmup):
        model.run(x)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.run(x)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def benchmark(variants: list[str], threads: list[int], formats: list[str], int8: bool,
              warmup: int, repeat: int, workdir: Path) -> list[dict]:
    rows = []
    for name in variants:
        v = get_variant(name)
        torch.manual_seed(0)
        model = build_model(v).eval()
        x = torch.randn(1, 3, v.backbone.img_size, v.backbone.img_size)
        for lv in v.levels:
            kinds = {"ours": (LevelExport(model, lv), "none"), "naive": (NaiveLevel(model, lv), "none")}
            if int8:
                kinds["ours-int8"] = (LevelExport(model, lv), "int8-dynamic")
            for fmt in formats:
                for kind, (module, quant) in kinds.items():
                    path = workdir / f"{name}-{lv.name}-{kind}.{fmt}"
                    t0 = time.time()
                    CONVERTERS[fmt](module, (x,), path, quantize=quant)
                    delegation = dict(LAST_DELEGATION) if fmt == "pte" else None
                    for th in threads:
                        samples = time_model(path, fmt, th, x.numpy(), warmup, repeat)
                        rows.append({"variant": name, "level": lv.name, "format": fmt, "kind": kind,
                                     "threads": th, "median_ms": statistics.median(samples),
                                     "samples_ms": samples, "bytes": path.stat().st_size,
                                     "convert_s": round(time.time() - t0, 1),
                                     "delegate_calls": delegation and delegation["delegate_calls"]})
                        print(f"{name:12s} {lv.name:8s} {fmt:6s} {kind:9s} {th}T "
                              f"{rows[-1]['median_ms']:8.2f} ms", flush=True)
    return rows


def ratios(rows: list[dict]) -> list[str]:
    key = {(r["variant"], r["level"], r["format"], r["kind"], r["threads"]): r["median_ms"] for r in rows}
    lines = ["variant      level    fmt    thr  ours ms  naive ms  naive/ours  int8 ms  fp32/int8"]
    for (var, lv, fmt, kind, th), ms in key.items():
        if kind != "ours":
            continue
        naive = key.get((var, lv, fmt, "naive", th))
        q = key.get((var, lv, fmt, "ours-int8", th))
        lines.append(f"{var:12s} {lv:8s} {fmt:6s} {th:3d} {ms:8.2f} {naive or float('nan'):9.2f} "
                     f"{(naive or float('nan')) / ms:10.2f}x {q or float('nan'):8.2f} "
                     f"{ms / q if q else float('nan'):9.2f}x")
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark(args.variants.split(","), [int(t) for t in args.threads.split(",")],
                         args.formats.split(","), not args.no_int8, args.warmup, args.repeat, Path(tmp))
    print("\n".join(ratios(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

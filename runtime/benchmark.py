"""Where the dispatcher's time goes: router, each level, and everything around them, in one run.

Three measurements on the same backend, threads and inputs:

1. the router alone on one preprocessed tensor (``count`` runs after ``warmup``);
2. each level alone on that tensor;
3. ``Dispatcher.predict`` end to end on encoded images held in memory (no disk I/O), per stage.

From 3 it reports the dispatcher overhead ``total − route − infer`` (decode, preprocessing and
glue) and the share of mean end-to-end latency spent on router + preprocessing + glue (glue =
``total − decode − preprocess − route − infer``); the design target for ``athe-simple`` on
LiteRT with 2 threads is ≤ 3 %. Decode is reported on its own: it depends on the image files,
not on the runtime. Raw samples are kept in the result (``BenchmarkResult.to_dict``).

Example::

    $ python -m athe.runtime.benchmark --bundle bundles/athe-simple --threads 2
    $ python -m athe.runtime.benchmark --bundle bundles/athe-mini --images ../shared/data/cifar10-train.tar.gz

    >>> from athe.runtime.benchmark import run_benchmark
    >>> result = run_benchmark("bundles/athe-mini", threads=2, count=100)
    >>> print(result.format())
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import math
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from .backends import BackendError
from .bundle import BundleError
from .dispatcher import Dispatcher, DispatchError, parse_thresholds
from .manifest import InputSpec
from .preprocess import ImageError
from .readers import iter_tar_images, list_folder
from .stats import LatencySummary, summarize_latency

TARGET_SHARE = 0.03


def summarize(samples_ms: list[float]) -> LatencySummary | None:
    """The latency summary (``athe.runtime.stats``) of a list of milliseconds; None when empty.

    ``glue`` (total minus the stages) can round to -1e-13 ms; values are clipped at 0.
    """
    if not samples_ms:
        return None
    return summarize_latency(np.clip(np.asarray(samples_ms, dtype=np.float64), 0.0, None) / 1e3)


@dataclass
class BenchmarkResult:
    """Raw samples (ms) of one benchmark run.

    Attributes:
        info: the dispatcher's settings and load costs (``Dispatcher.info``).
        router_ms: router-only latencies (empty without a router).
        level_ms: level-only latencies per level.
        stages_ms: end-to-end samples per stage (``decode``, ``preprocess``, ``route``,
            ``infer``, ``glue``, ``total``).
        level_counts: how many end-to-end images each level served.
    """

    info: dict[str, Any]
    router_ms: list[float] = field(default_factory=list)
    level_ms: dict[str, list[float]] = field(default_factory=dict)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    level_counts: dict[str, int] = field(default_factory=dict)

    def shares(self) -> dict[str, float]:
        """Means of the end-to-end stages as fractions of the mean total."""
        total = float(np.mean(self.stages_ms["total"]))
        mean = {k: float(np.mean(v)) for k, v in self.stages_ms.items()}
        overhead = mean["total"] - mean["route"] - mean["infer"]
        return {
            "overhead": overhead / total,
            "router_preprocess_glue": (mean["route"] + mean["preprocess"] + mean["glue"]) / total,
            "decode": mean["decode"] / total,
            "infer": mean["infer"] / total,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "summary": {
                "router": _as_dict(summarize(self.router_ms)),
                "levels": {k: _as_dict(summarize(v)) for k, v in self.level_ms.items()},
                "stages": {k: _as_dict(summarize(v)) for k, v in self.stages_ms.items()},
                "shares": self.shares(),
                "level_counts": self.level_counts,
            },
            "samples_ms": {"router": self.router_ms, "levels": self.level_ms, "stages": self.stages_ms},
        }

    def format(self) -> str:
        """The human-readable table the command prints."""
        info = self.info
        lines = [
            f"bundle {info['bundle']} ({info['variant']}), backend {info['backend']} "
            f"{info.get('version', '')}, format {info['format']}, threads {info.get('threads')}, "
            f"policy {info['policy']}",
            f"{'':<28}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}   ms",
        ]

        def row(name: str, samples: list[float]) -> None:
            s = summarize(samples)
            assert s is not None
            lines.append(f"{name:<28}{s.mean_ms:>9.3f}{s.p50_ms:>9.3f}{s.p90_ms:>9.3f}{s.p99_ms:>9.3f}")

        if self.router_ms:
            row("router alone", self.router_ms)
        for name, samples in self.level_ms.items():
            row(f"level {name} alone", samples)
        n = len(self.stages_ms["total"])
        lines.append(f"end to end ({n} images):")
        for stage in ("decode", "preprocess", "route", "infer", "glue", "total"):
            row(f"  {stage}", self.stages_ms[stage])
        total = float(np.mean(self.stages_ms["total"]))
        sh = self.shares()
        overhead = sh["overhead"] * total
        verdict = "meets" if sh["router_preprocess_glue"] <= TARGET_SHARE else "misses"
        mix = ", ".join(f"{k} {v / max(1, n):.0%}" for k, v in self.level_counts.items())
        lines += [
            f"dispatcher overhead (total - route - infer): {overhead:.3f} ms = {sh['overhead']:.1%} of mean total",
            f"router + preprocess + glue: {sh['router_preprocess_glue'] * total:.3f} ms = "
            f"{sh['router_preprocess_glue']:.1%} of mean total ({verdict} the {TARGET_SHARE:.0%} target)",
            f"decode: {sh['decode']:.1%} of mean total; level inference: {sh['infer']:.1%}",
            f"levels served: {mix}",
        ]
        return "\n".join(lines)


def _as_dict(summary: LatencySummary | None) -> dict[str, Any] | None:
    """For JSON: NaN (the spread of one sample) and inf become None."""
    if summary is None:
        return None
    return {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in asdict(summary).items()}


def _timed(fn: Callable[[], object], count: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def synthetic_images(spec: InputSpec, n: int = 16, seed: int = 0) -> list[bytes]:
    """``n`` smooth random JPEGs (4:3, shorter side ``resize_size``) for when no images are given."""
    rng = np.random.default_rng(seed)
    h = spec.resize_size
    w = h * 4 // 3
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def read_images(path: str | Path, limit: int) -> list[bytes]:
    """Up to ``limit`` encoded images from a folder (recursive, sorted by name) or a ``.tar(.gz)``
    archive (archive order), read by ``athe.runtime.readers`` (hidden files skipped)."""
    path = Path(path)
    if path.is_file() and tarfile.is_tarfile(path):
        with contextlib.closing(iter_tar_images(path)) as members:  # closes the archive at `limit`
            out = [data for _, data in itertools.islice(members, limit)]
    elif path.is_dir():
        listing = list_folder(path)
        out = [listing.path(name).read_bytes() for name in sorted(listing.top + listing.nested)[:limit]]
    else:
        raise click.UsageError(f"--images {str(path)!r} is neither a folder nor a tar archive")
    if not out:
        raise click.UsageError(f"no images found in {str(path)!r}")
    return out


def run_benchmark(bundle: str | Path | Any, backend: str | Any = "litert", threads: int | None = None,
                  fmt: str | None = None, images: list[Any] | None = None, count: int = 200,
                  warmup: int = 20, policy: str = "router", thresholds: dict[str, float] | None = None,
                  seed: int = 0) -> BenchmarkResult:
    """Measure router, levels and end-to-end dispatch in one process.

    Args:
        bundle: a ``Bundle`` or bundle folder.
        backend, threads, fmt, policy, thresholds, seed: as ``Dispatcher``.
        images: inputs ``predict`` accepts (cycled); default ``synthetic_images``.
        count: timed runs per measurement (end to end: images, cycling the inputs).
        warmup: untimed runs before each measurement.
    """
    dispatcher = Dispatcher(bundle, backend=backend, threads=threads, fmt=fmt, policy=policy,
                            thresholds=thresholds, seed=seed)
    inputs = images if images else synthetic_images(dispatcher.bundle.input, seed=seed)
    x = dispatcher.preprocessor(inputs[0])
    result = BenchmarkResult(info=dispatcher.info())
    if dispatcher.router is not None:
        router = dispatcher.router
        result.router_ms = _timed(functools.partial(router.run, x), count, warmup)
    for name, model in dispatcher.levels.items():
        result.level_ms[name] = _timed(functools.partial(model.run, x), count, warmup)
    for i in range(warmup):
        dispatcher.predict(inputs[i % len(inputs)])
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "route", "infer", "glue", "total")}
    counts = dict.fromkeys(dispatcher.level_names, 0)
    for i in range(count):
        p = dispatcher.predict(inputs[i % len(inputs)])
        t = p.timings_ms
        for k in ("decode", "preprocess", "route", "infer", "total"):
            stages[k].append(t[k])
        stages["glue"].append(t["total"] - t["decode"] - t["preprocess"] - t["route"] - t["infer"])
        counts[p.level] += 1
    result.stages_ms, result.level_counts = stages, counts
    return result


@click.command()
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Bundle folder written by 'athe convert'.")
@click.option("--backend", type=click.Choice(["litert", "executorch", "torch"]), default="litert", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the backend [default: all cores].")
@click.option("--format", "fmt", default=None, help="Bundle format [default: the backend's].")
@click.option("--policy", default="router", show_default=True,
              help="router | fixed:<level> | random:<fraction> (oracle needs labels: not here).")
@click.option("--thresholds", default=None, help="Router threshold overrides, e.g. simple=0.7,complex=0.5.")
@click.option("--images", "images_path", default=None, type=click.Path(exists=True),
              help="Folder or .tar(.gz) of images [default: synthetic JPEGs].")
@click.option("--count", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the summary and raw samples here.")
def main(bundle_dir: str, backend: str, threads: int | None, fmt: str | None, policy: str,
         thresholds: str | None, images_path: str | None, count: int, warmup: int, seed: int,
         json_path: str | None) -> None:
    """Print router latency, per-level latency and dispatcher overhead of a bundle."""
    if policy.strip().lower() == "oracle":
        raise click.UsageError("the oracle policy needs labels; benchmark router, fixed or random policies")
    images = read_images(images_path, max(count, 1)) if images_path else None
    try:
        result = run_benchmark(bundle_dir, backend=backend, threads=threads, fmt=fmt, images=images,
                               count=count, warmup=warmup, policy=policy,
                               thresholds=parse_thresholds(thresholds) if thresholds else None, seed=seed)
    except (BundleError, DispatchError, BackendError, ImageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.format())
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=1))
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()

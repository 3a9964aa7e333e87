"""``athe eval``: results table, threshold sweep and verdicts of a bundle (see ``athe.evaluate``).

Example::

    athe eval --bundle bundles/athe-mini --data ../shared/data/cifar10-train.tar.gz \\
        --split-from runs/athe-mini --backend litert --threads 2 --out eval/athe-mini
"""

from __future__ import annotations

from pathlib import Path

import click

from athe.runtime.backends import BACKEND_FORMATS


@click.command("eval")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Bundle folder (manifest.json + artifacts).")
@click.option("--data", required=True, type=click.Path(exists=True),
              help="Labelled images: ImageFolder folder, .tar/.tar.gz ImageFolder archive "
                   "(<root>/<class>/<image>) or CIFAR python folder (its test split).")
@click.option("--backend", type=click.Choice(sorted(BACKEND_FORMATS)), default="litert", show_default=True,
              help="litert for on-device truth; torch (.pt2) for fast sweeps on a dev machine.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Backend threads (default: all CPU cores).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate a seeded random subset of this many images.")
@click.option("--split-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Backbone run folder: evaluate only its held-out val/test images (split.json).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: eval-<bundle>-<backend>].")
@click.option("--energy-per-level-json", type=click.Path(exists=True, dir_okay=False), default=None,
              help='Net J/image per level, e.g. {"simple": 0.01, "dense": 0.03, "router": 0.001}.')
@click.option("--seeds", type=click.IntRange(min=1), default=20, show_default=True,
              help="Seeds of the random-routing row.")
@click.option("--grid", type=click.IntRange(min=2), default=41, show_default=True,
              help="Quantile levels per router threshold in the sweep.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed runs of every model before measuring.")
def eval_command(bundle_dir: str, data: str, backend: str, threads: int | None, limit: int | None,
                 split_from: str | None, out: str | None, energy_per_level_json: str | None, seeds: int,
                 grid: int, warmup: int) -> None:
    """Results table, threshold sweep (Pareto PNG + CSV) and verdicts of a bundle.

    Runs the router and every level once per image, then derives every row (dense, static
    levels, cheapest, richest, random, oracle, ATHE) and the sweep from those measurements.
    """
    from rich.console import Console
    from rich.progress import Progress

    from athe.evaluate.analysis import EvalError
    from athe.evaluate.measure import run_eval
    from athe.evaluate.output import print_report
    from athe.runtime import BackendError, BundleError, DispatchError

    out_dir = Path(out) if out else Path(f"eval-{Path(bundle_dir).resolve().name}-{backend}")
    console = Console()
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("router + every level per image", total=None)
            result = run_eval(bundle_dir, data, backend=backend, threads=threads, limit=limit,
                              split_from=split_from, out=out_dir, energy_json=energy_per_level_json,
                              seeds=seeds, grid=grid, warmup=warmup,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (EvalError, BundleError, BackendError, DispatchError) as exc:
        raise click.ClickException(str(exc)) from exc
    print_report(result, console)
    console.print(f"wrote {', '.join(sorted(Path(p).name for p in result.info['files'].values()))} to {out_dir}")

"""``athe variants`` and ``athe demo``: the light commands of the ``athe`` group."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import click

from athe.variants import VARIANTS, get_variant

DEMO_VARIANT = "athe-mini"
#: Photos shipped inside scikit-image's wheel (never CIFAR files).
DEMO_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png")


def _fmt_tokens(tokens: list[int]) -> str:
    """``[65, 34, 34, 18]`` -> ``65 34x2 18`` (run-length, blocks in order)."""
    runs: list[list[int]] = []
    for t in tokens:
        if runs and runs[-1][0] == t:
            runs[-1][1] += 1
        else:
            runs.append([t, 1])
    return " ".join(f"{t}x{n}" if n > 1 else str(t) for t, n in runs)


def _fmt_macs(macs: int) -> str:
    return f"{macs / 1e6:.1f} M"


def level_table(name: str) -> list[dict]:
    """Rows describing every level of variant ``name``."""
    v = get_variant(name)
    dense = v.macs(v.dense_level)
    return [{
        "level": lv.name, "heads": lv.heads or v.backbone.num_heads,
        "keep": ", ".join(f"b{b}:{r:g}" for b, r in lv.keep) or "-",
        "fuse": lv.fuse, "tokens_per_block": v.tokens_per_block(lv),
        "macs": v.macs(lv), "macs_vs_dense": v.macs(lv) / dense,
    } for lv in v.levels]


def print_levels(name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    v = get_variant(name)
    table = Table(title=f"{v.name}: {v.description}")
    for col in ("level", "heads", "keep block:ratio", "fuse", "tokens/block", "MACs", "vs dense"):
        table.add_column(col)
    for row in level_table(name):
        table.add_row(row["level"], str(row["heads"]), row["keep"], "yes" if row["fuse"] else "no",
                      _fmt_tokens(row["tokens_per_block"]), _fmt_macs(row["macs"]),
                      f"{row['macs_vs_dense']:.2f}x")
    Console().print(table)


@click.command("variants")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def variants(as_json: bool) -> None:
    """List the registered variants and their levels."""
    if as_json:
        click.echo(json.dumps({n: level_table(n) for n in sorted(VARIANTS)}, indent=2))
        return
    for name in sorted(VARIANTS):
        print_levels(name)


def demo_photos() -> list[Path]:
    """Paths of scikit-image's bundled sample photos, when scikit-image is installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return []
    folder = Path(spec.origin).parent / "data"
    return [folder / p for p in DEMO_PHOTOS if (folder / p).exists()]


@click.group("demo", invoke_without_command=True)
@click.option("--bundle", "bundle_dir", type=click.Path(), default="bundles/athe-mini-demo", show_default=True,
              help="Where the demo bundle is converted to (reused when present).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.pass_context
def demo(ctx: click.Context, bundle_dir: str, threads: int) -> None:
    """Build the default variant, convert its bundle, dispatch sample photos, print latency."""
    if ctx.invoked_subcommand is not None:
        return
    print_levels(DEMO_VARIANT)
    v = get_variant(DEMO_VARIANT)
    ckpt = v.default_checkpoint_path()
    if ckpt is None or not ckpt.exists():
        click.echo(f"No trained checkpoint for {v.name} is shipped yet; converting with random weights "
                   "(latency only, labels meaningless).")
    bundle = Path(bundle_dir)
    if not (bundle / "manifest.json").exists():
        if importlib.util.find_spec("litert_torch") is None:
            raise click.ClickException("converting the demo bundle needs the export stack: pip install 'athe[convert]'")
        from athe.convert.bundle import ConvertOptions, convert_bundle

        click.echo(f"Converting {v.name} to {bundle} (.tflite, once; about a minute) ...")
        t0 = time.time()
        convert_bundle(ConvertOptions(variant=v.name, out=bundle, formats=("tflite",), parity_samples=4,
                                      random_weights=ckpt is None or not ckpt.exists()))
        click.echo(f"  done in {time.time() - t0:.0f} s")
    photos = demo_photos()
    if not photos:
        raise click.ClickException("no demo photos: pip install scikit-image (its wheel ships them)")
    from athe.runtime.bundle import Bundle
    from athe.runtime.dispatcher import Dispatcher

    b = Bundle.open(bundle)
    disp = Dispatcher(b, backend="litert", threads=threads, policy="router" if b.router else f"fixed:{b.level_names[-1]}")
    click.echo(f"\nDispatching {len(photos)} photos (LiteRT, {threads} threads); note these are photos "
               f"of the real world, downscaled to {b.input.crop_size}x{b.input.crop_size} for a CIFAR-10 model:")
    rows = []
    for _ in range(3):  # warm-up
        disp.predict(photos[0])
    for p in photos:
        pred = disp.predict(p)
        rows.append(pred)
        t = pred.timings_ms
        click.echo(f"  {p.name:22s} -> {pred.label_name:10s} p={pred.probability:.2f} level={pred.level:8s} "
                   f"route {t.get('route', 0):.2f} ms  infer {t['infer']:.2f} ms  total {t['total']:.2f} ms")
    from athe.runtime.benchmark import run_benchmark

    result = run_benchmark(b, backend="litert", threads=threads, images=photos, count=50, warmup=5)
    click.echo("\n" + result.format())
    click.echo("\nNot in the demo: energy (see 'athe run --energy'), eval tables ('athe eval'). "
               f"The phone demo: 'athe demo serve --bundle {bundle}' (see README, 'Phone demo').")


@demo.command("serve")
@click.option("--bundle", "bundle_dir", type=click.Path(), required=True,
              help="A converted bundle folder with .tflite files (athe convert --format tflite).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 to reach it from a phone on the LAN (use --https then).")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--https", "https", nargs=2, type=click.Path(), default=None, metavar="CERT KEY",
              help="Serve HTTPS with this PEM certificate and key (a phone needs it for a LAN address).")
@click.option("--web-dir", type=click.Path(), default=None, help="The app folder (default: android_demo/web).")
@click.option("--quiet", is_flag=True, help="Do not log requests.")
def serve(bundle_dir: str, host: str, port: int, https: tuple[str, str] | None, web_dir: str | None,
          quiet: bool) -> None:
    """Serve the phone demo (an installable web app running the bundle with LiteRT.js)."""
    from athe.demo_web import DemoServer, DemoServerError

    if not 0 <= port <= 65535:
        raise click.BadParameter(f"{port} is not a TCP port; use 1-65535 (0 = any free port)", param_hint="--port")
    cert, key = https if https else (None, None)
    try:
        server = DemoServer(bundle_dir, host=host, port=port, certfile=cert, keyfile=key, web_dir=web_dir,
                            quiet=quiet)
    except DemoServerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Serving the ATHE demo with {bundle_dir} at {server.url}")
    if host not in ("127.0.0.1", "localhost") and not server.https:
        p = server.port
        click.echo("  note: a phone opening a LAN address over plain HTTP gets no service worker, no install "
                   f"and no camera; pass --https CERT KEY, or use 'adb reverse tcp:{p} tcp:{p}' and open "
                   f"http://localhost:{p}/ on the phone")
    click.echo("  Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.httpd.server_close()

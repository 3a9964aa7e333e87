"""``athe variants`` and ``athe demo``: the light commands of the ``athe`` group."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from athe.cli import OneLineErrors, check_out_dir, one_line, threads_option
from athe.variants import VARIANTS, get_variant

DEMO_VARIANT = "athe-mini"
#: Photos shipped inside scikit-image's wheel (never CIFAR files): what each shows and its
#: CIFAR-10 class, None when CIFAR-10 has no class for it (every answer is then wrong).
DEMO_PHOTO_CLASSES: dict[str, tuple[str, str | None]] = {
    "chelsea.png": ("a cat", "cat"),
    "coffee.png": ("a cup of coffee", None),
    "rocket.jpg": ("a rocket", None),
    "motorcycle_left.png": ("a motorcycle", None),
    "astronaut.png": ("an astronaut", None),
}
DEMO_PHOTOS = tuple(DEMO_PHOTO_CLASSES)
#: Passes over the sample photos in the adaptive-vs-dense measurement.
DEMO_LOOPS = 10
#: What a 32x32 CIFAR-10 classifier can and cannot do (said once, before the answers).
CIFAR10_SCOPE = (
    "What it can recognise: {variant} sees a photo at {size}x{size} pixels and names one of the "
    "{n} CIFAR-10 classes ({classes}). It cannot recognise anything else: a cup, a rocket, a "
    "person all get one of the {n}. Even those are hard at {size}x{size}{acc}."
)


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


def _top_k(logits: Any, labels: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one logits vector, with softmax probabilities."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p)[:k]
    return [(labels[i] if i < len(labels) else str(i), float(p[i])) for i in order]


def photo_verdict(top: list[tuple[str, float]], expected: str | None) -> str:
    """One-line verdict on a sample photo's answer (``expected``: its CIFAR-10 class or None)."""
    if expected is None:
        return "no right answer"
    names = [name for name, _ in top]
    if names[0] == expected:
        return "right"
    if expected in names:
        return f"wrong: {expected} is its #{names.index(expected) + 1} guess"
    return f"wrong: {expected} not in its top {len(names)}"


def photo_lines(name: str, top: list[tuple[str, float]], level: str) -> list[str]:
    """Two lines for one sample photo: what it shows (and its class), then top-3 and verdict."""
    what, expected = DEMO_PHOTO_CLASSES.get(name, ("a photo", None))
    shows = f"{what}, expected: {expected}" if expected else f"{what}, not a CIFAR-10 class"
    guesses = ", ".join(f"{label} {p:.0%}" for label, p in top)
    return [f"  {name}: {shows} -> {photo_verdict(top, expected)}", f"      top-3 {guesses} [{level}]"]


def fmt_count(images: int, loops: int, what: str = "images", loop_word: str = "loop") -> str:
    """``5 photos × 10 loops`` (a count that says what it counts)."""
    plural = loop_word + ("es" if loop_word.endswith("s") else "s")
    return f"{images} {what} × {loops} {loop_word if loops == 1 else plural}"


def measure_side_by_side(candidates: Sequence[tuple[str, Any]], samples: Sequence[tuple[str, Any, Any]],
                         loops: int, warmup: int = 3) -> dict[str, dict[str, Any]]:
    """Every candidate on every sample in turn (the order rotates per sample), ``loops`` times.

    Returns per candidate name: ``ms`` (end-to-end latency per prediction), ``model_ms`` (route
    + infer: the part the policy decides), ``correct`` (labelled samples only) and ``levels``
    (predictions per level).
    """
    out: dict[str, dict[str, Any]] = {name: {"ms": [], "model_ms": [], "correct": [], "levels": {}}
                                      for name, _ in candidates}
    for _, dispatcher in candidates:
        for i in range(warmup):
            dispatcher.predict(samples[i % len(samples)][1])
    n = len(candidates)
    for loop in range(loops):
        for i, (_, image, label) in enumerate(samples):
            k = (i + loop) % n
            for name, dispatcher in [*candidates[k:], *candidates[:k]]:
                p = dispatcher.predict(image, label)
                rec = out[name]
                rec["ms"].append(p.timings_ms["total"])
                rec["model_ms"].append(p.timings_ms["route"] + p.timings_ms["infer"])
                if p.correct is not None:
                    rec["correct"].append(p.correct)
                rec["levels"][p.level] = rec["levels"].get(p.level, 0) + 1
    return out


def headline_lines(results: dict[str, dict[str, Any]], adaptive: str, dense: str, count: str,
                   where: str) -> list[str]:
    """The adaptive-vs-dense lines: both means, the ratio, both accuracies when labelled."""
    import numpy as np

    mean = {name: float(np.mean(r["ms"])) for name, r in results.items()}
    model = {name: float(np.mean(r["model_ms"])) for name, r in results.items()}
    acc = {name: (float(np.mean(r["correct"])) if r["correct"] else None) for name, r in results.items()}
    lines = [f"Adaptive vs dense on {count}, interleaved ({where}):"]
    width = max(len(adaptive), len(dense))
    for name, role in ((adaptive, "adaptive"), (dense, "dense")):
        levels = results[name]["levels"]
        total = sum(levels.values()) or 1
        served = ", ".join(f"{lv} {c / total:.0%}" for lv, c in sorted(levels.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {name:<{width}} {role:<8} {mean[name]:6.2f} ms (route+infer {model[name]:5.2f} ms); "
                     f"{served}")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b > 0 else "–"

    verdict = (f"  => adaptive takes {ratio(mean[adaptive], mean[dense])} the latency of dense "
               f"(route+infer: {ratio(model[adaptive], model[dense])})")
    if acc[adaptive] is not None and acc[dense] is not None:
        verdict += f" at {acc[adaptive]:.1%} vs {acc[dense]:.1%} top-1"
    lines.append(verdict)
    return lines


def _scope_lines(bundle: Any, random_weights: bool) -> list[str]:
    labels = list(bundle.labels)
    dense = bundle.manifest.levels[-1].val_accuracy if bundle.manifest.levels else None
    if random_weights:
        acc = ", and these weights are random: 10 % right (chance)"
    elif dense is None:
        acc = ""
    else:
        acc = f": {dense if dense > 1 else 100 * dense:.0f} % right on CIFAR-10 test images"
    size = bundle.input.crop_size
    classes = ", ".join(labels) if len(labels) <= 10 else f"{len(labels)} classes"
    text = CIFAR10_SCOPE.format(variant=bundle.variant, size=size, n=len(labels), classes=classes, acc=acc)
    return textwrap.wrap(text, width=80)


def _convert_demo_bundle(v: Any, bundle: Path, random: bool, verbose: bool) -> None:
    if importlib.util.find_spec("litert_torch") is None:
        raise click.ClickException("converting the demo bundle needs the export stack: pip install 'athe[convert]'")
    from athe.convert.bundle import ConvertError, ConvertOptions, convert_bundle
    from athe.quiet import quiet_conversion

    click.echo(f"Converting {v.name} to {bundle} (.tflite, once; about a minute):")
    log = None
    try:
        with quiet_conversion(bundle, verbose=verbose) as log:
            convert_bundle(ConvertOptions(variant=v.name, out=bundle, formats=("tflite",), parity_samples=4,
                                          random_weights=random))
    except ConvertError as exc:
        kept = f" (converter logs: {log.log_path})" if log is not None and log.log_path else ""
        raise click.ClickException(f"{exc}{kept}") from None
    except Exception:
        if log is not None and log.log_path:
            click.echo(f"conversion failed; converter logs: {log.log_path}", err=True)
        raise
    logs = "shown above (--verbose)" if verbose else f"in {log.log_path}"
    click.echo(f"  done in {log.seconds:.0f} s; converter logs {logs}")


def _demo_data(data: str | None, download: bool, labels: Sequence[str], limit: int) -> Any:
    """The labelled images of ``--data`` / ``--download`` (None when neither is given)."""
    if data is None and not download:
        return None
    from athe.pi_runner.inputs import InputError, find_cifar, open_inputs

    if download:
        root = Path(data or "data/cifar10")
        if find_cifar(root) is None:
            try:
                from torchvision.datasets import CIFAR10
            except ModuleNotFoundError:
                raise click.ClickException("--download needs torchvision: pip install 'athe[train]'") from None
            click.echo(f"Downloading the CIFAR-10 test split into {root} ...")
            try:
                CIFAR10(str(root), train=False, download=True)
            except Exception as exc:  # no network, a proxy, a full disk
                raise click.ClickException(f"could not download CIFAR-10 into {root}: {exc}; "
                                           "pass --data with a labelled folder or archive instead") from None
        data = str(root)
    assert data is not None  # given, or the download folder
    try:
        source = open_inputs(data, labels, limit=limit, shuffle=0, split="test")
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    if not source.labelled:
        raise click.ClickException(f"--data {data}: {source.describe()}; accuracy needs labels: give an "
                                   "ImageFolder (class folders), a .tar/.tar.gz of one, or a CIFAR folder")
    return source


def _bundle_dir_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--bundle``: a folder (or a path to create one at), never a file."""
    if value.strip() and Path(value).is_dir():
        return value
    check_out_dir(value)  # '' / a file in the way / under /proc / too long: refused, naming the rule
    return value


def _demo_threads(ctx: click.Context, param: click.Parameter, value: int) -> int:
    checked = threads_option(ctx, param, value)
    assert checked is not None
    return checked


@click.group("demo", cls=OneLineErrors, invoke_without_command=True)
@click.option("--bundle", "bundle_dir", type=str, default="bundles/athe-mini-demo", show_default=True,
              callback=_bundle_dir_option, help="Where the demo bundle is converted to (reused when present).")
@click.option("--threads", type=int, default=2, show_default=True, callback=_demo_threads,
              help="LiteRT threads, 1 to 4 x the CPUs.")
@click.option("--data", type=click.Path(), default=None, metavar="PATH",
              help="Labelled images (ImageFolder, .tar/.tar.gz of one, or a CIFAR folder) to measure both "
                   "accuracies on; images the model was trained on (cifar10-train) read too high.")
@click.option("--download", is_flag=True,
              help="Download the CIFAR-10 test split (into --data, default data/cifar10) and use it.")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True,
              help="With --data: use at most this many images (seeded order).")
@click.option("--verbose", is_flag=True, help="Show the converter's and LiteRT's own logs live.")
@click.pass_context
def demo(ctx: click.Context, bundle_dir: str, threads: int, data: str | None, download: bool, limit: int,
         verbose: bool) -> None:
    """Convert the default variant once, classify sample photos, measure adaptive vs dense."""
    if ctx.invoked_subcommand is not None:
        return
    from athe.quiet import dropping

    v = get_variant(DEMO_VARIANT)
    ckpt = v.default_checkpoint_path()
    random = ckpt is None or not ckpt.exists()
    rows = level_table(v.name)
    click.echo(f"{v.name} MACs vs dense: " + ", ".join(f"{r['level']} {r['macs_vs_dense']:.2f}x" for r in rows)
               + "; athe variants")
    if random:
        click.echo("  RANDOM WEIGHTS: no trained checkpoint is shipped; latency is real, answers are not")
    bundle = Path(bundle_dir)
    if not (bundle / "manifest.json").exists():
        _convert_demo_bundle(v, bundle, random, verbose)
    photos = demo_photos()
    if not photos:
        raise click.ClickException("no demo photos: pip install scikit-image (its wheel ships them)")
    from athe.runtime.bundle import Bundle, BundleError
    from athe.runtime.dispatcher import Dispatcher, DispatchError

    quiet = contextlib.nullcontext() if verbose else dropping()
    try:
        with quiet:
            b = Bundle.open(bundle, formats=["tflite"])
            dense_policy = f"fixed:{b.level_names[-1]}"
            try:
                adaptive = Dispatcher(b, backend="litert", threads=threads)  # the bundle's default policy
            except DispatchError:
                adaptive = None
            dense = Dispatcher(b, backend="litert", threads=threads, policy=dense_policy)
    except BundleError as exc:
        raise click.ClickException(f"{one_line(exc)}; remove {bundle} to convert the demo bundle again") from None
    random = random or bool(b.manifest.random_weights)
    source = _demo_data(data, download, b.labels, limit)
    click.echo("")
    for line in _scope_lines(b, random):
        click.echo(line)
    main = adaptive or dense
    where = f"LiteRT, {threads} thread{'s' if threads != 1 else ''}"
    click.echo(f"\nSample photos (scikit-image), policy {main.policy.text}, {where}:")
    for _ in range(3):  # warm-up
        main.predict(photos[0])
    for p in photos:
        pred = main.predict(p)
        for line in photo_lines(p.name, _top_k(pred.logits, b.labels), pred.level):
            click.echo(line)
    if adaptive is None:
        click.echo(f"\nThis bundle has no adaptive policy (no router, no exits): only {dense_policy} runs.")
    else:
        names = (adaptive.policy.text, dense.policy.text)
        if source is not None:
            samples, loops = source.samples, 1
            count = fmt_count(len(samples), 1, "labelled images", "pass")
        else:
            samples, loops = [(p.name, p.read_bytes(), None) for p in photos], DEMO_LOOPS
            count = fmt_count(len(samples), loops, "photos")
        results = measure_side_by_side([(names[0], adaptive), (names[1], dense)], samples, loops)
        click.echo("")
        for line in headline_lines(results, names[0], names[1], count, where):
            click.echo(line)
        if source is None:
            click.echo("  accuracies: pass --data PATH (labelled images) or --download to measure both")
    nxt = f"Next: athe run {bundle} --input PATH; phone demo: make demo-web"
    if len(nxt) > 80:  # a long bundle path: keep the advice within an 80-column terminal
        nxt = f"Next: athe run BUNDLE --input PATH; phone demo: make demo-web\n  BUNDLE: {bundle}"
    click.echo("\n" + nxt)


@demo.command("serve")
@click.option("--bundle", "bundle_dir", type=click.Path(), required=True,
              help="A converted bundle folder with .tflite files (athe convert --format tflite).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 to reach it from a phone on the LAN (use --https then).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port (0: any free port).")
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

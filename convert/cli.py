"""``athe convert``: a thin click wrapper over ``athe.convert.bundle.convert_bundle``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from athe.cli import out_option
from athe.variants import VARIANTS

CONVERT_FORMATS = ("tflite", "pte")


def _formats_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--format``: a non-empty comma-separated list of known formats, each once."""
    parts = [f.strip().lower() for f in value.split(",")]
    if not value.strip() or not any(parts):
        raise click.BadParameter(f"empty: name at least one of {', '.join(CONVERT_FORMATS)} (e.g. tflite,pte)")
    if any(not f for f in parts):
        raise click.BadParameter(f"{value!r} has an empty entry; write e.g. tflite,pte")
    unknown = [f for f in parts if f not in CONVERT_FORMATS]
    if unknown:
        raise click.BadParameter(f"unknown format(s) {unknown}; formats: {', '.join(CONVERT_FORMATS)}")
    repeated = sorted({f for f in parts if parts.count(f) > 1})
    if repeated:
        raise click.BadParameter(f"{repeated} given twice; name each format once")
    return tuple(parts)


@click.command("convert")
@click.option("--variant", type=click.Choice(sorted(VARIANTS)), required=True)
@click.option("--checkpoint", type=click.Path(), default=None,
              help="Trained checkpoint (default: the variant's shipped one, if any).")
@click.option("--random-weights", is_flag=True, help="Seeded random weights: latency-only artifacts.")
@click.option("--format", "formats", default="tflite,pte", show_default=True, callback=_formats_option,
              help="Comma-separated: tflite, pte.")
@click.option("--quantize", type=click.Choice(["none", "int8-dynamic", "int8-static"]), default="none",
              show_default=True)
@click.option("--calibration-data", "--data", "data", type=click.Path(exists=True), default=None,
              help="Images for parity checks (and int8-static calibration): folder or .tar.gz.")
@click.option("--parity-samples", type=click.IntRange(1), default=8, show_default=True,
              help="Images (batches) each artifact is checked on; with labelled --data also its top-1.")
@click.option("--calibration-samples", type=click.IntRange(1), default=64, show_default=True,
              help="int8-static: calibration images, disjoint from the parity images.")
@click.option("--tflite-form", type=click.Choice(["plain", "rewrite"]), default="plain", show_default=True,
              help="Export form of the .tflite levels and stages: plain (training forward, fastest on LiteRT) or rewrite "
                   "(the XNNPACK form the .pte files always use).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="Fixed batch of the artifacts (1 to 4096).")
@click.option("--reference", is_flag=True, help="Also write .pt2 files for the torch reference backend.")
@click.option("--out", type=str, default=None, callback=out_option,
              help="Bundle folder (default: bundles/VARIANT).")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--verbose", is_flag=True, help="Show the converters' own logs live (default: OUT/convert.log).")
def convert(variant: str, checkpoint: str | None, random_weights: bool, formats: tuple[str, ...], quantize: str,
            data: str | None, parity_samples: int, calibration_samples: int, tflite_form: str, batch_size: int, reference: bool, out: Path | None,
            force: bool, verbose: bool) -> None:
    """Export every level, every stage of the exit chain and the router of VARIANT as a verified bundle."""
    from athe.convert.bundle import ConvertError, ConvertOptions, convert_bundle
    from athe.quiet import quiet_conversion

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if checkpoint is not None and random_weights:
        raise click.UsageError("pass either --checkpoint or --random-weights, not both")
    opts = ConvertOptions(
        variant=variant, out=str(out) if out is not None else f"bundles/{variant}", checkpoint=checkpoint,
        random_weights=random_weights, formats=formats, quantize=quantize, data=data,
        parity_samples=parity_samples, calibration_samples=calibration_samples, batch_size=batch_size,
        forms={"tflite": tflite_form, "pte": "rewrite"}, force=force, write_reference=reference,
    )
    log = None
    try:
        with quiet_conversion(opts.out, verbose=verbose) as log:
            path = convert_bundle(opts)
    except ConvertError as exc:
        kept = f" (converter logs: {log.log_path})" if log is not None and log.log_path else ""
        raise click.ClickException(f"{exc}{kept}") from None
    click.echo(f"bundle written: {path}" + (f" (converter logs: {log.log_path})" if log.log_path else ""))

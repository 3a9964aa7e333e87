"""Shared fixtures: a tiny ATHE variant and a tiny bundle made by the real converter."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from athe.variants import Level, RouterConfig, Stage, get_variant, replace

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train.tar.gz"
CIFAR_ARCHIVE = Path(os.environ.get("ATHE_CIFAR_ARCHIVE", SHARED_DATA))


def tiny_variant():
    """athe-mini's recipe at 3 blocks x 48 wide: same levels idea, converts in seconds."""
    mini = get_variant("athe-mini")
    return replace(
        mini, name="tiny-test",
        backbone=dataclasses.replace(mini.backbone, embed_dim=48, depth=3, num_heads=3, drop_path_rate=0.0),
        levels=(
            Level("simple", keep=((0, 0.5), (1, 0.5)), heads=2, fuse=True),
            Level("complex", keep=((1, 0.75),), heads=3, fuse=False),
            Level("dense", keep=(), heads=3),
        ),
        router=RouterConfig(input_size=16, width=0.25),
        default_checkpoint=None,
        # One exit per block; s2 keeps half the tokens on entry (the selection path is tested).
        stages=(
            Stage("s1", blocks=(0, 1)),
            Stage("s2", blocks=(1, 2), keep=0.5, fuse=True),
            Stage("s3", blocks=(2, 3)),
        ),
    )


@pytest.fixture(scope="session")
def tiny():
    return tiny_variant()


@pytest.fixture(scope="session")
def cifar_archive() -> Path:
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"CIFAR-10 archive not found at {CIFAR_ARCHIVE} (set ATHE_CIFAR_ARCHIVE)")
    return CIFAR_ARCHIVE


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny) -> Path:
    """A tiny athe checkpoint (backbone + router + thresholds), random but seeded weights."""
    import torch

    from athe.training.model import build_model
    from athe.training.router import build_router
    from athe.training.router_train import save_athe_checkpoint

    torch.manual_seed(0)
    model, router = build_model(tiny), build_router(tiny)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_athe_checkpoint(path, tiny, model.state_dict(), router, {"simple": 0.5, "complex": 0.5},
                         list(tiny.labels), None, {"note": "test"})
    return path


@pytest.fixture(scope="session")
def converted_bundle(tmp_path_factory, tiny, tiny_checkpoint) -> Path:
    """A tiny bundle in both formats (+ .pt2 references), converted by ``convert_bundle``: every
    level, the router and the three stages of the exit chain (no gates in the checkpoint: the
    exits are uncalibrated)."""
    from athe.convert.bundle import ConvertOptions, convert_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return convert_bundle(ConvertOptions(
        variant=tiny.name, variant_obj=tiny, out=out, checkpoint=tiny_checkpoint,
        formats=("tflite", "pte"), parity_samples=3, write_reference=True,
    ))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line at the end when the phone demo's browser tests were skipped, with the fix."""
    yield
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "test_demo_web.py" in getattr(r, "nodeid", "")]
    if not skipped:
        return None
    longrepr = skipped[0].longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    terminalreporter.write_line(
        f"browser tests: {len(skipped)} skipped ({reason}); to run them: "
        "make system-deps && make test (ATHE_REQUIRE_WEB=1 fails instead)")
    return None

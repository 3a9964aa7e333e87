"""Training-speed benchmark: images/s of the training step and of the data pipeline, apart.

Every configuration runs the recipe's real step (the stage chain with its exits, the dense
level and the cheap levels the sandwich samples, backward, AdamW) on the same batch shape, on
the same threads, interleaved round by round so that machine noise hits all of them alike.

    python -m athe.training.bench --variant athe-mini --threads 2

Configurations: ``fp32-sdpa`` (the shipped run's settings: fp32, PyTorch's fused attention),
``fp32`` (explicit softmax attention), ``bf16`` (autocast), ``bf16-compile`` (with
``torch.compile``, optional: ``--compile``). The data pipeline (uint8 cache -> normalise ->
crop/flip/erase -> mixup/cutmix) is timed on its own, without and with TrivialAugment.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from athe.training.model import build_model
from athe.training.train import TrainConfig, level_losses, mix_batch, smooth_targets
from athe.training.transforms import train_batch
from athe.variants import AUGMENTS, get_variant


def _step_fn(variant, cfg: TrainConfig, precision: str, fused: bool, compile_: bool, batch: int):
    torch.manual_seed(0)
    model = build_model(variant).train()
    for blk in model.ablocks():
        blk.attn.set_fused_attn(fused)
    run = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    S = variant.backbone.img_size
    x = torch.randn(batch, 3, S, S)
    y = torch.randint(0, variant.backbone.num_classes, (batch,))
    amp = ("cpu", torch.bfloat16, precision == "bf16")
    state = {"step": 0}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        level_losses(run, variant, x, y, cfg, state["step"], amp=amp)  # type: ignore[arg-type]
        opt.step()
        state["step"] += 1

    return step


def bench(variant_name: str, threads: int, batch: int, rounds: int, steps: int,
          with_compile: bool) -> dict:
    torch.set_num_threads(threads)
    variant = get_variant(variant_name)
    r = variant.train
    cfg = TrainConfig(variant=variant_name, data="", out="", epochs=1, batch_size=batch, lr=r.lr,
                      weight_decay=r.weight_decay, warmup_epochs=0, label_smoothing=r.label_smoothing,
                      distill_weight=r.distill_weight, val_size=0, router_size=0, split_seed=0,
                      cheap_levels_per_step=1)
    configs = {"fp32-sdpa": ("fp32", True, False), "fp32": ("fp32", False, False),
               "bf16": ("bf16", False, False)}
    if with_compile:
        configs["bf16-compile"] = ("bf16", False, True)
    fns = {name: _step_fn(variant, cfg, *c, batch=batch) for name, c in configs.items()}
    for fn in fns.values():  # warm-up (and compilation)
        fn()
        fn()
    seconds = {name: 0.0 for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            seconds[name] += time.perf_counter() - t
    n = rounds * steps * batch
    train = {name: n / s for name, s in seconds.items()}
    # The data pipeline alone, from a uint8 array like the decoded-archive cache.
    S = variant.backbone.img_size
    arr = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, S, S, 3), dtype=np.uint8))
    gen = torch.Generator().manual_seed(0)
    data: dict[str, float] = {}
    reps = 50
    for name in AUGMENTS:
        t = time.perf_counter()
        for i in range(reps):
            xb = train_batch(arr, variant.preprocess, gen, name)
            tg = smooth_targets(torch.zeros(batch, dtype=torch.long), variant.backbone.num_classes, 0.1)
            mix_batch(xb, tg, 0.5, np.random.default_rng(i))
        data[name] = round(reps * batch / (time.perf_counter() - t), 1)
    return {"variant": variant_name, "threads": threads, "batch": batch,
            "step": "stage chain + exits, dense, 1 cheap level, backward, AdamW",
            "train_images_per_second": {k: round(v, 1) for k, v in train.items()},
            "ratio_vs_fp32_sdpa": {k: round(v / train["fp32-sdpa"], 2) for k, v in train.items()},
            "data_pipeline_images_per_second": data["crop_flip"],
            "data_pipeline_trivial_images_per_second": data["trivial"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="athe-mini")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    a = ap.parse_args(argv)
    if a.threads < 1 or a.batch < 1 or a.rounds < 1 or a.steps < 1:
        ap.error("--threads, --batch, --rounds and --steps must be >= 1")
    res = bench(a.variant, a.threads, a.batch, a.rounds, a.steps, a.compile)
    print(f"training step, {res['variant']}, batch {res['batch']}, {res['threads']} threads "
          f"({res['step']}):")
    for k, v in res["train_images_per_second"].items():
        print(f"  {k:<13} {v:7.1f} images/s  {res['ratio_vs_fp32_sdpa'][k]:.2f}x fp32-sdpa")
    print(f"data pipeline (uint8 cache -> augment -> mix): {res['data_pipeline_images_per_second']:.0f} images/s"
          f", with TrivialAugment: {res['data_pipeline_trivial_images_per_second']:.0f} images/s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

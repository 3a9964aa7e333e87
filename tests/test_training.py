"""Training on real images: loss falls, resume is exact, DDP (gloo) runs, router labels, calibration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from athe.training.calibrate import calibrate, route
from athe.training.data import DataError, load_imagefolder, make_split
from athe.training.model import build_model
from athe.training.router import build_router
from athe.training.router_train import correctness_labels, train_router
from athe.training.train import (
    TrainConfig,
    level_losses,
    mix_batch,
    smooth_targets,
    train_backbone,
)
from athe.training.transforms import augment_batch, eval_tensor, normalize_batch

pytestmark = pytest.mark.slow


def _cfg(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    base = dict(variant="tiny-test", data=str(data), out=str(tmp_path / "run"), epochs=2, batch_size=32,
                lr=1e-3, weight_decay=0.05, warmup_epochs=0.5, label_smoothing=0.1, distill_weight=1.0,
                val_size=200, router_size=200, split_seed=0, limit=128, workers=0, log_every=1000)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls_on_real_images(cifar_archive, tiny):
    images = load_imagefolder(cifar_archive)
    assert images.array is not None and images.array.shape[1:] == (32, 32, 3)
    idx = np.random.default_rng(0).permutation(len(images))[:256]
    x_all = normalize_batch(torch.from_numpy(images.array[idx]), tiny.preprocess)
    y_all = torch.from_numpy(images.labels[idx])
    torch.manual_seed(0)
    model = build_model(tiny).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    cfg = _cfg(Path("."), cifar_archive)
    gen = torch.Generator().manual_seed(0)
    history = []
    for step in range(40):
        b = (step * 64) % 256
        x = augment_batch(x_all[b:b + 64], gen, erase_prob=0.0)
        opt.zero_grad()
        losses = level_losses(model, tiny, x, y_all[b:b + 64], cfg, step)
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    first = np.mean([h["dense"] for h in history[:5]])
    last = np.mean([h["dense"] for h in history[-5:]])
    assert last < first - 0.2, (first, last)
    assert {"simple", "complex"} & set(history[-1])  # cheap levels trained by distillation


def test_exit_losses_fall_on_real_images(cifar_archive, tiny):
    """Every exit of the stage chain learns (CE + distillation from the last exit)."""
    images = load_imagefolder(cifar_archive)
    idx = np.random.default_rng(1).permutation(len(images))[:256]
    x_all = normalize_batch(torch.from_numpy(images.array[idx]), tiny.preprocess)
    y_all = torch.from_numpy(images.labels[idx])
    torch.manual_seed(0)
    model = build_model(tiny).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    cfg = _cfg(Path("."), cifar_archive, cheap_levels_per_step=1)
    history = []
    for step in range(40):
        b = (step * 64) % 256
        opt.zero_grad()
        losses = level_losses(model, tiny, x_all[b:b + 64], y_all[b:b + 64], cfg, step,
                              amp=("cpu", torch.bfloat16, True))
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    for name in ("exit_s1", "exit_s2", "exit_s3"):
        first = np.mean([h[name] for h in history[:5]])
        last = np.mean([h[name] for h in history[-5:]])
        assert last < first - 0.2, (name, first, last)


def test_mix_batch_is_seeded_and_keeps_targets_normalised():
    x = torch.randn(8, 3, 32, 32)
    t = smooth_targets(torch.arange(8) % 10, 10, 0.1)
    assert torch.allclose(t.sum(1), torch.ones(8)) and t.argmax(1).tolist() == (torch.arange(8) % 10).tolist()
    outs = [mix_batch(x, t, 1.0, np.random.default_rng([3, 1, 2, 0])) for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not torch.equal(outs[0][0], x)  # prob 1: always mixed
    assert torch.allclose(outs[0][1].sum(1), torch.ones(8))
    same = mix_batch(x, t, 0.0, np.random.default_rng(0))
    assert same[0] is x and same[1] is t


@pytest.mark.parametrize("augment", ["crop_flip", "trivial"])
def test_resume_reproduces_the_next_epoch(cifar_archive, tiny, tmp_path, augment):
    straight = train_backbone(_cfg(tmp_path / "a", cifar_archive, augment=augment), tiny)
    cfg_b = _cfg(tmp_path / "b", cifar_archive, augment=augment)
    first = train_backbone(TrainConfig(**{**cfg_b.__dict__, "max_steps": 4}), tiny)
    assert first["epoch"] == 1
    resumed = train_backbone(cfg_b, tiny, resume=True)
    assert resumed["epoch"] == 2
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5, abs=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "val_top1_simple" in rows[-1]
    split = json.loads((tmp_path / "b" / "run" / "split.json").read_text())
    assert split["counts"] == {"val": 200, "router": 200, "train": 128}
    with pytest.raises(ValueError, match="lr=0.5 differs"):
        train_backbone(_cfg(tmp_path / "b", cifar_archive, lr=0.5, augment=augment), tiny, resume=True)
    other = "crop_flip" if augment == "trivial" else "trivial"
    with pytest.raises(ValueError, match=f"augment='{other}' differs"):
        train_backbone(_cfg(tmp_path / "b", cifar_archive, augment=other), tiny, resume=True)


def test_ddp_two_processes_gloo(cifar_archive, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import tiny_variant
        from athe.training.train import TrainConfig, train_backbone
        cfg = TrainConfig(variant="tiny-test", data={str(cifar_archive)!r}, out={str(tmp_path / 'run')!r},
                          epochs=1, batch_size=16, lr=1e-3, weight_decay=0.05, warmup_epochs=0.5,
                          label_smoothing=0.1, distill_weight=1.0, val_size=100, router_size=100,
                          split_seed=0, limit=128, max_steps=3, workers=0)
        m = train_backbone(cfg, tiny_variant())
        import torch.distributed as dist
        # one file per rank: both ranks printing to the shared stdout can interleave mid-line
        with open({str(tmp_path)!r} + f"/rank{{dist.get_rank()}}.txt", "w") as fh:
            fh.write(f"RANK {{dist.get_rank()}} WORLD {{dist.get_world_size()}} STEP {{m.get('step')}}")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == f"RANK {rank} WORLD 2 STEP 3"
    assert (tmp_path / "run" / "last.pt").exists()
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1  # rank 0 logs alone


def test_router_labels_hand_made():
    logits = {"simple": torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]),
              "dense": torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
    labels = torch.tensor([0, 0, 1])
    got = correctness_labels(logits, labels, ["simple", "dense"])
    assert got.tolist() == [[True, True], [False, True], [False, True]]


def test_router_learns_a_learnable_signal(tiny):
    torch.manual_seed(0)
    x = torch.randn(512, 3, 32, 32)
    bright = x.mean(dim=(1, 2, 3)) > 0  # "easy" = bright images, a signal a CNN can see
    x[bright] += 1.0
    targets = np.stack([bright.numpy(), np.ones(512, bool), np.ones(512, bool)], axis=1)
    router = build_router(tiny)
    history = train_router(router, x, targets, epochs=8, batch_size=64)
    assert history[-1] < history[0]
    with torch.no_grad():
        probs = router(x).numpy()
    assert ((probs[:, 0] >= 0.5) == bright.numpy()).mean() > 0.9


def test_calibration_meets_delta_on_known_table():
    # 100 images; the cheap level is right on the first 90; the router ranks them perfectly
    correct = np.zeros((100, 2), bool)
    correct[:90, 0] = True
    correct[:, 1] = True
    probs = np.stack([np.linspace(1.0, 0.0, 100), np.ones(100)], axis=1)
    # delta 0: only images the cheap level gets right may go there -> exactly the first 90
    cal = calibrate(probs, correct, ["simple", "dense"], costs=[1.0, 3.0], delta=0.0, grid=101)
    assert cal.met and cal.accuracy == 100.0 and cal.routed_fraction["simple"] == pytest.approx(0.90)
    # delta 5: 5 wrong images may go cheap too -> 95 % routed cheap, accuracy 95 %
    cal5 = calibrate(probs, correct, ["simple", "dense"], costs=[1.0, 3.0], delta=5.0, grid=101)
    assert cal5.accuracy >= 95.0 - 1e-9 and cal5.routed_fraction["simple"] == pytest.approx(0.95)
    assert cal5.mean_cost == pytest.approx(0.95 * 1 + 0.05 * 3)
    # budget: mean cost <= 2.0 -> at least half cheap; best accuracy is 100 % with 50 % cheap
    cal_b = calibrate(probs, correct, ["simple", "dense"], costs=[1.0, 3.0], budget=2.0, grid=101)
    assert cal_b.mean_cost <= 2.0 and cal_b.accuracy == 100.0
    assert route(probs, [cal.thresholds["simple"]]).tolist() == [0] * 90 + [1] * 10


def test_bad_data_reported_with_path(tmp_path):
    from PIL import Image
    for cls in ("a", "b"):
        (tmp_path / "ds" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "ds" / cls / f"{i}.png")
    (tmp_path / "ds" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("L", (8, 8)).save(tmp_path / "ds" / "b" / "gray.png")
    images = load_imagefolder(tmp_path / "ds")
    assert len(images) == 7 and images.skipped[0][0].endswith("broken.jpg")
    assert images.array is not None and images.array.shape == (7, 8, 8, 3)
    (tmp_path / "ds" / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*has no images"):
        load_imagefolder(tmp_path / "ds")
    with pytest.raises(DataError, match="does not exist"):
        load_imagefolder(tmp_path / "nope")


def test_split_is_deterministic_and_disjoint():
    a, b = make_split(1000, 100, 50, seed=3), make_split(1000, 100, 50, seed=3)
    assert all((a[k] == b[k]).all() for k in a)
    assert len(set(a["val"]) | set(a["router"]) | set(a["train"])) == 1000


def test_eval_tensor_matches_torchvision_transform(cifar_archive, tiny):
    from athe.training.transforms import eval_transform
    images = load_imagefolder(cifar_archive)
    fast = eval_tensor(images, tiny.preprocess, np.arange(5))
    ref = torch.stack([eval_transform(tiny.preprocess)(images.image(i)) for i in range(5)])
    assert torch.allclose(fast, ref, atol=1e-6)


def test_exit_gates_train_calibrate_and_report(cifar_archive, tiny):
    """Gates fit on one set, thresholds on another, both kinds reported on a third."""
    from athe.training.gates_train import train_exit_gates

    images = load_imagefolder(cifar_archive)
    idx = np.random.default_rng(2).permutation(len(images))[:600]
    x = normalize_batch(torch.from_numpy(images.array[idx]), tiny.preprocess)
    y = images.labels[idx]
    torch.manual_seed(0)
    model = build_model(tiny).eval()
    out = train_exit_gates(model, x[:200], y[:200], x[200:400], y[200:400], x[400:], y[400:],
                           tiny.stage_macs(), delta=1.0)
    assert set(out["gates"]) == {"s1", "s2"} and set(out["thresholds"]) == {"s1", "s2"}
    assert all(0.0 <= t <= 1.0 for t in out["thresholds"].values())
    rep = out["report"]
    assert set(rep["kinds"]) == {"logistic", "max_softmax"} and rep["shipped"] == out["kind"]
    for kind in rep["kinds"].values():
        assert kind["test"]["accuracy"] >= 0 and 0 < kind["test"]["cost_ratio"] <= 1.0 + 1e-9
        assert sum(kind["test"]["exit_fraction"].values()) == pytest.approx(1.0)


def test_training_benchmark_reports_every_configuration():
    from athe.training.bench import bench

    res = bench("athe-mini", threads=1, batch=4, rounds=1, steps=1, with_compile=False)
    assert set(res["train_images_per_second"]) == {"fp32-sdpa", "fp32", "bf16"}
    assert all(v > 0 for v in res["train_images_per_second"].values())
    assert res["ratio_vs_fp32_sdpa"]["fp32-sdpa"] == 1.0 and res["data_pipeline_images_per_second"] > 0
    assert res["data_pipeline_trivial_images_per_second"] > 0


def test_crossfit_scores_are_out_of_fold():
    """On noise, a gate fit on all images "finds" signal in them; out-of-fold scores do not."""
    from athe.runtime.gates import auroc
    from athe.training.gates_train import crossfit_scores, fit_gates, score_matrix

    rng = np.random.default_rng(0)
    n, names = 800, ["s1", "s2"]
    logits = [rng.normal(size=(n, 10)) for _ in names]
    cls = [rng.normal(size=(n, 128)) for _ in names]
    right = rng.random(n) < 0.5  # a coin, independent of every feature
    labels = np.where(right, logits[0].argmax(1), (logits[0].argmax(1) + 1) % 10)
    in_sample = score_matrix(fit_gates(logits, cls, labels, names), logits, cls, names)[:, 0]
    oof = crossfit_scores(logits, cls, labels, names, folds=5)
    assert oof.shape == (n, 2) and np.all(oof[:, -1] == 1.0)
    assert auroc(in_sample, right) > 0.7  # overfit: 131 features on 800 images
    assert abs(auroc(oof[:, 0], right) - 0.5) < 0.06  # ~3 standard errors


def test_gate_kind_choice_prefers_max_softmax_unless_the_learned_gate_saves_enough():
    from athe.training.gates_train import LEARNED_MARGIN, choose_kind

    def kinds(cost_l, cost_m, met_l=True, met_m=True, acc_l=90.0, acc_m=90.0):
        return {"logistic": {"calib": {"met": met_l, "mean_cost": cost_l, "accuracy": acc_l}},
                "max_softmax": {"calib": {"met": met_m, "mean_cost": cost_m, "accuracy": acc_m}}}

    full = 100.0
    assert choose_kind(kinds(50.0, 50.0), full, False) == "max_softmax"  # a tie: the simpler gate
    assert choose_kind(kinds(50.0 - 0.5 * LEARNED_MARGIN * full, 50.0), full, False) == "max_softmax"
    assert choose_kind(kinds(50.0 - 2 * LEARNED_MARGIN * full, 50.0), full, False) == "logistic"
    assert choose_kind(kinds(60.0, 50.0, met_m=False), full, False) == "logistic"  # only it met δ
    assert choose_kind(kinds(50.0, 50.0, acc_l=90.05), full, True) == "max_softmax"
    assert choose_kind(kinds(50.0, 50.0, acc_l=90.5), full, True) == "logistic"


def test_stage_latency_from_a_runner_file(tmp_path):
    from athe.training.gates_train import stage_latency_ms

    rows = [{"stage_ms": {"s1": 1.0, "s2": 2.0, "s3": 3.0}}, {"stage_ms": {"s1": 3.0}},
            {"stage_ms": {"s1": 2.0, "s2": 4.0, "s3": 5.0}}]
    (tmp_path / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stage_latency_ms(tmp_path, ["s1", "s2", "s3"]) == {"s1": 2.0, "s2": 3.0, "s3": 4.0}
    (tmp_path / "per_image.jsonl").write_text(json.dumps({"stage_ms": {"s1": 1.0}}) + "\n")
    with pytest.raises(ValueError, match=r"s2, s3 never timed.*--policy exit:s3"):
        stage_latency_ms(tmp_path, ["s1", "s2", "s3"])
    (tmp_path / "per_image.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="line 1 is not a runner row"):
        stage_latency_ms(tmp_path, ["s1", "s2", "s3"])
    with pytest.raises(ValueError, match="no per_image.jsonl there"):
        stage_latency_ms(tmp_path / "nowhere", ["s1"])

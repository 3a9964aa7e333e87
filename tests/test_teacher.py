"""The CNN teacher: it learns on real images, its whitening is right, its file is checked, and
``athe train backbone --teacher`` folds its labels into the targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from athe.training.data import load_imagefolder
from athe.training.teacher import TeacherConfig, TeacherNet, load_teacher, train_teacher
from athe.training.train import TrainConfig, smooth_targets, teacher_targets, train_backbone
from athe.training.transforms import augment_batch, normalize_batch

pytestmark = pytest.mark.slow


def _images(archive: Path, n: int, seed: int, pre):
    images = load_imagefolder(archive)
    idx = np.random.default_rng(seed).permutation(len(images))[:n]
    return normalize_batch(torch.from_numpy(images.array[idx]), pre), torch.from_numpy(images.labels[idx])


def test_whitening_decorrelates_patches(cifar_archive, tiny):
    x, _ = _images(cifar_archive, 400, 0, tiny.preprocess)
    net = TeacherNet(10)
    net.init_whitening(x, eps=1e-6)
    with torch.no_grad():
        feats = (net.whiten(x) - net.whiten.bias.view(1, -1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, 24).double()
    first = feats[:, :12]
    cov = torch.cov(first.T)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=2e-2), cov.diag()
    assert torch.allclose(feats[:, 12:], -first, rtol=1e-4, atol=1e-3)  # the negatives
    assert not net.whiten.weight.requires_grad


def test_teacher_loss_falls_on_real_images(cifar_archive, tiny):
    x_all, y_all = _images(cifar_archive, 512, 1, tiny.preprocess)
    torch.manual_seed(0)
    net = TeacherNet(10, widths=(32, 64, 64))
    net.init_whitening(x_all)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.2, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    history = []
    for step in range(30):
        b = (step * 128) % 512
        x = augment_batch(x_all[b:b + 128], gen, pad=2, erase_prob=0.0)
        loss = F.cross_entropy(net(x), y_all[b:b + 128], label_smoothing=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert np.mean(history[-5:]) < np.mean(history[:5]) - 0.3, history


def test_teacher_targets_mix_the_teacher_label():
    net = TeacherNet(10, widths=(8, 8, 8)).eval()
    x = torch.randn(6, 3, 32, 32)
    target = smooth_targets(torch.zeros(6, dtype=torch.long), 10, 0.0)
    cfg = TrainConfig(variant="v", data="d", out="o", epochs=1, batch_size=6, lr=1e-3, weight_decay=0.0,
                      warmup_epochs=0, label_smoothing=0.0, distill_weight=1.0, val_size=0, router_size=0,
                      split_seed=0, teacher_weight=0.25)
    mixed = teacher_targets(net, x, target, cfg)
    with torch.no_grad():
        hard = net(x).argmax(-1)
    expect = 0.75 * target + 0.25 * F.one_hot(hard, 10).float()
    assert torch.allclose(mixed, expect) and torch.allclose(mixed.sum(1), torch.ones(6))


def test_soft_teacher_targets_carry_the_teacher_distribution():
    net = TeacherNet(10, widths=(8, 8, 8)).eval()
    x = torch.randn(6, 3, 32, 32)
    target = smooth_targets(torch.arange(6) % 10, 10, 0.1)
    common = dict(variant="v", data="d", out="o", epochs=1, batch_size=6, lr=1e-3, weight_decay=0.0,
                  warmup_epochs=0, label_smoothing=0.1, distill_weight=1.0, val_size=0, router_size=0,
                  split_seed=0, teacher_weight=0.4)
    soft = teacher_targets(net, x, target, TrainConfig(**common, teacher_kind="soft"))
    hard = teacher_targets(net, x, target, TrainConfig(**common, teacher_kind="hard"))
    with torch.no_grad():
        probs = net(x).softmax(-1)
    assert torch.allclose(soft, 0.6 * target + 0.4 * probs, atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    assert not torch.allclose(soft, hard)  # the teacher's runner-up classes reach the student
    with pytest.raises(ValueError, match="use 'hard' or 'soft'"):
        teacher_targets(net, x, target, TrainConfig(**common, teacher_kind="mean"))


def test_load_teacher_refuses_other_files(tmp_path, tiny_checkpoint):
    with pytest.raises(ValueError, match="is not a teacher checkpoint"):
        load_teacher(tiny_checkpoint)
    bad = tmp_path / "t.pt"
    torch.save({"format": "something-else", "state_dict": {}}, bad)
    with pytest.raises(ValueError, match="athe train teacher writes teacher.pt"):
        load_teacher(bad)


def test_teacher_trains_on_the_runs_split_and_distils_into_a_backbone(cifar_archive, tiny, tmp_path):
    base = dict(variant="tiny-test", data=str(cifar_archive), out=str(tmp_path / "run"), epochs=1, batch_size=32,
                lr=1e-3, weight_decay=0.05, warmup_epochs=0.5, label_smoothing=0.1, distill_weight=1.0,
                val_size=200, router_size=200, split_seed=0, limit=128, workers=0, log_every=1000, max_steps=1)
    train_backbone(TrainConfig(**base), tiny)
    card = train_teacher(TeacherConfig(run=str(tmp_path / "run"), out=str(tmp_path / "teacher"), epochs=1,
                                       batch_size=64, limit=256, widths=(16, 32, 32)),
                         tiny.preprocess, 10, str(cifar_archive))
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert card["train_images"] == 128  # the run's train indices only (limit 256 > 128)
    assert set(card["held_out_top1"]) == {"val"} and 0 <= card["held_out_top1"]["val"] <= 100
    assert len(split["val"]) == 200
    teacher = load_teacher(tmp_path / "teacher" / "teacher.pt")
    assert teacher.head.out_features == 10 and teacher.widths == (16, 32, 32)
    assert card["net"] == "TeacherNet(16, 32, 32)" and card["command"].endswith("--widths 16,32,32")
    metrics = train_backbone(TrainConfig(**{**base, "out": str(tmp_path / "kd"),
                                            "teacher": str(tmp_path / "teacher" / "teacher.pt")}), tiny)
    assert np.isfinite(metrics["train_loss"])
    with pytest.raises(ValueError, match="teacher=None differs"):
        train_backbone(TrainConfig(**{**base, "out": str(tmp_path / "kd")}), tiny, resume=True)


def test_train_teacher_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    from click.testing import CliRunner

    from athe.cli import cli

    result = CliRunner().invoke(cli, ["train", "teacher", "--run", str(tmp_path), "--out", str(tmp_path / "t")])
    assert result.exit_code != 0
    assert "config.json' not found: --run takes a backbone run folder" in result.output
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("widths", ["128,384", "0,8,8", "a,b,c"])
def test_train_teacher_cli_refuses_bad_widths(tmp_path, widths):
    from click.testing import CliRunner

    from athe.cli import cli

    result = CliRunner().invoke(cli, ["train", "teacher", "--run", str(tmp_path), "--widths", widths,
                                      "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert "is not three positive integers; write e.g. 128,384,384" in result.output
    assert not (tmp_path / "t").exists()


def test_teacher_config_refuses_bad_widths():
    with pytest.raises(ValueError, match="three positive channel counts"):
        TeacherConfig(run="r", out="o", widths=(8, 8))  # type: ignore[arg-type]


def test_teacher_config_refuses_an_unknown_tta():
    with pytest.raises(ValueError, match="use one of flip, flip-translate"):
        TeacherConfig(run="r", out="o", tta="crops")


def test_flip_translate_tta_weights_six_views():
    torch.manual_seed(0)
    net = TeacherNet(10, widths=(8, 16, 16)).eval()
    x = torch.randn(5, 3, 32, 32)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    with torch.no_grad():
        def mirror(v):
            return (net(v) + net(v.flip(-1))) / 2
        expect = 0.5 * mirror(x) + 0.25 * mirror(padded[..., :32, :32]) + 0.25 * mirror(padded[..., 2:, 2:])
    assert torch.allclose(net.predict(x, batch_size=2), expect, atol=1e-5)
    assert torch.allclose(net.predict(x, tta="flip"), mirror(x), atol=1e-5)
    assert not torch.allclose(expect, mirror(x), atol=1e-3)  # the shifted views do change the logits


def test_batchnorm_scales_are_frozen_and_convs_start_as_identity():
    net = TeacherNet(10, widths=(32, 64, 64))
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 6 and all(not m.weight.requires_grad and m.bias.requires_grad for m in bns)
    conv1 = net.groups[1].conv1.weight  # 32 -> 64: its first 32 filters pass their channel through
    assert torch.equal(conv1[:32, :, 1, 1], torch.eye(32)) and conv1[:32].abs().sum() == 32


def test_lr_schedule_and_lookahead_pull():
    from athe.training.teacher import _Lookahead, _lookahead_decay, _lr_at

    assert _lr_at(0, 100, 2.0) == pytest.approx(0.4) and _lr_at(23, 100, 2.0) == pytest.approx(2.0)
    assert _lr_at(100, 100, 2.0) == pytest.approx(0.14) and _lr_at(61, 100, 2.0) < _lr_at(60, 100, 2.0)
    assert _lookahead_decay(0, 100) == 0.0 and _lookahead_decay(100, 100) == pytest.approx(0.95 ** 5)
    net = TeacherNet(10, widths=(8, 8, 8))
    slow = _Lookahead(net)
    before = net.head.weight.detach().clone()
    with torch.no_grad():
        net.head.weight.add_(1.0)
        net.groups[0].bn1.running_mean.add_(2.0)
    slow.pull(0.75)  # a quarter of the way to the fast weights, which then take it
    assert torch.allclose(net.head.weight, before + 0.25)
    assert torch.allclose(net.groups[0].bn1.running_mean, torch.full((8,), 0.5))
    with torch.no_grad():
        net.head.weight.add_(5.0)
    slow.pull(1.0)  # decay 1: back to the slow weights, which do not move
    assert torch.allclose(net.head.weight, before + 0.25)

"""The recipe ablation: arms are real runs that differ in one ingredient; finished arms are read back."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from athe.training import ablation

pytestmark = pytest.mark.slow


def _base(cifar_archive, root):
    cfg = ablation.recipe_config(str(cifar_archive), str(root), epochs=1, limit=64, teacher=None)
    return replace(cfg, variant="tiny-test", batch_size=32, val_size=200, router_size=200)


def test_arms_differ_in_one_ingredient_and_finished_arms_are_reused(cifar_archive, tiny, tmp_path):
    base = _base(cifar_archive, tmp_path)
    full, no_erase = (asdict(ablation.arm_config(base, a, tmp_path)) for a in ("full", "no-erasing"))
    assert {k for k in full if full[k] != no_erase[k]} == {"out", "erase_prob"}
    assert full["erase_prob"] > 0 and no_erase["erase_prob"] == 0.0
    soft = asdict(ablation.arm_config(base, "soft-teacher", tmp_path))
    assert {k for k in full if full[k] != soft[k]} == {"out", "teacher_kind", "teacher_weight"}
    assert (full["teacher_kind"], soft["teacher_kind"], soft["teacher_weight"]) == ("hard", "soft", 0.7)
    ta = asdict(ablation.arm_config(base, "trivial-augment", tmp_path))
    assert {k for k in full if full[k] != ta[k]} == {"out", "augment"} and ta["augment"] == "trivial"

    results = ablation.run_arms(base, ["full", "no-erasing"], tmp_path, variant=tiny)
    assert [r["arm"] for r in results] == ["full", "no-erasing"]
    assert all(0 <= r["val_top1_dense"] <= 100 and not r["reused"] for r in results)
    assert results[0]["delta_dense_pt"] == 0.0
    losses = [json.loads((tmp_path / a / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]
              for a in ("full", "no-erasing")]
    assert np.isfinite(losses).all() and losses[0] != losses[1]  # erasing really changed the batches

    again = ablation.run_arms(base, ["full", "no-erasing"], tmp_path, variant=tiny)
    assert all(r["reused"] for r in again)
    assert [r["val_top1_dense"] for r in again] == [r["val_top1_dense"] for r in results]
    table = ablation.markdown_table(again, base)
    assert "| no-erasing | no random erasing |" in table and "| full | the full recipe |" in table

    # an arm saved before TrainConfig had a field (here: augment) is read back, not retrained
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    del saved["augment"]
    (tmp_path / "full" / "config.json").write_text(json.dumps(saved))
    assert ablation.run_arms(base, ["full"], tmp_path, variant=tiny)[0]["reused"]

    with pytest.raises(FileExistsError, match="other settings"):
        ablation.run_arms(replace(base, epochs=2), ["full"], tmp_path, variant=tiny)


def test_cli_refuses_bad_arms_and_a_missing_teacher(tmp_path, capsys):
    for argv, msg in ((["--arms", "full,no-such"], "unknown no-such"),
                      (["--arms", "full,no-teacher"], "no --teacher was given"),
                      (["--arms", "soft-teacher"], "includes soft-teacher but no --teacher"),
                      (["--teacher", str(tmp_path / "nope.pt"), "--arms", "full"], "no file at")):
        with pytest.raises(SystemExit) as e:
            ablation.main(["--data", "x", "--out", str(tmp_path / "o"), *argv])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

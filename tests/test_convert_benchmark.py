"""The conversion benchmark on a tiny variant: converts ours + naive, times them interleaved, reuses."""

from __future__ import annotations

import athe.convert.benchmark as bench
from athe.variants import replace


def test_benchmark_converts_times_and_reuses(tiny, tmp_path, monkeypatch, capsys):
    tiny = replace(tiny, levels=(tiny.levels[0], tiny.levels[-1]))  # one pruned level + dense keep it short
    monkeypatch.setattr(bench, "get_variant", lambda name: tiny)
    rows = bench.benchmark([tiny.name], [1], ["tflite"], int8=False, warmup=1, repeat=3, workdir=tmp_path)
    assert {(r["level"], r["kind"]) for r in rows} == {(lv, k) for lv in tiny.level_names for k in ("ours", "naive")}
    assert all(len(r["samples_ms"]) == 3 and r["median_ms"] > 0 and r["bytes"] > 0 for r in rows)
    lines = bench.ratios(rows)
    assert len(lines) == 1 + len(tiny.level_names) and "naive/ours" in lines[0]
    assert capsys.readouterr().out.count("converted ") == 2 * len(tiny.level_names)

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.tflite")}
    again = bench.benchmark([tiny.name], [1], ["tflite"], int8=False, warmup=0, repeat=2, workdir=tmp_path, reuse=True)
    assert "converted " not in capsys.readouterr().out  # nothing reconverted
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.tflite")} == stamps
    assert len(again) == len(rows)


def test_select_numpy_equals_select_tokens():
    import numpy as np
    import torch

    from athe.training.model import select_tokens

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 17, 8, generator=gen)
    scores = torch.softmax(torch.randn(1, 16, generator=gen), dim=-1)
    for fuse in (False, True):
        want = select_tokens(x, scores, 5, fuse).numpy()
        got = bench.select_numpy(x.numpy(), scores.numpy(), 5, fuse)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-6


def test_stage_benchmark_reports_shares_and_token_selection(tiny, tmp_path, monkeypatch, capsys):
    """Per stage: latency share next to MAC share; for the stage that keeps tokens on entry, the
    runtime-selection path (numpy + the stage converted without selection), same logits."""
    monkeypatch.setattr(bench, "get_variant", lambda name: tiny)
    rows = bench.stage_benchmark([tiny.name], ["tflite"], warmup=1, repeat=3, workdir=tmp_path)
    assert [r["stage"] for r in rows] == tiny.stage_names
    assert abs(sum(r["latency_share"] for r in rows) - 1) < 1e-9
    assert abs(sum(r["macs_share"] for r in rows) - 1) < 1e-9
    assert all(len(r["samples_ms"]) == 3 and r["median_ms"] > 0 for r in rows)
    (s2,) = [r for r in rows if r["token_selection"] == "in-graph"]
    assert s2["stage"] == "s2" and s2["runtime_total_ms"] == s2["runtime_select_ms"] + s2["runtime_stage_ms"]
    out = capsys.readouterr().out
    assert out.count("converted ") == 4 and "differs" not in out  # 3 stages + s2 without selection
    lines = bench.stage_lines(rows)
    assert "latency share" in lines[0] and "MAC share" in lines[0] and len(lines) == 1 + 3 + 3

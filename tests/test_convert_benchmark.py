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

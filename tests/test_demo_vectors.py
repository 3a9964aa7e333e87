"""The phone demo's shared test vectors equal what the Python runtime computes now.

``android_demo/vectors/vectors.json`` is read by the Android core's JUnit tests and the PWA's
tests; it is regenerated here in memory from ``athe.runtime`` and compared case by case, so a
change in Python behaviour (dispatch rule, preprocessing, manifest validation) fails here
until the vectors, and with them the other implementations, are updated. Schema 2 adds the exit
chain: manifests with stages and gates (and their refusals), gate scores, the exit rule at and
around thresholds, whole chains with stand-in stages, and the policies the phones run.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import PIL
import pytest

VECTORS_DIR = Path(__file__).resolve().parents[1] / "android_demo" / "vectors"
#: The preprocessing cases are ~115 KiB, the manifests (schema 2, with stage chains) ~150 KiB,
#: the one-field edits of a base manifest ~45 KiB.
MAX_BYTES = 400 * 1024


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_vectors = _load_generator()


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((VECTORS_DIR / "vectors.json").read_text())


def _same(a: object, b: object) -> bool:
    """Equal, floats within 1e-13 relative: the logistic gate's dot products run through the
    CPU's BLAS kernel, whose summation order (so the last bits) differs between CPUs (measured:
    3 gate scores ≤ 2.3e-16 apart on an AMD EPYC vs the machine that wrote the file). The phones
    check with 1e-12."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-13, abs_tol=1e-300)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


@pytest.fixture(scope="module")
def regenerated() -> dict:
    return json.loads(make_vectors.dumps(make_vectors.build_vectors()))


def test_vectors_were_made_with_this_pillow(committed):
    assert committed["pillow"] == PIL.__version__, (
        f"vectors.json was made with Pillow {committed['pillow']} but Pillow {PIL.__version__} is "
        "installed: resampling differs between versions (pass order); install the pinned Pillow "
        "or regenerate with make_vectors.py and re-run the Java and web tests"
    )


SECTIONS = ["choose_level", "preprocess", "preprocess_errors", "rgba_to_rgb", "exif_orientation", "softmax_top1",
            "manifests", "manifest_edits", "gate_score", "exit_decisions", "chains", "policies"]


def test_every_section_is_compared(regenerated):
    assert [k for k, v in regenerated.items() if isinstance(v, list) and v and isinstance(v[0], dict)] == SECTIONS


@pytest.mark.parametrize("section", SECTIONS)
def test_committed_vectors_equal_the_python_runtime(committed, regenerated, section):
    want = {case["name"]: case for case in regenerated[section]}
    have = {case["name"]: case for case in committed[section]}
    assert list(have) == list(want), (
        f"{section}: cases differ (missing {sorted(set(want) - set(have))}, extra "
        f"{sorted(set(have) - set(want))}); run android_demo/vectors/make_vectors.py"
    )
    stale = [name for name in want if not _same(have[name], want[name])]
    assert not stale, f"{section}: stale cases {stale}; run android_demo/vectors/make_vectors.py"


def test_committed_file_is_canonical_current_and_small(regenerated):
    text = (VECTORS_DIR / "vectors.json").read_text()
    assert text == make_vectors.dumps(json.loads(text)), "vectors.json is not in make_vectors.py's format"
    assert _same(json.loads(text), regenerated), (
        "vectors.json differs from make_vectors.py's output; run android_demo/vectors/make_vectors.py"
    )
    assert len(text.encode()) < MAX_BYTES


def test_same_tolerates_only_last_bits_of_floats():
    assert _same({"s": [0.6683596615166904, 1, "a"]}, {"s": [0.6683596615166902, 1, "a"]})
    assert not _same({"s": 0.668359661517}, {"s": 0.668359661516})  # 1.5e-12 apart: stale
    assert not _same(1, 1.0) and not _same([1, 2], [1, 2, 3]) and not _same({"a": 1}, {"b": 1})


def test_vectors_cover_the_cases_the_other_implementations_need(committed):
    levels = {len(c["level_names"]) for c in committed["choose_level"]}
    assert {1, 2, 3} <= levels
    assert any(c["scores"][c["level_names"].index(c["expected"])] == c["thresholds"].get(c["expected"])
               for c in committed["choose_level"]), "no case with a score exactly at its threshold"
    interpolations = {c["spec"]["interpolation"] for c in committed["preprocess"]}
    assert interpolations == {"bicubic", "bilinear", "nearest"}
    crops = [(c["resized_width"], c["resized_height"], c["spec"]["crop_size"]) for c in committed["preprocess"]]
    assert any(crop > min(w, h) for w, h, crop in crops), "no case where the crop pads"
    assert any((c["width"], c["height"]) == (c["resized_width"], c["resized_height"])
               for c in committed["preprocess"]), "no case without a resize"
    assert {c["spec"]["layout"] for c in committed["preprocess"]} == {"NCHW", "NHWC"}
    manifests = committed["manifests"]
    assert sum("expected" in c for c in manifests) >= 2 and sum("error_contains" in c for c in manifests) >= 10
    # schema 2: the old schema is refused, stage chains parse, every stage/gate refusal is there
    assert all(c["expected"]["schema_version"] == 2 for c in manifests if "expected" in c)
    assert any("schema_version 1 is not supported" in c.get("error", "") for c in manifests)
    with_stages = [c for c in manifests if "expected" in c and c["expected"]["stage_names"]]
    assert with_stages and {c["expected"]["default_policy"] for c in with_stages} == {"exit"}
    gates = {st["gate"]["kind"] for c in with_stages for st in c["expected"]["stages"] if st["gate"]}
    assert gates == {"logistic", "max_softmax"}
    errors = " ".join(c.get("error", "") for c in manifests)
    for message in ("stages must be a list", "unknown tensor(s)", "gate.kind:", "same non-zero length",
                    "gate.std: every value must be > 0", "must be a number in [0, 1]",
                    "every stage but the last needs a gate and a threshold", "stage names", "stages[2].files.tflite"):
        assert message in errors, f"no manifest case refused with {message!r}"
    assert sum(c.get("exact", False) for c in manifests) >= 30
    edits = committed["manifest_edits"]
    assert sum("error" in c for c in edits) >= 100 and any("expected" in c for c in edits)
    assert all(c["exact"] for c in edits if "error" in c), "a field edit refused by something else than ManifestError"
    # gates: both kinds, the CLS feature, a tie, clipping; scores in [0, 1]
    scored = [c for c in committed["gate_score"] if "score" in c]
    assert {c["gate"]["kind"] for c in scored} == {"logistic", "max_softmax"}
    assert any(c["cls"] is not None for c in scored) and any(c["features"][1] == 0.0 for c in scored)
    assert any(c["score"] == 1.0 for c in scored) and all(0.0 <= c["score"] <= 1.0 for c in scored)
    # the exit rule exactly at a threshold (passes) and one ulp below (goes on)
    decisions = committed["exit_decisions"]
    assert any(c["scores"][c["expected"]] == c["thresholds"][c["expected"]] for c in decisions
               if c["expected"] in c["thresholds"]), "no exit exactly at its threshold"
    assert any(c["expected"] == c["stage_names"][-1] and 0 < c["thresholds"]["s1"] - c["scores"]["s1"] < 1e-15
               for c in decisions if "s1" in c["thresholds"]), "no score one ulp below its threshold"
    # chains: every exit taken, each fixed exit, logits passed on by name
    chains = committed["chains"]
    assert {c["expected"]["exit"] for c in chains if c["policy"] == "exit"} == {"s1", "s2", "s3"}
    assert {c["policy"] for c in chains} >= {"exit", "exit:s1", "exit:s2", "exit:s3"}
    assert any(c["expected"]["feeds"].get("s2") == [["s1", "tokens"], ["s1", "scores"]] for c in chains)
    kinds = {c["expected"]["kind"] for c in committed["policies"] if "expected" in c}
    assert kinds >= {"exit", "fixed-exit", "router", "fixed", "random", "oracle"}

"""The phone demo's shared test vectors equal what the Python runtime computes now.

``android_demo/vectors/vectors.json`` is read by the Android core's JUnit tests and the PWA's
tests; it is regenerated here in memory from ``athe.runtime`` and compared case by case, so a
change in Python behaviour (dispatch rule, preprocessing, manifest validation) fails here
until the vectors, and with them the other implementations, are updated.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import PIL
import pytest

VECTORS_DIR = Path(__file__).resolve().parents[1] / "android_demo" / "vectors"
MAX_BYTES = 200 * 1024


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_vectors = _load_generator()


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((VECTORS_DIR / "vectors.json").read_text())


@pytest.fixture(scope="module")
def regenerated() -> dict:
    return json.loads(make_vectors.dumps(make_vectors.build_vectors()))


def test_vectors_were_made_with_this_pillow(committed):
    assert committed["pillow"] == PIL.__version__, (
        f"vectors.json was made with Pillow {committed['pillow']} but Pillow {PIL.__version__} is "
        "installed: resampling differs between versions (pass order); install the pinned Pillow "
        "or regenerate with make_vectors.py and re-run the Java and web tests"
    )


@pytest.mark.parametrize("section", ["choose_level", "preprocess", "preprocess_errors", "rgba_to_rgb",
                                     "exif_orientation", "softmax_top1",
                                     "manifests"])
def test_committed_vectors_equal_the_python_runtime(committed, regenerated, section):
    want = {case["name"]: case for case in regenerated[section]}
    have = {case["name"]: case for case in committed[section]}
    assert list(have) == list(want), (
        f"{section}: cases differ (missing {sorted(set(want) - set(have))}, extra "
        f"{sorted(set(have) - set(want))}); run android_demo/vectors/make_vectors.py"
    )
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, f"{section}: stale cases {stale}; run android_demo/vectors/make_vectors.py"


def test_committed_file_is_byte_identical_and_small():
    text = (VECTORS_DIR / "vectors.json").read_text()
    assert text == make_vectors.dumps(make_vectors.build_vectors()), (
        "vectors.json differs from make_vectors.py's output; run android_demo/vectors/make_vectors.py"
    )
    assert len(text.encode()) < MAX_BYTES


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

"""Dispatcher logic with a fake backend: hand-set router outputs, every policy, every error.

Torch-free and fast: the fake backend's models return fixed arrays, so these tests check the
dispatch rule, not inference (that is ``test_runtime_backends.py``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_runtime_bundle import LABELS, write_bundle

from athe.runtime import Bundle, BundleError, Dispatcher, DispatchError, ImageError, parse_policy
from athe.runtime.dispatcher import STAGES, parse_thresholds

NAMES = ["simple", "complex", "dense"]


class FakeModel:
    def __init__(self, path: Path, output: np.ndarray, calls: list[str]) -> None:
        self.path, self.output, self.calls = path, output, calls
        self.input_shape = (1, 3, 32, 32)
        self.output_shape = tuple(output.shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        assert x.shape == self.input_shape and x.dtype == np.float32
        self.calls.append(self.path.stem)
        return self.output.copy()


class FakeBackend:
    """Router scores and per-level logits set by hand; records which artifacts ran."""

    name, threads = "fake", 1

    def __init__(self, router=(0.9, 0.9, 0.9), classes=None) -> None:
        self.router = np.asarray([router], dtype=np.float32)
        classes = classes or {"simple": 1, "complex": 2, "dense": 3}
        self.logits = {n: np.eye(10, dtype=np.float32)[[c]] * 5.0 for n, c in classes.items()}
        self.calls: list[str] = []
        self.models: dict[str, FakeModel] = {}

    def load(self, path):
        path = Path(path)
        out = self.router if path.stem == "router" else self.logits[path.stem]
        self.models[path.stem] = FakeModel(path, out, self.calls)
        return self.models[path.stem]

    def set_router(self, *scores: float) -> None:
        self.models["router"].output = np.asarray([scores], dtype=np.float32)


@pytest.fixture()
def bundle(tmp_path) -> Bundle:
    return Bundle.open(write_bundle(tmp_path / "b", thresholds={"simple": 0.6, "complex": 0.5}))


def image() -> np.ndarray:
    return np.full((40, 48, 3), 128, dtype=np.uint8)


def make(bundle, policy="router", **kw) -> tuple[Dispatcher, FakeBackend]:
    fake = kw.pop("fake", None) or FakeBackend()
    return Dispatcher(bundle, backend=fake, fmt="tflite", policy=policy, **kw), fake


# -- router policy -----------------------------------------------------------------------------
@pytest.mark.parametrize("scores,level", [
    ((0.9, 0.9, 0.9), "simple"),
    ((0.6, 0.0, 0.0), "simple"),      # exactly at the threshold passes
    ((0.59, 0.5, 0.0), "complex"),
    ((0.1, 0.49, 1.0), "dense"),      # the richest is the fallback, its score is not used
    ((0.0, 0.0, 0.0), "dense"),
])
def test_router_picks_the_cheapest_level_that_passes(bundle, scores, level):
    dispatcher, fake = make(bundle)
    fake.set_router(*scores)
    fake.calls.clear()
    p = dispatcher.predict(image())
    assert p.level == level
    assert fake.calls == ["router", level]  # the router, then exactly one level
    assert p.router_scores == pytest.approx(dict(zip(NAMES, scores, strict=True)))
    assert p.label == {"simple": 1, "complex": 2, "dense": 3}[level]
    assert p.label_name == LABELS[p.label]
    assert p.probability == pytest.approx(np.exp(5) / (np.exp(5) + 9))
    assert set(p.timings_ms) == set(STAGES)
    assert p.timings_ms["total"] >= p.timings_ms["route"] + p.timings_ms["infer"]
    assert p.overhead_ms == pytest.approx(p.timings_ms["total"] - p.timings_ms["route"] - p.timings_ms["infer"])


def test_threshold_override_is_merged_onto_the_bundles(bundle):
    dispatcher, fake = make(bundle, thresholds={"simple": 0.95})
    assert dispatcher.thresholds == {"simple": 0.95, "complex": 0.5}
    fake.set_router(0.9, 0.6, 0.0)
    assert dispatcher.predict(image()).level == "complex"


@pytest.mark.parametrize("override,match", [
    ({"dense": 0.5}, "only these levels have thresholds: simple, complex"),
    ({"medium": 0.5}, "only these levels have thresholds"),
    ({"simple": float("nan")}, "must be a number"),
])
def test_bad_threshold_overrides(bundle, override, match):
    with pytest.raises(DispatchError, match=match):
        make(bundle, thresholds=override)


def test_thresholds_only_with_the_router_policy(bundle):
    with pytest.raises(DispatchError, match="only apply to the router policy"):
        make(bundle, policy="fixed:dense", thresholds={"simple": 0.5})


# -- other policies ----------------------------------------------------------------------------
@pytest.mark.parametrize("level", NAMES)
def test_fixed_policy_never_runs_the_router(bundle, level):
    dispatcher, fake = make(bundle, policy=f"fixed:{level}")
    fake.calls.clear()
    p = dispatcher.predict(image())
    assert p.level == level and fake.calls == [level] and p.router_scores == {}


def test_random_fraction_is_seeded_and_splits_cheapest_vs_richest(bundle):
    dispatcher, _ = make(bundle, policy="random:0.7", seed=3)
    x = dispatcher.preprocessor(image())
    levels = [dispatcher.predict_tensor(x).level for _ in range(2000)]
    assert set(levels) == {"simple", "dense"}
    assert levels.count("simple") / len(levels) == pytest.approx(0.7, abs=0.04)
    again, _ = make(bundle, policy="random:0.7", seed=3)
    assert [again.predict_tensor(x).level for _ in range(2000)] == levels
    other, _ = make(bundle, policy="random:0.7", seed=4)
    assert [other.predict_tensor(x).level for _ in range(2000)] != levels


def test_random_named_shares_leave_the_rest_to_the_richest(bundle):
    dispatcher, _ = make(bundle, policy="random:simple=0.6,complex=0.3", seed=0)
    assert dispatcher.policy.shares == (("simple", 0.6), ("complex", 0.3), ("dense", pytest.approx(0.1)))
    x = dispatcher.preprocessor(image())
    levels = [dispatcher.predict_tensor(x).level for _ in range(3000)]
    for name, share in (("simple", 0.6), ("complex", 0.3), ("dense", 0.1)):
        assert levels.count(name) / len(levels) == pytest.approx(share, abs=0.04)


def test_random_edge_fractions(bundle):
    x = np.zeros((1, 3, 32, 32), np.float32)
    all_cheap, _ = make(bundle, policy="random:1")
    assert {all_cheap.predict_tensor(x).level for _ in range(200)} == {"simple"}
    all_rich, _ = make(bundle, policy="random:0")
    assert {all_rich.predict_tensor(x).level for _ in range(200)} == {"dense"}


def test_oracle_takes_the_first_correct_level_cheapest_first(bundle):
    fake = FakeBackend(classes={"simple": 1, "complex": 2, "dense": 2})
    dispatcher, fake = make(bundle, policy="oracle", fake=fake)
    fake.calls.clear()
    p = dispatcher.predict(image(), label=1)
    assert (p.level, p.correct, fake.calls) == ("simple", True, ["simple"])
    fake.calls.clear()
    p = dispatcher.predict(image(), label="bird")  # index 2
    assert (p.level, p.correct, fake.calls) == ("complex", True, ["simple", "complex"])
    fake.calls.clear()
    p = dispatcher.predict(image(), label=7)  # nobody is right: the richest, after trying all
    assert (p.level, p.correct, fake.calls) == ("dense", False, NAMES)
    assert p.router_scores == {}


def test_oracle_refuses_without_a_label(bundle):
    dispatcher, _ = make(bundle, policy="oracle")
    with pytest.raises(DispatchError, match="oracle policy needs the true label"):
        dispatcher.predict(image())


def test_labels_are_checked(bundle):
    dispatcher, _ = make(bundle)
    assert dispatcher.predict(image(), label="cat").target == 3
    with pytest.raises(DispatchError, match="not one of the bundle's 10 labels"):
        dispatcher.predict(image(), label="unicorn")
    with pytest.raises(DispatchError, match="out of range"):
        dispatcher.predict(image(), label=10)


@pytest.mark.parametrize("text,match", [
    ("routr", "unknown policy.*Did you mean 'router'"),
    ("fixed:medium", "no level 'medium'; levels: simple, complex, dense"),
    ("fixed:simpel", "Did you mean 'simple'"),
    ("random:", "give a fraction"),
    ("random:1.5", "between 0 and 1"),
    ("random:abc", "not a number"),
    ("random:simple=0.8,complex=0.3", "sum to 1.1 > 1"),
    ("random:simple=0.5,dense=0.2", "must sum to 1"),
    ("random:simple=0.5,simple=0.2", "each level once"),
    ("router:0.5", "takes no argument"),
    ("oracle:x", "takes no argument"),
])
def test_bad_policy_strings(text, match):
    with pytest.raises(DispatchError, match=match):
        parse_policy(text, NAMES)


def test_policy_parsing():
    assert parse_policy("fixed:dense", NAMES).level == "dense"
    assert parse_policy("random:0.25", NAMES).shares == (("simple", 0.25), ("complex", 0.0), ("dense", 0.75))
    assert parse_policy("random:simple=0.5,complex=0.25,dense=0.25", NAMES).shares[-1] == ("dense", 0.25)
    assert parse_thresholds("simple=0.7, complex=0.5") == {"simple": 0.7, "complex": 0.5}
    with pytest.raises(DispatchError, match="<level>=<threshold>"):
        parse_thresholds("simple:0.7")


def test_bundle_without_router_allows_fixed_random_oracle_only(tmp_path):
    bundle = Bundle.open(write_bundle(tmp_path / "nr", router=False))
    with pytest.raises(DispatchError, match="has no router; use fixed:<level>, random:<fraction> or oracle"):
        make(bundle)
    for policy in ("fixed:complex", "random:0.5", "oracle"):
        dispatcher, _ = make(bundle, policy=policy)
        assert dispatcher.router is None
        assert dispatcher.predict(image(), label=1).level in NAMES


# -- batch API, loading, setup errors ----------------------------------------------------------
def test_predict_many_with_labels_and_progress(bundle):
    dispatcher, fake = make(bundle)
    buf = io.BytesIO()
    Image.fromarray(image()).save(buf, format="PNG")
    seen = []
    preds = dispatcher.predict_many([image(), buf.getvalue(), Image.fromarray(image())], labels=[1, 1, 0],
                                    progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [p.correct for p in preds] == [True, True, False]
    gen_seen = []
    dispatcher.predict_many((image() for _ in range(2)), progress=lambda d, t: gen_seen.append((d, t)))
    assert gen_seen == [(1, None), (2, None)]
    with pytest.raises(DispatchError, match="2 labels for 3 images"):
        dispatcher.predict_many([image()] * 3, labels=[1, 2])


def test_bad_image_gives_image_error_not_a_crash(bundle):
    dispatcher, _ = make(bundle)
    with pytest.raises(ImageError, match="cannot be decoded"):
        dispatcher.predict(b"definitely not an image")
    assert dispatcher.predict(image()).level == "simple"  # still usable afterwards


def test_preload_records_time_and_memory_per_artifact(bundle):
    dispatcher, fake = make(bundle)
    assert [load.owner for load in dispatcher.loads] == ["router", *NAMES]
    assert set(fake.models) == {"router", *NAMES}
    for load in dispatcher.loads:
        assert load.format == "tflite" and load.seconds >= 0 and load.file_bytes > 0
        assert load.rss_method in ("VmRSS", "ru_maxrss (peak)")
    info = dispatcher.info()
    assert info["policy"] == "router" and info["format"] == "tflite" and len(info["loads"]) == 4


def test_shape_mismatches_are_caught_at_construction(bundle):
    fake = FakeBackend(router=(0.9, 0.9))  # two outputs for three levels
    with pytest.raises(DispatchError, match="router artifact has 2 outputs but the bundle has 3 levels"):
        make(bundle, fake=fake)
    fake = FakeBackend()
    fake.logits["dense"] = np.zeros((1, 7), np.float32)
    with pytest.raises(DispatchError, match="dense artifact has 7 outputs but the bundle has 10 labels"):
        make(bundle, fake=fake)


def test_format_and_backend_setup_errors(tmp_path, bundle):
    with pytest.raises(DispatchError, match="no default format; pass fmt="):
        Dispatcher(bundle, backend=FakeBackend())
    with pytest.raises(DispatchError, match="threads applies to a backend given by name"):
        Dispatcher(bundle, backend=FakeBackend(), fmt="tflite", threads=2)
    only_pte = Bundle.open(bundle.path, formats=["pte"])
    with pytest.raises(BundleError, match="not opened with format 'tflite'"):
        Dispatcher(only_pte, backend=FakeBackend(), fmt="tflite")
    tflite_only = write_bundle(tmp_path / "t", formats=("tflite",))
    with pytest.raises(BundleError, match=r"lacks format\(s\) pte \(it has: tflite\)"):
        Dispatcher(tflite_only, backend=FakeBackend(), fmt="pte")
    # a folder path works and verifies only the format it needs
    assert Dispatcher(tflite_only, backend=FakeBackend(), fmt="tflite").bundle.formats == ("tflite",)

"""Bundle opening: manifest validation, artifact size and sha256 verification, formats.

Torch-free: artifacts here are placeholder bytes (the real-artifact tests are in
``test_runtime_backends.py``). ``write_bundle`` is shared with ``test_runtime_dispatcher.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from athe.runtime.bundle import Bundle, BundleError
from athe.runtime.manifest import (
    SCHEMA_VERSION,
    InputSpec,
    LevelSpec,
    Manifest,
    ManifestError,
    RouterSpec,
    artifact_for_file,
    choose_level,
)

LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_bundle(folder: Path, levels: tuple[str, ...] = ("simple", "complex", "dense"),
                 router: bool = True, formats: tuple[str, ...] = ("tflite", "pte"),
                 thresholds: dict[str, float] | None = None, crop: int = 32, resize: int = 32,
                 files: dict[tuple[str, str], bytes] | None = None) -> Path:
    """A bundle folder with a valid manifest; artifact contents from ``files`` or placeholders."""
    folder.mkdir(parents=True, exist_ok=True)
    files = files or {}

    def artifacts(owner: str) -> dict:
        out = {}
        for fmt in formats:
            name = f"{owner}.{fmt}"
            (folder / name).write_bytes(files.get((owner, fmt), f"{owner}-{fmt}-placeholder".encode() * 50))
            out[fmt] = artifact_for_file(folder, name)
        return out

    specs = tuple(
        LevelSpec(name=n, keep=((1, 0.5),) if i < len(levels) - 1 else (), heads=3, fuse=True,
                  tokens_per_block=(65,), macs=1000 * (i + 1), files=artifacts(n))
        for i, n in enumerate(levels)
    )
    router_spec = None
    if router:
        router_spec = RouterSpec(
            files=artifacts("router"), outputs=levels,
            thresholds=thresholds or {n: 0.5 for n in levels[:-1]}, input_size=crop, macs=100,
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, variant="test-mini", created_with={"athe": "test"},
        checkpoint={}, random_weights=True, precision="fp32",
        input=InputSpec(rule="resize_shorter_center_crop", resize_size=resize, crop_size=crop,
                        interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        labels=LABELS, levels=specs, router=router_spec,
    )
    (folder / "manifest.json").write_text(manifest.dumps())
    return folder


def edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_open_valid_bundle_exposes_everything(tmp_path):
    bundle = Bundle.open(write_bundle(tmp_path / "b", thresholds={"simple": 0.6, "complex": 0.4}))
    assert bundle.level_names == ["simple", "complex", "dense"]
    assert bundle.formats == ("pte", "tflite")
    assert bundle.thresholds == {"simple": 0.6, "complex": 0.4}
    assert bundle.labels == LABELS
    assert bundle.input.crop_size == 32
    assert bundle.router is not None and bundle.router.outputs == ("simple", "complex", "dense")
    assert bundle.artifact_path("simple", "tflite") == tmp_path / "b" / "simple.tflite"
    assert bundle.artifact_path("router", "pte").name == "router.pte"
    # the manifest file itself is accepted too
    assert Bundle.open(tmp_path / "b" / "manifest.json").level_names == bundle.level_names


def test_manifest_round_trip(tmp_path):
    folder = write_bundle(tmp_path / "b")
    m = Manifest.load(folder / "manifest.json")
    assert Manifest.from_dict(json.loads(m.dumps())) == m


@pytest.mark.parametrize("version", [0, 1, 3, "2", None])
def test_unknown_schema_version_is_refused_with_the_version_read(tmp_path, version):
    folder = write_bundle(tmp_path / "b")
    edit_manifest(folder, lambda d: d.__setitem__("schema_version", version))
    with pytest.raises(BundleError, match=f"this athe reads schema_version {SCHEMA_VERSION}"):
        Bundle.open(folder)


@pytest.mark.parametrize("field", ["variant", "input", "labels", "levels", "router", "precision"])
def test_missing_top_level_field(tmp_path, field):
    folder = write_bundle(tmp_path / "b")
    edit_manifest(folder, lambda d: d.pop(field))
    with pytest.raises(BundleError, match=f"missing field.*{field}"):
        Bundle.open(folder)


@pytest.mark.parametrize("where,field", [("input", "mean"), ("level", "files"), ("level", "heads"),
                                         ("router", "thresholds"), ("artifact", "sha256")])
def test_missing_nested_field(tmp_path, where, field):
    folder = write_bundle(tmp_path / "b")

    def edit(d):
        target = {"input": d["input"], "level": d["levels"][0], "router": d["router"],
                  "artifact": d["levels"][1]["files"]["tflite"]}[where]
        target.pop(field)

    edit_manifest(folder, edit)
    with pytest.raises(BundleError, match=f"missing field.*{field}"):
        Bundle.open(folder)


@pytest.mark.parametrize("outputs", [["simple", "dense"], ["complex", "simple", "dense"],
                                     ["simple", "complex", "dense", "extra"]])
def test_router_outputs_must_equal_levels(tmp_path, outputs):
    folder = write_bundle(tmp_path / "b")
    edit_manifest(folder, lambda d: d["router"].__setitem__("outputs", outputs))
    with pytest.raises(BundleError, match="router.outputs .* must equal the levels"):
        Bundle.open(folder)


def test_router_thresholds_must_cover_all_but_the_last_level(tmp_path):
    folder = write_bundle(tmp_path / "b")
    edit_manifest(folder, lambda d: d["router"]["thresholds"].pop("complex"))
    with pytest.raises(BundleError, match=r"thresholds lacks \['complex'\]"):
        Bundle.open(folder)


def test_bad_json_and_missing_manifest(tmp_path):
    folder = write_bundle(tmp_path / "b")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(BundleError, match="needs manifest.json"):
        Bundle.open(folder)
    with pytest.raises(BundleError, match="bundle folder .* not found"):
        Bundle.open(tmp_path / "nowhere")


def test_malformed_field_types_give_bundle_error(tmp_path):
    folder = write_bundle(tmp_path / "b")
    edit_manifest(folder, lambda d: d["levels"][0]["files"]["tflite"].__setitem__("surprise", 1))
    with pytest.raises(BundleError, match="malformed"):
        Bundle.open(folder)


def test_absolute_or_escaping_artifact_paths_are_refused(tmp_path):
    folder = write_bundle(tmp_path / "b")
    edit_manifest(folder, lambda d: d["levels"][0]["files"]["tflite"].__setitem__("path", "../x.tflite"))
    with pytest.raises(BundleError, match="must be relative to the bundle folder"):
        Bundle.open(folder)


def test_tampered_artifact_is_refused_naming_the_file(tmp_path):
    folder = write_bundle(tmp_path / "b")
    data = bytearray((folder / "complex.tflite").read_bytes())
    data[10] ^= 0xFF  # same size, different content
    (folder / "complex.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"complex\.tflite.*failed sha256 verification"):
        Bundle.open(folder)
    # a Pi that copied only the .pte files never reads the tampered .tflite
    assert Bundle.open(folder, formats=["pte"]).formats == ("pte",)


def test_truncated_artifact_is_refused_naming_the_file(tmp_path):
    folder = write_bundle(tmp_path / "b")
    data = (folder / "router.pte").read_bytes()
    (folder / "router.pte").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"router\.pte.* is truncated \(\d+ bytes, manifest says \d+\)"):
        Bundle.open(folder)


def test_missing_artifact_is_refused_with_the_fix(tmp_path):
    folder = write_bundle(tmp_path / "b")
    (folder / "dense.pte").unlink()
    with pytest.raises(BundleError, match=r"dense\.pte.* is missing; copy the whole bundle folder"):
        Bundle.open(folder)
    assert Bundle.open(folder, formats=["tflite"]).formats == ("tflite",)


def test_format_the_bundle_lacks_lists_what_it_has(tmp_path):
    folder = write_bundle(tmp_path / "b", formats=("tflite",))
    with pytest.raises(BundleError, match=r"lacks format\(s\) pte \(it has: tflite\)"):
        Bundle.open(folder, formats=["pte"])
    bundle = Bundle.open(folder)
    with pytest.raises(BundleError, match=r"lacks format\(s\) pte \(it has: tflite\)"):
        bundle.artifact_path("simple", "pte")
    with pytest.raises(BundleError, match="unknown format"):
        Bundle.open(folder, formats=["onnx"])


def test_unknown_owner_and_missing_router(tmp_path):
    bundle = Bundle.open(write_bundle(tmp_path / "b", router=False))
    assert bundle.router is None and bundle.thresholds == {}
    with pytest.raises(BundleError, match="has no level 'medium'; levels: simple, complex, dense"):
        bundle.artifact_path("medium", "tflite")
    with pytest.raises(BundleError, match="has no router"):
        bundle.artifact_path("router", "tflite")


def test_reference_format_pt2_is_a_listed_format(tmp_path):
    bundle = Bundle.open(write_bundle(tmp_path / "b", formats=("tflite", "pt2")))
    assert bundle.formats == ("pt2", "tflite")


def test_choose_level_is_the_cheapest_passing_level():
    names = ["simple", "complex", "dense"]
    th = {"simple": 0.6, "complex": 0.5}
    assert choose_level([0.9, 0.9, 0.9], names, th) == "simple"
    assert choose_level([0.6, 0.1, 0.1], names, th) == "simple"  # >= threshold passes
    assert choose_level([0.59, 0.5, 0.1], names, th) == "complex"
    assert choose_level({"simple": 0.1, "complex": 0.2, "dense": 0.0}, names, th) == "dense"


def test_manifest_error_is_a_value_error():
    with pytest.raises(ManifestError):
        Manifest.from_dict([])  # type: ignore[arg-type]
    assert issubclass(BundleError, ValueError)

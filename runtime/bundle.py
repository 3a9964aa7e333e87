"""Open a bundle folder: validate its manifest and verify every artifact before anything loads.

A bundle is ``manifest.json`` + the model files it lists (see ``athe.runtime.manifest``).
``Bundle.open`` checks, for each artifact of the requested formats, that the file exists, that
its size equals the manifest's ``bytes`` (a short file is reported as truncated) and that its
sha256 matches (a mismatch is reported as tampered or corrupted); only then may a backend load
it through ``Bundle.artifact_path``.

Example::

    >>> from athe.runtime.bundle import Bundle
    >>> bundle = Bundle.open("bundles/athe-mini", formats=["tflite"])
    >>> bundle.level_names, bundle.thresholds
    (['simple', 'complex', 'dense'], {'simple': 0.62, 'complex': 0.55})
    >>> bundle.artifact_path("simple", "tflite")
    PosixPath('bundles/athe-mini/simple.tflite')
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .manifest import (
    ALL_FORMATS,
    Artifact,
    InputSpec,
    LevelSpec,
    Manifest,
    ManifestError,
    RouterSpec,
    StageSpec,
    sha256_file,
)
from .readers import ReadError, check_regular_file

MANIFEST_NAME = "manifest.json"


class BundleError(ValueError):
    """A bundle that cannot be used; one line naming the file or field, and the fix."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle.

    Attributes:
        path: the bundle folder.
        manifest: the parsed manifest.
        formats: the formats whose every artifact was verified (what backends may load).
    """

    path: Path
    manifest: Manifest
    formats: tuple[str, ...]

    @classmethod
    def open(cls, path: str | Path, formats: Iterable[str] | None = None) -> Bundle:
        """Read, validate and verify a bundle.

        Args:
            path: the bundle folder (or its ``manifest.json``).
            formats: formats to verify and make loadable, e.g. ``["tflite"]`` on a Pi that got
                only the ``.tflite`` files; ``None`` verifies every format the manifest lists.

        Raises:
            BundleError: bad manifest, a format the bundle lacks, or a missing, truncated or
                tampered artifact.
        """
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise BundleError(f"bundle path must be a folder path, got {path!r}")
        path = Path(path)
        folder = path.parent if path.name == MANIFEST_NAME else path
        if not folder.is_dir():
            raise BundleError(f"bundle folder {str(folder)!r} not found; pass the folder 'athe convert' wrote")
        try:
            manifest = Manifest.load(folder / MANIFEST_NAME)
        except ManifestError as exc:  # every field is validated: anything else is a bug
            raise BundleError(str(exc)) from exc
        have = manifest.formats()
        if formats is None:
            wanted = have
        else:
            if isinstance(formats, str) or not all(isinstance(f, str) for f in formats):
                raise BundleError(f"formats must be a list of format names (e.g. ['tflite']), got {formats!r}")
            wanted = list(dict.fromkeys(formats))
            unknown = [f for f in wanted if f not in ALL_FORMATS]
            if unknown:
                raise BundleError(f"unknown format(s) {unknown}; formats: {', '.join(ALL_FORMATS)}")
            lacking = [f for f in wanted if f not in have]
            if lacking:
                raise BundleError(_lacks_message(folder, lacking, have))
        if not wanted:
            raise BundleError(f"bundle {str(folder)!r} has no format that every level and the router "
                              "share; re-run 'athe convert'")
        for owner, fmt, artifact in manifest.artifacts():
            if fmt in wanted:
                verify_artifact(folder, owner, fmt, artifact)
        return cls(path=folder, manifest=manifest, formats=tuple(wanted))

    # -- what the runtime reads ----------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.manifest.variant

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        """Levels, cheapest first; the last is the richest (the router's fallback)."""
        return self.manifest.levels

    @property
    def level_names(self) -> list[str]:
        return self.manifest.level_names

    @property
    def router(self) -> RouterSpec | None:
        return self.manifest.router

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """The exit chain's stages in order (empty for a bundle without exits)."""
        return self.manifest.stages

    @property
    def stage_names(self) -> list[str]:
        return self.manifest.stage_names

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def input(self) -> InputSpec:
        return self.manifest.input

    @property
    def thresholds(self) -> dict[str, float]:
        """The calibrated router thresholds (one per level except the last); ``{}`` without a router."""
        return dict(self.manifest.router.thresholds) if self.manifest.router is not None else {}

    def artifact(self, owner: str, fmt: str) -> Artifact:
        """The manifest entry of ``owner``'s (a level name or ``"router"``) file in ``fmt``."""
        if fmt not in self.formats:
            raise BundleError(_lacks_message(self.path, [fmt], list(self.formats)))
        if owner == "router":
            if self.manifest.router is None:
                raise BundleError(f"bundle {str(self.path)!r} has no router; use a fixed, random or oracle policy")
            return self.manifest.router.files[fmt]
        if owner.startswith("stage:"):
            for stage in self.manifest.stages:
                if f"stage:{stage.name}" == owner:
                    return stage.files[fmt]
            raise BundleError(f"bundle {str(self.path)!r} has no stage {owner[6:]!r}; stages: "
                              f"{', '.join(self.stage_names) or 'none'}")
        for level in self.manifest.levels:
            if level.name == owner:
                return level.files[fmt]
        raise BundleError(f"bundle {str(self.path)!r} has no level {owner!r}; levels: "
                          f"{', '.join(self.level_names)} (and 'router')")

    def artifact_path(self, owner: str, fmt: str) -> Path:
        """Path of a verified artifact (``owner``: a level name or ``"router"``)."""
        return self.path / self.artifact(owner, fmt).path

    def __repr__(self) -> str:
        return (f"Bundle({str(self.path)!r}, variant={self.variant!r}, levels={self.level_names}, "
                f"router={self.router is not None}, formats={list(self.formats)})")


def verify_artifact(folder: Path, owner: str, fmt: str, artifact: Artifact) -> None:
    """Check that ``artifact`` exists with the manifest's size and sha256, else ``BundleError``."""
    file = folder / artifact.path
    where = f"{owner} {fmt} artifact {str(file)!r}"
    try:
        size = check_regular_file(file, f"{owner} {fmt} artifact")
    except FileNotFoundError:
        raise BundleError(f"{where} is missing; copy the whole bundle folder, or open it with "
                          f"formats=[...] naming only the formats you copied") from None
    except ReadError as exc:
        raise BundleError(f"{exc}; copy it again from the converted bundle") from None
    if size != artifact.bytes:
        state = "truncated" if size < artifact.bytes else "larger than recorded"
        raise BundleError(f"{where} is {state} ({size} bytes, manifest says {artifact.bytes}); "
                          "copy it again from the converted bundle")
    digest = sha256_file(file)
    if digest != artifact.sha256.lower():
        raise BundleError(f"{where} failed sha256 verification (tampered or corrupted: {digest[:12]}… "
                          f"!= {artifact.sha256[:12]}…); refusing to load it: copy it again or re-run 'athe convert'")


def _lacks_message(folder: Path, lacking: list[str], have: list[str]) -> str:
    has = ", ".join(have) if have else "none"
    return (f"bundle {str(folder)!r} lacks format(s) {', '.join(lacking)} (it has: {has}); "
            "convert with that format or pick a backend for one it has")

"""athe.runtime: run a converted ATHE bundle on a device, without torch.

Open a bundle (manifest validated, every artifact's size and sha256 verified before loading),
preload the router and all levels on one backend, then dispatch each image to the cheapest
level the router trusts::

    from athe.runtime import Bundle, Dispatcher

    bundle = Bundle.open("bundles/athe-mini", formats=["tflite"])
    dispatcher = Dispatcher(bundle, backend="litert", threads=2)       # policy="router"
    for load in dispatcher.loads:
        print(load.owner, f"{load.seconds * 1e3:.1f} ms", load.rss_delta_bytes)
    p = dispatcher.predict("cat.jpg")                                  # path, bytes, PIL, uint8 array
    print(p.label_name, f"{p.probability:.2f}", p.level, p.router_scores, p.timings_ms)

    baseline = Dispatcher(bundle, backend="litert", threads=2, policy="fixed:dense")

Pieces, each usable alone:

* ``athe.runtime.manifest``   the bundle contract (``Manifest``, ``choose_level``)
* ``athe.runtime.bundle``     ``Bundle.open`` / ``artifact_path`` (``BundleError``)
* ``athe.runtime.backends``   ``load_backend("litert" | "executorch" | "torch", threads)``
* ``athe.runtime.preprocess`` ``Preprocessor`` (numpy + Pillow; ``ImageError``)
* ``athe.runtime.dispatcher`` ``Dispatcher``, ``Prediction``, policies
* ``athe.runtime.routing``    the routing rule vectorised, threshold candidates, calibration to
  a δ or a budget (router training, ``athe eval`` and the dispatcher call it)
* ``athe.runtime.gates``      exit-gate features and score, logistic fit, AUROC
* ``athe.runtime.split``      the calib/test halves of a run's ``val`` split (``split.json``)
* ``athe.runtime.stats``      the one latency summary (``summarize_latency``)
* ``athe.runtime.readers``    one reader per input kind: image folders, ImageFolder folders, tar
  archives, CIFAR pickles (training, the runner, eval and the benchmark read through it)
* ``athe.runtime.benchmark``  ``python -m athe.runtime.benchmark --bundle DIR --threads 2``

Importing this package imports numpy and Pillow only; a backend's runtime is imported when that
backend is created (ExecuTorch and the torch reference need torch; LiteRT does not). No module
here imports ``athe.training``, ``athe.convert`` or torch (``tests/test_rooms.py``).
"""

from .backends import BACKEND_FORMATS, Backend, BackendError, LoadedModel, load_backend
from .bundle import Bundle, BundleError
from .dispatcher import ArtifactLoad, Dispatcher, DispatchError, Policy, Prediction, parse_policy
from .manifest import (
    SCHEMA_VERSION,
    Artifact,
    InputSpec,
    LevelSpec,
    Manifest,
    ManifestError,
    RouterSpec,
    choose_level,
)
from .preprocess import MAX_PIXELS, ImageError, Preprocessor, decode, preprocess

__all__ = [
    "BACKEND_FORMATS", "MAX_PIXELS", "SCHEMA_VERSION", "Artifact", "ArtifactLoad", "Backend",
    "BackendError", "Bundle", "BundleError", "DispatchError", "Dispatcher", "ImageError",
    "InputSpec", "LevelSpec", "LoadedModel", "Manifest", "ManifestError", "Policy", "Prediction",
    "Preprocessor", "RouterSpec", "choose_level", "decode", "load_backend", "parse_policy",
    "preprocess",
]

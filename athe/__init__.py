"""ATHE Edge: adaptive Vision Transformers for the edge.

The package is one namespace over the repository's component folders::

    athe            athe/        version, CLI, variant registry (imports nothing heavy)
    athe.training   training/    model, router, data, training loops, calibration (torch, timm)
    athe.convert    convert/     per-level export to .tflite and .pte, bundle writing
    athe.runtime    runtime/     bundle loading, preprocessing, backends, dispatcher (no torch)
    athe.pi_runner  pi_runner/   on-device runner: timing, energy meters, reports (no torch)

Example::

    $ athe variants
    $ athe demo
"""

__version__ = "0.1.0"

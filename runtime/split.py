"""The held-out halves of a training run's ``val`` split, decided once (numpy only).

``athe train backbone`` writes ``split.json`` (image indices of ``train``, ``router`` and
``val``, and the split ``seed``). ``athe train router`` cuts ``val`` in two with
``val_halves``: ``calib`` chooses the thresholds, ``test`` reports on images neither the router
nor the thresholds saw. Router training stores both halves in ``split.json``
(``with_val_halves``), and ``athe eval --split-from`` reads them back (``stored_val_halves``);
a run written before halves were stored gets them from the same ``val_halves``.

Example::

    >>> from athe.runtime.split import val_halves
    >>> calib, test = val_halves([10, 11, 12, 13, 14, 15], seed=0)
    >>> sorted([*calib.tolist(), *test.tolist()])
    [10, 11, 12, 13, 14, 15]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Added to the split seed for the halves' permutation (kept: it is how existing runs were cut).
HALVES_SEED_OFFSET = 7


def val_halves(val: Sequence[int] | np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(calib, test)``: ``val`` permuted by ``default_rng(seed + 7)``, first half calib, rest
    test (the larger half when ``len(val)`` is odd), each sorted."""
    val = np.asarray(val, dtype=np.int64)
    order = np.random.default_rng(int(seed) + HALVES_SEED_OFFSET).permutation(len(val))
    half = len(val) // 2
    return np.sort(val[order[:half]]), np.sort(val[order[half:]])


def with_val_halves(split: Mapping[str, Any]) -> dict[str, Any]:
    """A ``split.json`` record with ``calib`` and ``test`` (and their counts) added."""
    calib, test = val_halves(split["val"], split["seed"])
    out = dict(split)
    out.update(calib=calib.tolist(), test=test.tolist(),
               counts={**split.get("counts", {}), "calib": len(calib), "test": len(test)})
    return out


def stored_val_halves(split: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(calib, test, stored)`` of a ``split.json`` record.

    ``stored`` is False for a run whose record lacks the halves (written before router
    training stored them): they are then derived by ``val_halves``, as that training cut them.
    """
    if "calib" in split and "test" in split:
        return (np.asarray(split["calib"], dtype=np.int64), np.asarray(split["test"], dtype=np.int64), True)
    calib, test = val_halves(split["val"], split["seed"])
    return calib, test, False

"""Router thresholds, the training side: calibrate on the ``calib`` half, report on ``test``.

The routing maths (the rule, threshold candidates, calibration to ``delta`` or to a budget) is
:mod:`athe.runtime.routing`, shared with ``athe eval`` and the dispatcher; ``calibrate`` and
``route`` are re-exported here for training code. The halves come from
:mod:`athe.runtime.split`.

Example::

    >>> import numpy as np
    >>> from athe.training.calibrate import calibrate_router
    >>> P = np.array([[0.9, 1.0], [0.2, 1.0]]); C = np.array([[1, 1], [0, 1]], bool)
    >>> cal, test = calibrate_router(P, C, P, C, ["simple", "dense"], macs=[1.0, 2.0], delta=0.0, grid=2)
    >>> cal.thresholds, test["routed_accuracy"]
    ({'simple': 0.9}, 100.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from athe.runtime.routing import Calibration, calibrate, route, route_outcome, threshold_vector

__all__ = ["Calibration", "calibrate", "calibrate_router", "route"]


def calibrate_router(probs_calib: np.ndarray, correct_calib: np.ndarray, probs_test: np.ndarray,
                     correct_test: np.ndarray, level_names: Sequence[str], macs: Sequence[float],
                     router_macs: float = 0.0, delta: float = 1.0, budget: float | None = None,
                     grid: int = 41) -> tuple[Calibration, dict[str, Any]]:
    """Thresholds from the calib half (MACs as the cost), and what they give on the test half.

    Returns:
        ``(calibration, test)``; ``test`` has ``n``, ``routed_accuracy``, ``level_accuracy``,
        ``routed_fraction`` and the mean MACs with the router's (``mean_macs``,
        ``dense_macs``, ``mean_macs_ratio``).
    """
    names = list(level_names)
    cal = calibrate(probs_calib, correct_calib, names, macs, delta=delta, budget=budget, grid=grid)
    choice = route(probs_test, threshold_vector(cal.thresholds, names))
    accuracy, cost = route_outcome(correct_test, macs, choice)
    correct_test = np.asarray(correct_test, dtype=bool)
    test = {
        "n": int(len(choice)), "routed_accuracy": accuracy,
        "level_accuracy": {n: float(100.0 * correct_test[:, j].mean()) for j, n in enumerate(names)},
        "routed_fraction": {n: float((choice == j).mean()) for j, n in enumerate(names)},
        "mean_macs": cost + router_macs, "dense_macs": float(macs[-1]),
        "mean_macs_ratio": (cost + router_macs) / float(macs[-1]),
    }
    return cal, test

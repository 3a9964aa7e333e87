"""Exit gates: the score, in [0, 1], that an exit's answer is right (numpy only).

One function computes the features and one the score, so training (fitting the gate on
held-out images), the dispatcher and eval read the same numbers. The PWA and the Java core
reproduce ``gate_score`` from the manifest's ``GateSpec``.

Example::

    >>> import numpy as np
    >>> from athe.runtime.gates import softmax_features
    >>> softmax_features(np.array([[2.0, 0.0, 0.0]])).round(3)   # max_prob, margin, entropy
    array([[0.787, 0.68 , 0.666]])
"""

from __future__ import annotations

import math

import numpy as np

from athe.runtime.manifest import GateSpec

#: The softmax features, in order; ``cls`` (the stage's CLS token) may follow them.
SOFTMAX_FEATURES = ("max_prob", "margin", "entropy")

#: ``CompiledGate`` scores up to this many classes in plain Python floats, more with numpy.
PYTHON_SOFTMAX_MAX = 256


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_features(logits: np.ndarray) -> np.ndarray:
    """``[N, classes]`` logits -> ``[N, 3]``: top probability, top-1 minus top-2, entropy (nats)."""
    p = softmax(np.atleast_2d(logits))
    top2 = np.sort(p, axis=-1)[:, -2:]
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)
    return np.stack([top2[:, 1], top2[:, 1] - top2[:, 0], entropy], axis=1)


def gate_features(features: tuple[str, ...], logits: np.ndarray, cls: np.ndarray | None) -> np.ndarray:
    """The feature matrix ``[N, F]`` a gate with ``features`` reads."""
    parts = []
    soft = softmax_features(logits)
    for name in features:
        if name in SOFTMAX_FEATURES:
            parts.append(soft[:, SOFTMAX_FEATURES.index(name)][:, None])
        elif name == "cls":
            if cls is None:
                raise ValueError("this gate reads the CLS token; pass the stage's tokens")
            parts.append(np.atleast_2d(np.asarray(cls, dtype=np.float64)))
        else:
            raise ValueError(f"unknown gate feature {name!r}; known: {SOFTMAX_FEATURES + ('cls',)}")
    return np.concatenate(parts, axis=1)


def gate_score(gate: GateSpec, logits: np.ndarray, cls: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` scores in [0, 1] of ``gate`` for exit logits ``[N, classes]`` (and CLS ``[N, D]``)."""
    if gate.kind == "max_softmax":
        return softmax_features(logits)[:, 0]
    f = gate_features(gate.features, logits, cls)
    z = ((f - np.asarray(gate.mean)) / np.asarray(gate.std)) @ np.asarray(gate.weights) + gate.bias
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def fit_logistic(features: np.ndarray, right: np.ndarray, l2: float = 1e-2, iters: int = 50
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fit ``P(right | features)`` by L2-regularised logistic regression (Newton's method).

    Returns:
        ``(mean, std, weights, bias)`` in the form ``GateSpec`` stores.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(right, dtype=np.float64)
    mean = x.mean(0)
    std = x.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    xs = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
    w = np.zeros(xs.shape[1])
    reg = np.full(xs.shape[1], l2 * len(x))
    reg[-1] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -60, 60)))
        grad = xs.T @ (p - y) + reg * w
        hess = (xs * (p * (1 - p))[:, None]).T @ xs + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, std, w[:-1], float(w[-1])


def auroc(scores: np.ndarray, right: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``right`` labels (ties counted half)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(right, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


class CompiledGate:
    """``gate_score`` for one image at a time, with the standardisation folded into the weights.

    The dispatcher calls this after every stage, so it avoids the per-call array building of
    ``gate_score``: ``score(logits [C], cls [D] | None) -> float`` (equal to ``gate_score`` to
    rounding; tested).
    """

    def __init__(self, gate: GateSpec) -> None:
        self.kind = gate.kind
        self.needs_cls = "cls" in gate.features
        if gate.kind == "logistic":
            w = np.asarray(gate.weights, dtype=np.float64) / np.asarray(gate.std, dtype=np.float64)
            self.bias = float(gate.bias - w @ np.asarray(gate.mean, dtype=np.float64))
            w_soft = np.zeros(3)
            self.w_cls: np.ndarray | None = None
            at = 0
            for name in gate.features:
                if name in SOFTMAX_FEATURES:
                    w_soft[SOFTMAX_FEATURES.index(name)] += w[at]
                    at += 1
                else:  # cls: the rest of the weights, one per CLS value
                    self.w_cls = w[at:]
                    at = len(w)
            self.w_soft = tuple(float(v) for v in w_soft)

    def score(self, logits: np.ndarray, cls: np.ndarray | None = None) -> float:
        # Plain Python floats for the softmax: right after a stage artifact ran, each numpy call
        # costs 5-10 us of cold-cache dispatch, and the ~10 of them took ~90 us per gate at
        # 10 classes (the 0.15 ms/image eval charged); ``tolist`` + ``math`` takes ~10 us.
        flat = np.asarray(logits).reshape(-1)
        if flat.size > PYTHON_SOFTMAX_MAX:
            return self._score_numpy(flat, cls)
        z = flat.tolist()
        top = max(z)
        z = [v - top for v in z]
        e = [math.exp(v) for v in z]
        total = sum(e)
        p1 = 1.0 / total  # the top class has e = exp(0) = 1
        if self.kind == "max_softmax":
            return p1
        second = sorted(e)[-2] / total if len(e) > 1 else 0.0
        entropy = math.log(total) - sum(a * b for a, b in zip(e, z, strict=True)) / total
        return self._logistic(p1, p1 - second, entropy, cls)

    def _score_numpy(self, flat: np.ndarray, cls: np.ndarray | None) -> float:
        z = flat.astype(np.float64)
        z = z - z.max()
        e = np.exp(z)
        total = float(e.sum())
        top2 = np.partition(e, len(e) - 2)[-2:] / total
        p1 = float(top2.max())
        if self.kind == "max_softmax":
            return p1
        entropy = float(np.log(total) - (e * z).sum() / total)
        return self._logistic(p1, p1 - float(top2.min()), entropy, cls)

    def _logistic(self, p1: float, margin: float, entropy: float, cls: np.ndarray | None) -> float:
        s = self.bias + self.w_soft[0] * p1 + self.w_soft[1] * margin + self.w_soft[2] * entropy
        if self.w_cls is not None:
            if cls is None:
                raise ValueError("this gate reads the CLS token; pass the stage's tokens")
            s += float(self.w_cls @ np.asarray(cls, dtype=np.float64).reshape(-1))
        return 1.0 / (1.0 + math.exp(-min(max(s, -60.0), 60.0)))

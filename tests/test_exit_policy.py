"""The exit policy on a converted tiny bundle predicts what the PyTorch chain predicts, exit by exit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from athe.runtime import Dispatcher
from athe.runtime.gates import gate_score
from athe.training.model import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tiny, tiny_checkpoint):
    model = load_model(tiny, tiny_checkpoint).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(12, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        logits, cls, tokens, scores = [], [], x, None
        for i in range(len(tiny.stages)):
            tokens, lg, scores = model.forward_stage(i, tokens, scores)
            logits.append(lg.numpy())
            cls.append(tokens[:, 0].numpy())
    return x.numpy(), logits, cls


@pytest.mark.parametrize("backend", ["litert", "executorch"])
def test_fixed_exits_match_the_pytorch_chain(converted_bundle, chain, backend):
    x, logits, _ = chain
    for k, stage in enumerate(["s1", "s2", "s3"]):
        d = Dispatcher(converted_bundle, backend=backend, threads=1, policy=f"exit:{stage}")
        for i in range(len(x)):
            p = d.predict_tensor(x[i:i + 1])
            assert p.exit == stage and list(p.stage_ms) == ["s1", "s2", "s3"][:k + 1]
            assert np.abs(p.logits - logits[k][i]).max() <= 1e-4


@pytest.mark.parametrize("backend", ["litert", "executorch"])
def test_exit_policy_takes_the_exit_the_gates_choose(converted_bundle, chain, backend):
    """Thresholds set between the images' own gate scores: each image stops where the PyTorch
    chain's scores say it must, with that exit's logits."""
    x, logits, cls = chain
    d = Dispatcher(converted_bundle, backend=backend, threads=1)
    assert d.policy.kind == "exit"  # the default for a bundle with stages
    gates = {st.name: st.gate for st in d.bundle.stages[:-1]}
    s1 = gate_score(gates["s1"], logits[0], cls[0])
    s2 = gate_score(gates["s2"], logits[1], cls[1])
    t = {"s1": float(np.median(s1)), "s2": float(np.median(s2))}
    d = Dispatcher(converted_bundle, backend=backend, threads=1, thresholds=t)
    seen = set()
    for i in range(len(x)):
        want = 0 if s1[i] >= t["s1"] else 1 if s2[i] >= t["s2"] else 2
        p = d.predict_tensor(x[i:i + 1])
        assert p.exit == ["s1", "s2", "s3"][want]
        assert np.abs(p.logits - logits[want][i]).max() <= 1e-4
        assert p.gate_scores["s1"] == pytest.approx(s1[i], abs=1e-5)
        seen.add(p.exit)
    assert len(seen) >= 2  # the thresholds really split the images

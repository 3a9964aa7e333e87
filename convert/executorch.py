"""PyTorch export form -> ExecuTorch ``.pte`` lowered to XNNPACK, with a delegation report.

``torch.export`` -> ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` ->
``to_executorch()``; int8 through the XNNPACKQuantizer (PT2E).

Example::

    >>> from athe.convert.executorch import to_pte
    >>> report = to_pte(form, form.get_example_inputs(), Path("simple.pte"))
    >>> report["delegate_calls"], report["non_delegated_ops"]
    (1, {})
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from athe.convert.backend_quirks import ALLOWED_NON_DELEGATED


def _op_name(target: Any) -> str:
    """``aten.topk.default`` for an edge op, ``getitem`` / ``executorch_call_delegate`` for others."""
    text = str(target)
    match = re.match(r"<EdgeOpOverload: ([^>]+)>", text)
    if match:
        return match.group(1)
    return getattr(target, "__name__", None) or text


def delegation_report(edge_program: Any) -> dict[str, Any]:
    """Count delegated vs non-delegated ops of a lowered edge program.

    Returns:
        ``{"delegate_calls", "delegated_ops", "non_delegated_ops": {op: count},
        "disallowed_non_delegated": [...]}``; ``disallowed_non_delegated`` lists ops outside
        ``ALLOWED_NON_DELEGATED`` (token selection and its index plumbing).
    """
    gm = edge_program.exported_program().graph_module
    outside: Counter[str] = Counter()
    calls = 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if "executorch_call_delegate" in name:
            calls += 1
        elif name != "getitem":
            outside[name] += 1
    inside = 0
    for _, sub in gm.named_children():
        original = getattr(sub, "original_module", None)
        if original is not None:
            inside += sum(1 for n in original.graph.nodes if n.op == "call_function")
    return {
        "delegate_calls": calls,
        "delegated_ops": inside,
        "non_delegated_ops": dict(sorted(outside.items())),
        "disallowed_non_delegated": sorted(op for op in outside if op not in ALLOWED_NON_DELEGATED),
    }


def _quantize_pt2e(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], quantize: str,
                   calibration: list[tuple[torch.Tensor, ...]] | None) -> torch.nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = quantize == "int8-dynamic"
    if quantize not in ("int8-dynamic", "int8-static"):
        raise ValueError(f"unknown quantization {quantize!r}; use none, int8-dynamic or int8-static")
    if not dynamic and not calibration:
        raise ValueError("int8-static needs calibration data: pass --calibration-data PATH")
    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    graph = torch.export.export(module, example_inputs).module()
    prepared = prepare_pt2e(graph, quantizer)
    for inputs in (calibration or [example_inputs]):
        prepared(*inputs)
    return convert_pt2e(prepared)


def to_pte(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path,
           quantize: str = "none", calibration: list[tuple[torch.Tensor, ...]] | None = None
           ) -> dict[str, Any]:
    """Convert ``module`` to an XNNPACK-delegated ``.pte`` at ``path``.

    Returns:
        The program's delegation report (``delegation_report``).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = module.eval()
    # The example's memory layout becomes the program's input dim order: a channels-last
    # example (e.g. a permuted NHWC batch) makes a .pte that misreads contiguous NCHW input.
    example_inputs = tuple(t.contiguous() for t in example_inputs)
    if quantize != "none":
        module = _quantize_pt2e(module, example_inputs, quantize, calibration)
    exported = torch.export.export(module, example_inputs)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    report = delegation_report(edge)
    program = edge.to_executorch()
    path.write_bytes(program.buffer)
    return report

"""PyTorch export form -> LiteRT ``.tflite`` through litert-torch (the former ai-edge-torch).

Example::

    >>> from athe.convert.litert import to_tflite
    >>> to_tflite(form, form.get_example_inputs(), Path("simple.tflite"))
"""

from __future__ import annotations

from pathlib import Path

import torch


def to_tflite(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path,
              quantize: str = "none", calibration: list[tuple[torch.Tensor, ...]] | None = None) -> Path:
    """Convert ``module`` to a fixed-shape ``.tflite`` at ``path``.

    Args:
        module: an export form (static shapes, no data-dependent branching).
        example_inputs: the inputs whose shapes the artifact gets.
        path: output file.
        quantize: ``none``; ``int8-dynamic`` (ai-edge-quantizer ``dynamic_wi8_afp32``: int8
            per-channel weights, activations quantized on the fly); ``int8-static``
            (``static_wi8_ai8`` calibrated on ``calibration``).
        calibration: input tuples for ``int8-static``.
    """
    import litert_torch

    module = module.eval()
    example_inputs = tuple(t.contiguous() for t in example_inputs)  # NCHW, as the runtime feeds
    edge_model = litert_torch.convert(module, example_inputs)
    if quantize == "none":
        edge_model.export(str(path))
        return path
    float_path = path.with_suffix(".fp32.tflite")
    edge_model.export(str(float_path))
    try:
        _quantize_tflite(float_path, path, quantize, calibration)
    finally:
        float_path.unlink(missing_ok=True)
    return path


def _quantize_tflite(float_path: Path, path: Path, quantize: str,
                     calibration: list[tuple[torch.Tensor, ...]] | None) -> None:
    from ai_edge_quantizer import quantizer, recipe

    if quantize == "int8-dynamic":
        qt = quantizer.Quantizer(str(float_path), recipe.dynamic_wi8_afp32())
        result = qt.quantize()
    elif quantize == "int8-static":
        if not calibration:
            raise ValueError("int8-static needs calibration data: pass --calibration-data PATH")
        from ai_edge_quantizer import recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        # int8 inside, float32 at the boundary: the runtimes (and the phone demo) feed float32
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED,
                                  activation_num_bits=8, weight_num_bits=8)
        for boundary in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):
            manager.add_quantization_config(regex=".*", operation_name=boundary,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        qt = quantizer.Quantizer(str(float_path), manager.get_quantization_recipe())
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(str(float_path))
        key = interp.get_signature_list()
        sig = next(iter(key))
        # litert-torch names the inputs args_0, args_1, ... after the PyTorch positions
        names = sorted(key[sig]["inputs"], key=_position)
        samples = {sig: [{n: t.numpy() for n, t in zip(names, x, strict=True)} for x in calibration]}
        result = qt.quantize(qt.calibrate(samples))
    else:
        raise ValueError(f"unknown quantization {quantize!r}; use none, int8-dynamic or int8-static")
    result.export_model(str(path), overwrite=True)


def _position(name: str) -> tuple[int, str]:
    """Sort key of a signature input name: ``args_10`` after ``args_9``."""
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)

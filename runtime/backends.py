"""Inference backends: one small interface over LiteRT, ExecuTorch and the PyTorch reference.

Every backend loads one model file and runs float32 arrays through it: ``run`` for a model
with one input and one output (levels, the router), ``run_many`` for any number of each (the
stages of an exit chain), inputs and outputs in the artifact's positional order (the order the
manifest's ``StageSpec.inputs`` / ``outputs`` name)::

    >>> from athe.runtime.backends import load_backend
    >>> backend = load_backend("litert", threads=2)
    >>> model = backend.load("bundles/athe-mini/simple.tflite")
    >>> model.input_shape, model.output_shape
    ((1, 3, 32, 32), (1, 10))
    >>> logits = model.run(x)  # x: float32 [1, 3, 32, 32] -> float32 [1, 10]
    >>> s2 = backend.load("bundles/athe-simple/stage-s2.tflite")
    >>> s2.input_shapes, s2.output_shapes
    (((1, 197, 192), (1, 196)), ((1, 138, 192), (1, 137), (1, 100)))
    >>> tokens, scores, logits = s2.run_many([tokens, scores])

=============  ======  ===================================  ============================
backend        format  runtime                              threads applied through
=============  ======  ===================================  ============================
``litert``     tflite  ``ai_edge_litert.interpreter``       ``Interpreter(num_threads=)``
``executorch`` pte     ``executorch.runtime`` (needs torch) ``_unsafe_reset_threadpool``
``torch``      pt2     ``torch.export.load``                ``torch.set_num_threads``
=============  ======  ===================================  ============================

The thread count is always set explicitly (default ``os.cpu_count()``) and ``Backend.threads``
reports what was applied. Nothing here imports torch at module import time; the ExecuTorch and
torch backends import it when they are created.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: backend name -> bundle format it loads.
BACKEND_FORMATS: dict[str, str] = {"litert": "tflite", "executorch": "pte", "torch": "pt2"}

_INSTALL_HINT = {
    "litert": "ai-edge-litert is not installed: pip install 'athe[pi]'",
    "executorch": "the executorch backend needs torch + executorch: pip install 'athe[convert]' (see README)",
    "torch": "the torch reference backend needs torch: pip install 'athe[train]'",
}


class BackendError(RuntimeError):
    """A backend that cannot be created, a model it cannot load, or an input it cannot run."""


class LoadedModel:
    """One model file loaded by a backend, ready to run.

    Attributes:
        path: the file it was loaded from.
        input_shapes: shape of every input, in the artifact's positional order.
        output_shapes: shape of every output, in the artifact's positional order (for a
            ``.tflite``, the order of its signature's ``output_N`` names, which is the PyTorch
            form's return order; the interpreter's own output list may differ).
        input_shape: shape of the first input, e.g. ``(1, 3, 224, 224)``.
        output_shape: shape of the first output, e.g. ``(1, 100)``.
    """

    path: Path
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_shapes[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_shapes[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a model with one input and one output.

        Args:
            x: float array of ``input_shape`` (cast to contiguous float32).

        Returns:
            The output as a float32 array the caller owns (a copy).

        Raises:
            BackendError: a bad input, or a model with several inputs or outputs (``run_many``).
        """
        if len(self.input_shapes) != 1 or len(self.output_shapes) != 1:
            raise BackendError(f"{self.path.name}: has {len(self.input_shapes)} input(s) and "
                               f"{len(self.output_shapes)} output(s); run it with run_many")
        return self._execute([self._check(x, 0)])[0]

    def run_many(self, inputs: list[np.ndarray] | tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """Run every input, in the artifact's order; return every output, in its order.

        Args:
            inputs: one float array per input, of ``input_shapes[i]`` (cast to contiguous
                float32).

        Returns:
            One float32 array per output (``output_shapes``), each a copy the caller owns.

        Raises:
            BackendError: the wrong number of inputs, or an input of the wrong type or shape.
        """
        if isinstance(inputs, np.ndarray) or len(inputs) != len(self.input_shapes):
            got = "one array" if isinstance(inputs, np.ndarray) else f"{len(inputs)} input(s)"
            raise BackendError(f"{self.path.name}: takes {len(self.input_shapes)} input(s) "
                               f"{list(self.input_shapes)}, got {got}; pass a list in that order")
        return self._execute([self._check(x, i) for i, x in enumerate(inputs)])

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run checked contiguous float32 ``arrays``; every output as an owned float32 copy."""
        raise NotImplementedError

    def _check(self, x: np.ndarray, index: int = 0) -> np.ndarray:
        which = "input" if len(self.input_shapes) == 1 else f"input {index}"
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise BackendError(f"{self.path.name}: {which} must be a float32 numpy array, got "
                               f"{type(x).__name__} {getattr(x, 'dtype', '')}")
        want = tuple(self.input_shapes[index])
        if tuple(x.shape) != want:
            hint = ("preprocess with the bundle's input spec" if index == 0 and len(want) == 4
                    else "feed the previous stage's outputs as the manifest names them")
            raise BackendError(f"{self.path.name}: {which} shape {tuple(x.shape)} does not match the "
                               f"model's {want}; {hint}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __repr__(self) -> str:
        one = len(self.input_shapes) == 1 and len(self.output_shapes) == 1
        if one:
            return (f"{type(self).__name__}({self.path.name!r}, input={self.input_shape}, "
                    f"output={self.output_shape})")
        return (f"{type(self).__name__}({self.path.name!r}, inputs={list(self.input_shapes)}, "
                f"outputs={list(self.output_shapes)})")


class Backend:
    """A runtime that loads model files of one format.

    Attributes:
        name: ``litert``, ``executorch`` or ``torch``.
        format: the bundle format it loads (``BACKEND_FORMATS[name]``).
        threads: the thread count applied.
        version: version of the underlying runtime package.
    """

    name: str = ""
    format: str = ""
    threads: int = 1
    version: str = ""

    def load(self, path: str | Path) -> LoadedModel:
        """Load one model file; a missing or unreadable file raises ``BackendError``."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What a report should record about this backend."""
        return {"backend": self.name, "format": self.format, "threads": self.threads,
                "version": self.version}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads}, version={self.version!r})"


def _default_threads(threads: int | None) -> int:
    if threads is None:
        return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BackendError(f"threads must be a positive integer, got {threads!r}")
    return threads


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"model file {str(path)!r} not found")
    return path


# -- LiteRT ------------------------------------------------------------------------------------
def _positional(details: dict[str, dict], prefix: str) -> list[dict] | None:
    """Signature tensors ``{prefix}N`` (litert-torch names inputs ``args_N`` and outputs
    ``output_N`` after the PyTorch positions) sorted by ``N``; None when the names differ."""
    keyed = []
    for name, d in details.items():
        match = re.fullmatch(rf"{prefix}(\d+)", name)
        if match is None:
            return None
        keyed.append((int(match.group(1)), d))
    return [d for _, d in sorted(keyed, key=lambda kd: kd[0])]


def _litert_io(interpreter: Any) -> tuple[list[dict], list[dict]]:
    """Input and output tensor details of a ``.tflite`` in PyTorch's positional order.

    The interpreter's own output list is not guaranteed to follow the converted module's
    return order, so a model with one signature whose tensors carry litert-torch's
    ``args_N`` / ``output_N`` names is read through that signature; any other model keeps the
    interpreter's order.
    """
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        ins = _positional(runner.get_input_details(), "args_")
        outs = _positional(runner.get_output_details(), "output_")
        if ins is not None and outs is not None:
            return ins, outs
    return interpreter.get_input_details(), interpreter.get_output_details()


class LiteRTModel(LoadedModel):
    def __init__(self, path: Path, interpreter: Any) -> None:
        self.path = path
        self._interpreter = interpreter
        from athe.quiet import dropping

        with dropping():  # LiteRT's once-per-process "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter.allocate_tensors()
        self._ins, self._outs = _litert_io(interpreter)
        for i, d in enumerate(self._ins):
            if d["dtype"] != np.float32:
                raise BackendError(f"{path.name}: input {i} dtype is {d['dtype'].__name__}, "
                                   "the runtime feeds float32; re-convert with float32 I/O")
        self.input_shapes = tuple(tuple(int(v) for v in d["shape"]) for d in self._ins)
        self.output_shapes = tuple(tuple(int(v) for v in d["shape"]) for d in self._outs)
        self._in_idx = [d["index"] for d in self._ins]
        self._out_idx = [d["index"] for d in self._outs]

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interp = self._interpreter
        for index, x in zip(self._in_idx, arrays, strict=True):
            interp.set_tensor(index, x)
        interp.invoke()
        # get_tensor is documented as a copy; np.array(copy=True) makes ownership explicit
        return [np.array(interp.get_tensor(i), dtype=np.float32, copy=True) for i in self._out_idx]


class LiteRTBackend(Backend):
    name, format = "litert", "tflite"

    def __init__(self, threads: int | None = None) -> None:
        try:
            from ai_edge_litert import interpreter as litert_interpreter
        except ImportError as exc:
            raise BackendError(_INSTALL_HINT["litert"]) from exc
        self._interpreter_cls = litert_interpreter.Interpreter
        self.threads = _default_threads(threads)
        self.version = _package_version("ai-edge-litert")

    def load(self, path: str | Path) -> LiteRTModel:
        path = _existing(path)
        try:
            interpreter = self._interpreter_cls(model_path=str(path), num_threads=self.threads)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"LiteRT cannot load {str(path)!r}: {exc}") from exc
        return LiteRTModel(path, interpreter)


# -- ExecuTorch --------------------------------------------------------------------------------
class ExecuTorchModel(LoadedModel):
    def __init__(self, path: Path, program: Any, torch: Any) -> None:
        self.path = path
        self._program = program  # keeps the program (and its data) alive
        self._method = program.load_method("forward")
        self._torch = torch
        meta = self._method.metadata
        # The method's inputs and outputs are the exported program's flattened user inputs and
        # outputs, i.e. the PyTorch form's positional order.
        self.input_shapes = tuple(tuple(int(d) for d in meta.input_tensor_meta(i).sizes())
                                  for i in range(meta.num_inputs()))
        self.output_shapes = tuple(tuple(int(d) for d in meta.output_tensor_meta(i).sizes())
                                   for i in range(meta.num_outputs()))
        if not self.input_shapes or not self.output_shapes:
            raise BackendError(f"{path.name}: the forward method has {meta.num_inputs()} inputs and "
                               f"{meta.num_outputs()} outputs; expected at least one of each")

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self._method.execute([self._torch.from_numpy(x) for x in arrays])
        return [t.detach().numpy().astype(np.float32, copy=True) for t in outputs]


class ExecuTorchBackend(Backend):
    """ExecuTorch's Python runtime (XNNPACK kernels from the pip wheel).

    Threads: the pybindings expose ``_unsafe_reset_threadpool(n)``, which resizes the one
    process-wide threadpool that XNNPACK-delegated kernels use; it is applied here, before any
    model is loaded ("unsafe" only while a method is executing), and ``threads`` is read back
    with ``_threadpool_get_thread_count()``. Being process-wide, the last backend created wins.
    """

    name, format = "executorch", "pte"

    def __init__(self, threads: int | None = None) -> None:
        requested = _default_threads(threads)
        try:
            import torch
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="This API is experimental")
                from executorch.extension.pybindings import portable_lib
                from executorch.runtime import Runtime, Verification
        except ImportError as exc:
            raise BackendError(_INSTALL_HINT["executorch"]) from exc
        self._torch, self._verification = torch, Verification
        self._runtime = Runtime.get()
        reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        count = getattr(portable_lib, "_threadpool_get_thread_count", None)
        if reset is None or count is None:
            raise BackendError("this executorch build has no threadpool control "
                               "(_unsafe_reset_threadpool); install executorch==1.5.1")
        reset(requested)
        self.threads = int(count())
        self.version = _package_version("executorch")

    def load(self, path: str | Path) -> ExecuTorchModel:
        path = _existing(path)
        # Quirk (executorch 1.5.1 wheel): a program loaded from a *path* (file/mmap data loader)
        # with XNNPACK-delegated blocks around non-delegated topk/gather segfaults in execute();
        # the same file loaded from bytes runs and matches PyTorch. So read the bytes; the
        # Program object keeps them alive.
        data = path.read_bytes()
        try:
            program = self._runtime.load_program(data, verification=self._verification.InternalConsistency)
            return ExecuTorchModel(path, program, self._torch)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"ExecuTorch cannot load {str(path)!r}: {exc}") from exc


# -- torch reference ---------------------------------------------------------------------------
class TorchModel(LoadedModel):
    def __init__(self, path: Path, module: Any, torch: Any,
                 input_shapes: tuple[tuple[int, ...], ...]) -> None:
        self.path = path
        self._module, self._torch = module, torch
        self.input_shapes = input_shapes
        with torch.no_grad():
            outs = _flat(module(*[torch.zeros(s) for s in input_shapes]))
        self.output_shapes = tuple(tuple(int(d) for d in t.shape) for t in outs)

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._torch.no_grad():
            out = self._module(*[self._torch.from_numpy(x) for x in arrays])
        return [t.detach().numpy().astype(np.float32, copy=True) for t in _flat(out)]


def _flat(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


class TorchBackend(Backend):
    """The PyTorch reference: a ``.pt2`` file written by ``torch.export.save``, run eagerly.

    Threads: ``torch.set_num_threads`` (process-wide). For parity checks and dev machines only.
    """

    name, format = "torch", "pt2"

    def __init__(self, threads: int | None = None) -> None:
        requested = _default_threads(threads)
        try:
            import torch
        except ImportError as exc:
            raise BackendError(_INSTALL_HINT["torch"]) from exc
        self._torch = torch
        torch.set_num_threads(requested)
        self.threads = int(torch.get_num_threads())
        self.version = torch.__version__

    def load(self, path: str | Path) -> TorchModel:
        path = _existing(path)
        try:
            program = self._torch.export.load(str(path))
        except Exception as exc:  # torch.export.load raises assorted types on a bad file
            raise BackendError(f"torch cannot load {str(path)!r}: {type(exc).__name__}: {exc}") from exc
        return TorchModel(path, program.module(), self._torch, _example_shapes(program, path))


def _example_shapes(program: Any, path: Path) -> tuple[tuple[int, ...], ...]:
    """Input shapes of an ``ExportedProgram`` (static shapes: the fake tensors of its user inputs)."""
    specs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if not specs:
        raise BackendError(f"{path.name}: the exported program has no inputs")
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    try:
        return tuple(tuple(int(d) for d in nodes[s.arg.name].meta["val"].shape) for s in specs)
    except (KeyError, TypeError) as exc:
        raise BackendError(f"{path.name}: input shape is not static; export with static shapes") from exc


# -- factory -----------------------------------------------------------------------------------
_BACKENDS: dict[str, Callable[[int | None], Backend]] = {
    "litert": LiteRTBackend, "executorch": ExecuTorchBackend, "torch": TorchBackend,
}


def load_backend(name: str, threads: int | None = None) -> Backend:
    """Create a backend by name.

    Args:
        name: ``litert``, ``executorch`` or ``torch``.
        threads: thread count to apply; ``None`` means ``os.cpu_count()``.

    Raises:
        BackendError: unknown name, or its runtime is not installed (the message says what to
            install).
    """
    if name not in _BACKENDS:
        hint = difflib.get_close_matches(str(name), list(_BACKENDS), n=1)
        more = f" Did you mean {hint[0]!r}?" if hint else ""
        raise BackendError(f"unknown backend {name!r}; backends: {', '.join(_BACKENDS)}.{more}")
    return _BACKENDS[name](threads)


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"

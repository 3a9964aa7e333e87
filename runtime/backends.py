"""Inference backends: one small interface over LiteRT, ExecuTorch and the PyTorch reference.

Every backend loads one model file and runs one float32 array through it::

    >>> from athe.runtime.backends import load_backend
    >>> backend = load_backend("litert", threads=2)
    >>> model = backend.load("bundles/athe-mini/simple.tflite")
    >>> model.input_shape, model.output_shape
    ((1, 3, 32, 32), (1, 10))
    >>> logits = model.run(x)  # x: float32 [1, 3, 32, 32] -> float32 [1, 10]

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
import warnings
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
        input_shape: shape of the (first) input, e.g. ``(1, 3, 224, 224)``.
        output_shape: shape of the first output, e.g. ``(1, 100)``.
    """

    path: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one input.

        Args:
            x: float array of ``input_shape`` (cast to contiguous float32).

        Returns:
            The first output as a float32 array the caller owns (a copy).
        """
        raise NotImplementedError

    def _check(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise BackendError(f"{self.path.name}: input must be a float32 numpy array, got "
                               f"{type(x).__name__} {getattr(x, 'dtype', '')}")
        if tuple(x.shape) != tuple(self.input_shape):
            raise BackendError(f"{self.path.name}: input shape {tuple(x.shape)} does not match the "
                               f"model's {tuple(self.input_shape)}; preprocess with the bundle's input spec")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path.name!r}, input={self.input_shape}, "
                f"output={self.output_shape})")


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
class LiteRTModel(LoadedModel):
    def __init__(self, path: Path, interpreter: Any) -> None:
        self.path = path
        self._interpreter = interpreter
        interpreter.allocate_tensors()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1:
            raise BackendError(f"{path.name}: expected a model with one input, it has {len(inputs)}")
        self._in, self._out = inputs[0], outputs[0]
        if self._in["dtype"] != np.float32:
            raise BackendError(f"{path.name}: input dtype is {self._in['dtype'].__name__}, "
                               "the runtime feeds float32; re-convert with float32 I/O")
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.output_shape = tuple(int(d) for d in self._out["shape"])

    def run(self, x: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._in["index"], self._check(x))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._out["index"])  # documented as a copy
        return np.array(out, dtype=np.float32, copy=True)


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
        if meta.num_inputs() != 1:
            raise BackendError(f"{path.name}: expected a method with one input, it has {meta.num_inputs()}")
        self.input_shape = tuple(int(d) for d in meta.input_tensor_meta(0).sizes())
        self.output_shape = tuple(int(d) for d in meta.output_tensor_meta(0).sizes())

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = self._method.execute([self._torch.from_numpy(self._check(x))])
        return outputs[0].detach().numpy().astype(np.float32, copy=True)


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
    def __init__(self, path: Path, module: Any, torch: Any, input_shape: tuple[int, ...]) -> None:
        self.path = path
        self._module, self._torch = module, torch
        self.input_shape = input_shape
        with torch.no_grad():
            self.output_shape = tuple(int(d) for d in _first(module(torch.zeros(input_shape))).shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            out = self._module(self._torch.from_numpy(self._check(x)))
        return _first(out).detach().numpy().astype(np.float32, copy=True)


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


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
        return TorchModel(path, program.module(), self._torch, _example_shape(program, path))


def _example_shape(program: Any, path: Path) -> tuple[int, ...]:
    """Input shape of an ``ExportedProgram`` (static shapes: the fake tensor of its one user input)."""
    specs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(specs) != 1:
        raise BackendError(f"{path.name}: expected an exported program with one input, it has {len(specs)}")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == specs[0].arg.name)
    try:
        return tuple(int(d) for d in node.meta["val"].shape)
    except (KeyError, TypeError) as exc:
        raise BackendError(f"{path.name}: input shape is not static; export with static shapes") from exc


# -- factory -----------------------------------------------------------------------------------
_BACKENDS: dict[str, type[Backend]] = {
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

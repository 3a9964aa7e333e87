"""Quiet by default: the converters' and interpreters' own logs go to a file, not the terminal.

LiteRT-Torch, ExecuTorch, absl, oneDNN and TF Lite write from C++ straight to file descriptors
1 and 2 (``LiteRT-Torch Convert [START]``, ``INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.``, …), so redirecting ``sys.stdout`` is not enough: :func:`captured` swaps the descriptors
themselves for the duration of a block, and gives the block a handle on the real terminal for
the lines the user should see.

Example (what ``athe demo`` and ``athe convert`` do)::

    >>> from athe.quiet import quiet_conversion
    >>> with quiet_conversion("bundles/athe-mini", verbose=False) as cap:
    ...     convert_bundle(opts)           # one progress line per artifact, logs in convert.log
    >>> cap.log_path
    PosixPath('bundles/athe-mini/convert.log')

    >>> from athe.quiet import captured
    >>> with captured(None):               # discard (e.g. the XNNPACK INFO line at load time)
    ...     dispatcher = Dispatcher(bundle)
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: The file the converters' logs are kept in, inside the bundle folder.
CONVERT_LOG = "convert.log"
#: The logger whose INFO records are the one-line-per-artifact progress (``convert/bundle.py``).
PROGRESS_LOGGER = "athe.convert"


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers (C++ ``printf``/``std::cout`` to a file are block-buffered)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no libc symbol table (Windows): nothing to do
        pass


def _flush_python() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


@dataclass
class Capture:
    """What a :func:`captured` block gets.

    Attributes:
        log_path: where the captured output goes (None: discarded, or shown live).
        terminal: a text stream on the real standard output (prints past the capture).
        live: True when nothing is captured (``verbose``).
    """

    log_path: Path | None
    terminal: IO[str]
    live: bool = False
    lines: int = field(default=0)

    def echo(self, text: str) -> None:
        """Print one line on the real terminal, past the capture."""
        self.terminal.write(text + "\n")
        self.terminal.flush()
        self.lines += 1


@contextlib.contextmanager
def _redirected(targets: dict[int, int]) -> Iterator[dict[int, int]]:
    """Point each fd in ``targets`` at its target fd for the block; yields the saved originals."""
    _flush_python()
    _flush_c_stdio()
    saved = {fd: os.dup(fd) for fd in targets}
    try:
        for fd, target in targets.items():
            os.dup2(target, fd)
        try:
            yield saved
        finally:
            _flush_python()
            _flush_c_stdio()
            for fd, original in saved.items():
                os.dup2(original, fd)
    finally:
        for original in saved.values():
            os.close(original)


def _text_stream(fd: int) -> IO[str]:
    """A line-buffered text stream on a duplicate of ``fd`` (closing it leaves ``fd`` open)."""
    return io.TextIOWrapper(os.fdopen(os.dup(fd), "wb", buffering=0), encoding="utf-8",
                            errors="replace", line_buffering=True)


@contextlib.contextmanager
def captured(log_path: str | Path | None, verbose: bool = False, append: bool = False) -> Iterator[Capture]:
    """Send everything written to fds 1 and 2 inside the block to ``log_path``.

    Args:
        log_path: the log file (created with its folder); None discards the output.
        verbose: capture nothing; the output is shown live (``--verbose``).
        append: add to ``log_path`` instead of replacing it.

    Python's ``sys.stdout``/``sys.stderr`` (``print``, ``warnings``, logging handlers) write to
    the same descriptors and are captured too; the block prints past the capture with
    ``Capture.echo`` or ``Capture.terminal``.
    """
    if verbose:
        yield Capture(None, sys.stdout, live=True)
        return
    path = Path(log_path) if log_path is not None else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        target = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
    else:
        target = os.open(os.devnull, os.O_WRONLY)
    orig_out, orig_err = sys.stdout, sys.stderr
    try:
        with _redirected({1: target, 2: target}) as saved:
            terminal, own = _terminal_for(orig_out, saved)
            log_stream = _text_stream(target)
            sys.stdout = sys.stderr = log_stream
            try:
                yield Capture(path, terminal)
            finally:
                sys.stdout, sys.stderr = orig_out, orig_err
                with contextlib.suppress(Exception):
                    log_stream.close()
                if own:
                    with contextlib.suppress(Exception):
                        terminal.close()
    finally:
        os.close(target)


def _terminal_for(stream: IO[str] | None, saved: dict[int, int]) -> tuple[IO[str], bool]:
    """Where ``Capture.echo`` writes: the original stdout, past the redirection of its fd.

    Returns the stream and whether it was opened here (and must be closed)."""
    try:
        fd = stream.fileno() if stream is not None else 1
    except (AttributeError, OSError, ValueError):  # not a file (click's CliRunner, pytest's capsys)
        return stream, False  # type: ignore[return-value]
    if fd in saved:
        return _text_stream(saved[fd]), True
    return stream, False  # type: ignore[return-value]


#: What LiteRT's interpreter prints once per process when it first applies XNNPACK.
XNNPACK_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def dropping(*lines: str) -> Iterator[None]:
    """Drop these exact lines from what fds 1 and 2 get inside the block; pass the rest on.

    For a known, content-free INFO line (default :data:`XNNPACK_INFO`) around a model load;
    everything else (a real error, a warning) still reaches the terminal, after the block.
    """
    drop = set(lines or (XNNPACK_INFO,))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            with _redirected({1: out.fileno(), 2: err.fileno()}):
                yield
        finally:
            for handle, fd in ((out, 1), (err, 2)):
                handle.seek(0)
                kept = b"".join(line for line in handle.read().splitlines(keepends=True)
                                if line.rstrip(b"\r\n").decode("utf-8", "replace") not in drop)
                if kept:
                    os.write(fd, kept)


class _ProgressHandler(logging.Handler):
    """The converter's records on the terminal, one line each: numbered INFO records (one per
    artifact), warnings and errors cut to the terminal's width when the full text goes to the
    log; every record also goes to the log."""

    def __init__(self, capture: Capture, expected: int | None) -> None:
        super().__init__(logging.INFO)
        self.capture, self.expected, self.count = capture, expected, 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if not self.capture.live:  # sys.stderr is the log inside ``captured``
                print(f"{record.levelname} {record.name}: {message}", file=sys.stderr, flush=True)
            if record.levelno >= logging.WARNING:
                line = f"  {record.levelname.lower()}: {message}"
                width = shutil.get_terminal_size((80, 24)).columns
                if self.capture.log_path is not None and len(line) > width:
                    more = f"… (all in {CONVERT_LOG})"
                    line = line[: max(20, width - len(more))] + more
                self.capture.echo(line)
                return
            self.count += 1
            of = f"/{self.expected}" if self.expected else ""
            self.capture.echo(f"  [{self.count}{of}] {message}")
        except Exception:  # a progress line must never fail a conversion
            self.handleError(record)


@contextlib.contextmanager
def progress_lines(capture: Capture, expected: int | None = None,
                   logger: str = PROGRESS_LOGGER) -> Iterator[_ProgressHandler]:
    """Show the converter's per-artifact INFO lines on the terminal while its logs are captured."""
    log = logging.getLogger(logger)
    handler = _ProgressHandler(capture, expected)
    saved_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(saved_level)


@dataclass
class ConversionLog:
    """What :func:`quiet_conversion` leaves: the log's final place and the time it took."""

    log_path: Path | None = None
    seconds: float = 0.0
    artifacts: int = 0
    ok: bool = False


@contextlib.contextmanager
def quiet_conversion(out: str | Path, verbose: bool = False, expected: int | None = None) -> Iterator[ConversionLog]:
    """Run a bundle conversion with its libraries' logs in ``OUT/convert.log``.

    One line per artifact reaches the terminal (the converter's INFO record: name, seconds,
    max|diff|, top-1 agreement). The bundle folder appears only when the conversion succeeds
    (it is renamed into place), so the log is written beside it first and moved in after;
    after a failure it stays at ``OUT.convert.log`` (``ConversionLog.log_path`` says where).

    Args:
        out: the bundle folder being written.
        verbose: show the logs live instead (no ``convert.log``).
        expected: the number of artifacts, to number the lines ``[i/N]``.
    """
    out = Path(out)
    result = ConversionLog()
    pending = None if verbose else out.parent / f"{out.name}.{CONVERT_LOG}"
    start = time.time()
    with captured(pending, verbose=verbose) as cap:
        result.log_path = pending
        # --verbose with the root logger already printing (athe convert's basicConfig): no
        # second copy of each line
        lines = (contextlib.nullcontext(None) if verbose and logging.getLogger().handlers
                 else progress_lines(cap, expected))
        with lines as handler:
            try:
                yield result
            except BaseException:
                if pending is not None:
                    _flush_python()
                    if pending.exists() and pending.stat().st_size == 0:  # refused before any log
                        pending.unlink()
                        result.log_path = None
                raise
            finally:
                result.seconds = time.time() - start
                result.artifacts = handler.count if handler is not None else 0
    if pending is not None and out.is_dir():
        final = out / CONVERT_LOG
        os.replace(pending, final)
        result.log_path = final
    result.ok = True


def expected_artifacts(levels: int, formats: int, router: bool) -> int:
    """Artifacts a conversion writes: every level and the router in every format."""
    return (levels + (1 if router else 0)) * formats

"""The first five minutes (issue 16): quiet conversions, counts that say what they count,
tables that fit 80 columns, the demo's per-photo answers and its adaptive-vs-dense headline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from athe import quiet


# -- quiet by default ----------------------------------------------------------------------------
def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_captured_takes_c_level_and_python_output_into_the_log(tmp_path: Path) -> None:
    proc = _python("""
        import ctypes, os, warnings
        from athe.quiet import captured
        print("before", flush=True)
        with captured("convert.log") as cap:
            ctypes.CDLL(None).printf(b"LiteRT-Torch Convert [START] (C stdio, buffered)\\n")
            os.write(2, b"I0000 oneDNN custom operations are on (fd 2)\\n")
            print("python print")
            warnings.warn("pytree deprecation")
            cap.echo("  [1] simple.tflite: 1.0s")
        print("after")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["before", "  [1] simple.tflite: 1.0s", "after"]
    assert proc.stderr == ""
    log = (tmp_path / "convert.log").read_text()
    for text in ("LiteRT-Torch Convert [START]", "oneDNN", "python print", "pytree deprecation"):
        assert text in log


def test_verbose_captures_nothing(tmp_path: Path) -> None:
    proc = _python("""
        import os
        from athe.quiet import captured
        with captured("convert.log", verbose=True) as cap:
            os.write(2, b"live\\n")
            assert cap.live and cap.log_path is None
    """, tmp_path)
    assert proc.returncode == 0 and proc.stderr == "live\n" and not (tmp_path / "convert.log").exists()


def test_dropping_removes_only_the_xnnpack_line(tmp_path: Path) -> None:
    proc = _python(f"""
        import os
        from athe.quiet import dropping
        with dropping():
            os.write(2, b"{quiet.XNNPACK_INFO}\\n")
            os.write(2, b"a real error\\n")
            os.write(1, b"out\\n")
    """, tmp_path)
    assert proc.returncode == 0
    assert proc.stderr == "a real error\n" and proc.stdout == "out\n"


def test_quiet_conversion_moves_the_log_into_the_bundle(tmp_path: Path) -> None:
    proc = _python("""
        import logging, os
        from pathlib import Path
        from athe.quiet import quiet_conversion
        log = logging.getLogger("athe.convert.bundle")
        with quiet_conversion("bundles/b") as result:
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            log.info("simple.tflite: 1.0s, max|diff| 1e-06, top-1 agreement 1.00")
            log.info("router.tflite: 0.5s, max|diff| 1e-07, top-1 agreement 1.00")
            Path("bundles/b").mkdir(parents=True)  # the converter renames the bundle into place
        print(result.log_path, result.artifacts)
        try:
            with quiet_conversion("bundles/c") as failed:
                os.write(2, b"Traceback of a converter\\n")
                raise RuntimeError("boom")
        except RuntimeError:
            print(failed.log_path)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "  [1] simple.tflite: 1.0s, max|diff| 1e-06, top-1 agreement 1.00",
        "  [2] router.tflite: 0.5s, max|diff| 1e-07, top-1 agreement 1.00",
        "bundles/b/convert.log 2",
        "bundles/c.convert.log",
    ]
    assert "XNNPACK" in (tmp_path / "bundles" / "b" / "convert.log").read_text()
    assert "Traceback of a converter" in (tmp_path / "bundles" / "c.convert.log").read_text()
    assert not (tmp_path / "bundles" / "b.convert.log").exists()


def test_progress_lines_restore_the_logger() -> None:
    log = logging.getLogger(quiet.PROGRESS_LOGGER)
    level, handlers = log.level, list(log.handlers)
    cap = quiet.Capture(None, open(os.devnull, "w"))  # noqa: SIM115
    with quiet.progress_lines(cap) as handler:
        logging.getLogger("athe.convert.bundle").info("x")
        logging.getLogger("athe.convert.bundle").warning("y")
    cap.terminal.close()
    assert handler.count == 1 and cap.lines == 2
    assert log.level == level and log.handlers == handlers

"""The first five minutes (issue 16): quiet conversions, counts that say what they count,
tables that fit 80 columns, the demo's per-photo answers and its adaptive-vs-dense headline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


# -- counts that say what they count ------------------------------------------------------------
def test_count_accuracy_rss_and_energy_wording() -> None:
    from athe.pi_runner import report as rp

    assert rp.count_text(100, 3) == "100 images × 3 repeats"
    assert rp.count_text(100, 1) == "100 images"
    assert rp.accuracy_line(0.14, 100, 3) == "accuracy: 14.00% top-1 over 100 images × 3 repeats (labelled)"
    assert rp.rss_line(168.5 * 2**20) == "peak RSS 168.5 MiB (summary.json peak_rss_bytes)"
    assert rp.rss_line(None).startswith("peak RSS unknown")
    auto = "no energy meter found (pmic: 'vcgencmd' not found on PATH; ina2xx: no /dev/i2c-1)"
    assert rp.energy_line(False, auto) == ("energy: not measured, latency only: --energy auto found no meter "
                                          "(pmic: 'vcgencmd' not found on PATH; ina2xx: no /dev/i2c-1)")
    assert rp.energy_line(False, "energy measurement disabled (--energy none)") == (
        "energy: not measured, latency only (energy measurement disabled (--energy none))")
    assert rp.energy_line(True, "using pmic: PMIC ADC") == "energy: using pmic: PMIC ADC"


def test_energy_refusal_explains() -> None:
    from athe.pi_runner.cli import energy_refusal

    assert energy_refusal("estimate:5", 1) == (
        "--energy estimate:5, but energy per image is reported as mean ± std over repeats and "
        "1 repeat gives no spread: pass --repeat 3 or more, or --energy none to measure latency only")
    assert energy_refusal("auto", 2, found="pmic (PMIC ADC)").startswith(
        "--energy auto found pmic (PMIC ADC), but energy per image")
    assert "2 repeats give no spread" in energy_refusal("auto", 2, found="pmic (PMIC ADC)")


def _photos(tmp_path: Path) -> Path:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 36), (40 * i, 90, 20)).save(folder / f"{i}.png")
    return folder


def test_cli_refuses_energy_at_one_repeat_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import athe.pi_runner.meters as meters
    from athe.cli import cli

    photos = _photos(tmp_path)
    missing = str(tmp_path / "no-bundle")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["run", missing, "--input", str(photos), *args])
        return result.exit_code, result.output

    code, out = run("--energy", "estimate:5", "--repeat", "1")
    assert code == 1 and "--energy estimate:5, but energy per image is reported as mean ± std" in out
    assert "pass --repeat 3 or more, or --energy none to measure latency only" in out
    # auto without a meter is not refused: it measures latency only (here it stops at the bundle)
    monkeypatch.setattr(meters, "auto_meter", lambda *a, **k: (None, "no energy meter found (test)"))
    code, out = run("--energy", "auto", "--repeat", "1")
    assert code == 1 and "not found" in out and "repeat" not in out

    class Fake:
        method = "pmic"

        def describe(self) -> str:
            return "PMIC ADC"

        def close(self) -> None:
            pass

    monkeypatch.setattr(meters, "auto_meter", lambda *a, **k: (Fake(), "using pmic"))
    code, out = run("--energy", "auto", "--repeat", "2")
    assert code == 1 and "--energy auto found pmic (PMIC ADC), but" in out and "2 repeats" in out


# -- tables that fit 80 columns -----------------------------------------------------------------
def _energy(values: list[float], estimate: bool = False, net: bool = True, valid: bool = True,
            reason: str | None = None):
    from athe.pi_runner.meters import PerImageEnergy

    return PerImageEnergy("pmic", estimate, (100,) * len(values), tuple(v + 0.001 for v in values),
                          tuple(values) if net else None, 2.0, valid, reason)


def _render(fn, width: int) -> str:
    from rich.console import Console

    console = Console(record=True, width=width, file=open(os.devnull, "w"))  # noqa: SIM115
    fn(console)
    return console.export_text()


def _fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert len(line) <= width, line
    assert "…" not in text, text


def test_latency_table_fits_80_columns_and_wide_shows_all() -> None:
    import numpy as np

    from athe.pi_runner import report as rp
    from athe.pi_runner import stats as st

    rng = np.random.default_rng(0)
    levels = ["simple"] * 300 + ["complex"] * 200 + ["dense"] * 100
    seconds = rng.uniform(0.001, 1.5, size=len(levels))
    summaries = st.summarize_by_level(seconds, levels)
    energy = {lv: _energy([0.0115, 0.0121, 0.0118], estimate=True) for lv in ("simple", "complex", "dense")}

    def table(console) -> None:
        rp.print_latency_table(summaries, routed=st.routed_fraction(levels), energy=energy, console=console,
                               title="Latency per image (ms), 200 images × 3 repeats, policy router")

    narrow = _render(table, 80)
    _fits(narrow)
    assert "hidden to fit 80 columns" in narrow and "--wide shows them" in narrow
    assert f"{summaries['overall'].p50_ms:.2f}" in narrow and "0.0118 est" in narrow and "50.0%" in narrow
    wide = _render(table, rp.WIDE_COLUMNS)
    assert "p99" in wide and "img/s" in wide and "± " in wide and "hidden" not in wide


def test_compare_table_fits_80_columns() -> None:
    from athe.pi_runner.compare import print_compare_table

    base = {"mean_ms": 1378.123, "p50_ms": 1377.9, "p90_ms": 1400.0, "mean_ratio": 1.0, "p50_ratio": 1.0,
            "p90_ratio": 1.0, "top1": 0.7152, "top1_delta": 0.0, "j_per_image": 0.0115, "j_kind": "net",
            "j_ratio": 1.0, "is_estimate": False}
    ratios = {"athe-mini-int8 router": base,
              "athe-mini-int8 fixed:dense": {**base, "mean_ms": 2101.5, "mean_ratio": 1.52, "top1_delta": 0.004,
                                             "j_per_image": 0.0201, "j_ratio": 1.75}}
    text = _render(lambda c: print_compare_table(ratios, c, "Compared with 'athe-mini-int8 router' "
                                                          "(100 images × 3 repeats, interleaved per image)"), 80)
    _fits(text)
    for cell in ("athe-mini-int8 fixed:dense", "1378", "2102", "1.52×", "+0.4 pp", "0.0201", "1.75×",
                 "net J/img", "100 images × 3 repeats"):
        assert cell in text, cell


def test_energy_table_fits_80_columns_with_a_long_reason() -> None:
    from athe.pi_runner import report as rp

    energy = {"router": _energy([0.01, 0.011, 0.012]),
              "fixed:complex": _energy([0.01, 0.011, 0.012], valid=False,
                                       reason="repeat 1: the meter stopped answering (I2C error 121) after 3.2 s")}
    text = _render(lambda c: rp.print_energy_table(energy, c), 80)
    _fits(text)
    assert "I2C error" in text and "fixed:complex" in text


def test_compare_energy_plot_names_the_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from athe.pi_runner import report as rp

    seen = {}
    monkeypatch.setattr(rp, "save_figure", lambda fig, path: seen.setdefault("fig", fig) and path)
    rp.plot_energy_per_image({"router": _energy([0.1, 0.11, 0.12]), "fixed:dense": _energy([0.2, 0.21, 0.2])},
                             tmp_path / "e.png", xlabel="candidate (bundle × policy)")
    ax = seen["fig"].axes[0]
    assert ax.get_xlabel() == "candidate (bundle × policy)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["router", "fixed:dense"]


# -- athe demo -----------------------------------------------------------------------------------
def test_demo_photo_answers_and_verdicts() -> None:
    from athe.commands import DEMO_PHOTO_CLASSES, fmt_count, photo_lines, photo_verdict

    assert DEMO_PHOTO_CLASSES["chelsea.png"] == ("a cat", "cat")
    assert all(expected is None for name, (_, expected) in DEMO_PHOTO_CLASSES.items() if name != "chelsea.png")
    top = [("frog", 0.58), ("deer", 0.14), ("cat", 0.09)]
    assert photo_verdict(top, "cat") == "wrong: cat is its #3 guess"
    assert photo_verdict([("cat", 0.6), ("dog", 0.2), ("frog", 0.1)], "cat") == "right"
    assert photo_verdict([("dog", 0.6), ("frog", 0.2), ("deer", 0.1)], "cat") == "wrong: cat not in its top 3"
    assert photo_verdict(top, None) == "no right answer"
    assert photo_lines("chelsea.png", top, "complex") == [
        "  chelsea.png: a cat, expected: cat -> wrong: cat is its #3 guess",
        "      top-3 frog 58%, deer 14%, cat 9% [complex]"]
    assert photo_lines("coffee.png", top, "simple")[0] == (
        "  coffee.png: a cup of coffee, not a CIFAR-10 class -> no right answer")
    assert fmt_count(5, 10, "photos") == "5 photos × 10 loops"
    assert fmt_count(100, 3, "images", "repeat") == "100 images × 3 repeats"
    assert fmt_count(200, 1, "labelled images", "pass") == "200 labelled images × 1 pass"


def test_demo_headline_is_a_ratio_of_dense_with_both_accuracies() -> None:
    from athe.commands import headline_lines

    results = {
        "exit": {"ms": [2.0, 2.0], "model_ms": [1.0, 1.0], "correct": [True, False], "levels": {"s1": 2}},
        "fixed:dense": {"ms": [4.0, 4.0], "model_ms": [3.0, 3.0], "correct": [True, True], "levels": {"dense": 2}},
    }
    lines = headline_lines(results, "exit", "fixed:dense", "5 photos × 10 loops", "LiteRT, 2 threads")
    assert lines[0] == "Adaptive vs dense on 5 photos × 10 loops, interleaved (LiteRT, 2 threads):"
    assert "adaptive" in lines[1] and "2.00 ms" in lines[1] and "s1 100%" in lines[1]
    assert lines[-1] == ("  => adaptive takes 0.50x the latency of dense (route+infer: 0.33x) "
                         "at 50.0% vs 100.0% top-1")
    results["exit"]["correct"] = results["fixed:dense"]["correct"] = []
    assert headline_lines(results, "exit", "fixed:dense", "x", "y")[-1].endswith("(route+infer: 0.33x)")


@pytest.fixture(scope="module")
def demo_bundle(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("ai_edge_litert")
    dev = os.environ.get("ATHE_PI_TEST_BUNDLE")
    return Path(dev) if dev else request.getfixturevalue("converted_bundle")


@pytest.mark.slow
def test_demo_on_a_bundle_fits_40_lines(demo_bundle: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from athe.cli import cli
    from athe.commands import demo_photos

    if len(demo_photos()) < 5:
        pytest.skip("scikit-image's sample photos are missing (pip install scikit-image)")
    result = CliRunner().invoke(cli, ["demo", "--bundle", str(demo_bundle), "--threads", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "chelsea.png: a cat, expected: cat -> " in out and out.count("top-3 ") == 5
    assert "coffee.png: a cup of coffee, not a CIFAR-10 class -> no right answer" in out
    assert "names one of" in out and "It cannot recognise anything else" in out
    assert "Adaptive vs dense on 5 photos × 10 loops, interleaved" in out
    assert "the latency of dense" in out and "--data PATH" in out
    assert "INFO: Created TensorFlow Lite" not in out
    # a fresh clone also prints the conversion: a header, one line per artifact, "done"
    artifacts = len(list(demo_bundle.glob("*.tflite")))
    assert len(out.splitlines()) + artifacts + 2 <= 40, out
    for line in out.splitlines():
        assert len(line) <= 80, line
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (60 * i, 100 if name == "cat" else 10, 30)).save(data / name / f"{i}.png")
    result = CliRunner().invoke(cli, ["demo", "--bundle", str(demo_bundle), "--threads", "1", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "Adaptive vs dense on 6 labelled images × 1 pass" in result.output
    verdict = [line for line in result.output.splitlines() if line.startswith("  => adaptive takes ")]
    assert len(verdict) == 1 and verdict[0].endswith("% top-1")


def test_a_long_converter_warning_is_one_line_and_whole_in_the_log(tmp_path: Path) -> None:
    proc = _python("""
        import logging
        from pathlib import Path
        from athe.quiet import quiet_conversion
        with quiet_conversion("b"):
            logging.getLogger("athe.convert.bundle").warning("exits not calibrated: " + "x" * 200)
            Path("b").mkdir()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    line, = proc.stdout.splitlines()
    assert line.startswith("  warning: exits not calibrated: xxx") and line.endswith("… (all in convert.log)")
    assert len(line) <= 80
    assert "WARNING athe.convert.bundle: exits not calibrated: " + "x" * 200 in (tmp_path / "b" / "convert.log").read_text()


@pytest.mark.slow
def test_run_and_compare_read_correctly_at_80_columns(demo_bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from athe.cli import cli

    monkeypatch.setenv("COLUMNS", "80")
    photos = _photos(tmp_path)
    common = ["--input", str(photos), "--threads", "1", "--warmup", "1", "--no-progress", "--no-plots"]
    result = CliRunner().invoke(cli, ["run", str(demo_bundle), *common, "--energy", "estimate:5",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    _fits(result.output)
    result = CliRunner().invoke(cli, ["run", "compare", str(demo_bundle), "--policies", "fixed:simple,fixed:dense",
                                      *common,
                                      "--energy", "estimate:5", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    _fits(result.output)
    assert "(2 images × 3 repeats, interleaved per image)" in result.output
    assert "× mean" in result.output and "× J" in result.output and "J/img (est)" in result.output
    wide = CliRunner().invoke(cli, ["run", "compare", str(demo_bundle), "--policies", "fixed:simple,fixed:dense",
                                    *common, "--energy", "none", "--wide", "--out", str(tmp_path / "wide")])
    assert wide.exit_code == 0, wide.output
    assert "p50 ms" in wide.output and "× p50" in wide.output and "hidden to fit" not in wide.output


def test_a_refusal_before_any_log_leaves_no_log_file(tmp_path: Path) -> None:
    proc = _python("""
        from athe.quiet import quiet_conversion
        try:
            with quiet_conversion("b") as log:
                raise ValueError("output folder exists")
        except ValueError:
            print(log.log_path)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "None\n" and not (tmp_path / "b.convert.log").exists()

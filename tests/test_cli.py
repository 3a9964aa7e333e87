"""The CLI: lazy loading (no torch for --help / run), variants, errors, torch-free imports."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from athe.cli import cli


def test_help_lists_subcommands_without_importing_torch():
    code = ("import sys; from click.testing import CliRunner; from athe.cli import cli; "
            "r = CliRunner().invoke(cli, ['--help']); print(r.output); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("train", "convert", "run", "demo", "variants", "eval"):
        assert name in out


def test_runtime_and_pi_runner_import_with_torch_blocked():
    code = ("import sys; sys.modules['torch'] = None; "
            "import athe.runtime, athe.runtime.bundle, athe.runtime.dispatcher, athe.runtime.preprocess, "
            "athe.runtime.backends, athe.runtime.manifest, athe.pi_runner, athe.pi_runner.meters, "
            "athe.pi_runner.report, athe.pi_runner.system, athe.pi_runner.stats, athe.variants, athe.cli")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_dash_m_athe_works():
    out = subprocess.run([sys.executable, "-m", "athe", "variants", "--json"], capture_output=True,
                         text=True, check=True).stdout
    table = json.loads(out)
    assert [r["level"] for r in table["athe-mini"]] == ["simple", "complex", "dense"]
    assert table["athe-mini"][0]["tokens_per_block"] == [65, 34, 34, 18, 18, 18]


def test_unknown_variant_on_the_command_line():
    r = CliRunner().invoke(cli, ["train", "backbone", "--variant", "nope", "--out", "x"])
    assert r.exit_code == 2 and "athe-mini" in r.output

"""The ``athe`` command: one click group whose subcommands are imported only when run.

``athe --help`` and ``athe run`` never import torch: each subcommand lives in its component
(``athe.training.cli``, ``athe.convert.cli``, …) and is loaded by name on first use.
"""

from __future__ import annotations

import importlib

import click

from athe import __version__

#: subcommand -> ("module:attribute", one-line help shown by ``athe --help``)
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "variants": ("athe.commands:variants", "List the registered variants and their levels."),
    "demo": ("athe.commands:demo", "Run the demo on sample photos; 'athe demo serve' serves the phone demo."),
    "train": ("athe.training.cli:train", "Train a backbone or a router (needs athe[train])."),
    "convert": ("athe.convert.cli:convert", "Export every level to .tflite/.pte as a bundle."),
    "run": ("athe.pi_runner.cli:run", "Measure a bundle on this device (latency, energy)."),
    "eval": ("athe.evaluate.cli:eval_command", "Results table and Pareto sweep of a bundle."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, LAZY_COMMANDS[name][1]) for name in sorted(LAZY_COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    @staticmethod
    def _load(cmd_name: str) -> click.Command:
        target, _ = LAZY_COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or "a dependency"
            extra = "train" if missing.split(".")[0] in {"torch", "torchvision", "timm"} else (
                "convert" if missing.split(".")[0] in {"executorch", "litert_torch", "ai_edge_quantizer"}
                else "pi")
            raise click.ClickException(
                f"'athe {cmd_name}' needs {missing!r}, which is not installed; "
                f"install it with: pip install 'athe[{extra}]'"
            ) from exc
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="athe")
def cli() -> None:
    """ATHE Edge: adaptive ViTs exported per level, dispatched and measured on the edge."""


def main() -> None:
    cli(prog_name="athe")


if __name__ == "__main__":  # pragma: no cover
    main()

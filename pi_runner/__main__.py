"""``python -m athe.pi_runner BUNDLE --input PATH …``: the ``athe run`` command without the entry point."""

from athe.pi_runner.cli import run

if __name__ == "__main__":  # pragma: no cover
    run(prog_name="python -m athe.pi_runner")

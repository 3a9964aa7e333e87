"""``python -m athe`` runs the CLI."""

from athe.cli import main

if __name__ == "__main__":
    main()

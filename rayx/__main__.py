"""``python -m rayx``: the ``rayx`` command line (rayx.scripts.cli)."""
from rayx.scripts.cli import main

if __name__ == "__main__":
    main(prog_name="rayx")

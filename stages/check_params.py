"""DVC stage ``check_params``: refuse a ``params.yaml`` that no stage would accept.

Each stage depends only on its own sections of ``params.yaml``, so a mistake outside all of
them (an unknown top-level section, a misspelt section name) changes no stage: ``dvc repro``
would call everything up to date while every stage refuses the file the next time it runs.
This stage depends on the whole file and validates it, in well under a second, whenever it
changes; it writes nothing.
"""

from src.cli import run_cli
from src.config import load_params

if __name__ == "__main__":
    run_cli(load_params)

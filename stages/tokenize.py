"""DVC stage ``tokenize``: encode the ``tokenize.dataset`` export into flat token files."""

import sys
from pathlib import Path

# Put the project root, not stages/, first on the path: `import src` works and this
# folder's tokenize.py cannot shadow the standard library's tokenize module.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from src.config import load_params
from src.utils.cli import run_cli
from src.utils.environment import configure_environment
from src.utils.logging_setup import setup_logging


def main() -> None:
    params = load_params()
    configure_environment(params.paths)
    setup_logging()
    from src.data.tokenize_corpus import tokenize_from_params  # after the environment is set

    tokenize_from_params(params)


if __name__ == "__main__":
    run_cli(main)

"""DVC stage ``tokenize``: encode the ``tokenize.dataset`` export into flat token files."""

from src.cli import run_stage
from src.data.tokenize_corpus import tokenize_from_params

if __name__ == "__main__":
    run_stage(tokenize_from_params)

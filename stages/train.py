"""DVC stage ``train``: train the causal LM and write the model, metrics.json and plots."""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project root, not stages/

from src.train.train import main
from src.utils.cli import run_cli

if __name__ == "__main__":
    run_cli(lambda: main([]))

"""DVC stage ``download@<dataset>``: fetch one dataset and export it to ``<cache_dir>/raw/<dataset>``."""

import sys
from pathlib import Path

# Put the project root, not stages/, first on the path: `import src` works and this
# folder's tokenize.py cannot shadow the standard library's tokenize module.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from src.utils.cli import run_cli
from src.utils.download_datasets import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/download.py <dataset name from params.yaml download.datasets>")
    run_cli(lambda: main(["--dataset", sys.argv[1]]))

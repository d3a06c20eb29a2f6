"""DVC stage ``tokenize@<dataset>``: encode one export of ``tokenize.datasets`` into flat token files."""

import argparse

from src.cli import run_cli, start_process
from src.config import load_params
from src.data.tokenize_corpus import tokenize_from_params


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stages.tokenize",
        description="DVC stage tokenize@<dataset>: encode one export of params.yaml tokenize.datasets into "
        "<paths.cache_dir>/tokenized/<tokenize.tokenizer>/<dataset>.",
    )
    parser.add_argument("dataset", help="a name from params.yaml tokenize.datasets")
    dataset = parser.parse_args().dataset
    params = load_params()
    start_process(params)
    tokenize_from_params(params, dataset)


if __name__ == "__main__":
    run_cli(main)

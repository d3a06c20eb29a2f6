"""DVC stage ``tokenize@<dataset>``: encode one export of ``tokenize.datasets`` into flat token files."""

from src.cli import dataset_argument, run_cli, start_process
from src.config import load_params
from src.data.tokenize_stages import tokenize_from_params


def main() -> None:
    dataset = dataset_argument(
        "tokenize",
        "encode one export of params.yaml tokenize.datasets into "
        "<paths.cache_dir>/tokenized/<tokenize.tokenizer>/<dataset>.",
        "tokenize.datasets",
    )
    params = load_params()
    start_process(params)
    tokenize_from_params(params, dataset)


if __name__ == "__main__":
    run_cli(main)

"""DVC stage ``download@<dataset>``: fetch one dataset of ``download.datasets`` and export it."""

import argparse

from src.cli import run_cli, start_process
from src.config import load_params
from src.data.download import LOG_PREFIX, download_all


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stages.download",
        description="DVC stage download@<dataset>: fetch one dataset of params.yaml download.datasets "
        "and export it to <paths.cache_dir>/raw/<dataset>.",
    )
    parser.add_argument("dataset", help="a name from params.yaml download.datasets")
    dataset = parser.parse_args().dataset
    params = load_params()
    start_process(params, params.paths.log_dir, prefix=LOG_PREFIX, numbered=True, log_key="paths.log_dir")
    download_all(params, names=[dataset])


if __name__ == "__main__":
    run_cli(main)

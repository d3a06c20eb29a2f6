"""DVC stage ``download@<dataset>``: fetch one dataset of ``download.datasets`` and export it."""

from src.cli import dataset_argument, run_cli, start_process
from src.config import load_params
from src.data.download import LOG_PREFIX, download_all


def main() -> None:
    dataset = dataset_argument(
        "download",
        "fetch one dataset of params.yaml download.datasets (or download.local) and export it to "
        "<paths.cache_dir>/raw/<dataset>.",
        "download.datasets or download.local",
    )
    params = load_params()
    start_process(params, params.paths.log_dir, prefix=LOG_PREFIX, numbered=True, log_key="paths.log_dir")
    download_all(params, names=[dataset])


if __name__ == "__main__":
    run_cli(main)

"""DVC stage ``download@<dataset>``: fetch one dataset of ``download.datasets`` and export it."""

from src import config
from src.cli import dataset_argument, run_cli, start_process
from src.data.download import LOG_PREFIX, download_all
from src.data.stage_inputs import download_inputs
from src.input_guard import unchanged_inputs


def main() -> None:
    dataset = dataset_argument(
        "download",
        "fetch one dataset of params.yaml download.datasets (or download.local) and export it to "
        "<paths.cache_dir>/raw/<dataset>.",
        "download.datasets or download.local",
    )
    params = config.load_params()
    start_process(params, params.paths.log_dir, prefix=LOG_PREFIX, numbered=True, log_key="paths.log_dir")
    with unchanged_inputs(download_inputs(params, dataset), params, config.PARAMS_FILE):
        download_all(params, names=[dataset])


if __name__ == "__main__":
    run_cli(main)

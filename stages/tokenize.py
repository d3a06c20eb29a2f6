"""DVC stage ``tokenize@<dataset>``: encode one export of ``tokenize.datasets`` into flat token files."""

from src import config
from src.cli import dataset_argument, run_cli, start_process
from src.data.stage_inputs import tokenize_inputs
from src.data.tokenize_stages import tokenize_from_params
from src.input_guard import unchanged_inputs


def main() -> None:
    dataset = dataset_argument(
        "tokenize",
        "encode one export of params.yaml tokenize.datasets into "
        "<paths.cache_dir>/tokenized/<tokenize.tokenizer>/<dataset>.",
        "tokenize.datasets",
    )
    params = config.load_params()
    start_process(params)
    with unchanged_inputs(tokenize_inputs(params, dataset), params, config.PARAMS_FILE):
        tokenize_from_params(params, dataset)


if __name__ == "__main__":
    run_cli(main)

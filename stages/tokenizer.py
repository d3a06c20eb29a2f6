"""DVC stage ``tokenizer``: train the BPE (or load the pretrained tokenizer) every dataset is encoded with."""

from src import config
from src.cli import run_cli, start_process
from src.data.stage_inputs import tokenizer_inputs
from src.data.tokenize_stages import make_tokenizer
from src.input_guard import unchanged_inputs


def main() -> None:
    params = config.load_params()
    start_process(params)
    with unchanged_inputs(tokenizer_inputs(params), params, config.PARAMS_FILE):
        make_tokenizer(params)


if __name__ == "__main__":
    run_cli(main)

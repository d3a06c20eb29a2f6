"""DVC stage ``train``: train the causal LM and write the model, metrics.json and plots."""

from src.cli import run_stage
from src.config import PARAMS_FILE, Params


def train(params: Params) -> None:
    from src.train.fit import fit  # lightning, transformers: only once the environment is set

    fit(params, params_file=PARAMS_FILE)


if __name__ == "__main__":
    run_stage(train)

"""Train the causal LM as ``params.yaml`` says: ``python src/train/train.py [--params FILE]``.

The workflow guide's command-line script (its path there, ``src/train/train.py``, runs this); the
DVC ``train`` stage runs the same :func:`src.train.fit.fit`. Progress goes to the terminal and to
``logs/app_<time>.log``; the run is tracked in MLflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.cli import run_cli, start_process
from src.config import PARAMS_FILE, load_params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train the causal language model on the tokenized data (settings: params.yaml).",
        epilog="Change settings in params.yaml or per experiment: dvc exp run -S train.lr=1e-3 "
        "(ray.use_ray=true trains on a Ray Train worker group).",
    )
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--log-dir", help="where app_<time>.log goes (default: logs/)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    params = load_params(args.params)
    start_process(params, args.log_dir)
    from src.train.fit import fit  # lightning, transformers: only once the environment is set

    return fit(params, params_file=Path(args.params).absolute())


if __name__ == "__main__":
    run_cli(main)

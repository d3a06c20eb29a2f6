"""Train the causal LM as ``params.yaml`` says: ``python src/train/train.py [--params FILE]``.

The DVC ``train`` stage runs the same :func:`src.train.fit.fit`. Progress goes to
the terminal and to ``logs/app_<time>.log``; the run is tracked in MLflow.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``src`` importable from the project root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from src.config import PARAMS_FILE, load_params
from src.utils.cli import run_cli
from src.utils.environment import configure_environment
from src.utils.logging_setup import adopt_library_loggers, setup_logging

log = logging.getLogger(__name__)


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
    configure_environment(params.paths)
    setup_logging(args.log_dir)
    from src.train.fit import fit  # heavy imports only after the environment is set

    adopt_library_loggers()
    # A deprecation inside Lightning itself: nothing a user of this project can act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    return fit(params)


if __name__ == "__main__":
    run_cli(main)

"""Fetch, cache and export the raw datasets of ``DATASETS_TO_DOWNLOAD`` (``download.datasets``/``local``).

The workflow guide's command-line script, run from the project root (its path there,
``src/utils/download_datasets.py``, runs this)::

    python src/utils/download_datasets.py --cache-dir data/raw_cache

The Hugging Face cache lives under ``<cache-dir>/raw`` and is reused when valid
(``--force-redownload`` rebuilds it); each dataset is exported to
``<cache-dir>/raw/<dataset>/``. The logic is :mod:`src.data.download`; this
script only reads its arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.cli import run_cli, start_process
from src.config import PARAMS_FILE, load_params
from src.data.download import LOG_PREFIX, download_all
from src.paths import resolve_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fetch, cache and export the raw datasets of params.yaml download.datasets.",
        epilog="Datasets and defaults come from params.yaml (download.datasets, paths.*).",
    )
    parser.add_argument(
        "--cache-dir",
        help="cache root; the HF cache and exports go to <cache-dir>/raw (default: paths.cache_dir)",
    )
    parser.add_argument(
        "--force-redownload",
        action="store_true",
        help="re-download every source and rebuild the Arrow files (DownloadMode.FORCE_REDOWNLOAD)",
    )
    parser.add_argument("--log-dir", help="where download_datasets_<n>.log goes (default: paths.log_dir)")
    parser.add_argument(
        "--dataset",
        action="append",
        dest="datasets",
        metavar="NAME",
        help="download only this dataset (repeatable; default: all of download.datasets and download.local)",
    )
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = build_parser().parse_args(argv)
    params = load_params(args.params)
    log_key = "--log-dir" if args.log_dir else "paths.log_dir"
    start_process(
        params, args.log_dir or params.paths.log_dir, prefix=LOG_PREFIX, numbered=True, log_key=log_key
    )
    cache_dir = resolve_path(args.cache_dir) if args.cache_dir else None
    return download_all(params, cache_dir, names=args.datasets, force_redownload=args.force_redownload)


if __name__ == "__main__":
    run_cli(main)

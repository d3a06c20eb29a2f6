"""The common shell of every entry point: the DVC stages and the workflow guide's command-line scripts.

Each entry point reads ``params.yaml``, calls :func:`start_process` before any
heavy library is imported (they read their environment variables then), calls
one library function, and runs inside :func:`run_cli`: user-caused failures
(:class:`~src.errors.PipelineError`) become one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from src.config import Params, load_params
from src.errors import PipelineError, TrainingStopped
from src.paths import display_path, resolve_path, workspace_root
from src.utils.environment import configure_environment
from src.utils.files import check_writable
from src.utils.logging_setup import setup_logging
from src.utils.parent_watch import watch_parent
from src.utils.redact import CredentialFilter, redact_uri

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


def start_process(
    params: Params,
    log_dir: str | Path | None = None,
    *,
    prefix: str = "app",
    numbered: bool = False,
    log_key: str = "--log-dir",
) -> Path:
    """Keep the libraries' caches in the project and start the run's log file; returns its path.

    The log folder is checked first (one line if it cannot be written): ``log_key`` is what set
    ``log_dir`` (a flag or a params key); without ``log_dir`` it is ``logs/`` in the user's checkout.
    """
    watch_parent()  # a stage ends with the dvc repro that started it
    configure_environment(model_cache=resolve_path(params.paths.model_cache, workspace_root()))
    folder = resolve_path(log_dir) if log_dir is not None else workspace_root() / "logs"
    if log_dir is None:
        check_writable("logs", folder, kind="folder", into=True, fix="make the checkout writable")
    else:
        check_writable(log_key, folder, kind="folder", into=True)
    log_file = setup_logging(log_dir, prefix=prefix, numbered=numbered, filters=(CredentialFilter(),))
    log.info("logging to %s", display_path(log_file))
    return log_file


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main`` and exit with 0, or with 2 and a one-line message on a user error (128 + N after a
    training stopped by signal N)."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {redact_uri(str(error))}", file=sys.stderr)  # no credential of a URI it names
        sys.exit(EXIT_USER_ERROR)
    except TrainingStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def run_stage(step: Callable[[Params], object]) -> None:
    """The body of a DVC stage: read ``params.yaml``, start the process, run ``step(params)``."""

    def main() -> None:
        params = load_params()
        start_process(params)
        step(params)

    run_cli(main)


def dataset_argument(stage: str, does: str, listed_in: str) -> str:
    """The one argument of a per-dataset DVC stage (``<stage>@<dataset>``): the dataset's name.

    ``does`` says what the stage does with it, for ``--help``; ``listed_in`` where the names come from.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{stage}", description=f"DVC stage {stage}@<dataset>: {does}"
    )
    parser.add_argument("dataset", help=f"a name from params.yaml {listed_in}")
    return parser.parse_args().dataset

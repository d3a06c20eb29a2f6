"""The MLflow store: where runs go, and what a failing store says.

The default store is the SQLite file ``mlflow.db`` at the root of the user's checkout, given as an
absolute URI so a run started from any folder, or from the temporary copy DVC makes for a queued
experiment, lands in the same store; artifacts of a SQLite store go to ``mlruns/`` beside it. A
store that fails is one line naming it (its credentials masked) and what to do; a call is tried
once (MLflow's own retries would hold a training for minutes), and parallel runs open a SQLite
store one at a time.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from src.config import MlflowConfig
from src.errors import PipelineError, first_line
from src.paths import PROJECT_ROOT, display_path, workspace_root
from src.utils.redact import redact_uri

_SQLITE = "sqlite:///"


def tracking_uri(config: MlflowConfig, root: Path = PROJECT_ROOT) -> str:
    """``mlflow.tracking_uri``, or ``mlflow.db`` in the user's checkout; relative SQLite paths start there."""
    uri = config.tracking_uri or f"{_SQLITE}mlflow.db"
    database = sqlite_path(uri)
    if database is not None and not database.is_absolute():
        return f"{_SQLITE}{(workspace_root(root) / database).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative if the URI is), or None for a server."""
    return Path(uri[len(_SQLITE) :]) if uri.startswith(_SQLITE) else None


def local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, ``mlruns/`` beside the database file (MLflow would use the current folder)."""
    database = sqlite_path(uri)
    if database is None:
        return None  # a server decides where its artifacts go
    return (database.parent / "mlruns").resolve().as_uri()


def store_failures() -> tuple[type[BaseException], ...]:
    """What MLflow raises when its store cannot be used: its own errors, SQLAlchemy's for a SQLite
    file, and the HTTP library's for an artifact upload to a server that went away."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    return MlflowException, SQLAlchemyError, RequestException


#: What the one line says once training is over: nothing is lost, and how the run is completed.
_OUTPUTS_KEPT = (
    "the model, metrics.json and checkpoints are written; {fix}, then run the same command (or dvc repro) "
    "again: it resumes from the last checkpoint and completes the MLflow run"
)


@contextmanager
def store_errors(uri: str, *, ending: bool = False) -> Iterator[None]:
    """Turn a store that cannot be used into one line naming it: a damaged or read-only SQLite
    file, or a server that does not answer (the libraries raise tracebacks several screens long).

    With ``ending`` (the last metrics, the artifacts, the model, the run's end, after training),
    the line also says that the outputs are written and how to complete the run.
    """
    try:
        yield
    except store_failures() as error:
        reason = failure_reason(error)
        database = sqlite_path(uri)
        if database is None:
            fix = (
                _OUTPUTS_KEPT.format(fix="start it")
                if ending
                else 'start the server, or set mlflow.tracking_uri to "" for mlflow.db at the project root'
            )
            server = "the MLflow server " if ending else ""
            raise PipelineError(
                redact_uri(f"mlflow.tracking_uri: cannot reach {server}{uri} ({reason}); ") + fix
            ) from None
        fix = (
            _OUTPUTS_KEPT.format(fix=_sqlite_fix(reason))
            if ending
            else f"{_sqlite_fix(reason)}, or set mlflow.tracking_uri to another store"
        )
        raise PipelineError(
            f"mlflow.tracking_uri: cannot use the MLflow store {display_path(database)} ({reason}); {fix}"
        ) from None


def _sqlite_fix(reason: str) -> str:
    if "readonly" in reason or "read-only" in reason:
        return "make it (and its folder) writable"
    if "not a database" in reason or "malformed" in reason:
        return "it is damaged: move it away to start a new store"
    return "repair or move it away"


@contextmanager
def one_attempt() -> Iterator[None]:
    """Make MLflow's HTTP requests in this block without retries.

    By default MLflow's client retries a failed request with growing pauses for minutes
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, read at each request); during training a server that is
    away would stall every checkpoint that long. One attempt costs at most one request timeout
    (``MLFLOW_HTTP_REQUEST_TIMEOUT``), nothing for a server that refuses the connection.
    The variable is the process's: set only around the tracker's own requests, from one thread.
    """
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    saved = os.environ.get(name)
    os.environ[name] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


#: What an HTTP client's error says about the connection, most telling first: MLflow wraps it in
#: the URL and the retries ("[Errno 111] Connection refused", a server killed mid-request, a timeout).
_CONNECTION_FAILURES = (
    re.compile(r"\[Errno -?\d+\] [^'\")]+"),
    re.compile(r"Remote end closed connection without response|Connection reset by peer|Connection aborted"),
    re.compile(r"timed out", re.IGNORECASE),
)


def failure_reason(error: BaseException) -> str:
    """The first line of the root cause (SQLAlchemy wraps the driver's message in several more),
    or what happened to the connection to a server."""
    text = first_line(getattr(error, "orig", None) or error, 2000)
    for pattern in _CONNECTION_FAILURES:
        found = pattern.search(text)
        if found:
            return found.group(0).strip()
    return text[:200]


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One process at a time creates a SQLite store and its experiment (parallel queued runs race there)."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

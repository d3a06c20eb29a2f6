"""Where runs go and what a failing store says: URIs, one-line errors, one attempt, the SQLite lock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from src.config import MlflowConfig
from src.errors import PipelineError
from src.train.mlflow_store import (
    failure_reason,
    local_artifact_root,
    one_attempt,
    sqlite_path,
    store_errors,
    store_lock,
    tracking_uri,
)


def test_the_default_store_is_mlflow_db_in_the_checkout_and_a_server_is_left_as_given(tmp_path: Path) -> None:
    assert tracking_uri(MlflowConfig(), tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    relative = tracking_uri(MlflowConfig(tracking_uri="sqlite:///runs/m.db"), tmp_path)
    assert relative == f"sqlite:///{(tmp_path / 'runs' / 'm.db').resolve()}"
    assert tracking_uri(MlflowConfig(tracking_uri="http://h:5000"), tmp_path) == "http://h:5000"
    assert sqlite_path("http://h:5000") is None and local_artifact_root("http://h:5000") is None
    assert local_artifact_root(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlruns").resolve().as_uri()


def test_one_attempt_turns_retries_off_inside_and_restores_the_users_setting() -> None:
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    os.environ[name] = "7"
    try:
        with one_attempt():
            assert os.environ[name] == "0"
        assert os.environ[name] == "7"
    finally:
        del os.environ[name]
    with one_attempt():
        assert os.environ[name] == "0"
    assert name not in os.environ


def test_the_reason_is_what_happened_to_the_connection() -> None:
    wrapped = Exception(
        "API request to http://h:5000/api failed with exception HTTPConnectionPool(host='h', port=5000): "
        "Max retries exceeded (Caused by NewConnectionError('...: [Errno 111] Connection refused'))"
    )
    assert failure_reason(wrapped) == "[Errno 111] Connection refused"
    assert failure_reason(Exception("Read timed out. (read timeout=120)")) == "timed out"
    assert failure_reason(Exception("no such table: runs\nmore")) == "no such table: runs"


def test_the_store_lock_lets_one_process_at_a_time_create_a_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    inside: list[int] = []
    overlap: list[bool] = []

    def hold(n: int) -> None:
        with store_lock(uri):
            inside.append(n)
            overlap.append(len(inside) > 1)
            time.sleep(0.2)
            inside.remove(n)

    # flock is per open file: two threads opening the lock file each exclude each other as processes do.
    threads = [threading.Thread(target=hold, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == [False, False]
    with store_lock("http://h:5000"):  # a server serialises its own writes: no lock
        pass


def test_a_read_only_store_says_so() -> None:
    """What SQLite reports for a read-only file (the superuser writes anyway, so it is raised here)."""
    from sqlalchemy.exc import OperationalError

    with pytest.raises(PipelineError) as caught, store_errors("sqlite:////data/mlflow.db"):
        raise OperationalError("INSERT ...", {}, Exception("attempt to write a readonly database"))
    assert str(caught.value) == (
        "mlflow.tracking_uri: cannot use the MLflow store /data/mlflow.db (attempt to write a readonly "
        "database); make it (and its folder) writable, or set mlflow.tracking_uri to another store"
    )


def test_a_store_that_fails_after_training_is_one_line_saying_the_outputs_are_kept() -> None:
    from mlflow.exceptions import MlflowException

    refused = (
        "API request to http://bob:hunter2@mlflow.example:5000/api/2.0/mlflow/runs/get failed with exception "
        "HTTPConnectionPool(host='mlflow.example', port=5000): Max retries exceeded (Caused by "
        "NewConnectionError('<urllib3.connection.HTTPConnection object>: Failed to establish a new "
        "connection: [Errno 111] Connection refused'))"
    )
    with (
        pytest.raises(PipelineError) as caught,
        store_errors("http://bob:hunter2@mlflow.example:5000", ending=True),
    ):
        raise MlflowException(refused)
    assert str(caught.value) == (
        "mlflow.tracking_uri: cannot reach the MLflow server http://***@mlflow.example:5000 ([Errno 111] "
        "Connection refused); the model, metrics.json and checkpoints are written; start it, then run the "
        "same command (or dvc repro) again: it resumes from the last checkpoint and completes the MLflow run"
    )

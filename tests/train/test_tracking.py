"""The MLflow side of a run: orphaned runs are closed, and no password is ever stored or shown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from src.errors import PipelineError
from src.train.tracking import HOST_TAG, PID_TAG, RunTracker, store_errors


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_runs_left_running_by_a_dead_process_of_this_machine_are_marked_killed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = RunTracker(uri, "lmpipe")
    owners = {
        "dead here": {HOST_TAG: socket.gethostname(), PID_TAG: str(dead_pid())},
        "alive here": {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())},
        "elsewhere": {HOST_TAG: "another-machine", PID_TAG: str(dead_pid())},
    }
    ids = {name: first.start(name, tags, {}) for name, tags in owners.items()}

    current = RunTracker(uri, "lmpipe")
    current.start("current", {}, {})
    current.claim()
    assert current.end_orphans() == [ids["dead here"]]
    status = {name: current.client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"dead here": "KILLED", "alive here": "RUNNING", "elsewhere": "RUNNING"}
    assert current.client.get_run(current.run_id).info.status == "RUNNING"
    assert current.client.get_run(current.run_id).data.tags[PID_TAG] == str(os.getpid())


def test_a_password_in_the_tracking_uri_is_not_stored_as_a_param(tmp_path: Path) -> None:
    """(That it is not shown in messages or logs either: test_fit's unreachable-server test.)"""
    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lmpipe")
    tracker.start(None, {}, {"mlflow.tracking_uri": "http://bob:hunter2@127.0.0.1:5000", "train.lr": "0.003"})
    params = tracker.client.get_run(tracker.run_id).data.params
    assert params == {"mlflow.tracking_uri": "http://bob:***@127.0.0.1:5000", "train.lr": "0.003"}


def test_a_store_that_cannot_be_used_is_one_line_naming_it(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"no database here\n" * 100)
    with pytest.raises(PipelineError) as caught:
        RunTracker(f"sqlite:///{database}", "lmpipe")
    assert str(caught.value) == (
        f"mlflow.tracking_uri: cannot use the MLflow store {database} (file is not a database); it is "
        "damaged: move it away to start a new store, or set mlflow.tracking_uri to another store"
    )
    assert database.read_bytes() == b"no database here\n" * 100


def test_a_read_only_store_says_so() -> None:
    """What SQLite reports for a read-only file (the superuser writes anyway, so it is raised here)."""
    from sqlalchemy.exc import OperationalError

    with pytest.raises(PipelineError) as caught, store_errors("sqlite:////data/mlflow.db"):
        raise OperationalError("INSERT ...", {}, Exception("attempt to write a readonly database"))
    assert str(caught.value) == (
        "mlflow.tracking_uri: cannot use the MLflow store /data/mlflow.db (attempt to write a readonly "
        "database); make it (and its folder) writable, or set mlflow.tracking_uri to another store"
    )

"""The MLflow side of a run: orphaned runs are closed, no password is ever stored or shown, and
metrics a store does not take during training are kept and sent once."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from src.errors import PipelineError
from src.train.tracking import HOST_TAG, PID_TAG, RunTracker


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
    assert params == {"mlflow.tracking_uri": "http://***@127.0.0.1:5000", "train.lr": "0.003"}


def test_a_run_killed_as_it_is_created_is_still_found_as_an_orphan(python_runner, tmp_path: Path) -> None:
    """The owner tags come with the run itself: a kill right after creating it cannot leave a
    RUNNING run that no later training would recognise as an orphan."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = (
        f"from src.train.tracking import RunTracker\nRunTracker({uri!r}, 'lmpipe').start(None, {{}}, {{}})"
    )
    killed = python_runner("-c", start, env={"LMPIPE_KILL_AT": "mlflow.run-created"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    current = RunTracker(uri, "lmpipe")
    current.start("current", {}, {})
    (orphan,) = [
        r for r in current.client.search_runs([current.experiment_id]) if r.info.run_name != "current"
    ]
    assert orphan.info.status == "RUNNING"
    assert current.end_orphans() == [orphan.info.run_id]


def test_a_continued_run_keeps_each_metric_step_once(tmp_path: Path) -> None:
    """A run killed after MLflow got steps its newest checkpoint does not hold computes them again
    when it resumes: MLflow keeps the first of each, whoever logs the repeat (driver or Ray worker)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = RunTracker(uri, "lmpipe")
    run_id = first.start(None, {}, {})
    for step in (1, 2, 3):
        first.log_metrics({"train_loss": 1 / step}, step)
    first.log_metrics({"steps": 5}, 0, flush=True)

    resumed = RunTracker(uri, "lmpipe")
    assert resumed.reattach(run_id, None)
    for step in (2, 3, 4):
        resumed.log_metrics({"train_loss": 1 / step}, step)
    resumed.log_metrics({"steps": 5}, 0, flush=True)
    worker = RunTracker(uri, None, run_id=run_id)
    for step in (4, 5):
        worker.log_metrics({"train_loss": 1 / step}, step)
    worker.flush()

    history = {
        key: [(m.step, m.value) for m in first.client.get_metric_history(run_id, key)]
        for key in ("train_loss", "steps")
    }
    assert {key: sorted(rows) for key, rows in history.items()} == {
        "train_loss": [(step, 1 / step) for step in (1, 2, 3, 4, 5)],
        "steps": [(0, 5.0)],
    }


def test_logging_the_model_leaves_the_run_running_with_one_model(token_dir: Path, tmp_path: Path) -> None:
    """The outputs come before the run ends: logging the model must not end it (a kill after it would
    leave a FINISHED run that cannot be continued), and a resumed attempt replaces the model."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(token_dir / "tokenizer")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lmpipe")
    run_id = tracker.start(None, {}, {})
    for _ in range(2):  # the second time as a resumed attempt of the same run would
        tracker.log_model(model, tokenizer, "In the beginning", None)
        assert tracker.client.get_run(run_id).info.status == "RUNNING"
    models = tracker.client.search_logged_models(
        [tracker.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert len(models) == 1


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


def train_loss_steps(tracker: RunTracker) -> list[int]:
    return sorted(m.step for m in tracker.client.get_metric_history(tracker.run_id, "train_loss"))


def test_metrics_a_server_does_not_take_during_training_are_kept_and_sent_once_when_it_answers(
    free_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tracker's store is swapped for a server that nothing answers (a free port) and back:
    training-time flushes make one attempt each, whatever retries the environment asks for,
    warn once, keep every metric queued, and send each once when the store answers again."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "7"  # minutes of back-off per request
    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lmpipe")
    tracker.start(None, {}, {})
    store = tracker.client
    tracker.log_metrics({"train_loss": 1.0}, 1, flush=True)
    tracker.client = MlflowClient(f"http://127.0.0.1:{free_port}")  # the server goes away
    for step in (2, 3):
        tracker.log_metrics({"train_loss": 1 / step}, step)
        with caplog.at_level(logging.DEBUG):
            assert tracker.flush() is False
    tracker.log_metrics({"train_loss": 0.5}, 2)  # a step computed again: queued once already
    retried = [r for r in caplog.records if r.name.startswith("urllib3") and "Retrying" in r.getMessage()]
    assert retried == []  # one attempt, no back-off
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"MLflow server http://127.0.0.1:{free_port} does not answer ([Errno 111] Connection refused); "
        "training goes on: metrics are kept and sent when it does"
    ]
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # (the required flush below would wait out 7)
    with pytest.raises(MlflowException):
        tracker.flush(required=True)  # the start or the end of a run: the failure is raised

    tracker.client = store  # it answers again
    with caplog.at_level(logging.INFO):
        assert tracker.flush() is True
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert train_loss_steps(tracker) == [1, 2, 3]
    values = {m.step: m.value for m in store.get_metric_history(tracker.run_id, "train_loss")}
    assert values[2] == 1 / 2  # the value queued first


def test_the_driver_completes_what_rank_0_could_not_send_before_it_ended(tmp_path: Path) -> None:
    """On Ray, rank 0's tracker ends with its worker: the steps it still held queued are sent by the
    driver from the training's history, and the steps it did send are not sent again."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    driver = RunTracker(uri, "lmpipe")
    run_id = driver.start(None, {}, {})
    worker = RunTracker(uri, None, run_id=run_id)
    for step in (1, 2, 3, 4):
        worker.log_metrics({"train_loss": 1 / step}, step)
        if step == 2:
            worker.flush()
    del worker  # steps 3 and 4 never left the worker
    driver.complete([({"train_loss": 1 / step}, step) for step in (1, 2, 3, 4)])
    assert train_loss_steps(driver) == [1, 2, 3, 4]


def test_a_server_gone_when_the_run_ends_is_one_line_and_never_hides_the_error_that_ended_it(
    free_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver's last word to the server (the run FINISHED) is the end-of-training line when the
    server is gone; a training that failed reports its own error, and the run is left to be continued."""
    from mlflow import MlflowClient

    from src.train.fit import run_tracked

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    gone = f"http://127.0.0.1:{free_port}"

    def tracker_losing_its_server() -> RunTracker:
        tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lmpipe")
        tracker.start(None, {}, {})
        tracker.client = MlflowClient(gone)
        return tracker

    def failing() -> dict[str, float]:
        raise ValueError("a bug in training")

    line = rf"^mlflow.tracking_uri: cannot reach the MLflow server {gone} \(.*completes the MLflow run$"
    with pytest.raises(PipelineError, match=line):
        run_tracked(tracker_losing_its_server(), lambda: {"val_loss": 1.0})
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="a bug in training"):
        run_tracked(tracker_losing_its_server(), failing)
    assert caplog.records[-1].getMessage().endswith("; its run is left RUNNING")

"""Training against a real MLflow tracking server, read back through its REST API.

Each test starts ``mlflow server`` (SQLite store, served artifacts, loopback, one
worker) as a process of its own and trains as a user does, ``python
src/train/train.py``, with ``mlflow.tracking_uri`` pointing at it: on one process,
on Ray, with the server killed during training and started again, and with the
server gone for good (the stage fails with one line, the outputs are written, and
the same command run once the server is back completes the run). No server or Ray
process may outlive a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from src.config import load_params
from src.paths import PROJECT_ROOT
from src.train.backends.ray_cluster import short_temp_dir
from src.utils.flatten import flatten
from src.utils.typed_config import as_plain_dict

pytestmark = pytest.mark.slow

#: What training logs once when the server does not answer, and once when it answers again.
AWAY, BACK = "; training goes on: metrics are kept and sent when it does", "answers again"


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with its store in ``folder``, in a process session of its own
    (the server runs its workers as child processes: the session holds them all)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.sessions: list[int] = []

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"),
            *("--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.sessions.append(self.process.pid)
        deadline = time.monotonic() + 180
        while not self.answers():
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not answer"
            time.sleep(0.3)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash or a lost machine would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def processes(self) -> list[str]:
        """Command lines of the live processes of every session this server ran in."""
        return [cmdline for cmdline, session in _processes() if session in self.sessions]

    def get(self, endpoint: str, **query: str) -> dict:
        url = f"{self.uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)

    def post(self, endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


def _processes() -> Iterator[tuple[str, int]]:
    """(command line, session id) of every live process (zombies are gone: they only await reaping)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            yield cmdline, int(fields[3])


def ray_processes() -> list[str]:
    """Command lines of processes of a Ray cluster started from the project."""
    markers = (str(short_temp_dir(PROJECT_ROOT)), str(PROJECT_ROOT / "tmp" / "ray"))
    return [cmdline for cmdline, _ in _processes() if any(marker in cmdline for marker in markers)]


@pytest.fixture
def server(free_port: int, tmp_path: Path) -> Iterator[MlflowServer]:
    """A started MLflow server; afterwards none of its processes may be left."""
    folder = tmp_path / "server"
    folder.mkdir()
    started = MlflowServer(folder, free_port)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        deadline = time.monotonic() + 30
        while started.processes() and time.monotonic() < deadline:
            time.sleep(0.2)  # workers that lost their parent finish their last request
        assert started.processes() == []


def the_run(server: MlflowServer) -> dict:
    """The one run of experiment ``lmpipe``, as the REST API returns it."""
    experiment = server.get("experiments/get-by-name", experiment_name="lmpipe")["experiment"]
    runs = server.post("runs/search", {"experiment_ids": [experiment["experiment_id"]]}).get("runs", [])
    assert len(runs) == 1, [run["info"]["run_name"] for run in runs]
    return runs[0]


def steps_logged(server: MlflowServer, run_id: str, key: str) -> list[int]:
    history = server.get("metrics/get-history", run_id=run_id, metric_key=key, max_results="25000")
    return sorted(metric["step"] for metric in history.get("metrics", []))


def artifact_paths(server: MlflowServer, run_id: str, path: str = "") -> set[str]:
    listed = server.get("artifacts/list", run_id=run_id, path=path).get("files", [])
    return {entry["path"] for entry in listed}


def assert_complete_run(server: MlflowServer, params_file: Path, steps: int, eval_every: int) -> dict:
    """One FINISHED run holding every param, each step's metrics once, the sample, plots and model."""
    run = the_run(server)
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    params = {entry["key"]: entry["value"] for entry in run["data"]["params"]}
    assert params == flatten(as_plain_dict(load_params(params_file)))
    for key in ("train_loss", "lr"):
        assert steps_logged(server, run_id, key) == list(range(1, steps + 1))
    assert steps_logged(server, run_id, "val_loss") == list(range(eval_every, steps + 1, eval_every))
    assert steps_logged(server, run_id, "tokens_seen") == [0]
    latest = {metric["key"]: metric["value"] for metric in run["data"]["metrics"]}
    metrics = json.loads((params_file.parent / "metrics.json").read_text())
    assert latest["val_loss"] == pytest.approx(metrics["val_loss"])

    assert artifact_paths(server, run_id) >= {"samples.txt", "plots"}
    assert artifact_paths(server, run_id, "plots") == {
        f"plots/{name}" for name in os.listdir(params_file.parent / "plots")
    }
    experiment_id = run["info"]["experiment_id"]
    search = {"experiment_ids": [experiment_id], "filter": f"source_run_id = '{run_id}'"}
    (model,) = server.post("logged-models/search", search)["models"]
    listed = server.get(f"logged-models/{model['info']['model_id']}/artifacts/directories")["files"]
    files = {entry["path"] for entry in listed}
    assert {"MLmodel", "model"} <= files, files
    weights = server.get(
        f"logged-models/{model['info']['model_id']}/artifacts/directories", artifact_directory_path="model"
    )["files"]
    assert "model/model.safetensors" in {entry["path"] for entry in weights}
    return run


def server_params(make_params, folder: Path, server: MlflowServer, **settings: object) -> Path:
    return make_params(folder, mlflow={"tracking_uri": server.uri}, **settings)


def train(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


class Training:
    """A training started as a user starts it, its stderr (logs, Ray workers' too, and the error line)
    in a file the test reads while it runs."""

    def __init__(self, command: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
        self.output = folder / "stderr.txt"
        with open(self.output, "w") as output:
            self.process = subprocess.Popen(
                command,
                cwd=folder,
                env={**os.environ, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=output,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 400
        while not condition():
            assert self.process.poll() is None, f"training ended before {what}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.05)

    def finish(self) -> int:
        return self.process.wait(timeout=600)


@pytest.fixture
def start_training(tmp_path: Path) -> Iterator[Callable[..., Training]]:
    """``start_training(command, env=None)``; a training a failed test leaves running is stopped as
    Ctrl-C stops it (which shuts its Ray cluster down too)."""
    started: list[Training] = []

    def start(command: list[str], env: dict[str, str] | None = None) -> Training:
        started.append(Training(command, tmp_path, env))
        return started[-1]

    yield start
    for training in started:
        if training.process.poll() is None:
            training.process.send_signal(signal.SIGINT)
            try:
                training.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                training.process.kill()
                training.process.wait()


def kill_at_first_checkpoint(
    training: Training, server: MlflowServer, checkpoints: Path, pattern: str
) -> None:
    """SIGKILL the server as soon as training has written its first checkpoint (``pattern`` under
    ``checkpoints``): from then on no checkpoint can send its metrics."""
    training.wait_until(lambda: any(checkpoints.glob(pattern)), "a checkpoint was written")
    server.kill()


#: MLflow's retries, raised as a user with a flaky server would: the end of training waits for the
#: server for about two minutes (1, 2, 4, ... s between attempts).
PATIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def test_one_process_logs_one_complete_run_to_the_server(
    server: MlflowServer, make_params, train_command, tmp_path: Path
) -> None:
    params_file = server_params(make_params, tmp_path / "run", server)
    done = train(train_command(params_file), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_run(server, params_file, steps=20, eval_every=5)
    assert AWAY not in done.stderr


def test_a_server_that_goes_away_and_comes_back_gets_every_metric_once(
    server: MlflowServer, make_params, train_command, start_training, tmp_path: Path
) -> None:
    """Killed after the first checkpoint: training goes on (one warning), keeps what it could not
    send, and sends it once the server answers again, here during training or at its end."""
    params_file = server_params(make_params, tmp_path / "run", server)
    training = start_training(train_command(params_file), env=PATIENT)
    kill_at_first_checkpoint(training, server, tmp_path / "run" / "checkpoints", "run-*/step-*.ckpt")
    training.wait_until(lambda: AWAY in training.text(), "training warned that the server was gone")
    server.start()  # the same store and port
    assert training.finish() == 0, training.text()[-3000:]
    assert training.text().count(AWAY) == 1 and training.text().count(BACK) == 1, training.text()
    assert_complete_run(server, params_file, steps=20, eval_every=5)


def test_on_ray_rank_0_logs_into_the_drivers_run_and_keeps_its_metrics_while_the_server_is_away(
    server: MlflowServer, make_params, train_command, start_training, tmp_path: Path
) -> None:
    """Rank 0 logs from its worker into the run the driver created; with the server killed after the
    first Ray checkpoint it warns once and trains on, and the run ends complete once the server is
    back (what rank 0 could not send before it finished, the driver sends). No Ray process is left.
    (The plain and the outage path in one run: each Ray start costs ~30 s here.)"""
    ray = {"use_ray": True, "num_workers": 2}
    params_file = server_params(make_params, tmp_path / "run", server, ray=ray, batch_size=2)
    training = start_training(train_command(params_file), env=PATIENT)
    pattern = "ray/train-*/checkpoint_*/state.ckpt"
    kill_at_first_checkpoint(training, server, tmp_path / "run" / "checkpoints", pattern)
    training.wait_until(lambda: AWAY in training.text(), "rank 0 warned that the server was gone")
    server.start()
    assert training.finish() == 0, training.text()[-3000:]
    assert training.text().count(AWAY) == 1, training.text()
    assert_complete_run(server, params_file, steps=20, eval_every=5)
    assert ray_processes() == []


def test_a_server_gone_for_good_fails_the_stage_in_one_line_after_the_outputs_are_written(
    server: MlflowServer, make_params, train_command, start_training, tmp_path: Path
) -> None:
    """The model, checkpoints and metrics.json are written, the stage exits 2 with one line naming the
    server; once it is back, the same command resumes from the last checkpoint and completes the run."""
    params_file = server_params(make_params, tmp_path / "run", server)
    checkpoints = tmp_path / "run" / "checkpoints"
    training = start_training(train_command(params_file))
    kill_at_first_checkpoint(training, server, checkpoints, "run-*/step-*.ckpt")
    assert training.finish() == 2, training.text()[-3000:]
    last = training.text().strip().splitlines()[-1]
    assert last.startswith(f"error: mlflow.tracking_uri: cannot reach the MLflow server {server.uri} ("), last
    assert last.endswith(
        "); the model, metrics.json and checkpoints are written; start it, then run the same command (or dvc "
        "repro) again: it resumes from the last checkpoint and completes the MLflow run"
    ), last
    assert "Traceback" not in training.text()
    assert training.text().count(AWAY) == 1
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 20
    assert [p.name for p in sorted(checkpoints.glob("run-*/*.ckpt"))] == [
        "step-000000010.ckpt",
        "step-000000020.ckpt",
    ]

    server.start()
    again = train(train_command(params_file), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing MLflow run" in again.stderr
    assert_complete_run(server, params_file, steps=20, eval_every=5)

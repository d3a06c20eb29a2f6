"""Ray Train beyond the local cluster the stage starts: a running cluster, several nodes, failures,
and resuming on another number of workers.

Every run trains the same 40 steps of the tiny model with a global batch of 4 windows and
checkpoints every 10 steps. The reference is the uninterrupted run on the local 2-worker cluster;
runs with the same 2 x 2 split must match it to float rounding of the same operations (1e-6), runs
that resume with another split (1 x 4) to the DDP tolerance: the same gradients, summed in another
order. Each test starts its own cluster and leaves no Ray process behind (the suite checks).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from src.train.backends.ray_train import RAY_SNAPSHOT

pytestmark = pytest.mark.slow

STEPS = {"max_steps": 40, "eval_every": 10, "checkpoint_every": 10}
EXACT = 1e-6
DDP = 1e-4
TWO_WORKERS = {"use_ray": True, "num_workers": 2}


def hang_after_first_checkpoint() -> dict[str, str]:
    """The environment in which the workers hang once they have persisted the step-10 checkpoint
    (src.utils.faults): a test that stops the run or fails a worker there finds that checkpoint
    the newest, however fast the workers train (they had finished all 40 steps before a Ctrl-C
    landed), and a restarted group, which starts after step 10, trains on. Read at the call: the
    session marks its processes through the environment (tests/conftest.py)."""
    return {**os.environ, "LMPIPE_HANG_AT": "train.checkpoint-10-persisted"}


HEAD_OPTIONS = ("--include-dashboard=false", "--disable-usage-stats")


def outputs(folder: Path, curve: Callable[[Path, str], list[float]]) -> dict:
    return {
        "metrics": json.loads((folder / "metrics.json").read_text()),
        "train_loss": curve(folder / "plots" / "train_loss.csv", "train_loss"),
        "val_loss": curve(folder / "plots" / "val_loss.csv", "val_loss"),
    }


@pytest.fixture(scope="module")
def reference(make_params, train_command, curve, tmp_path_factory) -> dict:
    """The uninterrupted run on the local 2-worker cluster the stage starts and stops itself."""
    folder = tmp_path_factory.mktemp("reference")
    params = make_params(folder, batch_size=2, ray=TWO_WORKERS, **STEPS)
    result = subprocess.run(train_command(params), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return outputs(folder, curve)


@pytest.fixture
def same_training(reference: dict, curve, mlflow_runs, metric_history) -> Callable[[Path, float], None]:
    """``same_training(folder, tolerance)``: the run in ``folder`` ended as the reference did, and its
    MLflow store holds one finished run with every step's loss once."""

    def check(folder: Path, tolerance: float) -> None:
        got = outputs(folder, curve)
        for key in ("train_loss", "val_loss"):
            assert got["metrics"][key] == pytest.approx(reference["metrics"][key], abs=tolerance), key
            assert got[key] == pytest.approx(reference[key], abs=tolerance), key
        assert got["metrics"]["tokens_seen"] == reference["metrics"]["tokens_seen"]
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        (run,) = mlflow_runs(uri)
        assert run.info.status == "FINISHED"
        steps = [step for step, _ in metric_history(uri, run.info.run_id)]
        assert steps == list(range(1, STEPS["max_steps"] + 1))  # each once, none lost to the failure
        assert (folder / "model" / "model.safetensors").is_file()

    return check


def start_training(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def wait_for_checkpoint(folder: Path, process: subprocess.Popen, log: Path) -> Path:
    """The first checkpoint (step 10) of the run training into ``folder``, once Ray Train has
    registered it: a checkpoint still being uploaded is not one a restart can start from."""
    deadline = time.monotonic() + 400
    while True:
        found = sorted(folder.glob(f"checkpoints/ray/train-*/{RAY_SNAPSHOT}"))
        if found and '"checkpoint_000000010"' in found[0].read_text():
            return found[0].parent / "checkpoint_000000010"
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no Ray checkpoint appeared"
        time.sleep(0.2)


RESUMED = r"resume: from the Ray checkpoint at step (\d+)"
RESTARTED = r"restarting from step (\d+) \(1 of 1 retries\)"
KEPT = r"the checkpoint at step (\d+) is kept: run the same command again to resume"


def checkpoint_step(pattern: str, text: str) -> int:
    """The checkpoint step that ``pattern`` finds in ``text`` (10 where the workers hang there:
    ``hang_after_first_checkpoint``)."""
    found = re.search(pattern, text)
    assert found, text[-3000:]
    return int(found.group(1))


def finish(process: subprocess.Popen, log: Path) -> str:
    process.wait(timeout=600)
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    return text


def train_workers(server_processes) -> list[int]:
    """pids of this session's Ray Train worker processes (the actors that run the training loop)."""
    return sorted(pid for pid, command in server_processes().items() if "RayTrainWorker" in command)


def kill_a_worker(server_processes) -> None:
    deadline = time.monotonic() + 60
    while len(workers := train_workers(server_processes)) < 2:
        assert time.monotonic() < deadline, "no Ray Train worker process found"
        time.sleep(0.2)
    os.kill(workers[-1], signal.SIGKILL)


def stop(pids: set[int]) -> None:
    """Stop the processes of a cluster a test started, as ``ray stop`` would, but only those."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_a_cluster_started_with_ray_start_is_used_and_left_running(
    reference, same_training, make_params, train_command, tool_env, server_processes, free_port, tmp_path
) -> None:
    """``ray start --head`` in its own process, ``ray.address: auto``: the pipeline trains there as
    on its own cluster, with the same numbers, and leaves the cluster running. (The cluster, the
    pipeline and ``ray status`` agree on no token authentication, whatever ``~/.ray`` holds.)"""
    env = tool_env({"RAY_AUTH_MODE": "disabled"})
    before = set(server_processes())
    head = subprocess.run(
        ["ray", "start", "--head", f"--port={free_port}", "--num-cpus=2", *HEAD_OPTIONS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    cluster = set(server_processes()) - before
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        params = make_params(tmp_path, batch_size=2, ray={**TWO_WORKERS, "address": "auto"}, **STEPS)
        result = subprocess.run(train_command(params), env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        same_training(tmp_path, EXACT)
        alive = {pid for pid, command in server_processes().items() if "gcs_server" in command}
        assert alive & cluster, "the pipeline stopped a cluster it did not start"
        status = subprocess.run(
            ["ray", "status", f"--address=127.0.0.1:{free_port}"], env=env, capture_output=True
        )
        assert status.returncode == 0, status.stderr[-2000:]
    finally:
        stop(set(server_processes()) - before)


def test_a_two_node_cluster_loses_a_node_and_training_goes_on(
    reference, same_training, make_params, train_command, tmp_path
) -> None:
    """Two nodes of one CPU each (Ray's own ``Cluster``), one worker on each; after the first
    checkpoint one node goes and a new one joins, as a cluster's autoscaler would bring one: the
    group restarts from the checkpoint and ends as the uninterrupted run, saying what happened."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
        shutdown_at_exit=False,
    )
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray = {**TWO_WORKERS, "address": cluster.address, "max_failures": 1}
        params = make_params(tmp_path, batch_size=2, ray=ray, **STEPS)
        log = tmp_path / "train.log"
        process = start_training(train_command(params), log, env=hang_after_first_checkpoint())
        wait_for_checkpoint(tmp_path, process, log)
        cluster.remove_node(node)
        cluster.add_node(num_cpus=1)
        text = finish(process, log)
    finally:
        cluster.shutdown()
    assert checkpoint_step(RESTARTED, text) == 10
    nodes = {line.rsplit(" on node ", 1)[1].split()[0] for line in text.splitlines() if " on node " in line}
    assert len(nodes) >= 2, "the two workers did not run on two nodes"
    same_training(tmp_path, EXACT)


def test_a_killed_worker_is_restarted_from_the_newest_checkpoint(
    reference, same_training, make_params, train_command, server_processes, tmp_path
) -> None:
    """``ray.max_failures: 1`` on the local cluster: SIGKILL one worker after the first checkpoint."""
    params = make_params(tmp_path, batch_size=2, ray={**TWO_WORKERS, "max_failures": 1}, **STEPS)
    log = tmp_path / "train.log"
    process = start_training(train_command(params), log, env=hang_after_first_checkpoint())
    wait_for_checkpoint(tmp_path, process, log)
    kill_a_worker(server_processes)
    text = finish(process, log)
    line = next(line for line in text.splitlines() if "worker failed at step" in line)
    failed_at = int(line.split("worker failed at step ")[1].split(";")[0])
    assert failed_at >= checkpoint_step(RESTARTED, line) == 10
    same_training(tmp_path, EXACT)


def test_without_retries_the_stage_stops_and_resumes_on_one_worker(
    reference, same_training, make_params, train_command, server_processes, tmp_path
) -> None:
    """``ray.max_failures: 0``: a killed worker stops the run with one line, the checkpoint stays, and
    a run on 1 worker with twice the batch (the same global batch) continues it: elastic resume."""
    params = make_params(tmp_path, batch_size=2, ray=TWO_WORKERS, **STEPS)
    log = tmp_path / "train.log"
    process = start_training(train_command(params), log, env=hang_after_first_checkpoint())
    checkpoint = wait_for_checkpoint(tmp_path, process, log)
    kill_a_worker(server_processes)
    process.wait(timeout=300)
    assert process.returncode == 2
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("error: ray: training failed at step "), last
    assert "WorkerHealthCheckFailedError" in last  # the worker that died, not the peer that lost it
    assert checkpoint_step(KEPT, last) == 10
    assert (checkpoint / "state.ckpt").is_file()

    one = make_params(tmp_path, batch_size=4, ray={**TWO_WORKERS, "num_workers": 1}, **STEPS)
    again = subprocess.run(train_command(one), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert checkpoint_step(RESUMED, again.stderr) == 10  # and on to step 40 on one worker
    same_training(tmp_path, DDP)


def test_a_one_worker_checkpoint_resumes_on_two_workers(
    reference, same_training, make_params, train_command, tmp_path
) -> None:
    """The other way round: 1 worker x 4 windows, Ctrl-C after the first checkpoint, then 2 x 2."""
    params = make_params(tmp_path, batch_size=4, ray={**TWO_WORKERS, "num_workers": 1}, **STEPS)
    log = tmp_path / "train.log"
    process = start_training(train_command(params), log, env=hang_after_first_checkpoint())
    wait_for_checkpoint(tmp_path, process, log)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    assert process.returncode != 0, "the run finished before it could be interrupted"

    two = make_params(tmp_path, batch_size=2, ray=TWO_WORKERS, **STEPS)
    again = subprocess.run(train_command(two), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert checkpoint_step(RESUMED, again.stderr) == 10  # and on to step 40 on two workers
    same_training(tmp_path, DDP)

"""Ray Train with 2 CPU workers on a tiny model: same outputs and curve as one process, resume, cleanup."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from src.config import load_params
from src.errors import ConfigError
from src.paths import PROJECT_ROOT
from src.train.backends.ray_cluster import short_temp_dir
from src.train.backends.ray_train import (
    RAY_SNAPSHOT,
    check_strategy,
    failure_line,
    prune_unregistered,
    run_name,
    storage_location,
)
from src.train.backends.ray_worker import STRATEGIES, TrainingProgress, match_cpu_threads_to_ray, restart_line
from src.train.checkpoints import DamagedCheckpointError, verified_bytes
from src.train.fit import fit

#: The 2-worker loss of a global batch equals the one-process loss up to float rounding
#: (measured: about 1e-6 after 40 steps); the curves drift apart by less than this.
CURVE_TOLERANCE = 1e-4

PER_WORKER_BATCH = 2
WORKERS = 2


def ray_processes(project: Path) -> list[str]:
    """Command lines of processes that belong to a Ray cluster started from ``project``."""
    marker = str(short_temp_dir(project))
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text or (str(project / "tmp" / "ray") in text):
            found.append(text)
    return found


@pytest.mark.slow
def verifies(checkpoint: Path) -> bool:
    """Whether Ray has copied the whole checkpoint into storage: its bytes match its digest."""
    try:
        verified_bytes(checkpoint)
    except (DamagedCheckpointError, OSError):
        return False
    return True


def test_two_workers_interrupted_and_resumed_match_one_process_and_leave_nothing_running(
    metric_history, make_params, train_command, curve, mlflow_runs, tmp_path: Path
) -> None:
    """One 2-worker run (a scheduler's SIGTERM after its first Ray checkpoint, then run again; Ctrl-C
    takes the same path) against one process
    with the same global batch: the same curves, outputs and MLflow run, and no Ray process left.
    (One Ray run covers both the plain and the resumed path: each Ray start costs ~30 s here.)"""
    tokens = sorted(Path.home().glob(".ray/auth_token*"))  # a user's own, if any
    settings = {"max_steps": 60, "eval_every": 10, "checkpoint_every": 20}
    ray = {"use_ray": True, "num_workers": WORKERS}
    on_ray = make_params(tmp_path / "ray", batch_size=PER_WORKER_BATCH, ray=ray, **settings)
    process = subprocess.Popen(
        train_command(on_ray), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    storage = tmp_path / "ray" / "checkpoints" / "ray"
    deadline = time.monotonic() + 400
    while not any(map(verifies, storage.glob("train-*/checkpoint_*/state.ckpt"))) and process.poll() is None:
        assert time.monotonic() < deadline, "no Ray checkpoint appeared"  # whole, with its digest
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # as a scheduler ends a job (Ctrl-C takes the same path)
    process.wait(timeout=120)
    assert process.returncode != 0, "the run finished before it could be interrupted"
    assert not (tmp_path / "ray" / "metrics.json").exists()
    assert ray_processes(PROJECT_ROOT) == []  # the local cluster stops with the driver

    again = subprocess.run(train_command(on_ray), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [line for line in again.stderr.splitlines() if "resume" in line or "checkpoint" in line]
    assert any("resume: from the Ray checkpoint at step" in line for line in resumed), resumed
    # Each worker runs the one CPU thread Ray granted it, not one per core of the machine.
    ranks = [line for line in again.stderr.splitlines() if " on node " in line]
    assert ranks and all("(1 CPU threads)" in line for line in ranks), ranks

    single = make_params(tmp_path / "single", batch_size=PER_WORKER_BATCH * WORKERS, **settings)
    fit(load_params(single), root=tmp_path)
    metrics = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    expected = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["steps"] == 60
    assert metrics["tokens_seen"] == expected["tokens_seen"]  # the same global batch
    for name, column in (("train_loss.csv", "train_loss"), ("val_loss.csv", "val_loss")):
        assert curve(tmp_path / "ray" / "plots" / name, column) == pytest.approx(
            curve(tmp_path / "single" / "plots" / name, column), abs=CURVE_TOLERANCE
        )
    assert (tmp_path / "ray" / "model" / "model.safetensors").is_file()

    uri = f"sqlite:///{tmp_path / 'ray' / 'mlflow.db'}"
    (run,) = mlflow_runs(uri)  # the driver's run, continued after the interruption, rank 0 logging
    assert run.info.status == "FINISHED"
    assert run.data.params["ray.num_workers"] == str(WORKERS)
    assert [step for step, _ in metric_history(uri, run.info.run_id)] == list(range(1, 61))  # once each
    assert run.data.metrics["val_loss"] == pytest.approx(metrics["val_loss"])
    checkpoints = sorted(storage.glob("train-*/checkpoint_0*"))
    # train.keep_checkpoints (2) per configuration, across the interrupted and the resumed Ray run.
    assert [p.name for p in checkpoints] == ["checkpoint_000000040", "checkpoint_000000060"]
    assert ray_processes(PROJECT_ROOT) == []
    assert sorted(Path.home().glob(".ray/auth_token*")) == tokens  # none written into the home folder


def test_a_strategy_without_its_package_is_one_clear_line(make_params, train_command, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ray.strategy: deepspeed needs the deepspeed package"):
        check_strategy("deepspeed")
    check_strategy("ddp")
    params = make_params(tmp_path / "bad", ray={"use_ray": True, "strategy": "deepspeed"})
    result = subprocess.run(train_command(params), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ray.strategy: deepspeed needs")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()  # refused before any cluster or training
    bad = make_params(tmp_path / "unknown", ray={"strategy": "horovod"})
    with pytest.raises(ConfigError, match=r"ray.strategy: expected one of 'ddp', 'fsdp', 'deepspeed'"):
        load_params(bad)


def test_fsdp_without_gpu_workers_is_refused_before_any_cluster_starts(
    make_params, train_command, tmp_path: Path
) -> None:
    """Lightning's FSDP needs an accelerator: on CPU workers it failed at step 0, after the cluster
    and the worker group had started (minutes on a loaded machine)."""
    with pytest.raises(ConfigError, match=r"^ray.strategy: fsdp runs on GPU workers only"):
        check_strategy("fsdp", use_gpu=False)
    check_strategy("fsdp", use_gpu=True)
    params = make_params(tmp_path / "fsdp", ray={"use_ray": True, "strategy": "fsdp"})
    result = subprocess.run(train_command(params), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: ray.strategy: fsdp runs on GPU workers only, and ray.use_gpu is false; set ray.use_gpu: "
        "true (on a machine or cluster with GPUs), or ray.strategy: ddp on CPUs"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "fsdp" / "checkpoints").exists()
    assert ray_processes(PROJECT_ROOT) == []


@pytest.mark.parametrize(
    ("name", "lightning_class"),
    [("ddp", "DDPStrategy"), ("fsdp", "FSDPStrategy"), ("deepspeed", "DeepSpeedStrategy")],
)
def test_each_ray_strategy_is_ray_trains_wrapper_of_the_lightning_strategy_it_names(
    name: str, lightning_class: str
) -> None:
    """``ray.strategy`` (the workflow guide's ``strategy:``) picks Ray Train's subclass of that Lightning
    strategy; ddp and fsdp build without an accelerator (fsdp's device is checked when it starts)."""
    import lightning.pytorch.strategies as lightning_strategies
    import ray.train.lightning as ray_lightning

    strategy = getattr(ray_lightning, STRATEGIES[name])
    assert issubclass(strategy, getattr(lightning_strategies, lightning_class))
    if name != "deepspeed":  # needs the deepspeed package, which is not a requirement
        assert isinstance(strategy(), getattr(lightning_strategies, lightning_class))


def test_a_finished_run_keeps_its_newest_checkpoints_and_those_ray_records(tmp_path: Path) -> None:
    """Ray prunes only what it registered: a checkpoint an interrupted run uploaded just before it was
    stopped stays beside the resumed run's; the project removes it, never one Ray's record names
    (Ray would refuse to start the next run of the configuration without it)."""
    for step in (10, 20, 40, 60):
        (tmp_path / f"checkpoint_{step:09d}").mkdir()
    (tmp_path / "checkpoint_000000060" / "state.ckpt").write_bytes(b"state")
    (tmp_path / RAY_SNAPSHOT).write_text(
        json.dumps({"checkpoint_results": [{"checkpoint_dir_name": "checkpoint_000000010"}]})
    )
    removed = prune_unregistered(tmp_path, keep=2)
    assert [p.name for p in removed] == ["checkpoint_000000020"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_000000010",
        "checkpoint_000000040",
        "checkpoint_000000060",
        RAY_SNAPSHOT,
    ]
    assert prune_unregistered(tmp_path / "missing", keep=2) == []


def test_a_worker_runs_the_cpu_threads_ray_granted_it() -> None:
    """Ray sets OMP_NUM_THREADS to the worker's CPUs once PyTorch has already sized its threads to
    the machine: the worker applies it, and leaves PyTorch alone where nothing set it."""
    before = torch.get_num_threads()
    try:
        assert match_cpu_threads_to_ray({"OMP_NUM_THREADS": "1"}) == 1 == torch.get_num_threads()
        torch.set_num_threads(2)
        assert match_cpu_threads_to_ray({}) == 2 == torch.get_num_threads()
        for nested_or_bad in ("4,2", "0", "many"):  # OpenMP's own forms, or nonsense: left alone
            assert match_cpu_threads_to_ray({"OMP_NUM_THREADS": nested_or_bad}) == 2
    finally:
        torch.set_num_threads(before)


def test_storage_defaults_to_the_checkpoint_dir(tiny_params) -> None:
    root = Path("/project")
    assert storage_location(tiny_params, root) == str(Path(tiny_params.paths.checkpoint_dir) / "ray")
    remote = dataclasses.replace(
        tiny_params, ray=dataclasses.replace(tiny_params.ray, storage_path="s3://b/x")
    )
    assert storage_location(remote, root) == "s3://b/x"
    local = dataclasses.replace(
        tiny_params, ray=dataclasses.replace(tiny_params.ray, storage_path="ray_runs")
    )
    assert storage_location(local, root) == "/project/ray_runs"


def test_one_ray_run_per_set_of_settings() -> None:
    assert run_name("0123456789abcdef" + "f" * 48) == "train-0123456789abcdef"
    assert run_name("a" * 64) != run_name("b" * 64)


def test_a_failed_worker_is_reported_by_its_first_rank_in_one_line() -> None:
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    failures = {1: ValueError("bad shape\nmore detail"), 0: RuntimeError("boom")}
    assert failure_line(WorkerGroupError("Training failed", failures)) == "rank 0: RuntimeError: boom"
    one = WorkerGroupError("Training failed", {3: ValueError("bad shape\nmore detail")})
    assert failure_line(one) == "rank 3: ValueError: bad shape"
    # A worker that died is the cause; the peer whose collective it broke only reports that.
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    died = WorkerHealthCheckFailedError("A worker health check failed.", RuntimeError("actor died"))
    broken = {0: RuntimeError("Read error: Connection reset by peer"), 1: died}
    assert failure_line(WorkerGroupError("Training failed", broken)).startswith(
        "rank 1: WorkerHealthCheckFailedError: A worker health check failed."
    )
    # Without worker failures, the last line of the error is the cause.
    assert (
        failure_line(ControllerError(RuntimeError("the controller\nlost its workers  ")))
        == "lost its workers"
    )
    assert failure_line(RuntimeError("")) == "RuntimeError"


def test_a_restarted_group_says_where_it_failed_and_where_it_goes_on() -> None:
    progress = TrainingProgress()
    assert progress.group_started() == (0, 0)  # the first start: nothing to say
    progress.advanced(13)
    assert progress.reached() == 13
    assert progress.group_started() == (13, 1)
    assert restart_line(13, 10, 1, 1) == "worker failed at step 13; restarting from step 10 (1 of 1 retries)"
    assert restart_line(7, 0, 2, -1) == (
        "worker failed at step 7; restarting from the start (no checkpoint yet) (2 of unlimited retries)"
    )

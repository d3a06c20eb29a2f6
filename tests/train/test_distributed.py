"""Ray Train with 2 CPU workers on a tiny model: same outputs and curve as one process, resume, cleanup."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src.config import load_params
from src.errors import ConfigError
from src.paths import PROJECT_ROOT
from src.train.distributed import check_strategy, short_temp_dir
from src.train.fit import fit

pytestmark = pytest.mark.slow

#: The 2-worker loss of a global batch equals the one-process loss up to float rounding
#: (measured: about 1e-6 after 40 steps); the curves drift apart by less than this.
CURVE_TOLERANCE = 1e-4

PER_WORKER_BATCH = 2
WORKERS = 2


def curve(folder: Path, column: str = "train_loss") -> list[float]:
    name = {"train_loss": "train_loss.csv", "val_loss": "val_loss.csv"}[column]
    with open(folder / "plots" / name) as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


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


def runs(folder: Path) -> list:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lmpipe")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_two_workers_match_one_process_and_leave_nothing_running(
    prepared, params_variant, train_command, tmp_path: Path
) -> None:
    single = params_variant(tmp_path / "single", batch_size=PER_WORKER_BATCH * WORKERS)
    fit(load_params(single), root=tmp_path)
    on_ray = params_variant(
        tmp_path / "ray",
        batch_size=PER_WORKER_BATCH,
        ray={"use_ray": True, "num_workers": WORKERS},
    )
    result = subprocess.run(train_command(on_ray), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    expected = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["steps"] == 20
    assert metrics["tokens_seen"] == expected["tokens_seen"]  # the same global batch
    assert curve(tmp_path / "ray") == pytest.approx(curve(tmp_path / "single"), abs=CURVE_TOLERANCE)
    assert curve(tmp_path / "ray", "val_loss") == pytest.approx(
        curve(tmp_path / "single", "val_loss"), abs=CURVE_TOLERANCE
    )
    assert (tmp_path / "ray" / "model" / "model.safetensors").is_file()

    (run,) = runs(tmp_path / "ray")  # the driver's run, logged into by rank 0 only
    assert run.info.status == "FINISHED"
    assert run.data.params["ray.num_workers"] == str(WORKERS)
    history = MlflowClient(f"sqlite:///{tmp_path / 'ray' / 'mlflow.db'}").get_metric_history(
        run.info.run_id, "train_loss"
    )
    assert sorted(m.step for m in history if m.step < 20) == list(range(1, 20))  # once per step
    assert run.data.metrics["val_loss"] == pytest.approx(metrics["val_loss"])
    checkpoints = sorted((tmp_path / "ray" / "checkpoints" / "ray").glob("train-*/checkpoint_0*"))
    assert [p.name for p in checkpoints] == ["checkpoint_000000010", "checkpoint_000000020"]
    assert ray_processes(PROJECT_ROOT) == []
    assert not list(Path.home().glob(".ray/auth_token*"))


def test_interrupted_ray_run_resumes_from_its_ray_checkpoint(
    prepared, params_variant, train_command, tmp_path: Path
) -> None:
    settings = {"batch_size": PER_WORKER_BATCH, "max_steps": 200, "eval_every": 10, "checkpoint_every": 20}
    params = params_variant(tmp_path / "ray", ray={"use_ray": True, "num_workers": WORKERS}, **settings)
    process = subprocess.Popen(
        train_command(params), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    storage = tmp_path / "ray" / "checkpoints" / "ray"
    deadline = time.monotonic() + 400
    while not list(storage.glob("train-*/checkpoint_*/state.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline, "no Ray checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    process.wait(timeout=120)
    assert process.returncode != 0, "the run finished before it could be interrupted"
    assert not (tmp_path / "ray" / "metrics.json").exists()

    again = subprocess.run(train_command(params), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resume: from the Ray checkpoint at step" in again.stderr
    single = params_variant(tmp_path / "single", **{**settings, "batch_size": PER_WORKER_BATCH * WORKERS})
    fit(load_params(single), root=tmp_path)
    assert curve(tmp_path / "ray") == pytest.approx(curve(tmp_path / "single"), abs=CURVE_TOLERANCE)
    (run,) = runs(tmp_path / "ray")  # the resumed training continued the interrupted run
    assert run.info.status == "FINISHED"
    assert ray_processes(PROJECT_ROOT) == []


def test_a_strategy_without_its_package_is_one_clear_line(
    params_variant, train_command, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^ray.strategy: deepspeed needs the deepspeed package"):
        check_strategy("deepspeed")
    params = params_variant(tmp_path / "bad", ray={"use_ray": True, "strategy": "deepspeed"})
    result = subprocess.run(train_command(params), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ray.strategy: deepspeed needs")
    bad = params_variant(tmp_path / "unknown", ray={"strategy": "horovod"})
    with pytest.raises(ConfigError, match=r"ray.strategy: expected one of 'ddp', 'fsdp', 'deepspeed'"):
        load_params(bad)


def test_a_worker_group_larger_than_the_local_cluster_is_refused() -> None:
    from src.config import RayConfig
    from src.train.distributed import _check_resources

    _check_resources(RayConfig(num_workers=2), {"CPU": 2.0})
    with pytest.raises(
        ConfigError, match=r"^ray.num_workers: 4 workers x 1 CPU need 4 CPU, this machine has 2"
    ):
        _check_resources(RayConfig(num_workers=4), {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"1 GPU need 1 GPU, this machine has 0"):
        _check_resources(RayConfig(num_workers=1, use_gpu=True), {"CPU": 2.0})


def test_ray_temp_dir_stays_in_the_project_behind_a_short_link(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    link = short_temp_dir(deep)
    assert len(str(link)) <= 43  # Ray's socket paths must stay below 108 bytes
    assert link.resolve() == (deep / "tmp" / "ray").resolve()
    assert short_temp_dir(deep) == link  # the same link next time
    link.unlink()


def test_storage_defaults_to_the_checkpoint_dir(tiny_params) -> None:
    import dataclasses

    from src.train.distributed import storage_location

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

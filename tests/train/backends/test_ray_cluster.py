"""The Ray cluster a run uses: its temp dir stays in the project, it refuses what it cannot place,
and workers get only the environment they need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.config import RayConfig
from src.errors import ConfigError
from src.paths import PROJECT_ROOT
from src.train.backends.ray_cluster import check_resources, short_temp_dir, worker_environment


def test_a_worker_group_larger_than_the_local_cluster_is_refused() -> None:
    check_resources(RayConfig(num_workers=2), {"CPU": 2.0})
    with pytest.raises(
        ConfigError, match=r"^ray.num_workers: 4 workers x 1 CPU need 4 CPU, this machine has 2"
    ):
        check_resources(RayConfig(num_workers=4), {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"1 GPU need 1 GPU, this machine has 0"):
        check_resources(RayConfig(num_workers=1, use_gpu=True), {"CPU": 2.0})
    check_resources(RayConfig(num_workers=3, resources_per_worker={"CPU": 0.5}), {"CPU": 2.0})


def test_before_the_cluster_starts_only_cores_and_gpus_are_checked() -> None:
    """Other resources (memory, custom ones) only Ray can count: they wait for the cluster."""
    custom = RayConfig(num_workers=2, resources_per_worker={"CPU": 1.0, "memory": 1e9})
    check_resources(custom, {"CPU": 2.0, "GPU": 0.0}, only=("CPU", "GPU"))
    with pytest.raises(ConfigError, match=r"^ray.num_workers: 3 workers x 1 CPU need 3 CPU"):
        check_resources(RayConfig(num_workers=3), {"CPU": 2.0, "GPU": 0.0}, only=("CPU", "GPU"))


def test_ray_temp_dir_stays_in_the_project_behind_a_short_link(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    link = short_temp_dir(deep)
    try:
        assert len(str(link)) <= 43  # Ray's socket paths must stay below 108 bytes
        assert link.resolve() == (deep / "tmp" / "ray").resolve()
        assert short_temp_dir(deep) == link  # the same link next time
    finally:
        link.unlink()
    short = Path("/tmp") / "lmpipe-short"
    try:
        assert short_temp_dir(short) == short / "tmp" / "ray"  # short enough: no link
    finally:
        for folder in (short / "tmp" / "ray", short / "tmp", short):
            folder.rmdir()


def test_workers_get_the_code_and_the_libraries_settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-token")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "ml-token")
    monkeypatch.setenv("SOME_API_TOKEN", "secret-value-123")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("LMPIPE_HANG_AT", "train.checkpoint-10-persisted")
    monkeypatch.setenv("LMPIPE_TEST_SESSION", "123-abc")
    env = worker_environment()
    assert env["LMPIPE_HANG_AT"] == "train.checkpoint-10-persisted"  # the fault injection
    assert "LMPIPE_TEST_SESSION" not in env  # not the project's other variables
    assert env["HF_TOKEN"] == "hf-token" and env["MLFLOW_TRACKING_TOKEN"] == "ml-token"
    assert "SOME_API_TOKEN" not in env and "secret-value-123" not in env.values()
    assert "PATH" not in env and "HOME" not in env
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PROJECT_ROOT), "/elsewhere"]

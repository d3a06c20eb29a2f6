"""The environment entry points set up: caches in the project, telemetry off, the user's values kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.utils.environment import configure_environment

NAMES = (
    "HF_HOME",
    "HF_HUB_DISABLE_TELEMETRY",
    "MLFLOW_DISABLE_TELEMETRY",
    "TORCHINDUCTOR_CACHE_DIR",
    "MKL_CBWR",
)


def test_defaults_point_into_the_project_and_the_users_values_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    configure_environment(model_cache=tmp_path / "model_cache", root=tmp_path)
    assert os.environ["HF_HOME"] == str(tmp_path / "model_cache")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "tmp" / "torchinductor")
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1" and os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"
    configure_environment(model_cache=tmp_path / "elsewhere", root=tmp_path)
    assert os.environ["HF_HOME"] == str(tmp_path / "model_cache")  # set once, then the value stands
    assert not (tmp_path / "model_cache").exists()  # nothing is created on disk

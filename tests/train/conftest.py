"""Fixtures shared by the training tests: prepared tiny data and params variants that write elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from src.paths import PROJECT_ROOT


@pytest.fixture
def prepared(tiny_params_file: Path, tiny_params):
    """Tiny params with the download and tokenize outputs in place."""
    from src.data.tokenize_corpus import tokenize_from_params
    from src.utils.download_datasets import download_all

    download_all(tiny_params, tiny_params.paths.raw_dir().parent)
    tokenize_from_params(tiny_params)
    return tiny_params


@pytest.fixture
def params_variant(tiny_params_file: Path) -> Callable[..., Path]:
    """``params_variant(folder, ray={...}, model={...}, **train)``: a params file like the tiny one
    whose outputs, checkpoints and MLflow store go into ``folder``."""

    def make(folder: Path, *, ray: dict | None = None, model: dict | None = None, **train: object) -> Path:
        params = yaml.safe_load(tiny_params_file.read_text())
        for key in ("model_dir", "checkpoint_dir", "metrics_file", "plots_dir"):
            params["paths"][key] = str(folder / Path(params["paths"][key]).name)
        params["mlflow"]["tracking_uri"] = f"sqlite:///{folder / 'mlflow.db'}"
        params["train"].update(train)
        params["model"].update(model or {})
        params["ray"].update(ray or {})
        folder.mkdir()
        path = folder / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    return make


@pytest.fixture
def train_command() -> Callable[[Path], list[str]]:
    """The command a user types to train with a params file: ``python src/train/train.py --params F``."""
    return lambda params: [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train" / "train.py"),
        "--params",
        str(params),
    ]

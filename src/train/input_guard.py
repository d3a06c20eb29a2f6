"""What the train stage checks again before it writes its outputs (see :mod:`src.input_guard`):
its params sections, its code and every tokenized file."""

from __future__ import annotations

from pathlib import Path

from src.config import Params
from src.input_guard import StageInputs, stage_files
from src.paths import resolve_path
from src.train.run_inputs import TRAIN_STAGE

#: The params of the train stage in ``dvc.yaml`` (tests/test_stage_deps.py checks they agree).
TRAIN_PARAMS = ("tokenize.datasets", "model", "train", "ray", "mlflow")


def train_inputs(params: Params, root: Path) -> StageInputs:
    """The train stage's params and dep files: its code and the tokenizer's token folders."""
    tokenized = resolve_path(params.paths.cache_dir, root) / "tokenized" / params.tokenize.tokenizer

    kept = "so none were written (its checkpoints are kept)"
    return StageInputs("train", TRAIN_PARAMS, lambda: stage_files(TRAIN_STAGE, [tokenized]), kept)

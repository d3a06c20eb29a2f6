"""What the evaluate stages check again at their end (see :mod:`src.input_guard`): the params
``dvc.yaml`` lists for each (tests/test_stage_deps.py checks they agree), their code and dep files."""

from __future__ import annotations

from pathlib import Path

from src.config import Params
from src.input_guard import StageInputs, stage_files
from src.paths import PROJECT_ROOT, resolve_path

#: ``eval_data@<dataset>``'s params in ``dvc.yaml``: what its questions are drawn with.
EVAL_DATA_PARAMS = ("evaluate.choices", "evaluate.seed")
#: The evaluate stage's params: its section, and the store its figures go to.
EVALUATE_PARAMS = ("evaluate", "tokenize.datasets", "mlflow")


def eval_data_inputs(params: Params, dataset: str, root: Path = PROJECT_ROOT) -> StageInputs:
    """``eval_data@<dataset>``: the dataset's export."""
    export = params.paths.raw_dir(root) / dataset
    return StageInputs(
        f"eval_data@{dataset}", EVAL_DATA_PARAMS, lambda: stage_files("stages/eval_data.py", [export])
    )


def evaluate_inputs(params: Params, root: Path = PROJECT_ROOT) -> StageInputs:
    """``evaluate``: the model folder, every source's task data and the folder of task files."""
    folders = [
        resolve_path(params.paths.model_dir, root),
        resolve_path(params.paths.cache_dir, root) / "eval",
        resolve_path(params.evaluate.include_path, root),
    ]
    return StageInputs("evaluate", EVALUATE_PARAMS, lambda: stage_files("stages/evaluate.py", folders))

"""The evaluate stage: run lm-evaluation-harness on the trained model and record what it found.

Everything a user can get wrong (a task name, a task file, the model folder, the task data) is
checked before the model is loaded; lm-eval is used as a library (``HFLM`` + ``simple_evaluate``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import Params
from src.errors import PipelineError, first_line
from src.evaluate.results import log_to_training_run, report, task_metrics, write_results
from src.evaluate.task_data import read_task_data
from src.evaluate.tasks import load_tasks, task_manager
from src.paths import PROJECT_ROOT, display_path, resolve_path

log = logging.getLogger(__name__)


#: Where a config names the model's context, in the order lm-eval's ``HFLM`` reads them, and its
#: default when none does.
_CONTEXT_KEYS, _DEFAULT_CONTEXT = ("n_positions", "max_position_embeddings", "n_ctx"), 2048


@dataclass(frozen=True)
class ModelFit:
    """What the task data must fit: the model folder's tokenizer and the model's context in tokens."""

    tokenizer: Any
    context: int

    def fits(self, text: str) -> bool:
        """Whether ``text`` is short enough to be scored as one continuation (lm-eval refuses longer)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) < self.context


def evaluation_device(params: Params) -> str:
    """``evaluate.device``; ``auto`` is the training's accelerator: CUDA unless it trains on the CPU
    or there is no GPU."""
    if params.evaluate.device != "auto":
        return params.evaluate.device
    import torch

    return "cuda" if params.train.accelerator != "cpu" and torch.cuda.is_available() else "cpu"


def check_model_folder(model_dir: Path) -> ModelFit:
    """The model folder holds a model and a tokenizer whose every id has a row in the model's
    embedding (a tokenizer of another model would index past it deep inside the first forward pass);
    its tokenizer and context."""
    from transformers import AutoConfig, AutoTokenizer

    shown = display_path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"{shown}: no trained model here; run `dvc repro train` first")
    try:
        config = AutoConfig.from_pretrained(str(model_dir)).get_text_config()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"{shown}: cannot load its model config or tokenizer ({first_line(error)}); "
            "run `dvc repro train` (or `dvc checkout`) to restore it"
        ) from None
    rows = getattr(config, "vocab_size", None)
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise PipelineError(
            f"{shown}: its tokenizer has {len(tokenizer):,} tokens but the model only {rows:,} embedding "
            "rows, so it is another model's tokenizer; put back the tokenizer the model was trained with "
            "(`dvc checkout`, or `dvc repro train`)"
        )
    context = next(
        (value for name in _CONTEXT_KEYS if isinstance(value := getattr(config, name, None), int)), None
    )
    return ModelFit(tokenizer, context or _DEFAULT_CONTEXT)


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation found: the metrics per task, and lm-eval's results file."""

    metrics: dict[str, dict[str, float]]
    results_file: Path


def evaluate(params: Params, root: Path = PROJECT_ROOT) -> Evaluation:
    """Check the inputs, run every task of ``evaluate.tasks`` and write the stage's outputs."""
    model_dir = resolve_path(params.paths.model_dir, root)
    model = check_model_folder(model_dir)
    for dataset in params.tokenize.datasets:
        read_task_data(params.paths.eval_data_dir(dataset, root), dataset)
    manager = task_manager(params, root)
    tasks = load_tasks(params, manager, root, fits=model.fits)
    start = time.perf_counter()
    results = run_harness(params, model_dir, list(tasks.values()), manager)
    log.info("evaluated %d tasks in %.1f s", len(tasks), time.perf_counter() - start)
    metrics = task_metrics(results, params)
    return Evaluation(metrics, write_results(params, root, results, metrics))


def record(params: Params, evaluation: Evaluation, root: Path = PROJECT_ROOT) -> None:
    """Log an evaluation to the MLflow run that trained the model and print its figures (after the
    stage's input check: a run whose inputs changed meanwhile is recorded nowhere)."""
    run_id = log_to_training_run(params, root, evaluation.metrics, evaluation.results_file)
    if run_id:
        log.info("logged the evaluation to MLflow run %s (the training's)", run_id)
    report(params, root, evaluation.metrics)


def run_harness(params: Params, model_dir: Path, tasks: list[Any], manager: Any) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` of the model folder on the loaded tasks."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    config = params.evaluate
    model = HFLM(pretrained=str(model_dir), batch_size=config.batch_size, device=evaluation_device(params))
    results = lm_eval.simple_evaluate(
        model=model,
        tasks=tasks,
        task_manager=manager,
        num_fewshot=config.num_fewshot,
        limit=config.limit,
        log_samples=False,
        bootstrap_iters=1000,
        random_seed=config.seed,
        numpy_random_seed=config.seed,
        torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
    )
    if results is None:
        raise PipelineError("evaluate: lm-eval returned no results")  # only on ranks > 0
    return dict(results)

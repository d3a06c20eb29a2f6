"""Which lm-eval tasks an evaluation runs: the built-in ones per validation source, and the user's
(lm-eval's registry or ``evaluate.include_path``), each checked before the model is loaded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.config import Params
from src.errors import ConfigError, PipelineError, first_line
from src.evaluate.task_data import CONTINUATION, DOCUMENTS
from src.paths import PROJECT_ROOT, display_path, resolve_path
from src.utils.hub import hub_is_reachable, use_offline_hub

log = logging.getLogger(__name__)

#: Chance accuracy of a built-in multiple-choice task is reported beside its accuracy.
CHANCE = "chance"


#: lm-eval's metrics of a rolling log-likelihood, and how each is aggregated over documents.
_PERPLEXITIES = (
    ("word_perplexity", "weighted_perplexity"),
    ("byte_perplexity", "weighted_perplexity"),
    ("bits_per_byte", "bits_per_byte"),
)


def builtin_task_name(dataset: str, task: str) -> str:
    """``<dataset>_<task>``: the lm-eval name of a built-in task for one validation source."""
    return f"{dataset}_{task}"


def _text(doc: dict) -> str:
    return doc["text"]


def _context(doc: dict) -> str:
    return doc["context"]


def _choices(doc: dict) -> list[str]:
    return doc["choices"]


def _label(doc: dict) -> int:
    return doc["label"]


def fitting_questions(fits: Callable[[str], bool]) -> Callable[[Any], Any]:
    """An lm-eval ``process_docs`` keeping the questions whose every ending fits the model's context
    (lm-eval stops at a longer one); how many were left out is logged."""

    def keep(dataset: Any) -> Any:
        kept = dataset.filter(lambda doc: all(fits(choice) for choice in doc["choices"]))
        if len(kept) < len(dataset):
            log.info(
                "continuation: %d of %d questions have an ending longer than the model's context; left out",
                len(dataset) - len(kept),
                len(dataset),
            )
        return kept

    return keep


def builtin_task_configs(
    params: Params, root: Path = PROJECT_ROOT, fits: Callable[[str], bool] | None = None
) -> list[dict[str, Any]]:
    """lm-eval task configs of the built-in tasks ``evaluate.tasks`` names, one per source.

    The fields are plain functions, not Jinja templates: a document's text goes to the model as it
    is (lm-eval renders a template's output again as text, which would trim it). ``fits`` says
    whether a continuation fits the model's context (:func:`fitting_questions`).
    """
    configs = []
    for dataset in params.tokenize.datasets:
        folder = params.paths.eval_data_dir(dataset, root)
        common = {"dataset_path": "json", "test_split": "test", "num_fewshot": 0, "metadata": {"version": 1}}
        if "bpb" in params.evaluate.tasks:
            configs.append(
                {
                    **common,
                    "task": builtin_task_name(dataset, "bpb"),
                    "dataset_kwargs": {"data_files": {"test": str(folder / DOCUMENTS)}},
                    "output_type": "loglikelihood_rolling",
                    "doc_to_text": "",
                    "doc_to_target": _text,
                    "metric_list": [
                        {"metric": name, "aggregation": aggregation, "higher_is_better": False}
                        for name, aggregation in _PERPLEXITIES
                    ],
                }
            )
        if "continuation" in params.evaluate.tasks:
            configs.append(
                {
                    **common,
                    "task": builtin_task_name(dataset, "continuation"),
                    "dataset_kwargs": {"data_files": {"test": str(folder / CONTINUATION)}},
                    "output_type": "multiple_choice",
                    "doc_to_text": _context,
                    "doc_to_target": _label,
                    "doc_to_choice": _choices,
                    **({"process_docs": fitting_questions(fits)} if fits is not None else {}),
                    "metric_list": [
                        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                    ],
                }
            )
    return configs


def include_folder(params: Params, root: Path = PROJECT_ROOT) -> Path | None:
    """``evaluate.include_path`` as a folder whose every task YAML parses; None when it holds none."""
    folder = resolve_path(params.evaluate.include_path, root)
    if not folder.exists() and not params.evaluate.hub_tasks():
        return None  # nothing of it is asked for (DVC refuses a missing dep folder in any case)
    if not folder.is_dir():
        raise ConfigError(
            f"evaluate.include_path: {display_path(folder)} is not a folder; give the folder of your "
            "lm-eval task YAML files"
        )
    from lm_eval.tasks._yaml_loader import load_yaml

    files = sorted(folder.rglob("*.yaml"))
    if not files:
        return None
    for path in files:
        try:
            config = load_yaml(path, resolve_func=False, recursive=True)
        except Exception as error:  # yaml.YAMLError, a missing include: lm-eval would skip it silently
            raise ConfigError(
                f"{display_path(path)}: not an lm-eval task file ({first_line(error)}); fix the YAML"
            ) from None
        if not isinstance(config, dict):
            raise ConfigError(f"{display_path(path)}: not an lm-eval task file (expected a mapping)")
    return folder


def task_manager(params: Params, root: Path = PROJECT_ROOT) -> Any:
    """An lm-eval ``TaskManager`` that knows every task ``evaluate.tasks`` names outside the built-in ones.

    lm-eval's own registry (about 15 s to index on 2 cores) is read only when a name is not in
    ``include_path``; an unknown name is one line.
    """
    from lm_eval.tasks import TaskManager

    wanted = params.evaluate.hub_tasks()
    include = include_folder(params, root)
    manager = TaskManager(include_defaults=False, include_path=str(include)) if include else None
    if wanted and (manager is None or any(name not in manager.all_tasks for name in wanted)):
        manager = TaskManager(include_path=str(include) if include else None)
    unknown = [name for name in wanted if manager is None or name not in manager.all_tasks]
    if unknown:
        where = f" nor a task of {display_path(include)}" if include else ""
        raise ConfigError(
            f"evaluate.tasks: {unknown[0]!r} is no lm-eval task{where}; list lm-eval's with "
            "`lm-eval ls tasks`, or give a folder of your own in evaluate.include_path"
        )
    return manager or TaskManager(include_defaults=False)  # the built-in tasks only: nothing to index


def load_tasks(
    params: Params, manager: Any, root: Path = PROJECT_ROOT, fits: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """Every task's lm-eval ``Task`` object, its data loaded: a task whose data cannot be had (no Hub)
    is one line naming it, before the model is loaded."""
    specs: list[Any] = [*builtin_task_configs(params, root, fits), *params.evaluate.hub_tasks()]
    if params.evaluate.hub_tasks() and not hub_is_reachable(params.download.hub_timeout_s):
        use_offline_hub()  # its datasets' caches only: fail at once, not after retries
    loaded: dict[str, Any] = {}
    for spec in specs:
        name = spec["task"] if isinstance(spec, dict) else spec
        try:
            result = manager.load([spec])
        except Exception as error:  # datasets' and the Hub's many errors: one line naming the task
            raise PipelineError(
                f"evaluate.tasks: the data of task {name!r} is not available ({first_line(error)}); run "
                "where the Hugging Face Hub is reachable (or its dataset is cached), or leave it out"
            ) from None
        loaded.update(result["tasks"])
    return loaded

"""The evaluate stage's outputs: lm-eval's results file, one DVC metric per (task, metric), and the
same figures on the MLflow run that trained the model."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from src.config import Params
from src.evaluate.tasks import CHANCE, builtin_task_name
from src.models.metrics import UNIGRAM_BPB, VAL_BPB, per_source
from src.paths import display_path, resolve_path
from src.train.mlflow_store import store_errors, store_lock, tracking_uri
from src.train.provenance import MODEL_DIGEST_TAG, weights_digest
from src.utils.files import atomic_directory, canonical_json, write_text_atomic

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
#: MLflow metric names of the evaluation: ``eval.<task>.<metric>``.
METRIC_PREFIX = "eval"


def task_metrics(results: dict[str, Any], params: Params) -> dict[str, dict[str, float]]:
    """lm-eval's per-task figures without their standard errors (``acc,none`` -> ``acc``; another
    filter than ``none`` is kept as ``acc.<filter>``), with chance beside each built-in multiple choice."""
    metrics: dict[str, dict[str, float]] = {}
    for task, figures in sorted(results.get("results", {}).items()):
        row = {}
        for key, value in figures.items():
            metric, _, kept_by = key.partition(",")
            if not kept_by or "_stderr" in metric or not isinstance(value, int | float):
                continue
            if isinstance(value, bool) or not math.isfinite(value):
                continue
            row[metric if kept_by == "none" else f"{metric}.{kept_by}"] = float(value)
        if row:
            metrics[task] = row
    for dataset in params.tokenize.datasets:
        name = builtin_task_name(dataset, "continuation")
        if name in metrics:
            metrics[name][CHANCE] = 1.0 / params.evaluate.choices
    return metrics


#: lm-eval's output fields that differ between two runs of the same inputs (clock, machine, checkout).
_UNREPEATABLE = frozenset(
    {
        "date",
        "start_time",
        "end_time",
        "total_evaluation_time_seconds",
        "pretty_env_info",
        "git_hash",
        "upper_git_hash",
    }
)
_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


def repeatable(value: Any, root: Path) -> Any:
    """lm-eval's output less what changes from run to run: timings, the machine's description, memory
    addresses in the names of functions, and the project's location in paths. The same inputs then
    give the same ``results.json`` bytes, as DVC expects of an output."""
    if isinstance(value, dict):
        return {k: repeatable(v, root) for k, v in value.items() if k not in _UNREPEATABLE}
    if isinstance(value, list | tuple):
        return [repeatable(v, root) for v in value]
    if isinstance(value, str):
        return _ADDRESS.sub(">", value).replace(f"{root}{os.sep}", "")
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return value


def write_results(params: Params, root: Path, results: dict[str, Any], metrics: dict) -> Path:
    """``<eval_dir>/results.json`` (lm-eval's output, :func:`repeatable`) and the metrics file, each
    replaced whole."""
    eval_dir = resolve_path(params.paths.eval_dir, root)
    with atomic_directory(eval_dir) as staging:
        text = json.dumps(
            repeatable(results, root), indent=2, sort_keys=True, default=str, ensure_ascii=False
        )
        (staging / RESULTS_FILE).write_text(text + "\n", encoding="utf-8")
    write_text_atomic(resolve_path(params.paths.eval_metrics_file, root), canonical_json(metrics))
    return eval_dir / RESULTS_FILE


def log_to_training_run(params: Params, root: Path, metrics: dict, results_file: Path) -> str | None:
    """Add the figures and the results file to the MLflow run that trained the model; its id, or None.

    The run is found by the digest of the model's weights, which the train stage tags it with, so an
    evaluation lands on the run whose training made these bytes (after ``dvc pull`` or a run-cache
    restore too). Its status is left as it is: a finished run stays FINISHED.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    digest = weights_digest(resolve_path(params.paths.model_dir, root))
    uri = tracking_uri(params.mlflow, root)
    with store_lock(uri), store_errors(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(params.mlflow.experiment_name)
        runs = (
            client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{digest}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if experiment is not None
            else []
        )
        if not runs:
            log.warning(
                "no run of MLflow experiment %r trained this model (weights sha256 %s): the evaluation "
                "is in %s only",
                params.mlflow.experiment_name,
                digest[:12],
                display_path(results_file, root),
            )
            return None
        run_id = runs[0].info.run_id
        stamp = runs[0].info.end_time or runs[0].info.start_time or 0
        batch = [
            Metric(f"{METRIC_PREFIX}.{task}.{metric}", value, stamp, 0)
            for task, row in metrics.items()
            for metric, value in row.items()
        ]
        client.log_batch(run_id, metrics=batch, tags=[RunTag("lmpipe.evaluate.tasks", ",".join(metrics))])
        client.log_artifact(run_id, str(results_file), "evaluation")
    return run_id


def report(params: Params, root: Path, metrics: dict) -> None:
    """The figures beside what they compare with: a bpb task beside the training's ``val_bpb`` and the
    unigram baseline (from the metrics file, when there), a multiple choice beside chance."""
    trained = _training_metrics(resolve_path(params.paths.metrics_file, root))
    single = len(params.tokenize.datasets) == 1

    def trained_figure(metric: str, dataset: str) -> float:
        found = trained.get(per_source(metric, dataset))
        return found if found is not None else trained.get(metric, math.nan) if single else math.nan

    for task, row in metrics.items():
        dataset = next((d for d in params.tokenize.datasets if task.startswith(f"{d}_")), None)
        if "bits_per_byte" in row and dataset is not None:
            log.info(
                "  %s: %.4f bits per byte (training's val_bpb %.4f, unigram baseline %.4f)",
                task,
                row["bits_per_byte"],
                trained_figure(VAL_BPB, dataset),
                trained_figure(UNIGRAM_BPB, dataset),
            )
        elif CHANCE in row:
            log.info(
                "  %s: acc %.3f, acc_norm %.3f (chance %.3f)",
                task,
                row.get("acc", math.nan),
                row.get("acc_norm", math.nan),
                row[CHANCE],
            )
        else:
            log.info("  %s: %s", task, ", ".join(f"{k} {v:.4g}" for k, v in row.items()))


def _training_metrics(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}

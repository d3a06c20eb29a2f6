"""The train stage's outputs: the model folder, metrics.json, plots and a text sample, mirrored to MLflow.

Both backends end here, in the driver process, so a run on Ray leaves exactly
what a single-process run leaves.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from src.config import Params
from src.models.metrics import (
    UNIGRAM_BPB,
    UNIGRAM_PERPLEXITY,
    VAL_BPB,
    VAL_LOSS,
    VAL_PERPLEXITY,
    per_source,
    source_of,
)
from src.paths import resolve_path
from src.train.loop import Outcome
from src.train.mlflow_store import store_errors
from src.train.provenance import MODEL_DIGEST_TAG, weights_digest
from src.train.reporting import generate_samples, write_metrics, write_plots
from src.train.tracking import RunTracker
from src.utils.faults import kill_point
from src.utils.files import atomic_directory, check_writable

log = logging.getLogger(__name__)

#: Metrics with one value per run; the rest (losses, perplexity) are curves over the steps.
SUMMARY_METRICS = (
    "steps",
    "tokens_per_s",
    "tokens_seen",
    UNIGRAM_PERPLEXITY,
    UNIGRAM_BPB,
    "tflops",
    "mfu",
)


def is_summary(metric: str) -> bool:
    """One value per run (``SUMMARY_METRICS``, and the per-source unigram baselines)."""
    return metric in SUMMARY_METRICS or source_of(metric, UNIGRAM_BPB) is not None


def check_output_locations(params: Params, root: Path) -> None:
    """Refuse, before training, an output that could not be written after it: the model folder,
    metrics.json, the plots and the scratch folder must each be of the right kind and writable."""
    paths = params.paths
    check_writable("paths.model_dir", resolve_path(paths.model_dir, root), kind="folder")
    check_writable("paths.metrics_file", resolve_path(paths.metrics_file, root), kind="file")
    check_writable("paths.plots_dir", resolve_path(paths.plots_dir, root), kind="folder", into=True)
    check_writable("tmp", root / "tmp", kind="folder", into=True, fix="make the checkout writable")


def write_outputs(params: Params, root: Path, outcome: Outcome, tokenizer: Any, tracker: RunTracker) -> None:
    """The model folder, metrics.json, plots and the text sample, each mirrored to MLflow."""
    metrics = outcome.metrics
    model_dir = resolve_path(params.paths.model_dir, root)
    model = outcome.module.model.cpu()
    tokenizer = inference_tokenizer(tokenizer, model_context(params, model))
    with atomic_directory(model_dir) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    write_metrics(resolve_path(params.paths.metrics_file, root), metrics)
    plots_dir = resolve_path(params.paths.plots_dir, root)
    write_plots(plots_dir, outcome.history)
    samples = generate_samples(
        model, tokenizer, params.train.sample_prompt, params.train.sample_tokens, params.train.seed
    )
    log.info("sample after training:\n%s", samples)
    # The curves' last points (train_loss, val_loss, val_perplexity) were logged as they happened; the
    # summaries go at step 0, so the UI shows them as values, not as one dot at the end of a chart.
    # Either way the run's latest values equal metrics.json.
    summary = {k: v for k, v in metrics.items() if is_summary(k) and math.isfinite(v)}
    # The files above are written whatever MLflow does; a store that fails from here on is one line
    # saying so, and the same command run again resumes from the last checkpoint to complete the run.
    with store_errors(tracker.client.tracking_uri, ending=True):
        tracker.complete(outcome.history.tracked())  # what rank 0 of a Ray group could not send
        tracker.log_metrics(summary, 0)
        tracker.set_tags({MODEL_DIGEST_TAG: weights_digest(model_dir)})
        tracker.flush(required=True)
        kill_point("mlflow.summary-logged")
        (root / "tmp").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root / "tmp") as scratch:
            sample_file = Path(scratch) / "samples.txt"
            sample_file.write_text(samples, encoding="utf-8")
            tracker.log_artifact(sample_file)
        tracker.log_artifacts(plots_dir, "plots")
        model_uri = tracker.log_model(
            model, tokenizer, params.train.sample_prompt, params.mlflow.register_model
        )
    kill_point("mlflow.model-logged")
    log.info("logged model %s%s", model_uri, _registered(params.mlflow.register_model))
    log.info(
        "val perplexity %.1f, %.3f bits per byte (unigram baseline %.1f, %.3f), %s tokens at %.0f tokens/s "
        "(%s); see the runs: make ui",
        metrics[VAL_PERPLEXITY],
        metrics[VAL_BPB],
        metrics[UNIGRAM_PERPLEXITY],
        metrics[UNIGRAM_BPB],
        f"{metrics['tokens_seen']:,}",
        metrics["tokens_per_s"],
        _speed(metrics),
    )
    for name in sorted(source for k in metrics if (source := source_of(k, VAL_BPB)) is not None):
        log.info(
            "  %s: val_loss %.4f, %.3f bits per byte (unigram baseline %.3f)",
            name,
            metrics[per_source(VAL_LOSS, name)],
            metrics[per_source(VAL_BPB, name)],
            metrics.get(per_source(UNIGRAM_BPB, name), math.nan),
        )


def model_context(params: Params, model: Any) -> int:
    """The longest input the model takes: ``train.max_length`` for a new model (its position table),
    a pretrained model's own (``max_position_embeddings``, GPT-2's ``n_positions``) when fine-tuning."""
    if params.model.pretrained:
        config = model.config.get_text_config()
        for name in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return params.train.max_length


def inference_tokenizer(tokenizer: Any, context: int) -> Any:
    """The tokenizer saved and logged with the model: a copy ready for batched generation.

    It knows the model's context (``model_max_length``; a trained BPE has none: 1e30), pads a batch
    with its own pad token, else its EOS, and pads on the left, as a decoder-only model generates
    after the last token of every row. The model config keeps no pad id (see
    ``src.models.architectures.common_settings``).
    """
    saved = copy.deepcopy(tokenizer)
    saved.model_max_length = context
    if saved.pad_token is None and saved.eos_token is not None:
        saved.pad_token = saved.eos_token
    saved.padding_side = "left"
    saved.init_kwargs["padding_side"] = "left"  # saved only as an init setting
    return saved


def _speed(metrics: dict[str, float]) -> str:
    achieved = f"{metrics.get('tflops', math.nan):.3g} model TFLOP/s"
    if "mfu" in metrics:
        return f"{achieved}, MFU {metrics['mfu']:.1%}"
    return f"{achieved}; MFU needs the device's peak: train.peak_tflops"


def _registered(name: str) -> str:
    return f", registered as a new version of {name!r}" if name else ""

"""The train stage's outputs: the model folder, metrics.json, plots and a text sample, mirrored to MLflow.

Both backends end here, in the driver process, so a run on Ray leaves exactly
what a single-process run leaves.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from src.config import Params
from src.paths import resolve_path
from src.train.loop import Outcome
from src.train.reporting import generate_samples, write_metrics, write_plots
from src.train.tracking import RunTracker
from src.utils.files import atomic_directory

log = logging.getLogger(__name__)


def write_outputs(params: Params, root: Path, outcome: Outcome, tokenizer: Any, tracker: RunTracker) -> None:
    """The model folder, metrics.json, plots and the text sample, each mirrored to MLflow."""
    metrics = outcome.metrics
    model_dir = resolve_path(params.paths.model_dir, root)
    model = outcome.module.model.cpu()
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
    # The same keys as metrics.json at the last step: the run's latest values equal the file.
    tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, metrics["steps"], flush=True)
    (root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / "tmp") as scratch:
        sample_file = Path(scratch) / "samples.txt"
        sample_file.write_text(samples, encoding="utf-8")
        tracker.log_artifact(sample_file)
    tracker.log_artifacts(model_dir, "model")
    tracker.log_artifacts(plots_dir, "plots")
    log.info(
        "val perplexity %.1f (unigram baseline %.1f), %s tokens at %.0f tokens/s; see the runs: make ui",
        metrics["val_perplexity"],
        metrics["unigram_perplexity"],
        f"{metrics['tokens_seen']:,}",
        metrics["tokens_per_s"],
    )

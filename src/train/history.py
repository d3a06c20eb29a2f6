"""The record of a training run: per-step losses and validation results.

The plots, ``metrics.json`` and MLflow are made from it, and checkpoints carry
it, so a resumed run's record is the uninterrupted run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.models.metrics import TRAIN_LOSS


@dataclass
class History:
    """What the plots and metrics are made of; carried in checkpoints across a resume."""

    train: list[dict[str, float]] = field(
        default_factory=list
    )  # step, train_loss, lr, tokens_per_s[, tflops, mfu]
    val: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> val_loss, val_perplexity
    tokens_seen: int = 0
    train_seconds: float = 0.0

    def state(self) -> dict[str, Any]:
        return {
            "train": self.train,
            "val": self.val,
            "tokens_seen": self.tokens_seen,
            "seconds": self.train_seconds,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> History:
        return cls(list(state["train"]), dict(state["val"]), state["tokens_seen"], state["seconds"])

    def tracked(self) -> list[tuple[dict[str, float], int]]:
        """Every recorded step as (MLflow metrics, step): a new run that continues a checkpoint logs these."""
        rows = [(tracked_train_metrics(row), int(row["step"])) for row in self.train]
        return rows + [(dict(result), step) for step, result in sorted(self.val.items())]


def tracked_train_metrics(row: dict[str, float]) -> dict[str, float]:
    """The MLflow metrics of one optimizer step (``tokens_per_s`` and ``mfu`` are the run's averages)."""
    metrics = {TRAIN_LOSS: row[TRAIN_LOSS], "lr": row["lr"], "step_tokens_per_s": row["tokens_per_s"]}
    if "mfu" in row:
        metrics["step_mfu"] = row["mfu"]
    return metrics

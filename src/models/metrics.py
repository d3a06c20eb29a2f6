"""Language-model metrics shared by the module, the history and the reports."""

from __future__ import annotations

import math

#: exp() of a larger loss overflows a float; a diverged run reports exp(700) instead of failing.
MAX_LOSS_FOR_PERPLEXITY = 700.0


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged run still reports a finite number."""
    return math.exp(min(loss, MAX_LOSS_FOR_PERPLEXITY))


def bits_per_byte(total_nats: float, text_bytes: int) -> float:
    """A loss summed over a text (nats), in bits per UTF-8 byte of it: comparable across tokenizers."""
    return total_nats / (math.log(2) * text_bytes) if text_bytes else math.nan


# The metric names, declared once: the module logs them, the recorder, the history, the plots,
# metrics.json and MLflow use them by these names.
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_PERPLEXITY = "val_perplexity"
VAL_BPB = "val_bpb"
UNIGRAM_PERPLEXITY = "unigram_perplexity"
UNIGRAM_BPB = "unigram_bpb"
#: Metrics that also come per validation source when there are several (``val_loss/<source>``).
PER_SOURCE = (VAL_LOSS, VAL_BPB, UNIGRAM_BPB)
_SOURCE_SEPARATOR = "/"


def per_source(metric: str, source: str) -> str:
    """The name of ``metric`` (one of :data:`PER_SOURCE`) on one validation source."""
    return f"{metric}{_SOURCE_SEPARATOR}{source}"


def source_of(name: str, metric: str | None = None) -> str | None:
    """The source of a per-source metric name (of ``metric`` only, if given); None for any other."""
    base, separator, source = name.partition(_SOURCE_SEPARATOR)
    if not separator or base not in PER_SOURCE or (metric is not None and base != metric):
        return None
    return source

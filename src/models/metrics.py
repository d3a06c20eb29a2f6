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

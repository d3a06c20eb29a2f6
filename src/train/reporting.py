"""What a finished run leaves for people: metrics.json, loss-curve CSVs, a text sample, a baseline."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.models.metrics import TRAIN_LOSS, VAL_BPB, VAL_LOSS, VAL_PERPLEXITY
from src.utils.files import canonical_json, write_text_atomic


def unigram_nats(
    train_splits: Sequence[np.ndarray],
    val_splits: Sequence[np.ndarray],
    vocab_size: int,
    weights: Sequence[float] = (1.0,),
) -> list[float]:
    """Loss (nats, summed) of each validation split under the unigram distribution training draws
    from: each source's add-one-smoothed token frequencies, mixed by its weight (``train.mixture``).
    The model has learnt something only if it beats this by a wide margin."""
    probabilities = np.zeros(vocab_size, dtype=np.float64)
    for tokens, weight in zip(train_splits, weights, strict=True):
        if not weight:
            continue  # validated on, never trained on
        counts = np.ones(vocab_size, dtype=np.float64)
        for start in range(0, len(tokens), 1 << 24):  # chunks keep memory flat on a memory map
            counts += np.bincount(np.asarray(tokens[start : start + (1 << 24)]), minlength=vocab_size)
        probabilities += weight * (counts / counts.sum())
    log_probs = np.log(probabilities)
    return [float(-log_probs[np.asarray(tokens)].sum()) for tokens in val_splits]


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    write_text_atomic(path, canonical_json({k: _finite(v) for k, v in metrics.items()}))


def write_plots(folder: Path, history: Any) -> None:
    """One CSV per curve, as ``dvc plots`` reads them. Only deterministic numbers: the same params
    give the same files (throughput, which varies, is in MLflow and metrics.json)."""
    val_rows = [{"step": step, **values} for step, values in sorted(history.val.items())]
    plots = (
        ("train_loss.csv", ("step", TRAIN_LOSS), history.train),
        ("learning_rate.csv", ("step", "lr"), history.train),
        ("val_loss.csv", ("step", VAL_LOSS, VAL_PERPLEXITY, *_val_columns(val_rows)), val_rows),
    )
    for name, columns, rows in plots:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_format(row[c]) for c in columns])
        write_text_atomic(folder / name, buffer.getvalue())


def generate_samples(model: torch.nn.Module, tokenizer: Any, prompt: str, tokens: int, seed: int) -> str:
    """Greedy and sampled continuations of ``prompt``, as text to read in MLflow."""
    model.eval()
    encoded = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    ids = encoded["input_ids"]  # (1, T)
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    room = positions - ids.shape[1] if positions else tokens
    settings = {
        "max_new_tokens": max(1, min(tokens, room)),
        "pad_token_id": tokenizer.eos_token_id,
        "attention_mask": encoded["attention_mask"],
    }
    with torch.no_grad():
        greedy = model.generate(ids, do_sample=False, **settings)
        torch.manual_seed(seed)
        sampled = model.generate(ids, do_sample=True, top_k=50, temperature=0.8, **settings)
    greedy_text, sampled_text = (tokenizer.decode(out[0]) for out in (greedy, sampled))
    return (
        f"prompt: {prompt!r}\n\n[greedy]\n{greedy_text}\n\n"
        f"[sampled, top_k=50, temperature=0.8]\n{sampled_text}\n"
    )


def _val_columns(rows: list[dict]) -> tuple[str, ...]:
    """``val_bpb`` and the per-source columns (``val_loss/<source>``, ``val_bpb/<source>``) that every
    row has (histories of older checkpoints may lack some)."""
    if not rows:
        return ()
    shared = set.intersection(*(set(row) for row in rows)) - {"step", VAL_LOSS, VAL_PERPLEXITY}
    return tuple(sorted(shared, key=lambda name: (name != VAL_BPB, name)))


def _format(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _finite(value: float) -> float | None:
    return value if not isinstance(value, float) or math.isfinite(value) else None

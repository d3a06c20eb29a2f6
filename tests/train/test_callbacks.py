"""The training path reads nothing off the device between the step recorder's reads.

On a GPU every read of a device tensor on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``float(t)``, ``x in t`` ...) waits for the queue of kernels to drain, and the device then idles
while the host prepares the next step. Counted here on the CPU: reads of every tensor but the
optimizer's step counters, which torch keeps on the host on every device.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from src.config import ModelConfig, TrainConfig
from src.data.windows import TokenWindows, WindowSampler
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.train.callbacks import StepEnd, StepRecorder
from src.train.history import History
from src.train.trainer_settings import progress_bar, trainer_settings

#: Tensor methods that copy a value to the host: on a GPU, each waits for the device.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__format__")


class ReadsPerBatch(L.Callback):
    """Which training batch is running, for the reads counted meanwhile; and the optimizer, whose
    step counters are host tensors on every device."""

    def __init__(self) -> None:
        self.batch: int | None = None
        self.trainer: L.Trainer | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.batch, self.trainer = args[-1], trainer

    def on_train_end(self, *args: Any) -> None:
        self.batch = None

    def on_host(self, tensor: torch.Tensor) -> bool:
        optimizers = self.trainer.optimizers if self.trainer else []
        return any(tensor is state.get("step") for o in optimizers for state in o.state.values())


@contextlib.contextmanager
def counted_reads(batches: ReadsPerBatch) -> Iterator[list[tuple[int, str, str]]]:
    """(batch, method, where) for every host read during a training batch."""
    reads: list[tuple[int, str, str]] = []
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name: str) -> Any:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if batches.batch is not None and not batches.on_host(self):
                caller = traceback.extract_stack(limit=2)[0]
                reads.append((batches.batch, name, f"{caller.filename}:{caller.lineno}"))
            return originals[name](self, *args, **kwargs)

        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("family", [ModelConfig().architecture, "gpt2"])
def test_training_steps_read_nothing_off_the_device_between_the_recorders_reads(
    family: str, tmp_path: Path
) -> None:
    """The progress bar is redrawn every step here, as on the CPU, and the losses read every 5
    steps, as every few on a GPU: only the recorder's own reads may happen, and only then."""
    steps, every, context, batch, vocab = 20, 5, 16, 2, 50
    train = TrainConfig(
        max_length=context,
        batch_size=batch,
        max_steps=steps,
        warmup_steps=2,
        eval_every=steps,
        checkpoint_every=steps,
        accelerator="cpu",
        precision="32-true",
    )
    model = build_model(
        ModelConfig(architecture=family, n_layer=1, n_head=2, n_embd=16),
        Vocabulary(vocab, 0),
        context,
        tmp_path,
    )
    tokens = np.random.default_rng(0).integers(0, vocab, size=steps * batch * context + 1).astype(np.uint16)
    sampler = WindowSampler(len(tokens), context, 0, start=0, length=steps * batch)
    data = DataLoader(TokenWindows(tokens, context), batch_size=batch, sampler=sampler, drop_last=True)
    logged: list[tuple[dict[str, float], int]] = []
    recorder = StepRecorder(
        History(),
        start_step=0,
        max_steps=steps,
        windows_per_step=batch,
        max_length=context,
        accumulate=1,
        log_metrics=lambda row, step: logged.append((row, step)),
        flops_per_token=1000,
        peak_tflops=1.0,
        record_every=every,
    )
    placement = {"accelerator": "cpu", "devices": 1}
    (bar,) = progress_bar(placement, recorder)
    batches = ReadsPerBatch()
    trainer = L.Trainer(**trainer_settings(train, placement), callbacks=[recorder, bar, batches])

    with counted_reads(batches) as reads:
        trainer.fit(CausalLM(model, train), train_dataloaders=data)

    recorder_reads = {(b, name) for b, name, where in reads if "/src/train/callbacks.py:" in where}
    assert recorder_reads == {(b, name) for b in range(every - 1, steps, every) for name in ("cpu", "tolist")}
    assert [(b, name, where) for b, name, where in reads if (b, name) not in recorder_reads] == []
    # What the bar shows and MLflow gets was read at those steps: the last step's loss, as floats.
    assert [step for _, step in logged] == list(range(1, steps + 1))
    assert recorder.shown["train_loss"] == logged[-1][0]["train_loss"]
    assert set(recorder.shown) == {"train_loss", "tokens_per_s", "mfu"}
    assert all(
        type(value) is float
        for value in bar.get_metrics(trainer, trainer.lightning_module).values()
        if not isinstance(value, str)
    )


def test_a_step_checkpoints_after_its_validation_and_between_validations_too(tmp_path: Path) -> None:
    """StepEnd: checkpoints every 3 steps whatever the validation interval (5); at a step that
    validates (15), the checkpoint is written after the validation, so it holds the result."""
    steps, context, batch, vocab = 15, 8, 2, 30
    train = TrainConfig(
        max_length=context,
        batch_size=batch,
        max_steps=steps,
        warmup_steps=1,
        eval_every=5,
        checkpoint_every=3,
    )
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16), Vocabulary(vocab, 0), context, tmp_path)
    tokens = np.random.default_rng(0).integers(0, vocab, size=steps * batch * context + 1).astype(np.uint16)
    sampler = WindowSampler(len(tokens), context, 0, start=0, length=steps * batch)
    data = DataLoader(TokenWindows(tokens, context), batch_size=batch, sampler=sampler, drop_last=True)
    validation = DataLoader(TokenWindows(tokens, context), batch_size=batch)
    history = History()
    recorder = StepRecorder(
        history,
        start_step=0,
        max_steps=steps,
        windows_per_step=batch,
        max_length=context,
        accumulate=1,
        log_metrics=None,
    )
    saved: list[tuple[int, list[int], list[int]]] = []  # (step, steps trained, steps validated) at save

    def save(trainer: L.Trainer, step: int) -> None:
        saved.append((step, [int(row["step"]) for row in history.train], sorted(history.val)))

    step_end = StepEnd(
        save, recorder.record, start_step=0, max_steps=steps, eval_every=5, checkpoint_every=3, accumulate=1
    )
    placement = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    trainer = L.Trainer(**trainer_settings(train, placement), callbacks=[recorder, step_end])
    trainer.fit(CausalLM(model, train), train_dataloaders=data, val_dataloaders=validation)

    assert [step for step, _, _ in saved] == [3, 6, 9, 12, 15]
    for step, trained, validated in saved:
        assert trained == list(range(1, step + 1))  # every step up to it, recorded before the save
        assert validated == list(range(5, step + 1, 5))  # 15's own validation included

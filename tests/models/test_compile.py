"""``train.compile`` compiles each batch shape once: a recompile mid-run would stall a GPU for
seconds and, past torch's recompile limit, silently fall back to eager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader

from src.config import ModelConfig, TrainConfig
from src.data.windows import SourceValidation, TokenWindows, WindowSampler
from src.models.causal_lm import CausalLM, Vocabulary, build_model
from src.train.trainer_settings import trainer_settings


class GraphsPerStep(L.Callback):
    """The number of graphs dynamo has compiled when each training batch starts."""

    def __init__(self) -> None:
        self.graphs: list[int] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.graphs.append(counters["stats"]["unique_graphs"])


@pytest.mark.slow
@pytest.mark.parametrize("loss_chunk_tokens", [0, 24])
def test_a_compiled_run_compiles_nothing_after_its_first_validation(
    tmp_path: Path, loss_chunk_tokens: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight steps validating every three, on a padded vocabulary (50 ids, 64 rows); the validation
    set's last batch is shorter than the others, a shape of its own."""
    steps, batch, context = 8, 4, 16
    train = TrainConfig(
        max_steps=steps,
        warmup_steps=1,
        eval_every=3,
        batch_size=batch,
        max_length=context,
        compile=True,
        loss_chunk_tokens=loss_chunk_tokens,
    )
    compiled_with: list[dict[str, Any]] = []
    real_compile = torch.compile

    def compile_spy(module: Any, **options: Any) -> Any:  # what CausalLM asks torch.compile for
        compiled_with.append(options)
        return real_compile(module, **options)

    monkeypatch.setattr(torch, "compile", compile_spy)
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16), Vocabulary(50, 0), context, tmp_path)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 50, size=steps * batch * context + 1).astype(np.uint16)
    sampler = WindowSampler(len(tokens), context, 0, start=0, length=steps * batch)
    training = DataLoader(TokenWindows(tokens, context), batch_size=batch, sampler=sampler, drop_last=True)
    windows = SourceValidation([rng.integers(1, 50, size=6 * context).astype(np.uint16)], context)
    assert sorted({len(b) for b in windows.batches(batch)}) == [3, 4]  # two shapes: 7 windows, 4 + 3
    validation = DataLoader(windows, batch_sampler=windows.batches(batch))
    graphs = GraphsPerStep()
    placement = {"accelerator": "cpu", "devices": 1}
    trainer = L.Trainer(**trainer_settings(train, placement), callbacks=[graphs], enable_progress_bar=False)

    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    trainer.fit(CausalLM(model, train), train_dataloaders=training, val_dataloaders=validation)

    # Static shapes: torch's default would trace symbolic sizes once a second shape is seen.
    assert compiled_with and all(options.get("dynamic") is False for options in compiled_with)
    after_first_validation = graphs.graphs[3]  # batch 3 starts after step 3 and its validation
    assert after_first_validation > before  # it did compile: training and validation graphs
    assert [*graphs.graphs[3:], counters["stats"]["unique_graphs"]] == [after_first_validation] * 6

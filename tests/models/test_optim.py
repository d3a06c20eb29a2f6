"""The learning-rate schedule, the weight-decay groups, the fused AdamW and its clipping."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from src.models.causal_lm import CausalLM
from src.models.optim import clip_gradient_norm, decay_groups, use_fused, warmup_cosine


def test_warmup_then_cosine_down_to_the_floor() -> None:
    lrs = [warmup_cosine(s, warmup_steps=10, max_steps=110, min_lr_ratio=0.1) for s in range(111)]
    warmup, decay = lrs[:10], lrs[10:]
    assert all(a < b for a, b in itertools.pairwise(warmup))  # rises linearly
    assert warmup[0] == pytest.approx(1 / 11) and decay[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(decay))  # then only falls
    assert decay[50] == pytest.approx(0.55)  # half way down the cosine
    assert lrs[110] == pytest.approx(0.1) and min(lrs) >= 0.0


def test_only_matrices_are_decayed() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    decay, keep = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in decay["params"]] == [(10, 4), (4, 4)]
    assert sorted(tuple(p.shape) for p in keep["params"]) == [(4,), (4,), (4,)]


def _train_20_steps(tmp_path: Path, module_class: type, trainer_clip: float | None, **train: object) -> tuple:
    """Losses and final weights of 20 optimizer steps of a tiny Llama on random tokens, on the CPU."""
    import lightning as L

    from src.config import ModelConfig, TrainConfig
    from src.models.causal_lm import Vocabulary, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=2, n_head=2, n_embd=32), Vocabulary(64, 0), 16, tmp_path)
    tokens = torch.randint(1, 64, (20, 8, 16), generator=torch.Generator().manual_seed(1))
    batches = [{"input_ids": t, "labels": t} for t in tokens]
    module = module_class(model, TrainConfig(max_steps=20, warmup_steps=2, lr=1e-2, **train))
    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=20,
        gradient_clip_val=trainer_clip,
        logger=False,
        callbacks=[Losses()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        deterministic=True,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return losses, {name: value.detach().clone() for name, value in model.state_dict().items()}


class _LightningClips(CausalLM):
    """The reference: Lightning's own clipping (``Trainer(gradient_clip_val=...)``), plain AdamW."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        L.LightningModule.configure_gradient_clipping(
            self, optimizer, gradient_clip_val, gradient_clip_algorithm
        )


def test_the_fused_optimizer_clipped_by_the_pipeline_trains_as_lightning_clipping_the_plain_one(
    tmp_path: Path,
) -> None:
    """Lightning refuses to clip for a fused AdamW; the pipeline's clipping with it gives Lightning's
    numbers. The clip is tight (0.05), so it changes every step's update."""
    reference = _train_20_steps(tmp_path / "a", _LightningClips, 0.05, grad_clip=0.05, fused_optimizer=False)
    fused = _train_20_steps(tmp_path / "b", CausalLM, None, grad_clip=0.05, fused_optimizer=True)
    unclipped = _train_20_steps(tmp_path / "c", CausalLM, None, grad_clip=0.0, fused_optimizer=True)
    assert fused[0] == pytest.approx(reference[0], abs=1e-6, rel=0)
    for name, weight in reference[1].items():
        torch.testing.assert_close(fused[1][name], weight, atol=1e-6, rtol=0)
    # The clip made a difference (Adam's update is nearly scale-free, so it shows in the weights).
    assert max(float((unclipped[1][n] - w).abs().max()) for n, w in reference[1].items()) > 1e-4


def test_a_grad_clip_of_zero_clips_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import src.models.causal_lm as causal_lm

    calls: list[float] = []
    clip = causal_lm.clip_gradient_norm
    monkeypatch.setattr(causal_lm, "clip_gradient_norm", lambda *a: calls.append(a[-1]) or clip(*a))
    _train_20_steps(tmp_path / "off", CausalLM, None, grad_clip=0.0)
    assert calls == []
    _train_20_steps(tmp_path / "on", CausalLM, None, grad_clip=0.5)
    assert calls == [0.5] * 20


def test_auto_fuses_on_cuda_only() -> None:
    assert use_fused("auto", torch.device("cuda", 0)) and not use_fused("auto", torch.device("cpu"))
    assert use_fused(True, torch.device("cpu")) and not use_fused(False, torch.device("cuda"))
    # 16-mixed with clipping: the scaler would leave the gradients scaled for the clip to read.
    assert not use_fused("auto", torch.device("cuda"), scaled_clipping=True)


def test_a_sharded_model_clips_over_all_its_shards() -> None:
    """Under FSDP each rank holds a shard of every gradient: the norm to clip to is the one over all
    shards, which only the wrapper (``FullyShardedDataParallel.clip_grad_norm_``) can compute."""

    class Sharded(nn.Linear):
        def __init__(self) -> None:
            super().__init__(2, 2)
            self.asked: list[float] = []

        def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
            self.asked.append(max_norm)
            return torch.tensor(0.0)

    root = Sharded()
    optimizer = torch.optim.AdamW(root.parameters())
    for p in root.parameters():
        p.grad = torch.full_like(p, 10.0)
    clip_gradient_norm(root, optimizer, 0.5)
    assert root.asked == [0.5]  # and the wrapper alone touched the gradients
    assert all(torch.equal(p.grad, torch.full_like(p, 10.0)) for p in root.parameters())
    plain = nn.Linear(2, 2)
    for p in plain.parameters():
        p.grad = torch.full_like(p, 10.0)
    norm = clip_gradient_norm(plain, torch.optim.AdamW(plain.parameters()), 0.5)  # 6 gradients of 10
    clipped = torch.cat([p.grad.flatten() for p in plain.parameters()]).norm()
    assert (float(norm), float(clipped)) == pytest.approx((600**0.5, 0.5))

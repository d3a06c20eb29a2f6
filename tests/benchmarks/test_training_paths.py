"""The benchmarks' shared harness: run lengths the config accepts, and fair rounds."""

from __future__ import annotations

import importlib

import pytest

from src.config import TrainConfig
from src.paths import PROJECT_ROOT


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    return importlib.import_module("training_paths")


@pytest.mark.parametrize("steps", [1, 10, 45, 500, 1000])
def test_a_run_shorter_than_the_warmup_gets_a_warmup_it_can_finish(harness, steps: int) -> None:
    """train_throughput's default is 5 + 40 steps, under the default warmup of 50: the config refuses
    a warmup that long, so the benchmark must cut it (it crashed here once)."""
    train = harness.fitted_to(TrainConfig(warmup_steps=50), steps, accelerator="cpu")
    assert train.max_steps == steps and train.eval_every == train.checkpoint_every == steps
    assert train.warmup_steps == min(50, steps // 10) and train.warmup_steps < steps
    assert train.accelerator == "cpu"


def test_rounds_alternate_the_order_and_report_each_paths_median(harness) -> None:
    order: list[str] = []
    speeds = {"plain_torch": iter([100, 300, 200]), "project": iter([90, 95, 400])}

    def run(path: str) -> dict[str, int]:
        order.append(path)
        return {"tokens_per_s": next(speeds[path])}

    results = harness.alternating_rounds(("plain_torch", "project"), 3, run)
    assert order == ["plain_torch", "project", "project", "plain_torch", "plain_torch", "project"]
    assert results["plain_torch"] == {"tokens_per_s": 200, "rounds_tokens_per_s": [100, 300, 200]}
    assert results["project"]["tokens_per_s"] == 95
    assert results["project_vs_plain"] == round(95 / 200, 3)

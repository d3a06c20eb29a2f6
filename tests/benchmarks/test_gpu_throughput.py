"""The GPU benchmark runs anywhere: without a GPU it measures its scaled-down model on the CPU."""

from __future__ import annotations

import importlib
import json

import pytest

from src.models.causal_lm import Vocabulary, build_model
from src.paths import PROJECT_ROOT


def test_the_gpu_presets_are_gpt2_124m_whatever_the_default_family(monkeypatch, tmp_path) -> None:
    """GPT-2 small as published (tied embeddings: 124,439,808 parameters), so its figures compare with
    other GPT-2 124M runs, not the project's default model family; and as the fastest peers train it:
    50,304 rows (47 padded), 524,288 tokens per optimizer step."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    benchmark = importlib.import_module("gpu_throughput")
    published, peers = benchmark.PRESETS["gpt2-124m"], benchmark.PRESETS["gpt2-124m-peers"]
    model = build_model(published.model, Vocabulary(published.vocab, published.vocab - 1), 1024, tmp_path)
    assert model.config.model_type == "gpt2"
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
    assert (published.context, published.batch, published.accumulate) == (1024, 16, 1)
    model = build_model(peers.model, Vocabulary(peers.vocab, peers.vocab - 1), 1024, tmp_path)
    assert model.get_output_embeddings().weight.shape[0] == 50_304
    assert sum(p.numel() for p in model.parameters()) == 124_439_808 + 47 * 768
    assert peers.context * peers.batch * peers.accumulate == 524_288 and peers.batch in range(32, 65)
    assert published.precision == peers.precision == "bf16-mixed"


@pytest.mark.slow
def test_gpu_throughput_runs_its_cpu_configuration_and_prints_the_ratio(python_runner) -> None:
    script = PROJECT_ROOT / "benchmarks" / "gpu_throughput.py"
    done = python_runner(script, "--steps", "2", "--warmup", "1", "--compile", "off", "--repeats", "2")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["preset"] == "tiny" and figures["device"].startswith("cpu")
    assert figures["model"]["architecture"] == "gpt2"  # the GPU preset's family, scaled down
    eager = figures["eager"]
    # A ratio of like with like: the project's path and the plain loop train the same model on the same
    # windows with the same optimizer, so they end on the same loss (fp32 on the CPU).
    plain = eager["plain_torch"]["last_loss"]
    assert plain > 1.0  # a cross-entropy over 1,000 tokens after 3 steps, about ln(1000) = 6.9
    assert figures["step_tokens"] == 2 * figures["batch_tokens"]  # 2 micro-batches per step
    for path in ("project", "project_deterministic"):
        assert eager[path]["last_loss"] == pytest.approx(plain, rel=1e-5), path
        assert f"{path}_vs_plain" in eager
    assert eager["attention"] == "sdpa"
    # Every path ran twice (in alternating order); the figures shown are one of its rounds.
    for path in ("plain_torch", "project", "project_deterministic"):
        rounds = eager[path]["rounds_tokens_per_s"]
        assert len(rounds) == 2 and eager[path]["tokens_per_s"] in rounds, path

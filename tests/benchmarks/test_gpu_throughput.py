"""The GPU benchmark runs anywhere: without a GPU it measures its scaled-down model on the CPU."""

from __future__ import annotations

import json

import pytest

from src.paths import PROJECT_ROOT


@pytest.mark.slow
def test_gpu_throughput_runs_its_cpu_configuration_and_prints_the_ratio(python_runner) -> None:
    script = PROJECT_ROOT / "benchmarks" / "gpu_throughput.py"
    done = python_runner(script, "--steps", "2", "--warmup", "1", "--compile", "off", "--repeats", "2")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["preset"] == "tiny" and figures["device"].startswith("cpu")
    eager = figures["eager"]
    # A ratio of like with like: the project's path and the plain loop train the same model on the same
    # windows with the same optimizer, so they end on the same loss (fp32 on the CPU).
    plain = eager["plain_torch"]["last_loss"]
    assert plain > 1.0  # a cross-entropy over 1,000 tokens after 3 steps, about ln(1000) = 6.9
    for path in ("project", "project_deterministic"):
        assert eager[path]["last_loss"] == pytest.approx(plain, rel=1e-5), path
        assert f"{path}_vs_plain" in eager
    assert eager["attention"] == "sdpa"
    # Every path ran twice (in alternating order); the figures shown are one of its rounds.
    for path in ("plain_torch", "project", "project_deterministic"):
        rounds = eager[path]["rounds_tokens_per_s"]
        assert len(rounds) == 2 and eager[path]["tokens_per_s"] in rounds, path

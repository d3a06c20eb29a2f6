"""The GPU benchmark runs anywhere: without a GPU it measures its scaled-down model on the CPU."""

from __future__ import annotations

import json

import pytest

from src.paths import PROJECT_ROOT


@pytest.mark.slow
def test_gpu_throughput_runs_its_cpu_configuration_and_prints_the_ratio(python_runner) -> None:
    script = PROJECT_ROOT / "benchmarks" / "gpu_throughput.py"
    done = python_runner(script, "--steps", "2", "--warmup", "1", "--compile", "off")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["preset"] == "tiny" and figures["device"].startswith("cpu")
    eager = figures["eager"]
    for path in ("plain_torch", "project", "project_deterministic"):
        assert eager[path]["tokens_per_s"] > 0 and eager[path]["tflops"] > 0
    assert eager["project_vs_plain"] == pytest.approx(
        eager["project"]["tokens_per_s"] / eager["plain_torch"]["tokens_per_s"], abs=1e-3
    )
    assert eager["attention"] == "sdpa"

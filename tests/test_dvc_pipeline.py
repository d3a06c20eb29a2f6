"""End to end: the DVC pipeline in a fresh copy of the project, as a new user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)


def out_hash(project: Path, stage: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"][stage]["outs"][0]["md5"]


DATA_STAGES = ("download@kjv", "tokenize")


def committed_hashes(project: Path) -> dict[str, str]:
    lock = yaml.safe_load(git(project, "show", "HEAD:dvc.lock").stdout)
    return {stage: lock["stages"][stage]["outs"][0]["md5"] for stage in DATA_STAGES}


def test_repro_reproduces_the_committed_data_and_is_then_a_no_op(dvc, project_copy: Path) -> None:
    first = dvc(project_copy, "repro")
    for stage in (*DATA_STAGES, "train"):
        assert f"Running stage '{stage}'" in first.stdout
    assert {stage: out_hash(project_copy, stage) for stage in DATA_STAGES} == committed_hashes(project_copy)
    again = dvc(project_copy, "repro")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout
    metrics = json.loads(dvc(project_copy, "metrics", "show", "--json").stdout)
    assert "val_perplexity" in json.dumps(metrics)
    plots = json.loads(dvc(project_copy, "plots", "show", "--json").stdout)
    assert any("train_loss.csv" in name for name in json.dumps(plots).split('"'))

    shutil.rmtree(project_copy / "data" / "main_cache")
    dvc(project_copy, "repro", "tokenize")
    assert {stage: out_hash(project_copy, stage) for stage in DATA_STAGES} == committed_hashes(project_copy)


def test_experiment_on_the_split_changes_the_export(dvc, project_copy: Path) -> None:
    dvc(project_copy, "repro", "download")
    before = out_hash(project_copy, "download@kjv")
    dvc(project_copy, "exp", "run", "-S", "download.datasets.kjv.validation_fraction=0.05")
    assert out_hash(project_copy, "download@kjv") != before


def test_bad_param_fails_with_one_line_and_keeps_the_export(dvc, project_copy: Path) -> None:
    dvc(project_copy, "repro", "download")
    export = project_copy / "data" / "main_cache" / "raw" / "kjv"
    good = {p.name: p.read_bytes() for p in export.iterdir()}
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("validation_fraction: 0.02", "validation_fraction: x"))
    result = dvc(project_copy, "repro", check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: download.datasets.kjv.validation_fraction: expected a number in (0, 1), got 'x'"]
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in export.iterdir()} == good


def test_changing_the_vocabulary_reruns_tokenize_only(dvc, project_copy: Path) -> None:
    dvc(project_copy, "repro", "tokenize")
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("vocab_size: 8192", "vocab_size: 4096"))
    status = dvc(project_copy, "status").stdout
    assert "tokenize:" in status and "download@kjv:" not in status
    params.write_text(params.read_text().replace("vocab_size: 4096", "vocab_size: 8192"))

    tokens_before = out_hash(project_copy, "tokenize")
    run = dvc(project_copy, "exp", "run", "-S", "tokenize.vocab_size=4096")
    assert "Running stage 'tokenize'" in run.stdout
    assert "Running stage 'download@kjv'" not in run.stdout
    assert out_hash(project_copy, "tokenize") != tokens_before


def test_seed_data_module_snippet_runs_from_the_project_root(dvc, project_copy: Path) -> None:
    dvc(project_copy, "repro", "tokenize")
    snippet = """
from src.data.data_manager import LightningDataModule
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("data/main_cache/tokenized/bpe/tokenizer")
dm = LightningDataModule(tokenizer=tokenizer, dataset_configs={"kjv": {}}, batch_size=8, max_length=128)
dm.prepare_data()
dm.setup("fit")
print(tuple(next(iter(dm.train_dataloader()))["input_ids"].shape))
"""
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=project_copy, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(8, 128)")
    assert "up to date" in dvc(project_copy, "status", "tokenize").stdout  # it reused the stage's tokens


@pytest.mark.parametrize("change", ["train.lr=0.001", "train.max_length=48"])
def test_training_changes_rerun_train_only(dvc, project_copy: Path, change: str) -> None:
    dvc(project_copy, "repro")
    data = {stage: out_hash(project_copy, stage) for stage in DATA_STAGES}
    model = out_hash(project_copy, "train")
    run = dvc(project_copy, "exp", "run", "-S", change)
    assert "Running stage 'train'" in run.stdout
    assert "Running stage 'tokenize'" not in run.stdout and "Running stage 'download@kjv'" not in run.stdout
    assert {stage: out_hash(project_copy, stage) for stage in DATA_STAGES} == data
    assert out_hash(project_copy, "train") != model
    shown = json.loads(dvc(project_copy, "exp", "show", "--json").stdout)
    assert "val_perplexity" in json.dumps(shown)


def test_bad_training_param_keeps_model_and_metrics(dvc, project_copy: Path) -> None:
    dvc(project_copy, "repro")
    kept = [project_copy / "data" / "model" / "model.safetensors", project_copy / "metrics.json"]
    before = [path.read_bytes() for path in kept]
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.003", "lr: fast"))
    result = dvc(project_copy, "repro", check=False)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: train.lr: expected a number in (0, 10], got 'fast'"
    ]
    assert [path.read_bytes() for path in kept] == before

"""Training on two sources mixed by weight: per-source validation everywhere, and an exact resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from src.config import load_params
from src.data.download import download_all
from src.data.token_files import read_token_manifest
from src.data.tokenize_stages import tokenize_from_params

SOURCES = ("kjv", "notes")


def notes_folder(folder: Path) -> Path:
    """A folder of the user's own text files: paragraphs separated by blank lines."""
    folder.mkdir(parents=True)
    for part in range(3):
        paragraphs = (
            f"Note {part}.{i}: the harvest was gathered in the {i}th week,\nand the barns were full."
            for i in range(150)
        )
        (folder / f"part{part}.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return folder


def mixture_project(make_params, folder: Path, **train: object) -> Path:
    """The tiny project with a local ``notes`` source beside kjv, mixed 0.7/0.3, both tokenized."""
    params_file = make_params(folder, data="copy", **train)
    data = yaml.safe_load(params_file.read_text())
    data["download"]["local"] = {
        "notes": {
            "path": "text",
            "data_dir": str(notes_folder(folder / "corpus" / "notes")),
            "data_files": "*.txt",
            "options": {"sample_by": "paragraph"},
            "validation_fraction": 0.1,
        }
    }
    data["tokenize"]["datasets"] = list(SOURCES)
    data["train"]["mixture"] = {"kjv": 0.7, "notes": 0.3}
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(params_file)
    download_all(params, names=["notes"])
    tokenize_from_params(params, "notes")  # with the tokenizer stage's tokenizer, as kjv was
    return params_file


@pytest.mark.slow
def test_two_sources_report_per_source_loss_and_bits_per_byte_and_resume_exactly(
    make_params, train_command, curve, metric_history, mlflow_runs, tmp_path: Path
) -> None:
    settings = {"max_steps": 30, "eval_every": 10, "checkpoint_every": 10}
    straight = mixture_project(make_params, tmp_path / "straight", **settings)
    killed = mixture_project(make_params, tmp_path / "killed", **settings)
    logs = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(train_command(straight), check=True, cwd=tmp_path, timeout=600, **logs)

    # Killed after step 15 (the checkpoint of step 10 is written), then run again: it resumes there.
    env = {**os.environ, "LMPIPE_KILL_AT": "train.after-step-15"}
    first = subprocess.run(train_command(killed), cwd=tmp_path, timeout=600, env=env, **logs)
    assert first.returncode == -9 and b"kill point train.after-step-15" in first.stderr
    subprocess.run(train_command(killed), check=True, cwd=tmp_path, timeout=600, **logs)

    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for name in SOURCES:
        for key in ("val_loss", "val_bpb", "unigram_bpb"):
            assert f"{key}/{name}" in a, f"{key}/{name}"
    for key in ("train_loss", "val_loss", "val_loss/kjv", "val_loss/notes", "val_bpb/notes", "tokens_seen"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key

    # The combined loss is the token-weighted mean of the sources'; bits per byte by hand per source.
    params = load_params(straight)
    predicted, text_bytes = {}, {}
    for name in SOURCES:
        manifest = read_token_manifest(params.paths.token_dir("bpe", name))
        predicted[name] = manifest.splits["validation"].tokens - 1  # every token but the first once
        rows = (params.paths.raw_dir() / name / "validation.jsonl").read_text(encoding="utf-8").splitlines()
        text_bytes[name] = sum(len(json.loads(row)["text"].encode("utf-8")) for row in rows)
        by_hand = a[f"val_loss/{name}"] * predicted[name] / (math.log(2) * text_bytes[name])
        assert a[f"val_bpb/{name}"] == pytest.approx(by_hand, rel=1e-5)
    weighted = sum(a[f"val_loss/{n}"] * predicted[n] for n in SOURCES) / sum(predicted.values())
    assert a["val_loss"] == pytest.approx(weighted, rel=1e-5)

    # The plots and the MLflow run carry the per-source curves; MLflow lists both datasets.
    assert curve(tmp_path / "straight" / "plots" / "val_loss.csv", "val_bpb/notes") == pytest.approx(
        curve(tmp_path / "killed" / "plots" / "val_loss.csv", "val_bpb/notes"), abs=1e-6
    )
    uri = f"sqlite:///{tmp_path / 'killed' / 'mlflow.db'}"
    (run,) = mlflow_runs(uri)
    assert [step for step, _ in metric_history(uri, run.info.run_id, "val_loss/notes")] == [10, 20, 30]
    assert run.data.metrics["unigram_bpb/kjv"] == pytest.approx(a["unigram_bpb/kjv"])
    datasets = {entry.dataset.name: json.loads(entry.dataset.profile) for entry in run.inputs.dataset_inputs}
    assert {name: round(profile["weight"], 6) for name, profile in datasets.items()} == {
        "tokenized/bpe/kjv": 0.7,
        "tokenized/bpe/notes": 0.3,
    }

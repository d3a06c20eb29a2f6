"""What an MLflow user sees of a training run: the training view, source, dataset, a logged model.

One tiny training (as a user starts it, ``python src/train/train.py``) and a
second one that registers its model are read back through MLflow's client and
its ``transformers`` flavour; the last test opens ``make ui``'s address in a
real headless browser.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from src.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

REGISTERED = "kjv-tiny"


def train(params_file: Path) -> None:
    script = PROJECT_ROOT / "src" / "train" / "train.py"
    log_dir = params_file.parent / "logs"
    command = [sys.executable, str(script), "--params", str(params_file), "--log-dir", str(log_dir)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(make_params, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two trainings into one store: the first registers nothing, the second a version of REGISTERED."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_view")
    plain = make_params(folder / "plain", mlflow={"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"})
    train(plain)
    registering = make_params(
        folder / "registering",
        mlflow={"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "register_model": REGISTERED},
    )
    train(registering)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lmpipe")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return SimpleNamespace(folder=folder, client=client, experiment=experiment, runs=runs, params=plain)


def test_the_experiment_is_marked_as_model_training(trained) -> None:
    assert trained.experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_runs_carry_mlflow_source_tags(trained) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    for run in trained.runs:
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "src/train/train.py"
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.user"] == getpass.getuser()
        assert tags["mlflow.source.git.commit"] == commit.stdout.strip()


def test_one_dataset_input_per_source_with_the_manifest_digest(trained, token_dir: Path) -> None:
    manifest_sha = hashlib.sha256((token_dir / "manifest.json").read_bytes()).hexdigest()
    for run in trained.runs:
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1
        dataset = inputs[0].dataset
        assert dataset.name == "tokenized/bpe/kjv"
        assert manifest_sha.startswith(dataset.digest) and len(dataset.digest) == 32
        assert run.data.tags["data.kjv.tokens.manifest_sha256"] == manifest_sha
        assert json.loads(dataset.source)["uri"].endswith("raw/kjv")
        assert {(tag.key, tag.value) for tag in inputs[0].tags} == {("mlflow.data.context", "training")}
        profile = json.loads(dataset.profile)
        assert profile["train_tokens"] > profile["validation_tokens"] > 0


def test_the_logged_model_is_the_trained_model(trained) -> None:
    """Same weights as data/model, and the same greedy text through MLflow's loader."""
    import mlflow
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = trained.runs[0]
    model_dir = trained.folder / "plain" / "model"
    mlflow.set_tracking_uri(trained.client.tracking_uri)
    try:
        generate = mlflow.transformers.load_model(f"runs:/{run.info.run_id}/model")
        local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    logged = load_file(next(Path(local).rglob("model.safetensors")))
    written = load_file(model_dir / "model.safetensors")
    assert logged.keys() == written.keys()
    assert all(torch.equal(logged[key], written[key]) for key in written)

    prompt = "In the beginning"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer(prompt, return_tensors="pt")
    expected = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    text = generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert text[0]["generated_text"] == tokenizer.decode(expected[0], skip_special_tokens=True)
    assert run.outputs.model_outputs, "the run links to its logged model"


def test_a_version_is_registered_only_when_asked(trained) -> None:
    versions = trained.client.search_model_versions(f"name='{REGISTERED}'")
    assert [v.run_id for v in versions] == [trained.runs[1].info.run_id]
    assert [m.name for m in trained.client.search_registered_models()] == [REGISTERED]


def test_summaries_are_single_values_and_curves_are_logged_once_per_step(trained) -> None:
    run = trained.runs[0]
    metrics = json.loads((trained.folder / "plain" / "metrics.json").read_text())
    assert {k: v for k, v in run.data.metrics.items() if k in metrics} == pytest.approx(metrics)
    for name in ("steps", "tokens_per_s", "tokens_seen", "unigram_perplexity"):
        assert [m.step for m in trained.client.get_metric_history(run.info.run_id, name)] == [0]
    for name in ("val_loss", "val_perplexity", "train_loss"):
        steps = [m.step for m in trained.client.get_metric_history(run.info.run_id, name)]
        assert len(steps) == len(set(steps)), f"{name} logged twice at one step: {sorted(steps)}"


def chromium() -> str | None:
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.mark.skipif(
    chromium() is None,
    reason="no headless browser: apt-get install chromium-headless-shell (make test does on CI)",
)
def test_make_ui_opens_the_training_view_in_a_browser(trained, free_port: int, tool_env) -> None:
    """The address `make ui` prints, rendered by a real browser, lists the runs in the training view."""
    ui = subprocess.Popen(
        ["make", "--no-print-directory", "ui", f"UI_PORT={free_port}", f"UI_PARAMS={trained.params}"],
        cwd=PROJECT_ROOT,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        address = None
        for line in ui.stdout:
            if "MLflow UI of" in line:
                address = line.rsplit(": ", 1)[1].strip()
                break
        assert address and address.endswith("?workflowType=machine_learning"), address
        assert f"127.0.0.1:{free_port}/#/experiments/{trained.experiment.experiment_id}" in address
        dom = ""
        for _ in range(60):  # the UI takes seconds to start
            page = subprocess.run(
                [
                    chromium(),
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--virtual-time-budget=20000",
                    "--dump-dom",
                    address,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            dom = page.stdout
            if trained.runs[0].info.run_name in dom:
                break
            time.sleep(2)
        for run in trained.runs:
            assert run.info.run_name in dom
        assert "tokenized/bpe" in dom  # the Dataset column of the runs table
        assert "No data available" not in dom  # what the GenAI overview shows for a training experiment
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)

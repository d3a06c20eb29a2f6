"""Training end to end on a tiny model: outputs, determinism, MLflow, exact resume after a kill."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM

from src.config import load_params
from src.data.token_files import read_token_manifest
from src.errors import PipelineError
from src.models.flops import flops_per_token
from src.paths import PROJECT_ROOT
from src.train.backends.local import LocalBackend
from src.train.backends.ray_train import RayBackend, storage_location
from src.train.callbacks import StepRecorder
from src.train.fit import fit, select_backend
from src.utils.flatten import flatten
from src.utils.typed_config import as_plain_dict

PLOTS = (("train_loss.csv", "train_loss"), ("val_loss.csv", "val_loss"), ("learning_rate.csv", "lr"))


@pytest.mark.slow
def test_fit_writes_model_metrics_plots_and_one_mlflow_run(
    metric_history, tiny_params, curve, mlflow_runs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    params = tiny_params
    metrics = fit(params, root=tmp_path)
    assert json.loads(Path(params.paths.metrics_file).read_text()) == pytest.approx(metrics)
    expected = {
        "train_loss",
        "val_loss",
        "val_perplexity",
        "unigram_perplexity",
        "tokens_per_s",
        "steps",
        "tflops",
    }
    assert set(metrics) == expected | {"tokens_seen", "val_bpb", "unigram_bpb"}
    # Bits per byte by hand: the loss summed over every predicted validation token, in bits, over the
    # UTF-8 bytes of the validation documents of the export.
    tokens = read_token_manifest(params.paths.token_dir(params.tokenize.tokenizer, "kjv"))
    rows = (params.paths.raw_dir() / "kjv" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    text_bytes = sum(len(json.loads(row)["text"].encode("utf-8")) for row in rows)
    predicted = tokens.splits["validation"].tokens - 1
    by_hand = metrics["val_loss"] * predicted / (math.log(2) * text_bytes)
    assert metrics["val_bpb"] == pytest.approx(by_hand, rel=1e-5)
    unigram_bits = math.log2(metrics["unigram_perplexity"]) * tokens.splits["validation"].tokens
    assert metrics["unigram_bpb"] == pytest.approx(unigram_bits / text_bytes, rel=1e-9)
    assert curve(Path(params.paths.plots_dir) / "val_loss.csv", "val_bpb")[-1] == pytest.approx(
        metrics["val_bpb"]
    )
    assert metrics["steps"] == 20 and metrics["tokens_seen"] == 20 * 4 * 32
    # Beats a uniform guess over the 600-token vocabulary after 20 steps.
    assert metrics["val_perplexity"] < 600
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))

    model = AutoModelForCausalLM.from_pretrained(params.paths.model_dir)
    assert model.config.num_hidden_layers == 2 and (Path(params.paths.model_dir) / "tokenizer.json").is_file()
    plots = Path(params.paths.plots_dir)
    assert curve(plots / "train_loss.csv", "step") == list(range(1, 21))
    assert curve(plots / "val_loss.csv", "step") == [5, 10, 15, 20]
    assert curve(plots / "val_loss.csv", "val_loss")[-1] == pytest.approx(metrics["val_loss"])

    (run,) = mlflow_runs(params.mlflow.tracking_uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-exp"
    assert run.data.tags["dvc.exp_name"] == "tiny-exp"
    assert len(run.data.tags["data.kjv.tokens.manifest_sha256"]) == 64
    assert len(run.data.tags["data.kjv.tokens.train_sha256"]) == 64
    # Exactly the params.yaml values, flattened: nothing else (no environment) becomes an MLflow param.
    assert run.data.params == flatten(as_plain_dict(params))
    assert run.data.params["train.lr"] == str(params.train.lr)
    assert run.data.params["model.n_embd"] == "16"
    for key, value in metrics.items():
        assert run.data.metrics[key] == pytest.approx(value), key  # latest values equal metrics.json
    logged = metric_history(params.mlflow.tracking_uri, run.info.run_id)
    assert [step for step, _ in logged][:20] == list(range(1, 21))
    client = MlflowClient(params.mlflow.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "samples.txt"} <= artifacts
    db = Path(params.mlflow.tracking_uri.removeprefix("sqlite:///"))
    assert run.info.artifact_uri.startswith((db.parent / "mlruns").as_uri())  # beside the store, not the cwd


@pytest.mark.slow
def test_same_params_give_the_same_losses(
    metric_history, tiny_params, curve, mlflow_runs, tmp_path: Path
) -> None:
    params = tiny_params
    plots = Path(params.paths.plots_dir)
    fit(params, root=tmp_path)
    first = {name: curve(plots / name, column) for name, column in PLOTS}

    again = fit(params, root=tmp_path)  # resume=auto: the final checkpoint is reused, nothing retrains
    assert again["steps"] == 20
    fresh = dataclasses.replace(params, train=dataclasses.replace(params.train, resume="never"))
    fit(fresh, root=tmp_path)  # an independent run: checkpoints cleared, trained from step 0
    independent, continued, first_run = mlflow_runs(params.mlflow.tracking_uri)  # newest first

    # The independent run repeats the first one exactly.
    assert {name: curve(plots / name, column) for name, column in PLOTS} == first
    uri = params.mlflow.tracking_uri
    expected = metric_history(uri, independent.info.run_id)
    assert [step for step, _ in expected][:20] == list(range(1, 21))
    assert metric_history(uri, first_run.info.run_id) == expected
    # The first run had finished, so the reused checkpoint got a run of its own, filled from the
    # history the checkpoint carries: complete, and equal to what an independent run logs.
    assert metric_history(uri, continued.info.run_id) == expected
    assert metric_history(uri, continued.info.run_id, "val_loss") == metric_history(
        uri, independent.info.run_id, "val_loss"
    )
    assert continued.data.metrics["val_loss"] == pytest.approx(independent.data.metrics["val_loss"])
    assert continued.info.run_id != first_run.info.run_id and continued.info.status == "FINISHED"


@pytest.mark.slow
def test_accumulated_micro_batches_record_the_loss_of_the_whole_step(
    make_params, curve, tmp_path: Path
) -> None:
    """2 micro-batches of 2 windows per step are the same 4 windows, and the same gradient, as one batch
    of 4: the recorded loss is the step's, not a micro-batch's divided by the accumulation."""
    plots = {}
    for name, shape in (("one", {"batch_size": 4}), ("two", {"batch_size": 2, "accumulate_grad_batches": 2})):
        params = load_params(make_params(tmp_path / name, **shape))
        fit(params, root=tmp_path / name)
        plots[name] = curve(Path(params.paths.plots_dir) / "train_loss.csv", "train_loss")
    assert plots["two"] == pytest.approx(plots["one"], rel=1e-4)
    assert min(plots["two"]) > 1.0  # a loss, not a loss divided by 2 (ln 600 = 6.4 at the start)


@pytest.mark.slow
def test_losses_read_every_few_steps_as_on_a_gpu_give_the_same_record_and_mfu_with_a_peak(
    make_params, metric_history, mlflow_runs, curve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On an accelerator the recorder reads losses every few steps (one sync each): the history,
    plots and MLflow curves must be those of reading every step, as on the CPU."""
    every_step = load_params(make_params(tmp_path / "every"))
    every_step_metrics = fit(every_step, root=tmp_path / "every")
    assert "mfu" not in every_step_metrics  # no known peak on a CPU

    def as_on_an_accelerator(self: StepRecorder, trainer, module) -> None:
        self.record_every = 3  # 20 steps: reads at 3, 6, 9, before each validation (5, 10 ...) and at 20

    monkeypatch.setattr(StepRecorder, "on_train_start", as_on_an_accelerator)
    batched = load_params(make_params(tmp_path / "batched", peak_tflops=0.5))
    metrics = fit(batched, root=tmp_path / "batched")

    for name, column in PLOTS:
        assert curve(Path(batched.paths.plots_dir) / name, column) == curve(
            Path(every_step.paths.plots_dir) / name, column
        )
    (run,) = mlflow_runs(batched.mlflow.tracking_uri)
    (reference,) = mlflow_runs(every_step.mlflow.tracking_uri)
    for key in ("train_loss", "lr", "val_loss"):
        assert metric_history(batched.mlflow.tracking_uri, run.info.run_id, key) == metric_history(
            every_step.mlflow.tracking_uri, reference.info.run_id, key
        )
    model = AutoModelForCausalLM.from_pretrained(batched.paths.model_dir)
    expected_tflops = metrics["tokens_per_s"] * flops_per_token(model, batched.train.max_length) / 1e12
    assert metrics["tflops"] == pytest.approx(expected_tflops)
    assert metrics["mfu"] == pytest.approx(expected_tflops / 0.5)
    assert run.data.metrics["mfu"] == pytest.approx(metrics["mfu"])
    steps = [step for step, _ in metric_history(batched.mlflow.tracking_uri, run.info.run_id, "step_mfu")]
    assert steps == list(range(1, 21))


@pytest.mark.slow
@pytest.mark.parametrize(
    "checkpoint_every",
    [20, 15],  # 15: the checkpoints are not tied to validation; the first is at a step that has none
    ids=["at-validation-steps", "between-validations"],
)
def test_killed_run_resumes_exactly(
    checkpoint_every: int, metric_history, make_params, train_command, curve, mlflow_runs, tmp_path: Path
) -> None:
    settings = {"max_steps": 100, "eval_every": 10, "checkpoint_every": checkpoint_every}
    dropout = {"dropout": 0.1}  # dropout draws random numbers: resume must restore the RNG too
    straight = make_params(tmp_path / "straight", model=dropout, **settings)
    killed = make_params(tmp_path / "killed", model=dropout, **settings)
    logs = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

    subprocess.run(train_command(straight), check=True, cwd=tmp_path, timeout=600, **logs)
    process = subprocess.Popen(train_command(killed), cwd=tmp_path, **logs)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 300
    while (
        not list(checkpoints.glob("run-*/step-*.ckpt"))
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "metrics.json").exists()
    subprocess.run(train_command(killed), check=True, cwd=tmp_path, timeout=600, **logs)

    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "tokens_seen", "steps"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    # The same windows in the same order, and the same losses: exact on an idle machine; one
    # loaded CI run once differed by 5e-7 between two separate processes, hence the tolerance.
    for name, column in PLOTS:
        resumed = curve(tmp_path / "killed" / "plots" / name, column)
        assert resumed == pytest.approx(
            curve(tmp_path / "straight" / "plots" / name, column), rel=1e-5, abs=1e-6
        )
    uri = f"sqlite:///{tmp_path / 'killed' / 'mlflow.db'}"
    (run,) = mlflow_runs(uri)  # the resumed run reattached to the killed one
    assert run.info.status == "FINISHED"
    straight_uri = f"sqlite:///{tmp_path / 'straight' / 'mlflow.db'}"
    (reference,) = mlflow_runs(straight_uri)
    # Each (metric, step) once, as in the uninterrupted run: MLflow got the steps up to the
    # checkpoint, and the resumed run logged the rest.
    for key in ("train_loss", "lr", "val_loss", "val_perplexity", "steps", "tokens_seen"):
        resumed = metric_history(uri, run.info.run_id, key)
        expected = metric_history(straight_uri, reference.info.run_id, key)
        assert [step for step, _ in resumed] == [step for step, _ in expected], key
        assert [value for _, value in resumed] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-6)
    assert [step for step, _ in metric_history(uri, run.info.run_id)] == list(range(1, 101))


def cut_short(data: bytes) -> bytes:
    return data[:-2]


def zero_first_half(data: bytes) -> bytes:
    return bytes(len(data) // 2) + data[len(data) // 2 :]  # id 0 everywhere in the first half, same size


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (cut_short, "truncated or damaged ("),
        (zero_first_half, "its bytes are not the ones manifest.json names ("),
    ],
)
def test_damaged_tokens_are_refused_before_training_and_not_rewritten(
    damage, message: str, make_params, folder_bytes, mlflow_runs, tmp_path: Path
) -> None:
    """The train stage only reads tokens, and only bytes the manifest's hash vouches for: damaged
    ones are one line naming the file, checked before any work, and never re-tokenized."""
    params = load_params(make_params(tmp_path / "run", data="copy"))
    token_dir = params.paths.token_dir("bpe", "kjv")
    train_bin = token_dir / "train.bin"
    train_bin.write_bytes(damage(train_bin.read_bytes()))
    before = folder_bytes(token_dir)
    with pytest.raises(PipelineError) as caught:
        fit(params, root=tmp_path)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{train_bin}: {message}")
    assert str(caught.value).endswith("re-run `dvc repro tokenize` (or `dvc checkout`)")
    assert folder_bytes(token_dir) == before  # the manifest and every token file as they were
    assert not Path(params.paths.model_dir).exists() and not Path(params.paths.metrics_file).exists()
    assert mlflow_runs(params.mlflow.tracking_uri) == []  # refused before a run was opened


def test_train_script_help(train_command) -> None:
    result = subprocess.run(
        [*train_command(PROJECT_ROOT / "params.yaml")[:2], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--params" in result.stdout and "--log-dir" in result.stdout


def test_unreachable_tracking_server_is_one_clear_line(
    tiny_params_file: Path, train_command, tool_env, free_port: int, tmp_path: Path
) -> None:
    """One line, no traceback, nothing trained, and the password in the URI shown nowhere."""
    params = yaml.safe_load(tiny_params_file.read_text())
    params["mlflow"]["tracking_uri"] = f"http://bob:hunter2@127.0.0.1:{free_port}"
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(params))
    env = tool_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    command = [*train_command(path), "--log-dir", str(tmp_path / "logs")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: mlflow.tracking_uri: cannot reach http://***@127.0.0.1:{free_port}")
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    (log_file,) = (tmp_path / "logs").glob("app_*.log")
    assert "hunter2" not in log_file.read_text()
    assert not Path(params["paths"]["checkpoint_dir"]).exists()  # refused before any training


def test_use_ray_is_the_only_switch(tiny_params, tmp_path: Path) -> None:
    assert isinstance(select_backend(tiny_params, tmp_path), LocalBackend)
    on_ray = dataclasses.replace(tiny_params, ray=dataclasses.replace(tiny_params.ray, use_ray=True))
    backend = select_backend(on_ray, tmp_path)
    assert isinstance(backend, RayBackend)
    assert backend.storage == storage_location(on_ray, tmp_path)


@pytest.mark.slow
def test_bf16_mixed_precision_trains(tiny_params, tmp_path: Path) -> None:
    train = dataclasses.replace(tiny_params.train, precision="bf16-mixed", max_steps=10, checkpoint_every=5)
    metrics = fit(dataclasses.replace(tiny_params, train=train), root=tmp_path)
    assert metrics["steps"] == 10 and math.isfinite(metrics["val_loss"])


def test_a_checkpoint_resumes_under_another_split_of_its_global_batch(
    make_params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """4 windows a step, then 2 micro-batches of 2: the same run, continued; 2 windows a step is
    another run, and the log says which setting made it one."""
    fit(load_params(make_params(tmp_path, batch_size=4)), root=tmp_path)
    caplog.set_level(logging.INFO, logger="src.train")
    fit(load_params(make_params(tmp_path, batch_size=2, accumulate_grad_batches=2)), root=tmp_path)
    assert "step-000000020.ckpt (step 20)" in caplog.text
    caplog.clear()
    fit(load_params(make_params(tmp_path, batch_size=2)), root=tmp_path)
    assert "no checkpoint of these settings yet" in caplog.text
    assert "differs in train.global_batch: 4 -> 2" in caplog.text


@pytest.mark.slow
def test_other_settings_never_cost_a_configuration_its_checkpoints(make_params, tmp_path: Path) -> None:
    """An experiment, or a typo, starts a configuration of its own; old ones go only after a finished
    run, beyond train.keep_configurations."""
    folder = tmp_path / "run"
    checkpoints = folder / "checkpoints"
    fit(load_params(make_params(folder, keep_configurations=1)), root=tmp_path)
    (first,) = checkpoints.iterdir()
    assert sorted(p.name for p in first.glob("*.ckpt")) == ["step-000000010.ckpt", "step-000000020.ckpt"]

    dead_server = {"tracking_uri": "http://127.0.0.1:9"}
    broken = load_params(make_params(folder, lr=0.01, keep_configurations=1, mlflow=dead_server))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    with pytest.raises(PipelineError, match=r"^mlflow.tracking_uri: cannot reach"):
        fit(broken, root=tmp_path)
    assert list(checkpoints.iterdir()) == [first]  # the failed start touched nothing

    fit(load_params(make_params(folder, lr=0.01, keep_configurations=1)), root=tmp_path)
    (kept,) = checkpoints.iterdir()
    assert kept != first  # the other configuration went once this one had finished

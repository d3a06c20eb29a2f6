"""The evaluate stage on a trained tiny model: lm-eval's figures against a hand count, the outputs, the
training's MLflow run, and bad input refused before the model is loaded."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from src.config import Params, load_params
from src.errors import ConfigError, PipelineError
from src.evaluate import run as evaluate_run
from src.evaluate.task_data import DOCUMENTS, write_task_data
from src.evaluate.tasks import load_tasks, task_manager


def _params(root: Path, **evaluate: object) -> Params:
    params = load_params(root / "params.yaml")
    return dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, **evaluate))


def _task_data(params: Params, root: Path) -> Path:
    folder = params.paths.eval_data_dir("kjv", root)
    write_task_data(params.paths.raw_dir(root) / "kjv", folder, "kjv", params.evaluate.choices, 0)
    return folder


def _hand_count_bpb(model_dir: Path, texts: list[str]) -> float:
    """Bits per byte of each document scored on its own after the tokenizer's prefix token (lm-eval's
    rule: BOS, else EOS), by a plain forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    nats, size = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            inputs = torch.tensor([[prefix, *ids[:-1]]])
            logprobs = torch.log_softmax(model(inputs).logits[0].double(), dim=-1)
            nats -= logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
            size += len(text.encode("utf-8"))
    return nats / size / math.log(2)


def test_bits_per_byte_through_lm_eval_equal_a_hand_count(trained_copy: Path) -> None:
    """Documents shorter than the context, so each is one window: lm-eval's rolling log-likelihood of
    the built-in task must be the hand count, to rounding."""
    from transformers import AutoTokenizer

    params = _params(trained_copy, tasks=("bpb",))
    folder = _task_data(params, trained_copy)
    model_dir = trained_copy / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    context = params.train.max_length
    texts = [
        json.loads(line)["text"]
        for line in (folder / DOCUMENTS).read_text(encoding="utf-8").splitlines()
        if len(tokenizer(json.loads(line)["text"])["input_ids"]) < context
    ][:40]
    assert len(texts) >= 10
    (folder / DOCUMENTS).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    manager = task_manager(params, trained_copy)
    tasks = load_tasks(params, manager, trained_copy)
    results = evaluate_run.run_harness(params, model_dir, list(tasks.values()), manager)
    measured = results["results"]["kjv_bpb"]["bits_per_byte,none"]
    assert measured == pytest.approx(_hand_count_bpb(model_dir, texts), rel=1e-5)


def test_the_stage_writes_results_and_metrics_and_logs_them_to_the_training_run(trained_copy: Path) -> None:
    from mlflow import MlflowClient

    from src.train.mlflow_store import tracking_uri
    from src.train.provenance import MODEL_DIGEST_TAG, weights_digest

    params = _params(trained_copy, limit=30)
    _task_data(params, trained_copy)
    client = MlflowClient(tracking_uri(params.mlflow, trained_copy))
    experiment = client.create_experiment(params.mlflow.experiment_name)
    trained = client.create_run(experiment, tags={MODEL_DIGEST_TAG: weights_digest(trained_copy / "model")})
    other = client.create_run(experiment, tags={MODEL_DIGEST_TAG: "0" * 64})
    for run in (trained, other):
        client.set_terminated(run.info.run_id, "FINISHED")

    evaluation = evaluate_run.evaluate(params, trained_copy)
    assert not client.get_run(trained.info.run_id).data.metrics  # files first, MLflow after the check
    evaluate_run.record(params, evaluation, trained_copy)
    metrics = evaluation.metrics

    assert set(metrics) == {"kjv_bpb", "kjv_continuation"}
    assert 0 < metrics["kjv_bpb"]["bits_per_byte"] < 8
    assert metrics["kjv_continuation"]["chance"] == 0.25
    assert 0 <= metrics["kjv_continuation"]["acc"] <= 1
    assert json.loads((trained_copy / "eval_metrics.json").read_text()) == metrics
    results = json.loads((trained_copy / "eval" / "results.json").read_text())
    assert results["results"]["kjv_continuation"]["acc,none"] == metrics["kjv_continuation"]["acc"]
    run = client.get_run(trained.info.run_id)
    assert run.info.status == "FINISHED"  # logged into, not reopened
    assert run.data.metrics["eval.kjv_bpb.bits_per_byte"] == metrics["kjv_bpb"]["bits_per_byte"]
    assert run.data.metrics["eval.kjv_continuation.acc_norm"] == metrics["kjv_continuation"]["acc_norm"]
    assert [a.path for a in client.list_artifacts(trained.info.run_id, "evaluation")] == [
        "evaluation/results.json"
    ]
    assert not client.get_run(other.info.run_id).data.metrics


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(evaluate_run, "run_harness", refuse)


def test_an_unknown_task_is_one_line_before_the_model_loads(trained_copy: Path, no_model_load: None) -> None:
    params = _params(trained_copy, tasks=("bpb", "hellaswagg"))
    _task_data(params, trained_copy)
    with pytest.raises(
        ConfigError, match=r"^evaluate.tasks: 'hellaswagg' is no lm-eval task nor a task of eval_tasks; list"
    ):
        evaluate_run.evaluate(params, trained_copy)


def test_a_hub_task_without_the_hub_is_one_line_before_the_model_loads(
    trained_copy: Path, no_model_load: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-eval knows arc_easy, but its data is on the Hub, which cannot be reached here."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    params = _params(trained_copy, tasks=("bpb", "arc_easy"))
    _task_data(params, trained_copy)
    with pytest.raises(
        PipelineError, match=r"^evaluate.tasks: the data of task 'arc_easy' is not available \("
    ):
        evaluate_run.evaluate(params, trained_copy)


def test_a_task_file_that_does_not_parse_is_one_line(trained_copy: Path, no_model_load: None) -> None:
    tasks = trained_copy / "my_tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: mine\ndataset_path: json\n  bad: [indent\n")
    params = _params(trained_copy, tasks=("mine",), include_path=str(tasks))
    _task_data(params, trained_copy)
    with pytest.raises(
        ConfigError, match=r"my_tasks/mine.yaml: not an lm-eval task file \(.*\); fix the YAML$"
    ):
        evaluate_run.evaluate(params, trained_copy)


def test_a_model_folder_with_another_tokenizer_is_one_line(trained_copy: Path, no_model_load: None) -> None:
    """A larger tokenizer (another model's) beside the weights: ids past the embedding."""
    from transformers import AutoTokenizer

    model = trained_copy / "model"
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(1000)])
    tokenizer.save_pretrained(model)
    params = _params(trained_copy)
    _task_data(params, trained_copy)
    with pytest.raises(PipelineError, match=r"model: its tokenizer has 1,\d+ tokens but the model only \d+ "):
        evaluate_run.evaluate(params, trained_copy)


def test_a_limit_below_one_is_refused_with_the_params() -> None:
    from src.config import parse_params

    for limit in (0, -3):
        with pytest.raises(
            ConfigError, match=rf"^evaluate.limit: expected an integer in \[1, .*got {limit}$"
        ):
            parse_params({"evaluate": {"limit": limit}, "download": {"datasets": {"kjv": {"path": "json"}}}})


def test_the_projects_own_task_files_run_as_a_user_names_them(trained_copy: Path) -> None:
    """eval_tasks/ as a user writes lm-eval tasks: Jinja fields, data paths from the project root."""
    from src.paths import PROJECT_ROOT

    params = _params(
        trained_copy, tasks=("kjv_cloze", "sonnets_bpb"), include_path=str(PROJECT_ROOT / "eval_tasks")
    )
    manager = task_manager(params, PROJECT_ROOT)
    tasks = load_tasks(params, manager, PROJECT_ROOT)
    assert sorted(tasks) == ["kjv_cloze", "sonnets_bpb"]
    results = evaluate_run.run_harness(params, trained_copy / "model", list(tasks.values()), manager)
    assert results["results"]["kjv_cloze"]["alias"] == "kjv_cloze"
    assert 0 <= results["results"]["kjv_cloze"]["acc,none"] <= 1
    assert results["results"]["sonnets_bpb"]["bits_per_byte,none"] > 0

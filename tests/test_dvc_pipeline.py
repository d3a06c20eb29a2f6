"""End to end: the DVC pipeline in a copy of the project, as a user runs it.

One `dvc repro` in a fresh clone is shared by the session (``reproduced_project``); each test
works on its own copy of it (``dvc_project``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytestmark = pytest.mark.slow


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)


def out_hash(project: Path, stage: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"][stage]["outs"][0]["md5"]


DATA_STAGES = ("download@kjv", "tokenizer", "tokenize@kjv")


def committed_hashes(project: Path) -> dict[str, str]:
    lock = yaml.safe_load(git(project, "show", "HEAD:dvc.lock").stdout)
    return {stage: lock["stages"][stage]["outs"][0]["md5"] for stage in DATA_STAGES}


def test_repro_reproduces_the_committed_data_and_is_then_a_no_op(
    dvc, reproduced_project: SimpleNamespace, dvc_project: Path
) -> None:
    first = reproduced_project.first_run  # the session's `dvc repro` in a fresh clone
    for stage in (*DATA_STAGES, "train"):
        assert f"Running stage '{stage}'" in first.stdout
    assert {stage: out_hash(dvc_project, stage) for stage in DATA_STAGES} == committed_hashes(dvc_project)
    again = dvc(dvc_project, "repro")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout
    metrics = json.loads(dvc(dvc_project, "metrics", "show", "--json").stdout)
    assert "val_perplexity" in json.dumps(metrics)
    plots = json.loads(dvc(dvc_project, "plots", "show", "--json").stdout)
    assert any("train_loss.csv" in name for name in json.dumps(plots).split('"'))

    shutil.rmtree(dvc_project / "data" / "main_cache")  # a wiped cache: both data stages run again
    rerun = dvc(dvc_project, "repro", "tokenize")
    assert all(f"Running stage '{stage}'" in rerun.stdout for stage in DATA_STAGES)
    assert {stage: out_hash(dvc_project, stage) for stage in DATA_STAGES} == committed_hashes(dvc_project)


def test_a_split_change_reruns_download_and_invalidates_what_follows(dvc, dvc_project: Path) -> None:
    """DVC's side of a split change: the download stage depends on its params section and the tokens
    on its export. (That the export itself changes: tests/data/test_download.py,
    test_changing_the_split_changes_the_export.)"""
    before = out_hash(dvc_project, "download@kjv")
    params = dvc_project / "params.yaml"
    params.write_text(params.read_text().replace("validation_fraction: 0.02", "validation_fraction: 0.05"))
    status = dvc(dvc_project, "status").stdout
    assert "download@kjv:" in status and "tokenize@kjv:" not in status and "train:" not in status
    run = dvc(dvc_project, "repro", "download@kjv")
    assert "Running stage 'download@kjv'" in run.stdout
    assert out_hash(dvc_project, "download@kjv") != before
    status = dvc(dvc_project, "status").stdout
    assert "download@kjv:" not in status and "tokenize@kjv:" in status and "data/main_cache/raw/kjv" in status


def test_bad_param_fails_with_one_line_and_keeps_the_export(dvc, dvc_project: Path, folder_bytes) -> None:
    export = dvc_project / "data" / "main_cache" / "raw" / "kjv"
    good = folder_bytes(export)
    params = dvc_project / "params.yaml"
    params.write_text(params.read_text().replace("validation_fraction: 0.02", "validation_fraction: x"))
    result = dvc(dvc_project, "repro", check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: download.datasets.kjv.validation_fraction: expected a number in (0, 1), got 'x'"]
    assert "Traceback" not in result.stderr
    assert folder_bytes(export) == good


def test_changing_the_vocabulary_reruns_tokenize_and_train_only(dvc, dvc_project: Path) -> None:
    params = dvc_project / "params.yaml"
    params.write_text(params.read_text().replace("vocab_size: 8192", "vocab_size: 4096"))
    status = dvc(dvc_project, "status").stdout
    assert "tokenizer:" in status and "download@kjv:" not in status
    params.write_text(params.read_text().replace("vocab_size: 4096", "vocab_size: 8192"))

    tokens_before = out_hash(dvc_project, "tokenize@kjv")
    run = dvc(dvc_project, "exp", "run", "-S", "tokenize.vocab_size=4096")
    assert "Running stage 'tokenize@kjv'" in run.stdout and "Running stage 'train'" in run.stdout
    assert "Running stage 'download@kjv'" not in run.stdout
    assert out_hash(dvc_project, "tokenize@kjv") != tokens_before


def test_seed_data_module_snippet_runs_from_the_project_root(dvc, dvc_project: Path) -> None:
    snippet = """
from src.data.data_manager import LightningDataModule
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("data/main_cache/tokenized/bpe/kjv/tokenizer")
dm = LightningDataModule(tokenizer=tokenizer, dataset_configs={"kjv": {}}, batch_size=8, max_length=128)
dm.prepare_data()
dm.setup("fit")
print(tuple(next(iter(dm.train_dataloader()))["input_ids"].shape))
"""
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=dvc_project, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(8, 128)")
    assert "up to date" in dvc(dvc_project, "status", "tokenize").stdout  # it reused the stage's tokens


@pytest.mark.parametrize("change", ["train.lr=0.001", "train.max_length=48"])
def test_training_changes_rerun_train_only(dvc, dvc_project: Path, change: str) -> None:
    data = {stage: out_hash(dvc_project, stage) for stage in DATA_STAGES}
    model = out_hash(dvc_project, "train")
    run = dvc(dvc_project, "exp", "run", "-S", change)
    assert "Running stage 'train'" in run.stdout
    assert "Running stage 'tokenize@kjv'" not in run.stdout
    assert "Running stage 'download@kjv'" not in run.stdout
    assert {stage: out_hash(dvc_project, stage) for stage in DATA_STAGES} == data
    assert out_hash(dvc_project, "train") != model
    shown = json.loads(dvc(dvc_project, "exp", "show", "--json").stdout)
    assert "val_perplexity" in json.dumps(shown)


def test_bad_training_param_keeps_model_and_metrics(dvc, dvc_project: Path) -> None:
    kept = [dvc_project / "data" / "model" / "model.safetensors", dvc_project / "metrics.json"]
    before = [path.read_bytes() for path in kept]
    params = dvc_project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.003", "lr: fast"))
    result = dvc(dvc_project, "repro", check=False)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: train.lr: expected a number in (0, 10], got 'fast'"
    ]
    assert [path.read_bytes() for path in kept] == before


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    return sorted(
        line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")
    )


def changed_stages(dvc, project: Path) -> list[str]:
    """The stages ``dvc status`` reports, by name."""
    status = dvc(project, "status").stdout.splitlines()
    return sorted(line[:-1] for line in status if line and not line[0].isspace() and line.endswith(":"))


def test_local_corpus_files_are_inputs_of_their_own_download_only(dvc, dvc_project: Path) -> None:
    """Editing, adding or removing a file re-runs that dataset's download; a params change to one
    dataset re-runs that one; the default dataset and the stages after it stay up to date. Mixed
    into training, a source is tokenized by its own stage: the others are not encoded again."""
    for name in ("notes", "other"):
        folder = dvc_project / "corpus" / name
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.txt").write_text(f"{name} file {i}, first paragraph.\n\nSecond paragraph.\n")
    params_file = dvc_project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["download"]["local"] = {
        name: {
            "path": "text",
            "data_dir": f"corpus/{name}",
            "data_files": "*.txt",
            "options": {"sample_by": "paragraph"},
        }
        for name in ("notes", "other")
    }
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    # check_params validates params.yaml whenever the file changes; it writes nothing.
    both = ["check_params", "download_local@notes", "download_local@other"]
    assert changed_stages(dvc, dvc_project) == both
    assert stages_run(dvc(dvc_project, "repro")) == both
    assert changed_stages(dvc, dvc_project) == []

    notes = dvc_project / "corpus" / "notes"
    (notes / "1.txt").write_text("an edited file\n")
    assert changed_stages(dvc, dvc_project) == ["download_local@notes"]
    before = out_hash(dvc_project, "download_local@other")
    assert stages_run(dvc(dvc_project, "repro")) == ["download_local@notes"]
    assert out_hash(dvc_project, "download_local@other") == before
    export = dvc_project / "data" / "main_cache" / "raw" / "notes"
    assert (
        "an edited file\\n"
        in (export / "train.jsonl").read_text() + (export / "validation.jsonl").read_text()
    )

    (notes / "3.txt").write_text("a new file\n")
    assert changed_stages(dvc, dvc_project) == ["download_local@notes"]
    dvc(dvc_project, "repro")
    (notes / "0.txt").unlink()
    assert changed_stages(dvc, dvc_project) == ["download_local@notes"]
    dvc(dvc_project, "repro")
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["source"]["files"] == {"*.txt": ["1.txt", "2.txt", "3.txt"]}

    params = yaml.safe_load(params_file.read_text())
    params["download"]["local"]["other"]["validation_fraction"] = 0.5
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    assert changed_stages(dvc, dvc_project) == ["check_params", "download_local@other"]
    dvc(dvc_project, "repro")

    # Mixed into training: only the new source is encoded, and an edit re-runs its own chain only.
    paragraphs = (f"Note {i}: the harvest was gathered in week {i}." for i in range(300))
    (notes / "big.txt").write_text("\n\n".join(paragraphs) + "\n")
    params = yaml.safe_load(params_file.read_text())
    params["download"]["local"]["notes"]["validation_fraction"] = 0.2
    params["tokenize"]["datasets"] = ["kjv", "notes"]
    params["train"]["mixture"] = {"kjv": 0.7, "notes": 0.3}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    kjv_tokens = out_hash(dvc_project, "tokenize@kjv")
    run = dvc(dvc_project, "repro")
    # the new source's evaluation data too, and the new model's evaluation
    assert stages_run(run) == [
        "check_params",
        "download_local@notes",
        "eval_data@notes",
        "evaluate",
        "tokenize@notes",
        "train",
    ]
    assert out_hash(dvc_project, "tokenize@kjv") == kjv_tokens
    metrics = json.loads((dvc_project / "metrics.json").read_text())
    assert {"val_loss/kjv", "val_loss/notes", "val_bpb/kjv", "val_bpb/notes", "unigram_bpb/notes"} <= set(
        metrics
    )
    shown = json.loads(dvc(dvc_project, "exp", "show", "--json").stdout)
    assert "val_bpb/notes" in json.dumps(shown)
    (notes / "2.txt").write_text("edited once more\n")
    assert changed_stages(dvc, dvc_project) == ["download_local@notes"]
    run = dvc(dvc_project, "repro")
    assert stages_run(run) == [
        "download_local@notes",
        "eval_data@notes",
        "evaluate",
        "tokenize@notes",
        "train",
    ]


def test_gpt2s_special_token_configuration_end_to_end(dvc, dvc_project: Path, gpt2_style_tokenizer) -> None:
    """A tokenizer folder configured as GPT-2's (UNK = BOS = EOS = the last id) tokenizes the corpus and
    trains the model a few steps under `dvc repro`."""
    export = dvc_project / "data" / "main_cache" / "raw" / "kjv" / "train.jsonl"
    texts = [json.loads(line)["text"] for line in export.read_text().splitlines()[:3000]]
    gpt2_style_tokenizer(dvc_project / "tokenizers" / "gpt2", texts)
    params = dvc_project / "params.yaml"
    params.write_text(params.read_text().replace("tokenizer: bpe", "tokenizer: tokenizers/gpt2"))
    run = dvc(dvc_project, "repro")
    assert stages_run(run) == ["check_params", "evaluate", "tokenize@kjv", "tokenizer", "train"]
    token_dir = dvc_project / "data" / "main_cache" / "tokenized" / "tokenizers" / "gpt2" / "kjv"
    manifest = json.loads((token_dir / "manifest.json").read_text())["tokenizer"]
    assert manifest["eos_token"] == "<|endoftext|>"
    assert manifest["eos_id"] == manifest["vocab_size"] - 1 == 399
    assert (manifest["document_start"], manifest["document_end"]) == ([], [399])
    metrics = json.loads((dvc_project / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["val_loss"] < 6.0  # below ln(400): it learned something


def cache_objects(project: Path) -> dict[Path, str]:
    """Every object in DVC's cache and the MD5 of its bytes (DVC names an object by that MD5)."""
    import hashlib

    root = project / ".dvc" / "cache" / "files" / "md5"
    return {path: hashlib.md5(path.read_bytes()).hexdigest() for path in root.rglob("*") if path.is_file()}


def test_outputs_are_linked_into_the_cache_and_a_rewrite_never_changes_an_object(
    dvc, dvc_project: Path, folder_bytes
) -> None:
    """``cache.type`` links outputs into DVC's cache (one copy of the bytes on disk, not two). That is
    safe only if no stage writes into an output's files in place: every output is written under a
    new name and swapped in whole, so a re-run leaves each cache object's bytes as they were, and
    the old version checks out again byte for byte."""
    export = dvc_project / "data" / "main_cache" / "raw" / "kjv"
    params = dvc_project / "params.yaml"
    default = params.read_text()

    def repro_with_fraction(fraction: str) -> None:
        params.write_text(default.replace("validation_fraction: 0.02", f"validation_fraction: {fraction}"))
        dvc(dvc_project, "repro", "tokenize@kjv")

    repro_with_fraction("0.05")
    before, first = cache_objects(dvc_project), folder_bytes(export)
    for path, digest in before.items():
        assert path.name.removesuffix(".dir") == digest[2:] and path.parent.name == digest[:2], path
    linked = {(p.stat().st_dev, p.stat().st_ino) for p in before}
    for name in first:
        file = (export / name).stat()
        assert (file.st_dev, file.st_ino) in linked, f"{name} is not a link to its cache object"

    repro_with_fraction("0.03")  # download and tokenize rewrite their outputs
    assert folder_bytes(export) != first
    after = cache_objects(dvc_project)
    assert {path: after.get(path) for path in before} == before, "a rewrite changed a cache object"

    repro_with_fraction("0.05")  # the first version again, from DVC's cache
    assert folder_bytes(export) == first


def test_evaluate_reruns_alone_for_its_settings_and_after_a_new_model(
    dvc, reproduced_project: SimpleNamespace, dvc_project: Path, mlflow_runs
) -> None:
    """An evaluate setting re-runs the evaluate stage only; a training change re-runs train and
    evaluate, and the figures reach `dvc exp show` and the MLflow run that trained the model."""
    first = reproduced_project.first_run.stdout
    assert "Running stage 'eval_data@kjv'" in first and "Running stage 'evaluate'" in first
    run = dvc(dvc_project, "exp", "run", "-S", "evaluate.limit=10")
    assert "Running stage 'evaluate'" in run.stdout
    assert "Running stage 'train'" not in run.stdout and "Running stage 'eval_data@kjv'" not in run.stdout
    shown = json.dumps(json.loads(dvc(dvc_project, "exp", "show", "--json").stdout))
    assert "eval_metrics.json" in shown and "kjv_continuation" in shown and "bits_per_byte" in shown

    run = dvc(dvc_project, "exp", "run", "-S", "train.lr=0.001")
    assert "Running stage 'train'" in run.stdout and "Running stage 'evaluate'" in run.stdout
    assert "Running stage 'eval_data@kjv'" not in run.stdout
    figures = json.loads((dvc_project / "eval_metrics.json").read_text())
    (trained,) = mlflow_runs(f"sqlite:///{dvc_project / 'mlflow.db'}")
    assert trained.info.status == "FINISHED"
    assert trained.data.metrics["eval.kjv_bpb.bits_per_byte"] == figures["kjv_bpb"]["bits_per_byte"]
    assert trained.data.metrics["eval.kjv_continuation.acc"] == figures["kjv_continuation"]["acc"]
    assert trained.data.metrics["val_loss"] > 0  # the training's own figures, on the same run

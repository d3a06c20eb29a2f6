"""Fault injection: a ``dvc repro`` killed at any point, then run again, ends where an uninterrupted one does.

Each case copies a small project at the state where the stage under test starts, runs
``dvc repro`` with ``LMPIPE_KILL_AT`` naming one kill point (:mod:`src.utils.faults`: the stage
sends itself SIGKILL there), checks that it died there, runs ``dvc repro`` again and compares
the project with one uninterrupted run made once for the module:

* every output byte for byte (export, tokens, model folder, plots), ``metrics.json`` (all but
  the measured tokens/s) with the same final losses, the same checkpoints kept, and the same
  hashes in ``dvc.lock``;
* MLflow: exactly one FINISHED run of the training, with the uninterrupted run's metric history
  (every key, each step once, the same values), and no run left RUNNING;
* no staging leftovers (``.<name>.*.tmp``, ``.<name>.*.old``) anywhere in the project.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytestmark = pytest.mark.slow

#: A corpus, vocabulary and training small enough that a whole ``dvc repro`` takes seconds. The
#: last checkpoint (step 20) comes before the last step (25), so a kill while the outputs are
#: written makes the next run train steps 21-25 again: the case where MLflow could get them twice.
SETTINGS = {
    "download.datasets.kjv.validation_fraction": 0.02,
    "tokenize.vocab_size": 600,
    "train.max_steps": 25,
    "train.eval_every": 5,
    "train.checkpoint_every": 10,
    "train.keep_checkpoints": 2,
}

#: Metrics that measure time; every other metric is a pure function of the settings on CPU.
TIMED = {"tokens_per_s", "step_tokens_per_s", "tflops", "mfu", "step_mfu"}  # speeds, not results

#: What a run leaves at the project root for MLflow; a copied store would log into its source.
STORE = ("mlflow.db", "mlflow.db.lock", "mlruns")

_LEFTOVER = re.compile(r"\..+\.(tmp|old)")


@dataclass(frozen=True)
class Case:
    point: str
    """``LMPIPE_KILL_AT``: the kill point, ``name`` or ``name:N`` (its N-th hit)."""
    start: str
    """The project state the killed run starts from: the stages before the one killed have run."""
    command: tuple[str, ...] = ("repro",)


CASES = [
    # download: a third of the rows exported, the export complete but not yet in its place.
    Case("export.row:1000", "empty"),
    Case("files.dir-staged.kjv", "empty"),
    # tokenizer and tokenize: the tokenizer trained, its folder staged, the first chunk of ids written,
    # every token file staged (the token folder is named after the dataset, as the export is: from
    # "downloaded", the first "kjv" folder staged is the tokens').
    Case("tokenize.tokenizer-trained", "downloaded"),
    Case("tokenize.chunk-written", "downloaded"),
    Case("files.dir-staged.tokenizer", "downloaded"),
    Case("files.dir-staged.kjv", "downloaded"),
    # train: the MLflow run created, before the first checkpoint, the first checkpoint written
    # under its temporary name, written but MLflow not yet told, between checkpoints, trained but
    # nothing written, the model folder in place but not metrics.json.
    Case("mlflow.run-created", "tokenized"),
    Case("train.after-step-5", "tokenized"),
    Case("files.file-staged.step-000000010.ckpt", "tokenized"),
    Case("train.checkpoint-persisted", "tokenized"),
    Case("train.after-step-15", "tokenized"),
    Case("train.trained", "tokenized"),
    Case("files.dir-swapped.model", "tokenized"),
    # the end-of-training MLflow logging: the summaries logged; everything logged, the model too,
    # and the run about to be ended.
    Case("mlflow.summary-logged", "tokenized"),
    Case("mlflow.run-ending", "tokenized"),
    # a forced re-run of train: the last model set aside, the new one not yet in its place.
    Case("files.dir-retired.model", "trained", ("repro", "--force", "--single-item", "train")),
]


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative name."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def locked_outs(project: Path) -> dict[str, str]:
    """The md5 ``dvc.lock`` records per output, less ``metrics.json`` (it holds measured times;
    compared on its own)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        f"{stage}: {out['path']}": out["md5"]
        for stage, entry in lock["stages"].items()
        for out in entry.get("outs", [])  # check_params writes nothing
        if out["path"] != "metrics.json"
    }


def outputs(project: Path) -> dict[str, object]:
    """Everything a run leaves that must not depend on whether it was interrupted (but MLflow)."""
    metrics = json.loads((project / "metrics.json").read_text())
    for measured in TIMED & set(metrics):
        metrics.pop(measured)
    checkpoints = project / "data" / "checkpoints"
    return {
        "export": digests(project / "data" / "main_cache" / "raw" / "kjv"),
        "tokenizer": digests(project / "data" / "main_cache" / "tokenized" / "bpe" / "tokenizer"),
        "tokens": digests(project / "data" / "main_cache" / "tokenized" / "bpe" / "kjv"),
        "model": digests(project / "data" / "model"),
        "plots": digests(project / "plots"),
        "metrics": metrics,
        "checkpoints": sorted(p.relative_to(checkpoints).as_posix() for p in checkpoints.rglob("*")),
        "dvc.lock": locked_outs(project),
    }


def leftovers(project: Path) -> list[str]:
    """Staging and retired copies (``.<name>.*.tmp``, ``.<name>.*.old``) anywhere outside git and DVC."""
    return sorted(
        path.relative_to(project).as_posix()
        for path in project.rglob(".*")
        if _LEFTOVER.fullmatch(path.name) and path.relative_to(project).parts[0] not in (".git", ".dvc")
    )


def store_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def history(uri: str, run) -> dict[str, list[tuple[int, float]]]:
    """Every metric of ``run``: its (step, value) pairs in step order, duplicates included."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in sorted(run.data.metrics)
    }


def models(uri: str, run) -> list[str]:
    """The status of each model logged by ``run`` (deleted ones are not listed)."""
    from mlflow import MlflowClient

    found = MlflowClient(uri).search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    return [str(model.status) for model in found]


@pytest.fixture(scope="module")
def starts(project_copy, dvc, tiny_data: SimpleNamespace, tmp_path_factory) -> dict[str, Path]:
    """The states a case starts from, each made by ``dvc repro`` (read-only: cases work on copies),
    and ``reference``: one uninterrupted ``dvc repro`` with its MLflow store."""
    base = tmp_path_factory.mktemp("fault_starts")
    settings = {**SETTINGS, "download.datasets.kjv.data_files": str(tiny_data.corpus)}
    found = {"empty": project_copy(base / "empty", settings)}
    for previous, name, target in (
        ("empty", "downloaded", "download@kjv"),
        ("downloaded", "tokenized", "tokenize"),
        ("tokenized", "reference", "train"),
    ):
        found[name] = Path(shutil.copytree(found[previous], base / name, symlinks=True))
        dvc(found[name], "repro", target)
    found["trained"] = Path(
        shutil.copytree(
            found["reference"], base / "trained", symlinks=True, ignore=shutil.ignore_patterns(*STORE)
        )
    )
    return found


@pytest.fixture(scope="module")
def reference(starts: dict[str, Path], mlflow_runs) -> SimpleNamespace:
    project = starts["reference"]
    (run,) = mlflow_runs(store_uri(project))
    assert run.info.status == "FINISHED"
    uri = store_uri(project)
    return SimpleNamespace(outputs=outputs(project), history=history(uri, run), models=models(uri, run))


@pytest.mark.parametrize("case", CASES, ids=[f"{case.point}-from-{case.start}" for case in CASES])
def test_a_killed_repro_is_finished_by_the_next_exactly_as_an_uninterrupted_one(
    case: Case, starts: dict[str, Path], reference: SimpleNamespace, dvc, mlflow_runs, tmp_path: Path
) -> None:
    project = Path(shutil.copytree(starts[case.start], tmp_path / "project", symlinks=True))
    killed = dvc(project, *case.command, check=False, env={"LMPIPE_KILL_AT": case.point})
    said = killed.stdout + killed.stderr
    assert killed.returncode != 0 and f"kill point {case.point}: SIGKILL" in said, said[-3000:]

    dvc(project, "repro")

    found = outputs(project)
    assert found["metrics"] == pytest.approx(reference.outputs["metrics"], rel=1e-6, abs=1e-6)
    assert {**found, "metrics": None} == {**reference.outputs, "metrics": None}
    assert leftovers(project) == []

    runs = mlflow_runs(store_uri(project))
    assert [run.info.status for run in runs if run.info.status != "KILLED"] == ["FINISHED"]
    (run,) = [run for run in runs if run.info.status == "FINISHED"]
    logged = history(store_uri(project), run)
    assert {key: [step for step, _ in rows] for key, rows in logged.items()} == {
        key: [step for step, _ in rows] for key, rows in reference.history.items()
    }  # every key, each step once
    for key in set(logged) - TIMED:
        values = [value for _, value in logged[key]]
        assert values == pytest.approx([v for _, v in reference.history[key]], rel=1e-6, abs=1e-6), key
    assert models(store_uri(project), run) == reference.models  # one model, complete

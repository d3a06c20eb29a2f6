"""The built-in tasks' data: documents as exported, continuation questions drawn deterministically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from src.errors import PipelineError
from src.evaluate.task_data import (
    CONTINUATION,
    DOCUMENTS,
    continuation_questions,
    read_task_data,
    split_document,
    write_task_data,
)
from src.paths import PROJECT_ROOT


def test_a_document_is_cut_at_the_space_nearest_its_middle() -> None:
    assert split_document("In the beginning God created the heaven and the earth.") == (
        "In the beginning God created",
        "the heaven and the earth.",
    )
    assert split_document("Jesus wept.") is None  # too short for a question
    assert split_document("one two three") is None


def test_each_question_holds_its_own_ending_once_among_other_documents_endings() -> None:
    documents = [f"verse {i} begins here and then it ends with words {i} {i + 1}" for i in range(50)]
    questions = continuation_questions(documents, choices=4, seed=0)
    assert len(questions) == 50
    for document, question in zip(documents, questions, strict=True):
        context, ending = split_document(document)
        assert question.context == context
        assert question.choices[question.label] == ending
        assert len(set(question.choices)) == 4
    labels = Counter(q.label for q in questions)
    assert set(labels) == {0, 1, 2, 3}  # the answer's place is drawn too
    assert continuation_questions(documents, 4, 0) == questions
    assert continuation_questions(documents, 4, 1) != questions


def test_too_few_documents_for_the_choices_is_one_line() -> None:
    with pytest.raises(PipelineError, match=r"^evaluate.choices: 4 endings per question need"):
        continuation_questions(["a b c d e f", "g h i j k l"], choices=4, seed=0)


def _write_in_a_process(export: Path, target: Path, hash_seed: str, threads: str) -> None:
    code = (
        "import sys; from pathlib import Path; from src.evaluate.task_data import write_task_data; "
        "write_task_data(Path(sys.argv[1]), Path(sys.argv[2]), 'kjv', 4, 0)"
    )
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "OMP_NUM_THREADS": threads,
        "RAYON_NUM_THREADS": threads,
    }
    subprocess.run(
        [sys.executable, "-c", code, str(export), str(target)], cwd=PROJECT_ROOT, env=env, check=True
    )


def test_the_task_data_is_the_same_bytes_across_runs_and_thread_counts(tiny_data, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write_in_a_process(tiny_data.export, first, "1", "1")
    _write_in_a_process(tiny_data.export, second, "2", "2")
    names = sorted(path.name for path in first.iterdir())
    assert (
        names
        == sorted(path.name for path in second.iterdir())
        == sorted([CONTINUATION, DOCUMENTS, "manifest.json"])
    )
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / DOCUMENTS).read_bytes() == (tiny_data.export / "validation.jsonl").read_bytes()
    record = read_task_data(first, "kjv")
    assert record["questions"] == len((first / CONTINUATION).read_text().splitlines())
    assert all(len(json.loads(line)["choices"]) == 4 for line in (first / CONTINUATION).open())


def test_a_damaged_export_or_task_file_is_one_line_and_keeps_the_last_good_data(
    tiny_data, tmp_path: Path
) -> None:
    import shutil

    export = Path(shutil.copytree(tiny_data.export, tmp_path / "export"))
    target = tmp_path / "eval"
    write_task_data(export, target, "kjv", 4, 0)
    good = (target / CONTINUATION).read_bytes()
    validation = export / "validation.jsonl"
    validation.write_bytes(validation.read_bytes().replace(b"LORD", b"Lord", 1))
    with pytest.raises(
        PipelineError,
        match=r"validation.jsonl: its bytes are not the ones manifest.json names; re-run `dvc repro downl",
    ):
        write_task_data(export, target, "kjv", 4, 0)
    assert (target / CONTINUATION).read_bytes() == good
    (target / CONTINUATION).write_bytes(good[:-10])
    with pytest.raises(
        PipelineError, match=r"continuation.jsonl: its bytes are not .*re-run `dvc repro eval_data@kjv`"
    ):
        read_task_data(target, "kjv")

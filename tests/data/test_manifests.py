"""Typed manifests: canonical bytes both ways, and one line for any manifest this version cannot read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from src.data.manifests import MANIFEST, ExportManifest, TokenManifest
from src.errors import PipelineError
from src.utils.files import sha256_file

KINDS = {"export": (ExportManifest, "format", "download"), "tokens": (TokenManifest, "layout", "tokenize")}


@pytest.fixture(params=sorted(KINDS))
def written(request: pytest.FixtureRequest, tiny_export: Path, token_dir: Path) -> tuple[type, Path, str]:
    """(manifest class, manifest file, its text) as the download and tokenize stages wrote them."""
    cls = KINDS[request.param][0]
    path = (tiny_export if request.param == "export" else token_dir) / MANIFEST
    return cls, path, path.read_text(encoding="utf-8")


def refusal(cls: type, text: str, where: Path) -> str:
    with pytest.raises(PipelineError) as caught:
        cls.from_json(text, where)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_round_trip_is_byte_identical(written: tuple[type, Path, str]) -> None:
    cls, path, text = written
    manifest = cls.from_json(text, path)
    assert manifest.to_json() == text
    assert cls.from_json(manifest.to_json(), path) == manifest
    changed = dataclasses.replace(manifest, splits={})
    assert changed.to_json() != text and cls.from_json(changed.to_json(), path) == changed


def test_fields_are_typed(tiny_export: Path, token_dir: Path) -> None:
    export = ExportManifest.from_json((tiny_export / MANIFEST).read_text(), tiny_export / MANIFEST)
    assert export.splits["train"].file == "train.jsonl" and export.source.text_column == "text"
    tokens = TokenManifest.from_json((token_dir / MANIFEST).read_text(), token_dir / MANIFEST)
    assert tokens.splits["train"].file == "train.bin" and tokens.tokenizer.vocab_size == 600
    assert tokens.source.dataset == "kjv"
    assert tokens.source.files[MANIFEST] == sha256_file(tiny_export / MANIFEST)  # bound to the export
    assert tokens.token_dtype() == np.dtype("<u2")
    assert dataclasses.replace(tokens, dtype="uint32").token_dtype() == np.dtype("<u4")


def test_another_format_is_refused(written: tuple[type, Path, str]) -> None:
    cls, path, text = written
    _, key, stage = KINDS["export" if cls is ExportManifest else "tokens"]
    data = json.loads(text)
    data[key] = "version 0"
    message = refusal(cls, json.dumps(data), path)
    assert message.endswith(
        f"written in another format ('version 0') than this version reads; re-run `dvc repro {stage}`"
    )
    del data[key]
    assert "another format (None)" in refusal(cls, json.dumps(data), path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda text: text[: len(text) // 2], r"not valid JSON; re-run `dvc repro \w+`$"),
        (lambda text: "[1, 2]", r"not a manifest; re-run `dvc repro \w+`$"),
        (lambda text: "", r"not valid JSON"),
    ],
)
def test_damaged_json_is_refused(written: tuple[type, Path, str], damage, expected: str) -> None:
    cls, path, text = written
    assert path.name in refusal(cls, damage(text), path)
    with pytest.raises(PipelineError, match=expected):
        cls.from_json(damage(text), path)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda data: data.pop("source"), "source"),
        (lambda data: data["splits"]["train"].update(surprise=1), "surprise"),
        (lambda data: data["splits"]["train"].pop("sha256"), "sha256"),
        (lambda data: data["splits"]["train"].update(sha256=12), "sha256"),
    ],
    ids=["missing", "unknown", "missing-nested", "wrong-type"],
)
def test_missing_unknown_or_mistyped_fields_are_refused(
    written: tuple[type, Path, str], edit, field: str
) -> None:
    cls, path, text = written
    stage = "download" if cls is ExportManifest else "tokenize"
    data = json.loads(text)
    edit(data)
    message = refusal(cls, json.dumps(data), path)
    assert message.startswith(f"{path}: damaged manifest (") and field in message
    assert message.endswith(f"); re-run `dvc repro {stage}`")

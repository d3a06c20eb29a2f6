"""The seeded train/validation split and the export format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from src.data.manifests import ExportManifest, ExportSource
from src.data.raw_export import plan_splits, read_manifest, write_export
from src.errors import PipelineError


def test_split_is_a_pure_function_of_rows_fraction_and_seed() -> None:
    first = plan_splits({"train": 1000}, 0.1, seed=3)
    again = plan_splits({"train": 1000}, 0.1, seed=3)
    other = plan_splits({"train": 1000}, 0.1, seed=4)
    assert np.array_equal(first[0].validation_mask, again[0].validation_mask)
    assert not np.array_equal(first[0].validation_mask, other[0].validation_mask)
    assert first[0].validation_mask.sum() == 100


def test_source_validation_split_is_kept() -> None:
    plans = plan_splits({"train": 10, "validation": 3, "test": 2}, 0.5, seed=0)
    assert [(p.source, p.validation_mask) for p in plans] == [
        ("train", None),
        ("validation", None),
        ("test", None),
    ]


def toy_manifest() -> ExportManifest:
    source = ExportSource(
        path="json",
        name=None,
        data_dir=None,
        data_files="toy.jsonl",
        files={"toy.jsonl": ("toy.jsonl",)},
        options={},
        revision=None,
        text_column="text",
        sha256={"toy.jsonl": "0" * 64},
        rows={"train": 23},
    )
    return ExportManifest(
        dataset="toy", source=source, validation_split={"fraction": 0.25, "seed": 0}, splits={}
    )


def test_export_writes_jsonl_and_manifest_and_skips_blank_rows(tmp_path: Path) -> None:
    texts = [f"document {i}" for i in range(20)] + ["", "   ", None]
    splits = {"train": Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})}
    plans = plan_splits({"train": len(texts)}, 0.25, seed=0)
    manifest = write_export(splits, "text", plans, tmp_path / "out", toy_manifest())
    on_disk = read_manifest(tmp_path / "out")
    assert on_disk == manifest
    assert (on_disk.dataset, on_disk.source) == ("toy", toy_manifest().source)
    assert (tmp_path / "out" / "manifest.json").read_text() == manifest.to_json()
    rows = {
        split: [json.loads(line)["text"] for line in (tmp_path / "out" / info.file).read_text().splitlines()]
        for split, info in on_disk.splits.items()
    }
    assert sorted(rows["train"] + rows["validation"]) == sorted(texts[:20])
    assert {split: len(r) for split, r in rows.items()} == {s: i.rows for s, i in on_disk.splits.items()}
    assert {s: i.rows for s, i in on_disk.splits.items()} == {"train": 15, "validation": 5}
    assert rows["train"] == sorted(rows["train"], key=lambda t: int(t.split()[1]))  # source order kept
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json",
        "train.jsonl",
        "validation.jsonl",
    ]


def test_missing_export_says_which_stage_makes_it(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"no export here; run `dvc repro download` first$"):
        read_manifest(tmp_path / "nothing")


def test_fast_line_parser_agrees_with_json() -> None:
    from src.data.raw_export import document_line, parse_document_lines

    plain = ["In the beginning", "naïve café 東京 🎉", "  spaces  "]
    escaped = [*plain, 'a "quoted" word', "two\nlines", "back\\slash", "tab\there", '"}\n{"text": "']
    for texts in (plain, escaped):
        block = b"".join(line for t in texts if (line := document_line(t)))
        assert parse_document_lines(block) == [json.loads(line)["text"] for line in block.splitlines()]
    assert parse_document_lines(b"") == []


def test_export_lines_are_the_json_dumps_lines_byte_for_byte() -> None:
    """The export writes lines a batch at a time with json's own string encoder; the bytes must be
    the ones ``json.dumps`` gave before (the export's DVC hash), whatever the text holds."""
    from src.data.raw_export import document_lines

    texts = [
        "In the beginning", "naïve café 東京 🎉", 'a "quoted" word', "two\nlines", "back\\slash",
        "tab\there", "\x00\x1f\x7f control", "\u2028line separator\u2029", '"}\n{"text": "', "  spaces  ",
        "", "   ", None, 7,
    ]  # fmt: skip
    expected = [
        json.dumps({"text": t}, ensure_ascii=False) + "\n" if isinstance(t, str) and t.strip() else None
        for t in texts
    ]
    assert document_lines(texts) == expected


def test_the_column_wise_lines_are_the_row_wise_lines_byte_for_byte() -> None:
    """The export encodes Arrow columns column-wise: every kind of text (escapes, control
    characters, every Unicode space, blank and null rows) gives the bytes json.dumps gives."""
    import random

    import pyarrow as pa

    from src.data.raw_export import PYTHON_SPACES, _route, arrow_document_lines, document_lines

    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert [ord(c) for c in spaces] == list(PYTHON_SPACES)
    texts = [
        "In the beginning", 'say "hi"', "back\\slash", "a\nb\rc\td\be\ff", "\x00\x01\x0b\x1f\x7f",
        "東京 🎉 naïve",
        "\u2028\u2029", "", " ", None, *spaces, "".join(spaces), "".join(spaces) + "x", "\x1c\x1d", "x\x1c",
    ]  # fmt: skip
    rng = random.Random(0)
    alphabet = [*spaces, "\\", '"', "\x00", "\x08", "\x0c", "\x7f", "a", "é", "東", "🎉", "\ud7ff", "\ue000"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    for kind in (pa.string(), pa.large_string()):
        lines, content = arrow_document_lines(pa.array(texts, kind))
        kept = [line if keep else None for line, keep in zip(lines.to_pylist(), content, strict=True)]
        assert kept == document_lines(texts)
    mask = np.array([i % 3 == 0 for i in range(len(texts))])
    by_arrow = _route(pa.array(texts), ["train", "validation"], mask, 0)
    assert by_arrow == _route(texts, ["train", "validation"], mask, 0)
    assert _route(pa.array(texts), ["test"], None, 0) == _route(texts, ["test"], None, 0)

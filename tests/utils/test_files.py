"""Atomic outputs: a failure half-way never replaces the last good output."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.utils.files import atomic_directory, atomic_file, canonical_json, write_text_atomic


def test_failed_write_keeps_previous_directory(tmp_path: Path) -> None:
    target = tmp_path / "export"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_successful_write_replaces_directory(tmp_path: Path) -> None:
    target = tmp_path / "export"
    for content in ("one", "two"):
        with atomic_directory(target) as staging:
            (staging / f"{content}.txt").write_text(content)
    assert sorted(p.name for p in target.iterdir()) == ["two.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_write_text_atomic_and_canonical_json(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_text_atomic(path, canonical_json({"b": 1, "a": [1, 2]}))
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_new_write_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    target = tmp_path / "kjv"
    (tmp_path / ".kjv.abc123.tmp").mkdir()
    (tmp_path / ".kjv.abc123.tmp" / "train.jsonl").write_text("half")
    (tmp_path / ".kjv.def456.old").mkdir()
    (tmp_path / ".kjv2.zzz.tmp").mkdir()  # another output's staging: not ours
    with atomic_directory(target) as staging:
        (staging / "train.jsonl").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kjv2.zzz.tmp", "kjv"]
    assert (target / "train.jsonl").read_text() == "whole"


def test_a_new_file_write_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    """A checkpoint, metrics.json or plot killed half-written leaves a staging file; the next write
    of the same file removes it (and only its own)."""
    target = tmp_path / "step-000000010.ckpt"
    (tmp_path / ".step-000000010.ckpt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".step-000000020.ckpt.def456.tmp").write_bytes(b"another file's")
    with atomic_file(target) as handle:
        handle.write(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step-000000020.ckpt.def456.tmp", target.name]
    assert target.read_bytes() == b"whole"


def test_a_shared_file_leaves_other_writers_staging_alone(tmp_path: Path) -> None:
    """Several processes may write a shared cache at once: another's staging file may be in use."""
    target = tmp_path / "verified_tokens.json"
    (tmp_path / ".verified_tokens.json.abc123.tmp").write_text("another writer's")
    write_text_atomic(target, "{}", shared=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".verified_tokens.json.abc123.tmp", target.name]

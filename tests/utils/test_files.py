"""Atomic outputs: a failure half-way never replaces the last good output."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.errors import PipelineError
from src.utils.files import atomic_directory, atomic_file, canonical_json, check_writable, write_text_atomic


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
    (tmp_path / ".kjv.en.ghi789.old" / "kjv.en").mkdir(parents=True)  # nor the output kjv.en's
    with atomic_directory(target) as staging:
        (staging / "train.jsonl").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kjv.en.ghi789.old", ".kjv2.zzz.tmp", "kjv"]
    assert (target / "train.jsonl").read_text() == "whole"


def test_an_output_set_aside_by_a_killed_writer_is_put_back_before_a_write_that_fails(
    tmp_path: Path,
) -> None:
    """A writer killed between its two renames left the last output in ``.<name>.*.old`` and none in
    place: the next write puts it back first, so that write failing (a bad input) still leaves it."""
    target = tmp_path / "kjv"
    (tmp_path / ".kjv.abc123.old" / "kjv").mkdir(parents=True)
    (tmp_path / ".kjv.abc123.old" / "kjv" / "train.jsonl").write_text("last good")
    (tmp_path / ".kjv.def456.tmp").mkdir()  # the new one it had staged
    with pytest.raises(RuntimeError), atomic_directory(target):
        raise RuntimeError("bad input")
    assert (target / "train.jsonl").read_text() == "last good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kjv"]


def test_an_interrupt_between_the_two_renames_puts_the_last_output_back(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C (KeyboardInterrupt) can land between setting the last output aside and moving the new
    one in; the last one goes back."""
    import src.utils.files as files

    target = tmp_path / "kjv"
    with atomic_directory(target) as staging:
        (staging / "train.jsonl").write_text("last good")

    def interrupted(name: str) -> None:
        if name == "files.dir-retired.kjv":
            raise KeyboardInterrupt

    monkeypatch.setattr(files, "kill_point", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as staging:
        (staging / "train.jsonl").write_text("new")
    assert (target / "train.jsonl").read_text() == "last good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kjv"]


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


def test_check_writable_names_the_setting_and_what_is_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    check_writable("paths.model_dir", tmp_path / "new" / "model", kind="folder")  # the parent decides
    check_writable("paths.checkpoint_dir", tmp_path / "ckpt", kind="folder", into=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing made, no probe left
    refusals = {
        ("paths.model_dir", blocker / "model", "folder", False): (
            f"paths.model_dir: cannot write {blocker / 'model'}: {blocker} is a file, not a folder; "
            "set paths.model_dir to another location"
        ),
        ("paths.plots_dir", blocker, "folder", True): (
            f"paths.plots_dir: {blocker} is a file, expected a folder; move it away or set paths.plots_dir "
            "to another location"
        ),
        ("paths.metrics_file", tmp_path, "file", False): (
            f"paths.metrics_file: {tmp_path} is a folder, expected a file; move it away or set "
            "paths.metrics_file to another location"
        ),
    }
    for (key, path, kind, into), message in refusals.items():
        with pytest.raises(PipelineError) as caught:
            check_writable(key, path, kind=kind, into=into)
        assert str(caught.value) == message


def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:
            (folder / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip(
                "a read-only folder does not stop the superuser (the under-a-file refusals still run)"
            )
        with pytest.raises(PipelineError, match=r"locked does not accept new files \(Permission denied\)"):
            check_writable("paths.model_dir", folder / "model", kind="folder")
    finally:
        folder.chmod(0o755)


def test_a_write_that_fills_the_disk_is_one_line_and_keeps_the_previous_output(small_disk) -> None:
    disk = small_disk("disk", 64)
    target = disk / "model"
    with atomic_directory(target) as staging:
        (staging / "small.bin").write_bytes(b"old")
    with pytest.raises(PipelineError) as full, atomic_directory(target) as staging:
        (staging / "big.bin").write_bytes(bytes(200_000))
    assert str(full.value).startswith(f"{target}: the disk is full (")
    assert "while writing it; it needs more than the " in str(full.value)
    assert sorted(p.name for p in disk.iterdir()) == ["model"]  # no staging copy left
    assert (target / "small.bin").read_bytes() == b"old"
    with pytest.raises(PipelineError, match="the disk is full"), atomic_file(disk / "f.ckpt") as handle:
        import torch

        torch.save({"weights": torch.zeros(100_000)}, handle)  # PyTorch says "enforce fail"
    assert sorted(p.name for p in disk.iterdir()) == ["model"]

"""Scratch projects: the working tree as it is now, nothing git ignores."""

from __future__ import annotations

import subprocess
from pathlib import Path

from src.utils.working_tree import commit_all, copy_working_tree


def test_the_copy_holds_tracked_and_new_files_and_nothing_ignored(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    (source / ".gitignore").write_text("outputs/\n")
    (source / "src" / "tracked.py").write_text("committed\n")
    commit_all(source, "first")
    (source / "src" / "tracked.py").write_text("edited, not committed\n")
    (source / "new.txt").write_text("new\n")
    (source / "outputs").mkdir()
    (source / "outputs" / "model.bin").write_bytes(b"\0" * 8)

    copy = copy_working_tree(tmp_path / "copy", root=source)
    commit_all(copy, "scratch")

    assert (copy / "src" / "tracked.py").read_text() == "edited, not committed\n"
    assert (copy / "new.txt").read_text() == "new\n"
    assert not (copy / "outputs").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=copy, capture_output=True, text=True)
    assert status.stdout == ""  # everything copied is committed in the scratch repository

"""This project's working tree as a fresh git repository: the scratch projects that tests and
benchmarks run ``dvc repro`` in, so they never touch the user's own outputs, caches or runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from src.paths import PROJECT_ROOT

#: The identity scratch commits are made under (a fresh machine may have none configured).
_IDENTITY = ("-c", "user.name=scratch", "-c", "user.email=scratch@localhost")


def copy_working_tree(target: Path, root: Path = PROJECT_ROOT) -> Path:
    """Copy ``root``'s tracked and new files (nothing git ignores: no outputs, caches or
    environments) into ``target``, as they are now, committed or not."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = root / name
        if source.is_file():  # a file deleted but not yet staged is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def commit_all(project: Path, message: str) -> None:
    """Commit everything in ``project`` (a git repository is made there first if it has none)."""
    if not (project / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", *_IDENTITY, "commit", "-qm", message], cwd=project, check=True)

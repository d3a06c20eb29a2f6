"""One holder at a time: an advisory lock that a dead holder does not keep.

Two trainings of one configuration in one folder (a colleague's second ``dvc repro``, an
experiment started twice) would write the same checkpoints and log the same steps to one MLflow
run. The kernel releases an ``flock`` when its holder exits, however it exits (``kill -9``
included), so a stale lock never blocks the next run; the file only says who holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from src.errors import PipelineError
from src.paths import display_path

LOCK_FILE = ".lock"


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold ``path`` for the block; if another process holds it, refuse in one line that names it.

    ``what`` says what the lock guards, for that line ("a training of this configuration"). The
    lock file and the folders it had to create (those that hold nothing else) go again at the end,
    so a run, or a refused start, leaves no trace.
    """
    made = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        # Still held: a peer that opened the file meanwhile finds it gone and locks a new one (see
        # _lock). One a killed holder left is removed by the next holder, so runs end alike.
        path.unlink(missing_ok=True)
        _remove_empty(made)
        os.close(fd)  # releases the lock


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty; one in use by someone else stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _lock(path: Path, what: str) -> int:
    """An open descriptor holding ``path``'s lock, on the file that is at ``path`` now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise PipelineError(
                f"{display_path(path)}: {what} is already running ({holder}); wait for it to end, or "
                "stop it (it checkpoints and exits on SIGTERM), then run this again"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it as this process opened it: lock the one there now


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (False when there is no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)

"""A stage never outlives the process that started it.

``kill -TERM <dvc pid>`` (or a ``kill -9``) ends DVC but not the stage it started, which goes on
alone: it would finish and write outputs that no ``dvc.lock`` records, while the next
``dvc repro`` runs the same stage beside it. :func:`watch_parent` notices the starter's end and
sends this process ``SIGTERM``: a stage without a handler ends (its outputs are written atomically,
so nothing half-written is left); a training checkpoints first (:mod:`src.train.stopping`).

DVC runs a stage's ``cmd`` through ``$SHELL -c`` (``/bin/sh`` when unset). bash and zsh replace
themselves with the command; dash (Debian's ``/bin/sh``) stays as its parent and outlives DVC, so
the starter watched is the shell's parent when the parent is such a shell.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

#: Shells that may stay between DVC and the command they run with ``-c``.
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"})

_lock = threading.Lock()
_watching = False
_exited = threading.Event()
_notice = threading.Event()


def watch_parent(poll_s: float = 0.5) -> None:
    """Start (once per process) the thread that sends ``SIGTERM`` here when the starter ends."""
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    parent = os.getppid()
    starter = _shell_parent(parent)
    threading.Thread(target=_watch, args=(parent, starter, poll_s), daemon=True, name="parent-watch").start()


def parent_exited() -> bool:
    """Whether the process that started this one is gone."""
    return _exited.is_set()


def take_notice() -> bool:
    """True once for the ``SIGTERM`` the watcher sent (a handler tells it from one sent by someone)."""
    if _notice.is_set():
        _notice.clear()
        return True
    return False


def _watch(parent: int, starter: int | None, poll_s: float) -> None:
    # Re-parented (this process or the shell between) when the process that started it is gone.
    while os.getppid() == parent and (starter is None or _parent_of(parent) == starter):
        _exited.wait(poll_s)
    _exited.set()
    _notice.set()
    os.kill(os.getpid(), signal.SIGTERM)


def _shell_parent(pid: int) -> int | None:
    """The parent of ``pid`` when ``pid`` is a shell running a command line (``sh -c …``), else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc (macOS): the parent alone is watched
        return None
    name = os.path.basename(argv[0].decode(errors="replace")).lstrip("-")
    if name not in SHELLS or "-c" not in (arg.decode(errors="replace") for arg in argv[1:]):
        return None
    starter = _parent_of(pid)
    return starter if starter not in (None, 0, 1) else None


def _parent_of(pid: int) -> int | None:
    """``pid``'s parent, from ``/proc/<pid>/stat`` (None once ``pid`` is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the name in () may hold spaces

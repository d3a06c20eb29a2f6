"""A stage never outlives the process that started it.

``kill -TERM <dvc pid>`` (or a ``kill -9``) ends DVC but not the stage it started, which goes on
with parent 1: it would finish and write outputs that no ``dvc.lock`` records, while the next
``dvc repro`` runs the same stage beside it. :func:`watch_parent` notices the parent's end and
sends this process ``SIGTERM``: a stage without a handler ends (its outputs are written atomically,
so nothing half-written is left); a training checkpoints first (:mod:`src.train.stopping`).
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_watching = False
_exited = threading.Event()
_notice = threading.Event()


def watch_parent(poll_s: float = 0.5) -> None:
    """Start (once per process) the thread that sends ``SIGTERM`` here when the parent process ends."""
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    parent = os.getppid()
    threading.Thread(target=_watch, args=(parent, poll_s), daemon=True, name="parent-watch").start()


def parent_exited() -> bool:
    """Whether the process that started this one is gone."""
    return _exited.is_set()


def take_notice() -> bool:
    """True once for the ``SIGTERM`` the watcher sent (a handler tells it from one sent by someone)."""
    if _notice.is_set():
        _notice.clear()
        return True
    return False


def _watch(parent: int, poll_s: float) -> None:
    while os.getppid() == parent:  # re-parented when the process that started this one is gone
        _exited.wait(poll_s)
    _exited.set()
    _notice.set()
    os.kill(os.getpid(), signal.SIGTERM)

"""Stopping a training when told: a scheduler's SIGTERM, Ctrl-C, a closed terminal, or the end of the
process that started it.

Schedulers (SLURM, Kubernetes, spot instances) end a job with ``SIGTERM`` and a grace period, so a
stop is the normal end of a cluster job. While :class:`StopSignals` is active, the first
``SIGTERM``, ``SIGINT`` or ``SIGHUP`` is recorded, and the training writes a checkpoint at the next
optimizer-step boundary and exits (:class:`~src.errors.TrainingStopped`); a second one ends the
process at once. ``kill -TERM <dvc pid>`` does not reach the stage DVC started:
:mod:`src.utils.parent_watch` sends the same ``SIGTERM`` when this process's parent exits, so a
training never outlives its ``dvc repro``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType

from src.utils.parent_watch import take_notice, watch_parent

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: The reason recorded when the parent process is gone (its SIGTERM is sent by the watcher).
PARENT_EXITED = "the process that started it exited"


class StopSignals:
    """While active (``with``): the first stop signal is recorded in :attr:`requested`; a second ends
    the process at once. With ``at_once`` the first raises ``KeyboardInterrupt`` in the main thread
    instead (a Ray driver: its workers stop with the cluster; they resume from their last checkpoint).
    """

    def __init__(self, *, at_once: bool = False) -> None:
        self.at_once = at_once
        self.requested: str | None = None
        """What asked to stop (``SIGTERM``, :data:`PARENT_EXITED`), once something did."""
        self.signal_number = 0
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signal_number

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; nothing to install
        self._previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        self.install()
        watch_parent()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]

    def install(self) -> None:
        """(Re)install the handlers: Lightning puts its own on ``SIGTERM`` whenever a Trainer starts,
        and would stop mid-validation without a checkpoint."""
        if self._previous and threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                signal.signal(number, self._handle)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        notice = take_notice()  # the parent's end: after a signal to the whole group, no second ask
        if self.requested is not None and notice:
            return
        if self.requested is not None:  # asked twice: stop now, as the default action would
            log.warning("%s again: stopping at once", signal.Signals(number).name)
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        self.requested = PARENT_EXITED if notice else signal.Signals(number).name
        self.signal_number = number
        if self.at_once:
            raise KeyboardInterrupt(self.requested)
        log.warning(
            "%s: stopping after the next step's checkpoint (send it again to stop at once)", self.requested
        )

"""Named kill points, so the fault-injection tests can SIGKILL a stage at an exact moment.

The pipeline promises that a stage killed at any moment leaves nothing that a new ``dvc repro``
cannot finish exactly as an uninterrupted run would. Killing a process after a timer cannot
aim at "the checkpoint is written but MLflow has not been told" or "the model folder is in
place but metrics.json is not", so the code that writes outputs names those moments with
:func:`kill_point`. It does nothing unless the environment variable ``LMPIPE_KILL_AT`` names
the point; then the process sends itself SIGKILL there, as the kernel's out-of-memory killer
or ``kill -9`` would: no ``finally`` block, ``atexit`` handler or buffered write runs.
``tests/test_faults.py`` kills a ``dvc repro`` at each point and checks the next one.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

#: ``name`` kills at the point's first hit in a process, ``name:N`` at its N-th.
KILL_AT = "LMPIPE_KILL_AT"

_hits: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process if ``LMPIPE_KILL_AT`` names this point (and hit); otherwise nothing."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    point, _, count = wanted.rpartition(":")
    if not (count.isdigit() and point):
        point, count = wanted, "1"
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(count):
        print(f"kill point {wanted}: SIGKILL", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

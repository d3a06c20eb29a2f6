"""Named kill points, so the fault-injection tests can SIGKILL a stage at an exact moment.

The pipeline promises that a stage killed at any moment leaves nothing that a new ``dvc repro``
cannot finish exactly as an uninterrupted run would. Killing a process after a timer cannot
aim at "the checkpoint is written but MLflow has not been told" or "the model folder is in
place but metrics.json is not", so the code that writes outputs names those moments with
:func:`kill_point`. It does nothing unless the environment variable ``LMPIPE_KILL_AT`` names
the point; then the process sends itself SIGKILL there, as the kernel's out-of-memory killer
or ``kill -9`` would: no ``finally`` block, ``atexit`` handler or buffered write runs.
``LMPIPE_HANG_AT`` makes it hang there instead, until killed; ``LMPIPE_PAUSE_AT`` pauses it there for
:data:`PAUSE_SECONDS`, or until the file ``LMPIPE_PAUSE_UNTIL`` names exists (signals are handled
meanwhile), so a test can act while the process is at a known point, as a scheduler or a colleague
would at any moment, however slow the machine.
``tests/test_faults.py`` kills a ``dvc repro`` at each point and checks the next one.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter

#: ``name`` kills at the point's first hit in a process, ``name:N`` at its N-th.
KILL_AT = "LMPIPE_KILL_AT"
#: The same, but the process hangs there until it is killed, as a stuck one would: a test can then
#: act on the state at that point (interrupt the run, kill a peer) without racing the process.
HANG_AT = "LMPIPE_HANG_AT"

#: The same, but the process pauses there for PAUSE_SECONDS and goes on.
PAUSE_AT = "LMPIPE_PAUSE_AT"
PAUSE_SECONDS = 3.0
#: A file whose creation ends the pause instead (a test's "go on"); at most RELEASE_SECONDS.
PAUSE_UNTIL = "LMPIPE_PAUSE_UNTIL"
RELEASE_SECONDS = 600.0

_hits: Counter[tuple[str, str]] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process where ``LMPIPE_KILL_AT`` names this point (and hit), hang it where
    ``LMPIPE_HANG_AT`` does, pause it where ``LMPIPE_PAUSE_AT`` does; otherwise nothing."""
    if wanted := _hit(KILL_AT, name):
        print(f"kill point {wanted}: SIGKILL", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted := _hit(HANG_AT, name):
        print(f"hang point {wanted}: waiting to be killed", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)
    if wanted := _hit(PAUSE_AT, name):
        _pause(wanted)


def armed() -> bool:
    """Whether any point is armed in this process: a loop that hits a point per row checks this once,
    not the environment per row (three lookups per row cost more than writing the row)."""
    return any(os.environ.get(variable) for variable in (KILL_AT, HANG_AT, PAUSE_AT))


def _pause(wanted: str) -> None:
    release = os.environ.get(PAUSE_UNTIL)
    if not release:
        print(f"pause point {wanted}: pausing {PAUSE_SECONDS:g} s", file=sys.stderr, flush=True)
        time.sleep(PAUSE_SECONDS)
        return
    print(f"pause point {wanted}: pausing until {release} exists", file=sys.stderr, flush=True)
    deadline = time.monotonic() + RELEASE_SECONDS
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


def _hit(variable: str, name: str) -> str:
    """The variable's value if it names this point and this is the hit it names; else ""."""
    wanted = os.environ.get(variable)
    if not wanted:
        return ""
    point, _, count = wanted.rpartition(":")
    if not (count.isdigit() and point):
        point, count = wanted, "1"
    if point != name:
        return ""
    _hits[variable, name] += 1
    return wanted if _hits[variable, name] == int(count) else ""

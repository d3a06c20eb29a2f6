"""Kill points: inert unless ``LMPIPE_KILL_AT`` names them, then a SIGKILL at exactly that hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

#: Passes a kill point five times, printing how many times it got through.
LOOP = """
from src.utils.faults import kill_point
for passed in range(5):
    kill_point("loop")
    print(passed + 1, flush=True)
"""


@pytest.mark.parametrize("wanted", [None, "", "other", "loop:9", "looping"])
def test_a_kill_point_not_named_does_nothing(wanted: str | None, python_runner) -> None:
    result = python_runner("-c", LOOP, env=None if wanted is None else {"LMPIPE_KILL_AT": wanted})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "2", "3", "4", "5"]
    assert "kill point" not in result.stderr


@pytest.mark.parametrize(("wanted", "passed"), [("loop", []), ("loop:1", []), ("loop:3", ["1", "2"])])
def test_the_named_point_kills_its_process_at_the_named_hit(
    wanted: str, passed: list[str], python_runner
) -> None:
    result = python_runner("-c", LOOP, env={"LMPIPE_KILL_AT": wanted})
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == passed
    assert result.stderr.strip() == f"kill point {wanted}: SIGKILL"


def test_the_named_hang_point_stops_its_process_there_until_it_is_killed(tmp_path) -> None:
    """``LMPIPE_HANG_AT``: the process passes the earlier hits, then waits at the named one."""
    from src.paths import PROJECT_ROOT

    out = tmp_path / "out.txt"
    with open(out, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-c", LOOP],
            cwd=PROJECT_ROOT,
            stdout=handle,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LMPIPE_HANG_AT": "loop:3"},
        )
        assert process.stderr.readline().strip() == "hang point loop:3: waiting to be killed"
        time.sleep(0.5)
        assert process.poll() is None  # still there
        process.kill()
        process.wait(timeout=10)
        process.stderr.close()
    assert out.read_text().split() == ["1", "2"]


def test_a_pause_until_a_file_goes_on_once_the_file_is_there(tmp_path) -> None:
    """``LMPIPE_PAUSE_AT`` with ``LMPIPE_PAUSE_UNTIL``: the test, not a timer, says when it goes on."""
    from src.paths import PROJECT_ROOT

    release = tmp_path / "go-on"
    env = {**os.environ, "LMPIPE_PAUSE_AT": "loop:2", "LMPIPE_PAUSE_UNTIL": str(release)}
    process = subprocess.Popen(
        [sys.executable, "-c", LOOP],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr.readline().strip() == f"pause point loop:2: pausing until {release} exists"
    time.sleep(4)  # longer than the timed pause
    assert process.poll() is None
    release.touch()
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and stdout.split() == ["1", "2", "3", "4", "5"]

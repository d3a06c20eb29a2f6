"""Log files for every run, as the workflow guide describes.

Logging is configured by entry points only (never at import), so importing the
library from a notebook or a test leaves the caller's logging alone.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from src.paths import resolve_path, workspace_root

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    log_dir: str | Path | None = None,
    *,
    prefix: str = "app",
    numbered: bool = False,
    level: int = logging.INFO,
    filters: Sequence[logging.Filter] = (),
) -> Path:
    """Send log records to a new file in ``log_dir`` (default ``logs/`` in the user's checkout) and to stderr.

    File names are ``<prefix>_<time>.log`` by default, or ``<prefix>_<n>.log``
    with ``numbered=True`` where ``n`` counts up from the highest existing file,
    so a run never overwrites an earlier run's log. ``filters`` go on both handlers (the entry points
    mask URI credentials). Returns the new file's path.
    """
    directory = resolve_path(log_dir) if log_dir is not None else workspace_root() / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    path = _claim_log_file(directory, prefix, numbered)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_pipeline_handler", False):
            root.removeHandler(handler)
            handler.close()
    file_handler = logging.FileHandler(path, encoding="utf-8")
    console = logging.StreamHandler(sys.stderr)
    for handler in (file_handler, console):
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(_NoAdverts())
        for extra in filters:
            handler.addFilter(extra)
        handler._pipeline_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    return path


def adopt_library_loggers(names: tuple[str, ...] = ("lightning",)) -> None:
    """Route these libraries' records through the root handlers only.

    Lightning attaches a console handler of its own, so with ours every message
    would print twice; without it each goes once to the console and the log file.
    """
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


class _NoAdverts(logging.Filter):
    """Drop library tips that advertise other products (they are not about this run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in str(record.msg)


def next_log_number(directory: Path, prefix: str) -> int:
    """One more than the highest ``<prefix>_<n>.log`` in ``directory`` (1 when there is none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.log$")
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := pattern.match(p.name))]
    return max(numbers, default=0) + 1


def _claim_log_file(directory: Path, prefix: str, numbered: bool) -> Path:
    """Create the log file exclusively, so two runs started together never share one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        if numbered:
            name = f"{prefix}_{next_log_number(directory, prefix)}.log"
        else:
            name = f"{prefix}_{stamp}.log" if attempt == 0 else f"{prefix}_{stamp}-{attempt}.log"
        path = directory / name
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new log file in {directory}")

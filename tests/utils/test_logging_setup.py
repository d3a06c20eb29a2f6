"""Log files: numbered download logs never overwrite, app logs default to logs/ at the root."""

from __future__ import annotations

import logging
from pathlib import Path

from src.paths import PROJECT_ROOT
from src.utils import setup_logging
from src.utils.logging_setup import next_log_number


def test_numbered_logs_count_up_and_never_overwrite(tmp_path: Path) -> None:
    first = setup_logging(tmp_path, prefix="download_datasets", numbered=True)
    logging.getLogger("test").info("first run")
    second = setup_logging(tmp_path, prefix="download_datasets", numbered=True)
    logging.getLogger("test").info("second run")
    (tmp_path / "download_datasets_7.log").write_text("older run\n")
    eighth = setup_logging(tmp_path, prefix="download_datasets", numbered=True)
    assert [first.name, second.name, eighth.name] == [
        "download_datasets_1.log",
        "download_datasets_2.log",
        "download_datasets_8.log",
    ]
    assert "first run" in first.read_text() and "second run" not in first.read_text()
    assert "second run" in second.read_text()
    assert (tmp_path / "download_datasets_7.log").read_text() == "older run\n"
    assert next_log_number(tmp_path, "download_datasets") == 9


def test_app_logs_default_to_logs_under_project_root() -> None:
    path = setup_logging()
    try:
        assert path.parent == PROJECT_ROOT / "logs"
        assert path.name.startswith("app_") and path.suffix == ".log"
        again = setup_logging()
        assert again != path  # two runs in the same second still get their own file
        again.unlink()
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_pipeline_handler", False):
                logging.getLogger().removeHandler(handler)
                handler.close()
        path.unlink()

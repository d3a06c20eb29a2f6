"""Log files: numbered download logs never overwrite, app logs default to logs/ in the user's checkout."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from src.paths import PROJECT_ROOT, workspace_root
from src.utils import setup_logging
from src.utils.logging_setup import next_log_number
from src.utils.redact import CredentialFilter


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


def test_app_logs_default_to_logs_in_the_users_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert workspace_root() == PROJECT_ROOT  # run from the checkout: logs/ at its root
    # DVC names the user's checkout when it runs a stage in a temporary copy; the tmp folder stands in.
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    path = setup_logging()
    assert path.parent == tmp_path / "logs"
    assert path.name.startswith("app_") and path.suffix == ".log"
    again = setup_logging()
    assert again != path and again.parent == path.parent  # two runs in the same second get their own file
    logging.getLogger("test").info("into the newest file")
    assert "into the newest file" in again.read_text() and "into the newest file" not in path.read_text()


def test_only_the_pipeline_handlers_are_replaced(tmp_path: Path) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        setup_logging(tmp_path, prefix="a")
        setup_logging(tmp_path, prefix="b")
        ours = [h for h in root.handlers if getattr(h, "_pipeline_handler", False)]
        assert len(ours) == 2 and foreign in root.handlers  # one file and one console handler
    finally:
        root.removeHandler(foreign)


def test_no_record_shows_a_credential_of_a_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whichever module logs a URL (a cached download, a server), the file and the console mask it."""
    path = setup_logging(tmp_path, prefix="a", filters=(CredentialFilter(),))  # as every entry point
    logging.getLogger("test").warning("cached download of %s is corrupted", "https://x.org/a?sig=s3cr3t")
    for text in (path.read_text(), capsys.readouterr().err):
        assert "https://x.org/a?sig=***" in text and "s3cr3t" not in text

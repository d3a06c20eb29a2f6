"""The shell of every entry point: one line and exit code 2 for a user error, a traceback for a bug."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, run_cli, start_process
from src.errors import ConfigError, PipelineError


def fail_with(error: BaseException):
    def main() -> None:
        raise error

    return main


def test_a_user_error_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    for error in (
        PipelineError("data/x: not found; run `dvc repro`"),
        ConfigError("train.lr: expected a number"),
    ):
        with pytest.raises(SystemExit) as caught:
            run_cli(fail_with(error))
        assert caught.value.code == EXIT_USER_ERROR == 2
        assert capsys.readouterr().err == f"error: {error}\n"


def test_a_user_error_never_prints_a_credential_of_a_uri_it_names(capsys: pytest.CaptureFixture[str]) -> None:
    error = PipelineError("corpus.data_files: cannot fetch https://u:pa55@host/x.txt?token=t0k&n=1 (404)")
    with pytest.raises(SystemExit):
        run_cli(fail_with(error))
    said = capsys.readouterr().err
    assert said == "error: corpus.data_files: cannot fetch https://***@host/x.txt?token=***&n=1 (404)\n"


def test_success_exits_normally_and_ctrl_c_is_130(capsys: pytest.CaptureFixture[str]) -> None:
    calls = []
    run_cli(lambda: calls.append("ran"))
    assert calls == ["ran"]
    with pytest.raises(SystemExit) as caught:
        run_cli(fail_with(KeyboardInterrupt()))
    assert caught.value.code == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)


def test_start_process_sets_the_environment_and_starts_a_log_file(
    tiny_params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HOME", raising=False)
    log_file = start_process(tiny_params, tmp_path / "logs", prefix="download_datasets", numbered=True)
    assert log_file == tmp_path / "logs" / "download_datasets_1.log"
    assert os.environ["HF_HOME"] == tiny_params.paths.model_cache  # absolute in the tiny params
    assert "logging to" in log_file.read_text()

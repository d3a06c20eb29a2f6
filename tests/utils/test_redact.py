"""Passwords in URIs never reach messages, logs or MLflow params."""

from __future__ import annotations

import pytest

from src.utils.redact import redact_uri


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://bob:s3cret@host:5000", "http://bob:***@host:5000"),
        ("cannot reach https://u:p%40ss@h/x (timeout)", "cannot reach https://u:***@h/x (timeout)"),
        ("http://host:5000/path", "http://host:5000/path"),  # a port is not a password
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("http://token@host", "http://token@host"),
    ],
)
def test_passwords_are_masked(text: str, shown: str) -> None:
    assert redact_uri(text) == shown

"""Credentials in URIs never reach messages, logs or MLflow params."""

from __future__ import annotations

import pytest

from src.utils.redact import redact_uri


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://bob:s3cret@host:5000", "http://***@host:5000"),
        ("cannot reach https://u:p%40ss@h/x (timeout)", "cannot reach https://***@h/x (timeout)"),
        ("http://user:pa@ss9@host", "http://***@host"),  # an @ in the password: all of it goes
        ("http://user:pa@ss9@host:5000/api?x=1", "http://***@host:5000/api?x=1"),
        ("http://tok3n@host", "http://***@host"),  # a token given as the user name
        ("http://tok3n@host/x and http://a:b@other", "http://***@host/x and http://***@other"),
        ("see 'http://u:p@h:1' (refused)", "see 'http://***@h:1' (refused)"),
        ("http://host/data.txt?token=abc123&x=1", "http://host/data.txt?token=***&x=1"),
        ("https://h/f?x=1&access_token=abc", "https://h/f?x=1&access_token=***"),
        (
            "https://b.s3.example/f?X-Amz-Credential=AKIA1%2Fx&X-Amz-Signature=deadbeef&X-Amz-Expires=60",
            "https://b.s3.example/f?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        (
            "https://h/f?API_KEY=k1&Password=p&pwd=q&sig=s",
            "https://h/f?API_KEY=***&Password=***&pwd=***&sig=***",
        ),
        ("https://h/f?passwd=p;auth=a#top", "https://h/f?passwd=***;auth=***#top"),
        ("https://h/f?secret=s (timeout)", "https://h/f?secret=*** (timeout)"),
        ("https://h/f?client_credentials=c", "https://h/f?client_credentials=***"),
        ("http://u:p@h/f?token=t", "http://***@h/f?token=***"),
        ("http://host:5000/path", "http://host:5000/path"),  # a port is not a password
        ("http://host:5000/path?page=2&sort=asc", "http://host:5000/path?page=2&sort=asc"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),  # an @ in a path
        ("/data/runs/mlflow.db", "/data/runs/mlflow.db"),
        ("data/corpus/notes@home.txt", "data/corpus/notes@home.txt"),
        ("ray://host:10001", "ray://host:10001"),
        ("ray://tok@host:10001", "ray://***@host:10001"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),  # no scheme: an address, nothing to hide
        ("host:5000/f?token=abc", "host:5000/f?token=***"),  # no scheme, a credential in the query
        ("write to bob@example.org", "write to bob@example.org"),
        ("", ""),
    ],
)
def test_credentials_are_masked(text: str, shown: str) -> None:
    assert redact_uri(text) == shown


def test_nothing_of_the_secret_is_left() -> None:
    for secret in ("Qz7@Wk9", "Qz7@Wk9@Vb4", "Qz7@Wk9:Vb4"):
        shown = redact_uri(f"error: cannot reach http://Jx5:{secret}@mlflow.example:5000/api (refused)")
        assert shown == "error: cannot reach http://***@mlflow.example:5000/api (refused)"
        assert not any(part in shown for part in ("Jx5", "Qz7", "Wk9", "Vb4"))

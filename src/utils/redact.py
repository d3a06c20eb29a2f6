"""Keep credentials out of everything the pipeline shows or stores.

A tracking URI may carry a password (``http://user:secret@host:5000``); it must
not reach messages, log files or MLflow params.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<secret>[^/@\s]*)@")


def redact_uri(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``, wherever it occurs in ``text``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)

"""Keep credentials out of everything the pipeline shows or stores.

A URI may carry a credential in two places: its userinfo (``http://user:secret@host:5000``, or a
token given as the user name, ``http://tok3n@host``) and its query (``?token=...``,
``?X-Amz-Signature=...``). Neither may reach messages, log files or MLflow params.
"""

from __future__ import annotations

import logging
import re

#: The userinfo of a URI: everything between ``scheme://`` and the last ``@`` of the authority
#: (a password may hold an ``@`` of its own). The authority ends at the path, query or fragment, or
#: where the URI ends in a message (a space or a quote).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"<>`]*@")

#: Words that make a query parameter a credential (``access_token``, ``api_key``, ``X-Amz-Signature``).
_CREDENTIAL_WORDS = ("token", "key", "secret", "password", "passwd", "pwd", "sig", "auth", "credential")

_CREDENTIAL_PARAMETER = re.compile(
    rf"(?P<name>[?&;][^=&;#\s'\"<>`]*(?:{'|'.join(_CREDENTIAL_WORDS)})[^=&;#\s'\"<>`]*=)[^&;#\s'\"<>`]*",
    re.IGNORECASE,
)

MASK = "***"


def redact_uri(text: str) -> str:
    """``text`` with every URI credential masked, wherever a URI occurs in it: the whole userinfo
    (``scheme://user:secret@host`` -> ``scheme://***@host``) and the value of every query parameter
    whose name looks like a credential (``?token=abc&x=1`` -> ``?token=***&x=1``)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _CREDENTIAL_PARAMETER.sub(lambda m: f"{m['name']}{MASK}", text)


class CredentialFilter(logging.Filter):
    """Masks URI credentials in every log record (a data URL with a token, a server with a password),
    whichever module logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_uri(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True

"""Docs build hook: the parameters page's reference is generated from ``src/config/``."""

from __future__ import annotations

from src.config import Params
from src.utils.field_docs import reference_markdown

MARKER = "<!-- parameters reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference_markdown(Params, heading="###"))

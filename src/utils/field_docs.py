"""A reference of settings from typed dataclasses: each field's type, default, range and docstring.

The docs' parameters page is generated from ``src/config/`` with :func:`reference_markdown`, so
it cannot drift from what the pipeline accepts. Field docstrings (the string after a field, as in
litgpt's args) are not kept at run time; they are read from the class's source.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
import typing
from typing import Any


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for the fields of dataclass ``cls`` that have one."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = markdown(after.value.value)
    return docs


def markdown(docstring: str) -> str:
    """A docstring on one line, its reST literals (````x````) as Markdown code (```x```)."""
    return " ".join(inspect.cleandoc(docstring).replace("``", "`").split())


def reference_markdown(root: type, heading: str = "##") -> str:
    """One table per section of ``root`` (a dataclass of dataclasses), sections of entries keyed by
    name (``dict[str, Spec]``) as ``section.<name>``; a row per key: type, default, range, docstring."""
    parts = []
    docs = field_docs(root)
    hints = typing.get_type_hints(root)
    for field in dataclasses.fields(root):
        section = hints[field.name]
        parts.append(f"{heading} `{field.name}`\n\n{docs.get(field.name, '')}\n")
        parts.append(_table(section, field.name))
        for key, spec in _keyed_entries(section):
            parts.append(
                f"{heading}# `{field.name}.{key}.<name>`\n\n{markdown(inspect.getdoc(spec) or '')}\n"
            )
            parts.append(_table(spec, f"{field.name}.{key}.<name>"))
    return "\n".join(parts)


def _keyed_entries(cls: type) -> list[tuple[str, type]]:
    """Fields of ``cls`` typed ``dict[str, <dataclass>]``: named entries with settings of their own."""
    found = []
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        if typing.get_origin(hint) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            found.append((name, args[1]))
    return found


def _table(cls: type, prefix: str) -> str:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | range | what it does |", "| --- | --- | --- | --- | --- |"]
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        within = field.metadata.get("within")
        cells = [
            f"`{prefix}.{field.name}`",
            _type_name(hints[field.name]),
            _default(field),
            f"`{within.text}`" if within else "",
            docs.get(field.name, ""),
        ]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


#: ``typing.`` or ``src.config.`` before a class name in a type's text.
_MODULE_PATH = re.compile(r"\b[a-z_]+(?:\.[a-z_]+)*\.(?=[A-Z])")


def _type_name(hint: Any) -> str:
    if not typing.get_args(hint) and hasattr(hint, "__name__"):
        return f"`{hint.__name__}`"
    return f"`{_MODULE_PATH.sub('', str(hint))}`"


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return ""
    return f"`{value!r}`"

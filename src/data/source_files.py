"""Local source files: what a ``data_files`` entry stands for, and which line of which file is bad.

An entry is a file, a glob pattern (``corpus/*.txt``, ``**/*.jsonl``) or a
folder (every file under it), resolved as ``load_dataset`` resolves patterns
(hidden files and ``README.md``-style files skipped unless named). The pipeline
expands them itself and hands ``load_dataset`` the sorted list of files, so the
export's manifest names exactly the files that were read, in the order they
were read, on every machine.

When a load fails, ``datasets`` reports a ``UnicodeDecodeError`` without the
file or line; :func:`find_unreadable_line` finds them, so the message can say
what to fix.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from src.errors import ConfigError
from src.paths import display_path


@dataclass(frozen=True)
class MatchedFile:
    """One local file a ``data_files`` entry matched."""

    key: str
    """How the manifest names it: relative to the folder the entry is relative to, or absolute."""
    path: Path


def has_wildcards(entry: str) -> bool:
    return any(char in entry for char in "*?[")


def expand_entry(key: str, entry: str, base: Path) -> list[MatchedFile]:
    """The files ``entry`` (relative to ``base``, or absolute) stands for, sorted; none is an error."""
    from datasets.data_files import resolve_pattern

    path = Path(entry) if Path(entry).is_absolute() else base / entry
    if not has_wildcards(entry):
        if path.is_file():
            return [MatchedFile(entry, path)]
        if not path.is_dir():
            raise ConfigError(f"{key}: file {entry!r} not found; fix the path (relative to {_shown(base)})")
    pattern = str(path / "**") if path.is_dir() else str(path)
    try:
        matched = resolve_pattern(pattern, base_path=str(base))
    except FileNotFoundError:
        matched = []
    files = sorted(Path(found) for found in matched)
    if not files:
        raise ConfigError(f"{key}: {entry!r} matches no file (relative to {_shown(base)}); fix the pattern")
    relative = not Path(entry).is_absolute()
    return [
        MatchedFile(found.relative_to(base).as_posix() if relative else str(found), found) for found in files
    ]


def check_links_stay_inside(key: str, folder: Path) -> None:
    """Refuse a symbolic link anywhere under ``folder`` (to a file or to a folder) whose target is
    outside it: reading through it would read a file outside the folder, which the pipeline never
    does. Links whose targets stay inside are fine. The walk does not follow folder links, so a
    link cycle cannot trap it."""
    inside = Path(os.path.realpath(folder))
    for parent, folders, files in os.walk(folder):
        for name in sorted([*folders, *files]):
            path = Path(parent) / name
            if not path.is_symlink():
                continue
            target = Path(os.path.realpath(path))
            if target != inside and inside not in target.parents:
                kind = "folder" if target.is_dir() else "file"
                raise ConfigError(
                    f"{key}: {display_path(path)} is a link to the {kind} {target}, outside the folder; "
                    "files outside data_dir are never read: copy what it points to into the folder, "
                    "or remove the link"
                )


def _shown(base: Path) -> str:
    shown = display_path(base)
    return "the project root" if shown == "." else shown


@dataclass(frozen=True)
class BadLine:
    """Where a file stops being readable, and why (for a one-line message)."""

    path: Path
    line: int
    problem: str


#: Bytes read at a time by the line checks: memory stays flat whatever the file size.
_BLOCK_BYTES = 1 << 20


def find_unreadable_line(
    files: Iterable[Path], builder: str, encoding: str = "utf-8", text_column: str | None = None
) -> BadLine | None:
    """The first line that cannot be decoded in ``encoding`` (or, for JSON Lines, parsed, or that has
    no string in ``text_column``), over ``files`` in order; None when every line reads.

    Each file is read in blocks, never whole, so a corpus larger than memory is checked too.
    """
    try:
        codecs.getincrementaldecoder(encoding)
    except LookupError:
        return None  # an unknown encoding: datasets names it itself
    for path in files:
        found = _first_bad_line(path, text_column if builder == "json" else None, encoding)
        if found:
            return found
    return None


def _first_bad_line(path: Path, json_column: str | None, encoding: str) -> BadLine | None:
    """The first undecodable line of ``path`` (or, with ``json_column``, the first bad JSON line)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    newlines_before = 0  # newlines in the bytes of the blocks already decoded
    carry, number, json_lines = "", 0, json_column is not None
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_BLOCK_BYTES)
            pending = decoder.getstate()[0]  # bytes of a character cut at the end of the last block
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                at = max(error.start - len(pending), 0)
                line = newlines_before + block.count(b"\n", 0, at) + 1
                byte = (block[at : at + 1] or pending[:1]).hex()
                return BadLine(path, line, f"is not valid {encoding} (byte 0x{byte})")
            newlines_before += block.count(b"\n")
            if json_lines:
                if number == 0 and (carry + text).lstrip().startswith("["):
                    json_lines = False  # one JSON array, not JSON Lines: datasets reads it whole
                *lines, carry = (carry + text).split("\n")
                if not block:
                    lines.append(carry)
                for line in lines:
                    number += 1
                    found = _bad_json_line(path, number, line, json_column or "")
                    if found:
                        return found
            if not block:
                return None


def _bad_json_line(path: Path, number: int, line: str, column: str) -> BadLine | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return BadLine(path, number, "is not valid JSON")
    if not isinstance(row, dict) or not isinstance(row.get(column), str):
        return BadLine(path, number, f"has no text in {column!r}")
    return None

"""Atomic writes and content hashes.

A stage killed half-way must never leave an output that looks complete, so every
output is written under a temporary name in the same folder and renamed into
place (a rename within one file system is atomic).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

from src.errors import PipelineError
from src.paths import display_path
from src.utils.faults import kill_point

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter:
    """A binary handle that hashes what passes through it: a file's digest without reading it back."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and a trailing newline: same data, same bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@contextmanager
def atomic_file(path: Path, *, shared: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary handle on a temporary file that replaces ``path`` only if the block succeeds.

    Staging copies a killed writer left beside ``path`` are removed first (:func:`remove_leftovers`),
    unless the file is ``shared``: written by several processes at once (a cache), another
    writer's staging copy may be in use.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not shared:
        remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        kill_point(f"files.file-staged.{path.name}")
        os.replace(tmp, path)
    except BaseException as error:
        full = disk_full_error(error, path, Path(tmp))
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise full from None
        raise


def write_text_atomic(path: Path, text: str, *, shared: bool = False) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` via a temporary file and a rename."""
    with atomic_file(path, shared=shared) as handle:
        handle.write(text.encode("utf-8"))


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the staging and retired copies of ``target`` that a killed writer left beside it.

    One writer at a time owns an output (DVC runs one stage per output), so any
    ``.<name>.*.tmp`` or ``.<name>.*.old`` found when a new write starts is a leftover. A writer
    killed between setting the last output aside and putting the new one in place left no
    ``target``: the one set aside goes back first, so a failure of this write still leaves it.
    """
    if not target.exists():
        for retired in _staged(target, "old"):
            if (retired / target.name).exists():
                os.replace(retired / target.name, target)
                break
    found = [*_staged(target, "tmp"), *_staged(target, "old")]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _staged(target: Path, suffix: str) -> list[Path]:
    """``target``'s own ``.<name>.<random>.<suffix>`` copies (tempfile's names), not those of an output
    whose name only starts with it (``wiki.en`` beside ``wiki``)."""
    own = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]+\.{suffix}")
    return [path for path in target.parent.glob(f".{target.name}.*.{suffix}") if own.fullmatch(path.name)]


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` only if the block succeeds.

    The previous ``target`` (if any) stays untouched until the new one is
    complete, and is then swapped out; on failure the staging folder is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    staging.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared
    retired: Path | None = None
    try:
        yield staging
        kill_point(f"files.dir-staged.{target.name}")
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, retired / target.name)
            kill_point(f"files.dir-retired.{target.name}")
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
        kill_point(f"files.dir-swapped.{target.name}")
    except BaseException as error:
        if retired is not None and not target.exists() and (retired / target.name).exists():
            os.replace(retired / target.name, target)  # interrupted (Ctrl-C) between the two renames
            shutil.rmtree(retired, ignore_errors=True)
        full = disk_full_error(error, target, staging)
        shutil.rmtree(staging, ignore_errors=True)
        if full:
            raise full from None
        raise


#: Errors of a write that found no space: the OS's, and the words of libraries that report it in text
#: (safetensors' "No space left on device (os error 28)").
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_WORDS = ("No space left on device", "Disk quota exceeded")


def disk_full_error(error: BaseException, target: Path, staging: Path) -> PipelineError | None:
    """One line for a write of ``target`` that filled the disk, or None if ``error`` is something else.

    PyTorch's writer reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc]``
    with the OS's error only as its context, so the whole chain is searched.
    """
    seen: BaseException | None = error
    while seen is not None:
        if (isinstance(seen, OSError) and seen.errno in _NO_SPACE) or any(
            words in str(seen) for words in _NO_SPACE_WORDS
        ):
            break
        seen = seen.__cause__ or seen.__context__
    else:
        return None
    files = [staging] if staging.is_file() else [p for p in staging.rglob("*") if p.is_file()]
    written = sum(p.stat().st_size for p in files if p.exists())
    free = shutil.disk_usage(target.parent).free
    return PipelineError(
        f"{display_path(target)}: the disk is full ({_size(free)} free there) while writing it; it needs "
        f"more than the {_size(written)} written before the write failed: free space on that disk, or "
        "point its setting in params.yaml at another one (earlier outputs are as they were)"
    )


def _size(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


def check_writable(
    key: str, path: Path, *, kind: Literal["file", "folder"], into: bool = False, fix: str | None = None
) -> None:
    """Refuse, before any work starts, an output location this process cannot write.

    A stage that finds out only when it saves (a model after an hour of training) has
    wasted the hour, so every entry point checks its outputs first: ``path`` must be
    of the ``kind`` it will be, and the folder the write happens in must accept a new
    file. That folder is ``path`` itself when the stage writes files ``into`` it (logs,
    checkpoints), else the folder holding ``path`` (outputs are swapped in whole from a
    staging copy beside them). A folder not made yet counts as its nearest existing parent.
    ``key`` names the setting in the message; ``fix`` says how to point it elsewhere.

    The check writes and removes a probe file rather than reading permission bits,
    which say nothing of read-only file systems and are ignored for the superuser.
    """
    shown = display_path(path)
    fix = fix or f"set {key} to another location"
    wrong_kind = path.is_dir() if kind == "file" else path.exists() and not path.is_dir()
    if wrong_kind:
        other = "folder" if kind == "file" else "file"
        raise PipelineError(f"{key}: {shown} is a {other}, expected a {kind}; move it away or {fix}")
    folder = path if into else path.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        raise PipelineError(
            f"{key}: cannot write {shown}: {display_path(folder)} is a file, not a folder; {fix}"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
    except OSError as error:
        raise PipelineError(
            f"{key}: cannot write {shown}: {display_path(folder)} does not accept new files "
            f"({error.strerror}); make it writable or {fix}"
        ) from None
    os.close(fd)
    Path(probe).unlink()

"""Turn a dataset spec from ``params.yaml`` into ``datasets.load_dataset`` arguments.

Three kinds of source are supported, all loaded through ``load_dataset`` so the
Hugging Face cache rules apply to each:

* a packaged builder (``json``, ``text``, ``csv``, ``parquet``...) over files:
  project-relative paths, http(s) URLs, or ``package://<module>/<file>`` for a
  file shipped in an installed Python package (the offline default corpus);
* a dataset folder on disk;
* a Hub dataset id, which needs the Hub (probed first, so offline runs fail in
  seconds instead of retrying for a minute).
"""

from __future__ import annotations

import codecs
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import DatasetSpec
from src.errors import ConfigError, PipelineError
from src.paths import PROJECT_ROOT, resolve_path
from src.utils.hub import hub_endpoint

PACKAGE_SCHEME = "package://"
_URL_SCHEMES = ("http://", "https://")

#: Builders that read text files, and so take an ``encoding``.
TEXT_BUILDERS = ("text", "json", "csv")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ResolvedSource:
    """Arguments for ``load_dataset`` plus what the manifest should say about them."""

    kind: str
    """``files`` (a packaged builder over files), ``folder`` or ``hub``."""
    load_args: dict[str, Any]
    """Keyword arguments for ``datasets.load_dataset`` (without cache or mode)."""
    local_files: dict[str, Path]
    """Local source files keyed by how params.yaml names them (hashed into the manifest)."""
    urls: tuple[str, ...]
    """Remote source files; their copies under ``<raw>/downloads`` are verified."""


def is_url(entry: str) -> bool:
    return entry.startswith(_URL_SCHEMES)


def packaged_builders() -> frozenset[str]:
    """Names of the builders that ship inside ``datasets`` (``json``, ``text``...)."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return frozenset(_PACKAGED_DATASETS_MODULES)


def resolve_source(key: str, spec: DatasetSpec, root: Path = PROJECT_ROOT) -> ResolvedSource:
    """Resolve ``spec`` (found at params key ``key``) into concrete ``load_dataset`` arguments."""
    load_args: dict[str, Any] = {"path": spec.path, "name": spec.name}
    if spec.encoding is not None:
        if spec.path not in TEXT_BUILDERS:
            raise ConfigError(
                f"{key}.encoding: applies to the {', '.join(TEXT_BUILDERS)} builders only, "
                f"not {spec.path!r}; remove it"
            )
        load_args["encoding"] = spec.encoding  # only when set: the default keeps the cache's fingerprint
    if spec.path in packaged_builders():
        if spec.data_files is None:
            raise ConfigError(
                f"{key}.data_files: required for the '{spec.path}' builder; list the files to load"
            )
        local: dict[str, Path] = {}
        urls: list[str] = []

        def resolve_entry(entry: str) -> str:
            if is_url(entry):
                urls.append(entry)
                return entry
            path = _resolve_local_file(f"{key}.data_files", entry, root)
            local[entry] = path
            return str(path)

        load_args["data_files"] = _map_data_files(spec.data_files, resolve_entry)
        return ResolvedSource("files", load_args, local, tuple(urls))
    folder = resolve_path(spec.path, root)
    if spec.path.startswith((".", "/")) or folder.is_dir():
        if not folder.is_dir():
            raise ConfigError(f"{key}.path: folder {spec.path!r} does not exist")
        load_args["path"] = str(folder)
        if spec.data_files is not None:
            load_args["data_files"] = spec.data_files
        return ResolvedSource("folder", load_args, {}, ())
    load_args["revision"] = spec.revision
    if spec.data_files is not None:
        load_args["data_files"] = spec.data_files
    return ResolvedSource("hub", load_args, {}, ())


def _map_data_files(data_files: Any, resolve_entry: Any) -> Any:
    if isinstance(data_files, str):
        return resolve_entry(data_files)
    if isinstance(data_files, dict):
        return {split: _map_data_files(files, resolve_entry) for split, files in data_files.items()}
    return [resolve_entry(entry) for entry in data_files]


def _resolve_local_file(key: str, entry: str, root: Path) -> Path:
    if entry.startswith(PACKAGE_SCHEME):
        module, _, relative = entry[len(PACKAGE_SCHEME) :].partition("/")
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"{key}: Python package {module!r} of {entry!r} is not installed; run `make setup`"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / relative
    else:
        path = resolve_path(entry, root)
    if path.is_dir():
        raise ConfigError(f"{key}: {entry!r} is a folder, expected a file; list the files it holds")
    if not path.is_file():
        raise ConfigError(f"{key}: file {entry!r} not found; fix the path (relative to the project root)")
    return path


def check_source_files(key: str, spec: DatasetSpec, source: ResolvedSource) -> None:
    """Refuse local source files that cannot give documents, before the loader reads them.

    The loaders fail on these deep inside (an empty JSON file is a bare ``StopIteration``;
    undecodable bytes either fail without a file name or, in the JSON reader, pass into the
    cache and fail later), so they are checked here, naming the file and the line.
    """
    for entry, path in source.local_files.items():
        if path.stat().st_size == 0:
            raise ConfigError(f"{key}.data_files: {entry!r} is empty; give a file with at least one document")
        if reads_as_utf8(spec):
            check_utf8(f"{key}.data_files", entry, path, encoding_key=f"{key}.encoding")


def reads_as_utf8(spec: DatasetSpec) -> bool:
    """Whether the source files are text the loader decodes as UTF-8 (and so can be checked here)."""
    return spec.path in TEXT_BUILDERS and codecs.lookup(spec.encoding or "utf-8").name == "utf-8"


def check_utf8(key: str, entry: str, path: Path, *, encoding_key: str) -> None:
    """Refuse a file that is not UTF-8, naming the line of the first bad byte (read in chunks)."""
    lines, carry = 1, b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            data, final = carry + chunk, not chunk
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as error:
                incomplete = error.reason == "unexpected end of data" and error.end == len(data)
                if final or not incomplete:
                    line = lines + data.count(b"\n", 0, error.start)
                    raise ConfigError(
                        f"{key}: {entry!r} is not UTF-8 text (line {line}: byte 0x{data[error.start]:02x}); "
                        f"save it as UTF-8, or set {encoding_key} to its encoding (e.g. latin-1)"
                    ) from None
                carry, data = data[error.start :], data[: error.start]  # a character cut by the chunk
            if final:
                return
            lines += data.count(b"\n")


def hub_unreachable_error(key: str, spec: DatasetSpec) -> PipelineError:
    return PipelineError(
        f"{key}: the Hugging Face Hub ({hub_endpoint()}) is unreachable "
        f"and {spec.path!r} is not in the cache; "
        "connect to the network, or load local files instead "
        "(path: text|json|csv|parquet with data_files: <files relative to the project root>)"
    )

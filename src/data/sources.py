"""Turn a dataset spec from ``params.yaml`` into ``datasets.load_dataset`` arguments.

Three kinds of source are supported, all loaded through ``load_dataset`` so the
Hugging Face cache rules apply to each:

* a packaged builder (``json``, ``text``, ``csv``, ``parquet``...) over files:
  paths, glob patterns and folders relative to ``data_dir`` (default: the
  project root), http(s) URLs, or ``package://<module>/<file>`` for a file
  shipped in an installed Python package (the offline default corpus);
* a dataset folder on disk;
* a Hub dataset id, which needs the Hub (probed first, so offline runs fail in
  seconds instead of retrying for a minute).
"""

from __future__ import annotations

import codecs
import dataclasses
import importlib
import importlib.util
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.config import DatasetSpec
from src.data.source_files import check_links_stay_inside, expand_entry
from src.errors import ConfigError, PipelineError
from src.paths import PROJECT_ROOT, resolve_path
from src.utils.hub import hub_endpoint
from src.utils.typed_config import convert

PACKAGE_SCHEME = "package://"
_URL_SCHEMES = ("http://", "https://")

#: Builders that read text files, and so take an ``encoding``.
TEXT_BUILDERS = ("text", "json", "csv")


@dataclass(frozen=True)
class ResolvedSource:
    """Arguments for ``load_dataset`` plus what the manifest should say about them."""

    kind: str
    """``files`` (a packaged builder over files), ``folder`` or ``hub``."""
    load_args: dict[str, Any]
    """Keyword arguments for ``datasets.load_dataset`` (without cache or mode)."""
    local_files: dict[str, Path]
    """Local source files in the order they are read, keyed as the manifest names them (and hashes)."""
    urls: tuple[str, ...]
    """Remote source files; their copies under ``<raw>/downloads`` are verified."""
    matched: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each local ``data_files`` entry (file, pattern or folder) and the files it stands for, sorted."""


def is_url(entry: str) -> bool:
    return entry.startswith(_URL_SCHEMES)


def packaged_builders() -> frozenset[str]:
    """Names of the builders that ship inside ``datasets`` (``json``, ``text``...)."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return frozenset(_PACKAGED_DATASETS_MODULES)


def resolve_source(key: str, spec: DatasetSpec, root: Path = PROJECT_ROOT) -> ResolvedSource:
    """Resolve ``spec`` (found at params key ``key``) into concrete ``load_dataset`` arguments."""
    load_args: dict[str, Any] = {"path": spec.path, "name": spec.name}
    _check_options(key, spec)
    if spec.path in packaged_builders():
        base = root
        if spec.data_dir is not None:
            base = resolve_path(spec.data_dir, root)
            if not base.is_dir():
                raise ConfigError(f"{key}.data_dir: folder {spec.data_dir!r} does not exist")
            check_links_stay_inside(f"{key}.data_dir", base)
        data_files = spec.data_files if spec.data_files is not None else spec.data_dir and "."
        if data_files is None:
            raise ConfigError(
                f"{key}.data_files: required for the '{spec.path}' builder; list the files to load"
            )
        local: dict[str, Path] = {}
        matched: dict[str, tuple[str, ...]] = {}
        urls: list[str] = []

        def resolve_entry(entry: str) -> list[str]:
            if is_url(entry) and spec.data_dir is None:
                urls.append(entry)
                return [entry]
            if entry.startswith(PACKAGE_SCHEME) and spec.data_dir is None:
                local[entry] = _package_file(f"{key}.data_files", entry)
                matched[entry] = (entry,)
                return [str(local[entry])]
            if spec.data_dir is not None and (
                Path(entry).is_absolute() or ".." in Path(entry).parts or "://" in entry
            ):
                raise ConfigError(
                    f"{key}.data_files: {entry!r} is outside data_dir {spec.data_dir!r}; "
                    "give paths relative to data_dir, so that DVC watches every file read"
                )
            files = expand_entry(f"{key}.data_files", entry, base)
            matched[entry] = tuple(found.key for found in files)
            local.update((found.key, found.path) for found in files)
            return [str(found.path) for found in files]

        load_args["data_files"] = _map_data_files(data_files, resolve_entry)
        load_args.update(spec.options)
        return ResolvedSource("files", load_args, local, tuple(urls), matched)
    load_args.update(spec.options)
    if spec.data_dir is not None:
        load_args["data_dir"] = spec.data_dir  # a folder inside the dataset's own files
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
    """The same shape as ``data_files`` (a list per split, or one list), each entry expanded to its files."""
    if isinstance(data_files, dict):
        return {split: _map_data_files(files, resolve_entry) for split, files in data_files.items()}
    entries = [data_files] if isinstance(data_files, str) else data_files
    return [path for entry in entries for path in resolve_entry(entry)]


#: ``load_dataset`` arguments the pipeline sets itself; ``options`` are the builder's own settings.
_LOAD_ARGUMENTS = frozenset({"path", "name", "data_dir", "data_files", "revision", "cache_dir"})


def _check_options(key: str, spec: DatasetSpec) -> None:
    """Refuse options that are not the builder's, or of the wrong type, by the builder config's own
    declaration (``TextConfig.sample_by: Literal["line", "paragraph", "document"]``...)."""
    from datasets import load_dataset

    arguments = _LOAD_ARGUMENTS | set(inspect.signature(load_dataset).parameters) - {"config_kwargs"}
    for option in spec.options:
        if option in arguments:
            raise ConfigError(
                f"{key}.options: {option!r} is an argument of load_dataset, not a builder option; "
                f"remove it (set it as {key}.{option} where there is such a setting)"
            )
    config_class = builder_config_class(spec.path)
    if config_class is None or not spec.options:
        return
    declared = (
        {f.name for f in dataclasses.fields(config_class)} - _LOAD_ARGUMENTS - {"version", "description"}
    )
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # a hint datasets cannot resolve itself: leave the checking to it
        hints = {}
    for option, value in spec.options.items():
        if option not in declared:
            raise ConfigError(
                f"{key}.options: {option!r} is not an option of the {spec.path!r} builder "
                f"(its options: {', '.join(sorted(declared))})"
            )
        try:
            convert(hints.get(option, Any), value, f"{key}.options.{option}")
        except TypeError:  # a type only code can build (Features): datasets checks it when loading
            continue
        if option == "encoding":
            try:
                codecs.lookup(str(value))
            except LookupError:
                raise ConfigError(
                    f"{key}.options.encoding: unknown text encoding {value!r}; use a name such as latin-1"
                ) from None


def builder_config_class(builder: str) -> type | None:
    """The ``BuilderConfig`` class of a packaged builder (``TextConfig``...), or None for others."""
    from datasets import BuilderConfig, DatasetBuilder
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if builder not in _PACKAGED_DATASETS_MODULES:
        return None
    module = importlib.import_module(_PACKAGED_DATASETS_MODULES[builder][0])
    for value in vars(module).values():
        if (
            inspect.isclass(value)
            and issubclass(value, DatasetBuilder)
            and value.__module__ == module.__name__
        ):
            config = value.BUILDER_CONFIG_CLASS
            return config if config is not BuilderConfig else None
    return None


def _package_file(key: str, entry: str) -> Path:
    """The file ``package://<module>/<file>`` names inside an installed Python package."""
    module, _, relative = entry[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{key}: Python package {module!r} of {entry!r} is not installed; run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ConfigError(f"{key}: file {entry!r} not found; fix the path (relative to the package)")
    return path


def check_source_files(key: str, source: ResolvedSource) -> None:
    """Refuse empty local source files before the loader reads them: it fails on them deep inside
    (an empty JSON file is a bare ``StopIteration``). Undecodable lines are found by
    ``source_files.find_unreadable_line``, which the download runs before loading."""
    for entry, path in source.local_files.items():
        if path.stat().st_size == 0:
            raise ConfigError(f"{key}.data_files: {entry!r} is empty; give a file with at least one document")


def hub_unreachable_error(key: str, spec: DatasetSpec) -> PipelineError:
    return PipelineError(
        f"{key}: the Hugging Face Hub ({hub_endpoint()}) is unreachable "
        f"and {spec.path!r} is not in the cache; "
        "connect to the network, or load local files instead "
        "(path: text|json|csv|parquet with data_files: <files relative to the project root>)"
    )

"""Fetch, cache and export the datasets of ``download.datasets`` (the guide's ``DATASETS_TO_DOWNLOAD``).

Caching follows ``datasets.load_dataset`` exactly: the Hugging Face cache lives
under ``<cache_dir>/raw`` (prepared Arrow files in
``<builder>/<config>/<fingerprint>/``, remote sources in ``downloads/``) and is
reused when valid; ``force_redownload`` fetches and rebuilds everything. Each
dataset is then exported to ``<cache_dir>/raw/<dataset>/`` (see
:mod:`src.data.raw_export`), the download stage's output.

A source that is already files on this machine (local files, ``package://``) keeps no Arrow
copy: it is prepared in a scratch cache beside the export and that is deleted once the export
is written. The copy would double the disk a corpus takes and would never be reused: its
fingerprint holds the files' mtimes, and DVC re-runs the stage only when the files changed.
Hub datasets and URLs keep the cache (it is their download).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src.config import DatasetSpec, Params, available_cores
from src.data.download_cache import drop_corrupted_downloads, find_cached_download, record_downloads
from src.data.manifests import ExportManifest, ExportSource
from src.data.raw_export import VALIDATION, EmptySplitError, plan_splits, write_export
from src.data.source_files import BadLine, find_unreadable_line
from src.data.sources import (
    PACKAGE_SCHEME,
    TEXT_BUILDERS,
    ResolvedSource,
    check_source_files,
    hub_unreachable_error,
    packaged_builders,
    resolve_source,
)
from src.errors import ConfigError, PipelineError, first_line
from src.paths import display_path
from src.utils.files import check_writable, sha256_file
from src.utils.hub import hub_is_reachable, use_offline_hub

log = logging.getLogger(__name__)

#: Download logs are ``<paths.log_dir>/download_datasets_<n>.log``, as the workflow guide names them.
LOG_PREFIX = "download_datasets"


def download_dataset(
    name: str,
    spec: DatasetSpec,
    cache_dir: Path,
    *,
    force_redownload: bool = False,
    hub_timeout_s: float = 3.0,
    key: str | None = None,
) -> Path:
    """Load ``spec`` through the Hugging Face cache under ``cache_dir/raw`` and export it.

    ``key`` is where ``params.yaml`` defines it (default ``download.datasets.<name>``), for messages.
    Returns the export folder ``cache_dir/raw/<name>``.
    """
    from datasets import DownloadMode

    key = key or f"download.datasets.{name}"
    raw = cache_dir / "raw"
    if name == "downloads" or name in packaged_builders() or "___" in name:
        raise ConfigError(
            f"{key}: the name clashes with a Hugging Face cache folder under {raw}; rename the dataset"
        )
    source = resolve_source(key, spec)
    check_source_files(key, source)
    if bad := _unreadable_line(spec, source.local_files.values()):
        raise _bad_line_error(key, spec, bad)  # before the loader, which names no file (or lets JSON in)
    corrupted = drop_corrupted_downloads(raw / "downloads", source.urls)
    force = force_redownload or bool(corrupted)
    mode = DownloadMode.FORCE_REDOWNLOAD if force else DownloadMode.REUSE_DATASET_IF_EXISTS
    offline = source.kind == "hub" and not hub_is_reachable(hub_timeout_s)
    if offline:
        log.warning("%s: the Hub is unreachable; looking for %r in the cache only", key, spec.path)
        use_offline_hub()
    log.info("%s: loading %r (%s)", key, spec.path, mode.value)
    if spec.data_dir is None and any(not entry.startswith(PACKAGE_SCHEME) for entry in source.local_files):
        log.warning(
            "%s: DVC does not watch its local files; define it under download.local with data_dir "
            "(the folder that holds them) so that editing them re-runs its download",
            key,
        )
    with _arrow_cache(raw, name, source) as arrow_cache:
        return _load_and_export(key, name, spec, source, arrow_cache, mode, offline, raw / name)


@contextmanager
def _arrow_cache(raw: Path, name: str, source: ResolvedSource) -> Iterator[Path]:
    """Where ``load_dataset`` prepares ``source``: ``raw`` itself, or for local files a scratch
    folder beside the export, deleted afterwards (and, left by a killed run, at the next one)."""
    if source.kind != "files" or source.urls:
        yield raw
        return
    for stale in raw.glob(f".{name}.arrow-*"):
        shutil.rmtree(stale, ignore_errors=True)
    raw.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.arrow-", dir=raw))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load_and_export(
    key: str,
    name: str,
    spec: DatasetSpec,
    source: ResolvedSource,
    cache: Path,
    mode: Any,
    offline: bool,
    target: Path,
) -> Path:
    """Load through ``cache``, check what was loaded, and write the export to ``target``."""
    raw = target.parent
    dataset = _load(key, spec, source, cache, mode, offline)
    _check_text_column(key, spec.text_column, dataset)
    _check_downloaded_text(key, spec, source, raw / "downloads")
    _check_texts_present(key, spec, source, dataset)
    hashes = {entry: sha256_file(path) for entry, path in source.local_files.items()}
    hashes.update(record_downloads(raw / "downloads", source.urls))
    row_counts = {split: len(ds) for split, ds in sorted(dataset.items())}
    plans = plan_splits(row_counts, spec.validation_fraction, spec.split_seed)
    manifest = ExportManifest(
        dataset=name,
        source=ExportSource(
            path=spec.path,
            name=spec.name,
            data_dir=spec.data_dir,
            data_files=spec.data_files,
            files=source.matched,
            options=spec.options,
            revision=spec.revision,
            text_column=spec.text_column,
            sha256=hashes,
            rows=row_counts,
        ),
        validation_split=(
            {"fraction": spec.validation_fraction, "seed": spec.split_seed}
            if any(p.validation_mask is not None for p in plans)
            else "from source"
        ),
        splits={},  # write_export fills them in
    )
    try:
        unmapped = {split: UnmappedSplit(ds) for split, ds in dataset.items()}
        written = write_export(unmapped, spec.text_column, plans, target, manifest)
    except EmptySplitError as error:
        raise _empty_split_error(key, spec, error.split, row_counts) from None
    rows = ", ".join(f"{split} {info.rows}" for split, info in written.splits.items())
    log.info("%s: exported %s (%s documents)", key, display_path(target), rows)
    return target


def _load(key: str, spec: DatasetSpec, source: ResolvedSource, raw: Path, mode: Any, offline: bool) -> Any:
    """``load_dataset`` through the cache, every failure turned into one line naming the dataset."""
    from datasets import DatasetDict
    from datasets.exceptions import DatasetGenerationError

    try:
        dataset = _load_or_rebuild(key, source, raw, mode, retry=not offline)
    except ConnectionError as error:
        if offline:
            raise hub_unreachable_error(key, spec) from None
        url = _failed_url(error, source.urls)
        if url:
            raise _url_error(key, url, error) from None
        raise PipelineError(f"{key}: could not fetch {spec.path!r}: {first_line(error)}") from None
    except StopIteration:  # what the JSON reader raises for a source without a single row
        raise PipelineError(
            f"{key}.data_files: the {spec.path!r} source files hold no rows; give files with documents"
        ) from None
    except (DatasetGenerationError, ValueError, OSError, TypeError) as error:
        cause = error.__cause__ or error
        url = _failed_url(error, source.urls)
        if url:
            raise _url_error(key, url, error) from None
        bad = _unreadable_line(spec, source.local_files.values(), spec.text_column)
        if bad is not None:
            raise _bad_line_error(key, spec, bad) from None
        if spec.options and isinstance(error, TypeError | ValueError) and _names_an_option(error, spec):
            raise ConfigError(f"{key}.options: {first_line(error)}; fix or remove the option") from None
        if isinstance(error, TypeError):
            raise
        raise PipelineError(
            f"{key}: could not load {spec.path!r}: {first_line(cause)}; check the source files and settings"
        ) from None
    if not isinstance(dataset, DatasetDict):
        raise ConfigError(f"{key}: expected a dataset with named splits, got {type(dataset).__name__}")
    return dataset


def _load_or_rebuild(key: str, source: ResolvedSource, raw: Path, mode: Any, *, retry: bool) -> Any:
    """Load as ``mode`` says; if the prepared Arrow cache cannot be read, rebuild it once from the sources."""
    from datasets import DownloadMode, load_dataset

    workers = _prepare_workers(source)
    try:
        return load_dataset(**source.load_args, cache_dir=str(raw), download_mode=mode, num_proc=workers)
    except ConnectionError:
        raise
    except (OSError, ValueError) as error:
        # A source that cannot be fetched is not a damaged cache: rebuilding would fail the same way.
        if not retry or mode == DownloadMode.FORCE_REDOWNLOAD or _failed_url(error, source.urls):
            raise
        log.warning("%s: the cached copy could not be read (%s); rebuilding it", key, first_line(error))
    return load_dataset(
        **source.load_args, cache_dir=str(raw), download_mode=DownloadMode.FORCE_REDOWNLOAD, num_proc=workers
    )


def _prepare_workers(source: ResolvedSource) -> int | None:
    """Processes that prepare a source of several local files, one file at a time each (every core:
    parsing is most of a download's time). The rows keep their order, so the export is the same."""
    files = len(source.local_files)
    workers = min(available_cores(), files)
    return workers if source.kind == "files" and not source.urls and workers > 1 else None


class UnmappedSplit:
    """A prepared split read batch by batch from its Arrow files, not through the memory map
    ``datasets`` reads them with: mapped pages that were read stay in the process's resident
    memory, so an export of a 1 GB corpus would peak at over 1 GB. The same rows, in order."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.files = _whole_files(dataset)

    def iter(self, batch_size: int) -> Iterator[dict[str, list[Any]]]:
        import pyarrow as pa

        if self.files is None:  # a selection or a reshaping of the files' rows: read it as it is
            yield from self.dataset.iter(batch_size=batch_size)
            return
        columns = self.dataset.column_names  # as pyarrow arrays: the export encodes them column-wise
        for file in self.files:
            with pa.OSFile(file) as handle:
                for batch in pa.ipc.open_stream(handle):
                    yield {name: batch.column(name) for name in columns}


def _whole_files(dataset: Any) -> list[str] | None:
    """The Arrow files whose rows, one file after another, are ``dataset`` (None when it is anything
    else: a slice, a selection, columns joined from several files, a table in memory)."""
    from datasets.table import ConcatenationTable, MemoryMappedTable

    table = dataset.data
    rows = table.blocks if isinstance(table, ConcatenationTable) else [[table]]
    if dataset._indices is not None or any(len(row) != 1 for row in rows):
        return None
    blocks = [row[0] for row in rows]
    if not all(isinstance(block, MemoryMappedTable) and not block.replays for block in blocks):
        return None
    return [block.path for block in blocks]


def _failed_url(error: BaseException, urls: tuple[str, ...]) -> str | None:
    """The source URL an error names, if any (the loader reports an unreachable file by its URL)."""
    text = f"{error} {error.__cause__ or ''}"
    return next((url for url in urls if url in text), None)


def _url_error(key: str, url: str, error: BaseException) -> PipelineError:
    return PipelineError(
        f"{key}.data_files: cannot fetch {url} ({first_line(error)}); check the address and the network, "
        "or download the file and give its path"
    )


def _check_downloaded_text(key: str, spec: DatasetSpec, source: ResolvedSource, downloads: Path) -> None:
    """Fetched files get the check local ones got before loading (the JSON reader lets bad bytes in)."""
    copies = [copy for url in source.urls if (copy := find_cached_download(downloads, url)) is not None]
    bad = _unreadable_line(spec, copies)
    if bad is not None:
        raise _bad_line_error(key, spec, bad)


def _empty_split_error(key: str, spec: DatasetSpec, split: str, row_counts: Mapping[str, int]) -> ConfigError:
    if split == VALIDATION and VALIDATION not in row_counts:  # carved out of train
        rows = row_counts.get("train", 0)
        return ConfigError(
            f"{key}.validation_fraction: {spec.validation_fraction} of the {rows} training rows leaves the "
            "validation split without a document; raise validation_fraction or use a larger corpus"
        )
    return ConfigError(
        f"{key}.data_files: split {split!r} has no document (its rows are empty or blank); "
        "give it files with text"
    )


def _check_text_column(key: str, column: str, dataset: Mapping[str, Any]) -> None:
    for split, ds in dataset.items():
        if column not in ds.column_names:
            raise ConfigError(
                f"{key}.text_column: split {split!r} has no column {column!r}; "
                f"choose one of: {', '.join(ds.column_names)}"
            )


def _check_texts_present(
    key: str, spec: DatasetSpec, source: ResolvedSource, dataset: Mapping[str, Any]
) -> None:
    """A JSON line without the text (a null in the column) is a mistake in the file, not a blank document."""
    if spec.path != "json" or not any(ds.data.column(spec.text_column).null_count for ds in dataset.values()):
        return
    bad = _unreadable_line(spec, source.local_files.values(), spec.text_column)
    if bad is not None:
        raise _bad_line_error(key, spec, bad)
    raise ConfigError(f"{key}.text_column: some rows have no {spec.text_column!r}; fix the source files")


def _unreadable_line(
    spec: DatasetSpec, files: Iterable[Path], text_column: str | None = None
) -> BadLine | None:
    """The first line of ``files`` that the source's encoding cannot decode (or, given ``text_column``,
    a JSON line without the text); None for a binary format (parquet, arrow: no lines to name), and
    where the options let the reader replace what it cannot decode or read nested JSON, which datasets
    then checks itself."""
    if spec.path not in TEXT_BUILDERS:
        return None
    if spec.options.get("encoding_errors") or (text_column and "field" in spec.options):
        return None
    encoding = str(spec.options.get("encoding", "utf-8"))
    return find_unreadable_line(files, spec.path, encoding, text_column)


def _bad_line_error(key: str, spec: DatasetSpec, bad: BadLine) -> ConfigError:
    where = f"{key}: {display_path(bad.path)} line {bad.line} {bad.problem}"
    if bad.problem.startswith("is not valid"):
        if "JSON" in bad.problem:
            return ConfigError(f"{where}; fix that line")
        return ConfigError(
            f"{where}; convert the file to UTF-8, or set {key}.options: {{encoding: <its encoding>}} "
            "(e.g. latin-1, cp1252)"
        )
    return ConfigError(f"{where}; add it there, or set {key}.text_column to the field that holds the text")


def _names_an_option(error: BaseException, spec: DatasetSpec) -> bool:
    text = str(error)
    return "Config" in text and any(repr(option) in text or option in text for option in spec.options)


def download_all(
    params: Params,
    cache_dir: Path | None = None,
    *,
    names: Iterable[str] | None = None,
    force_redownload: bool = False,
) -> dict[str, Path]:
    """Download and export each named dataset (default: all of ``download.datasets`` and ``download.local``).

    ``cache_dir`` defaults to ``paths.cache_dir``; the download stage runs this for one name.
    """
    cache_key = "--cache-dir" if cache_dir else "paths.cache_dir"
    cache_dir = cache_dir or params.paths.raw_dir().parent
    datasets = params.download.all_datasets()
    chosen = list(names) if names else list(datasets)
    for name in chosen:
        if name not in datasets:
            raise ConfigError(
                f"download.datasets.{name}: no such dataset; choose one of: {', '.join(datasets)}"
            )
    check_writable(cache_key, cache_dir / "raw", kind="folder", into=True)
    return {
        name: download_dataset(
            name,
            datasets[name],
            cache_dir,
            force_redownload=force_redownload,
            hub_timeout_s=params.download.hub_timeout_s,
            key=params.download.key_of(name),
        )
        for name in chosen
    }

"""The download logic: sources, the Hugging Face cache rules, the export (the CLI: tests/utils/)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from src.config import PARAMS_FILE, DatasetSpec, parse_params
from src.data.download import download_all, download_dataset
from src.data.raw_export import read_manifest
from src.errors import ConfigError
from src.utils.typed_config import build


def spec(**fields: object) -> DatasetSpec:
    return build(DatasetSpec, fields, "download.datasets.test")


def arrow_snapshot(raw: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every prepared Arrow file: unchanged means nothing was rebuilt."""
    return {
        str(p.relative_to(raw)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in raw.rglob("*.arrow")
        if "downloads" not in p.parts
    }


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


@pytest.fixture
def kjv() -> DatasetSpec:
    return spec(**yaml.safe_load(PARAMS_FILE.read_text())["download"]["datasets"]["kjv"])


def test_default_corpus_exports_train_and_validation(tmp_path: Path, kjv: DatasetSpec) -> None:
    export = download_dataset("kjv", kjv, tmp_path)
    manifest = read_manifest(export)
    assert manifest.dataset == "kjv"
    assert set(manifest.splits) == {"train", "validation"}
    train, validation = manifest.splits["train"], manifest.splits["validation"]
    assert train.rows + validation.rows == manifest.source.rows["train"] == 31102 + 1
    assert validation.rows == round(31103 * kjv.validation_fraction)
    assert manifest.validation_split == {"fraction": kjv.validation_fraction, "seed": kjv.split_seed}
    for info in manifest.splits.values():
        data = (export / info.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info.sha256
        assert data.count(b"\n") == info.rows
    assert read_texts(export / "train.jsonl")[0] == "In the beginning God created the heaven and the earth."
    assert list(manifest.source.sha256) == ["package://bible/data/kjv.jsonl"]
    assert (manifest.source.path, manifest.source.data_files) == ("json", kjv.data_files)


def test_local_text_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\nthird line\n")
    (tmp_path / "b.txt").write_text("held out line\n")
    text = spec(
        path="text", data_files={"train": str(tmp_path / "a.txt"), "validation": str(tmp_path / "b.txt")}
    )
    export = download_dataset("notes", text, tmp_path / "cache")
    assert read_texts(export / "train.jsonl") == ["first line", "second line", "third line"]
    assert read_texts(export / "validation.jsonl") == ["held out line"]
    assert read_manifest(export).validation_split == "from source"

    rows = [{"body": f"record {i}", "n": i} for i in range(50)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = spec(
        path="json", data_files=str(tmp_path / "r.jsonl"), text_column="body", validation_fraction=0.2
    )
    export = download_dataset("records", records, tmp_path / "cache")
    train, validation = read_texts(export / "train.jsonl"), read_texts(export / "validation.jsonl")
    assert len(validation) == 10 and sorted(train + validation) == sorted(r["body"] for r in rows)


def test_second_run_reuses_the_cache_and_rebuilds_nothing(
    folder_bytes, tmp_path: Path, kjv: DatasetSpec
) -> None:
    export = download_dataset("kjv", kjv, tmp_path)
    raw = tmp_path / "raw"
    before, first_export = arrow_snapshot(raw), folder_bytes(export)
    assert before, "the first run prepares Arrow files"
    download_dataset("kjv", kjv, tmp_path)
    assert arrow_snapshot(raw) == before
    assert folder_bytes(export) == first_export


def test_export_is_byte_identical_across_fresh_caches(folder_bytes, tmp_path: Path, kjv: DatasetSpec) -> None:
    one = download_dataset("kjv", kjv, tmp_path / "one")
    two = download_dataset("kjv", kjv, tmp_path / "two")
    rebuilt = download_dataset("kjv", kjv, tmp_path / "two", force_redownload=True)
    assert folder_bytes(one) == folder_bytes(two) == folder_bytes(rebuilt)


def test_changing_the_split_changes_the_export(folder_bytes, tmp_path: Path, kjv: DatasetSpec) -> None:
    one = folder_bytes(download_dataset("kjv", kjv, tmp_path / "a"))
    other = spec(path=kjv.path, data_files=kjv.data_files, validation_fraction=0.05)
    two = folder_bytes(download_dataset("kjv", other, tmp_path / "b"))
    assert one["train.jsonl"] != two["train.jsonl"]


def test_damaged_arrow_cache_is_rebuilt(folder_bytes, tmp_path: Path, kjv: DatasetSpec) -> None:
    export = download_dataset("kjv", kjv, tmp_path)
    good = folder_bytes(export)
    (arrow,) = (tmp_path / "raw").rglob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:1000])
    download_dataset("kjv", kjv, tmp_path)
    assert folder_bytes(export) == good


def served_corpus(http_server, name: str = "corpus.jsonl") -> tuple[str, bytes]:
    data = "".join(json.dumps({"text": f"remote document {i}"}) + "\n" for i in range(40)).encode()
    (http_server.folder / name).write_bytes(data)
    return http_server.url(name), data


def downloaded_copy(cache: Path, url: str) -> Path:
    (meta,) = [
        m for m in (cache / "raw" / "downloads").glob("*.json") if json.loads(m.read_text())["url"] == url
    ]
    return meta.with_suffix("")


def file_identity(path: Path) -> tuple[int, int]:
    return path.stat().st_ino, path.stat().st_mtime_ns


def test_force_redownload_fetches_and_rebuilds(tmp_path: Path, http_server) -> None:
    url, _ = served_corpus(http_server)
    remote = spec(path="json", data_files=url)
    download_dataset("remote", remote, tmp_path)
    copy, arrows = file_identity(downloaded_copy(tmp_path, url)), arrow_snapshot(tmp_path / "raw")
    download_dataset("remote", remote, tmp_path)
    assert file_identity(downloaded_copy(tmp_path, url)) == copy
    assert arrow_snapshot(tmp_path / "raw") == arrows
    download_dataset("remote", remote, tmp_path, force_redownload=True)
    assert file_identity(downloaded_copy(tmp_path, url)) != copy
    rebuilt = arrow_snapshot(tmp_path / "raw")
    assert rebuilt.keys() == arrows.keys() and all(rebuilt[k] != arrows[k] for k in arrows)


def test_corrupted_download_is_fetched_again(folder_bytes, tmp_path: Path, http_server) -> None:
    url, data = served_corpus(http_server)
    remote = spec(path="json", data_files=url)
    export = download_dataset("remote", remote, tmp_path)
    good = folder_bytes(export)
    assert read_manifest(export).source.sha256 == {url: hashlib.sha256(data).hexdigest()}
    arrows = arrow_snapshot(tmp_path / "raw")
    downloaded_copy(tmp_path, url).write_bytes(data[:100] + b"garbage")
    download_dataset("remote", remote, tmp_path)
    assert downloaded_copy(tmp_path, url).read_bytes() == data
    assert all(arrow_snapshot(tmp_path / "raw")[k] != arrows[k] for k in arrows), "the dataset is rebuilt"
    assert folder_bytes(export) == good


def test_source_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"download.datasets.x.data_files: file 'missing.txt' not found"):
        download_dataset("x", spec(path="text", data_files="missing.txt"), tmp_path)
    with pytest.raises(ConfigError, match=r"package 'no_such_pkg' .* is not installed"):
        download_dataset("x", spec(path="json", data_files="package://no_such_pkg/a.jsonl"), tmp_path)
    with pytest.raises(ConfigError, match=r"download.datasets.x.data_files: required for the 'json' builder"):
        download_dataset("x", spec(path="json"), tmp_path)
    (tmp_path / "a.jsonl").write_text('{"body": "b"}\n')
    with pytest.raises(
        ConfigError, match=r"x.text_column: split 'train' has no column 'text'; choose one of: body"
    ):
        download_dataset("x", spec(path="json", data_files=str(tmp_path / "a.jsonl")), tmp_path)
    with pytest.raises(ConfigError, match=r"download.datasets.json: the name clashes"):
        download_dataset("json", spec(path="json", data_files=str(tmp_path / "a.jsonl")), tmp_path)


def test_download_all_fetches_every_listed_dataset_or_the_named_ones(
    two_local_datasets, tmp_path: Path
) -> None:
    params = parse_params(two_local_datasets(tmp_path))
    exports = download_all(params, tmp_path / "all")
    assert exports == {name: tmp_path / "all" / "raw" / name for name in ("first", "second")}
    assert read_texts(exports["second"] / "train.jsonl")[0] == "second line 0"
    assert list(download_all(params, tmp_path / "one", names=["second"])) == ["second"]
    assert not (tmp_path / "one" / "raw" / "first").exists()
    with pytest.raises(
        ConfigError, match=r"^download.datasets.third: no such dataset; choose one of: first, second$"
    ):
        download_all(params, tmp_path / "none", names=["third"])


def test_a_source_in_another_encoding_needs_its_encoding(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes("plain line\ncafé au lait\nnaïve\nlast line\n".encode("latin-1"))
    with pytest.raises(
        ConfigError,
        match=r"^download.datasets.notes.data_files: '.*notes.txt' is not UTF-8 text \(line 2: byte 0xe9\); "
        r"save it as UTF-8, or set download.datasets.notes.encoding to its encoding",
    ):
        download_dataset("notes", spec(path="text", data_files=str(source)), tmp_path / "cache")
    given = spec(path="text", data_files=str(source), encoding="latin-1", validation_fraction=0.25)
    export = download_dataset("notes", given, tmp_path / "cache")
    texts = read_texts(export / "train.jsonl") + read_texts(export / "validation.jsonl")
    assert sorted(texts) == sorted(["plain line", "café au lait", "naïve", "last line"])  # UTF-8 now
    assert read_manifest(export).source.encoding == "latin-1"


def test_an_export_of_utf8_sources_keeps_its_bytes(tmp_path: Path, kjv: DatasetSpec) -> None:
    """No ``encoding`` key when it is unset: the export's bytes, and its DVC hash, stay as they were."""
    export = download_dataset("kjv", kjv, tmp_path)
    assert "encoding" not in json.loads((export / "manifest.json").read_text())["source"]


def test_a_split_left_without_documents_is_refused_and_the_last_export_kept(
    folder_bytes, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"verse {i}"}) + "\n" for i in range(10)))
    export = download_dataset("small", spec(path="json", data_files=str(corpus)), tmp_path / "cache")
    good = folder_bytes(export)
    corpus.write_text(json.dumps({"text": "the only verse"}) + "\n")
    with pytest.raises(
        ConfigError,
        match=r"^download.datasets.small.validation_fraction: 0.02 of the 1 training rows leaves the "
        r"validation split without a document",
    ):
        download_dataset("small", spec(path="json", data_files=str(corpus)), tmp_path / "cache")
    assert folder_bytes(export) == good

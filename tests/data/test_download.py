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
from src.errors import ConfigError, PipelineError
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


def test_second_run_reuses_the_cache_and_rebuilds_nothing(folder_bytes, tmp_path: Path, http_server) -> None:
    url, _ = served_corpus(http_server)
    remote = spec(path="json", data_files=url)
    export = download_dataset("remote", remote, tmp_path)
    raw = tmp_path / "raw"
    before, first_export = arrow_snapshot(raw), folder_bytes(export)
    assert before, "the first run prepares Arrow files"
    download_dataset("remote", remote, tmp_path)
    assert arrow_snapshot(raw) == before
    assert folder_bytes(export) == first_export


def test_files_on_this_machine_keep_no_arrow_copy(folder_bytes, tmp_path: Path, kjv: DatasetSpec) -> None:
    """A local or package file is prepared in a scratch cache that goes once the export is written
    (a second copy of the corpus that would never be reused), also when a killed run left one."""
    export = download_dataset("kjv", kjv, tmp_path / "one")
    assert not arrow_snapshot(tmp_path / "one" / "raw")
    assert sorted(p.name for p in (tmp_path / "one" / "raw").iterdir()) == ["kjv"]
    left = tmp_path / "two" / "raw" / ".kjv.arrow-killed"
    (left / "json").mkdir(parents=True)
    (left / "json" / "data.arrow").write_bytes(b"left by a killed run")
    again = download_dataset("kjv", kjv, tmp_path / "two")
    assert not left.exists()
    assert folder_bytes(again) == folder_bytes(export)


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


def test_damaged_arrow_cache_is_rebuilt(folder_bytes, tmp_path: Path, http_server) -> None:
    url, _ = served_corpus(http_server)
    remote = spec(path="json", data_files=url)
    export = download_dataset("remote", remote, tmp_path)
    good = folder_bytes(export)
    (arrow,) = arrow_snapshot(tmp_path / "raw")
    arrow_file = tmp_path / "raw" / arrow
    arrow_file.write_bytes(arrow_file.read_bytes()[:1000])
    download_dataset("remote", remote, tmp_path)
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


# --------------------------------------------------------------------------- local corpora as users have them


def write_corpus(folder: Path) -> Path:
    """Three books in paragraphs, a nested one, and files a glob over the folder must not take."""
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("Book b, first paragraph\nstill the first.\n\nSecond of b.\n")
    (folder / "a.txt").write_text("Book a, one paragraph.\n\n\n\nAnother of a.\n")
    (folder / "sub" / "c.txt").write_text("Nested c.\n")
    (folder / ".hidden.txt").write_text("hidden\n")
    (folder / "notes.md").write_text("not a .txt\n")
    return folder


def test_a_glob_over_a_folder_with_paragraphs(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    notes = spec(
        path="text",
        data_dir=str(corpus),
        data_files="*.txt",
        options={"sample_by": "paragraph"},
        validation_fraction=0.25,
    )
    export = download_dataset("notes", notes, tmp_path / "cache", key="download.local.notes")
    texts = read_texts(export / "train.jsonl") + read_texts(export / "validation.jsonl")
    assert sorted(texts) == sorted(
        [
            "Book a, one paragraph.",
            "Another of a.\n",
            "Book b, first paragraph\nstill the first.",
            "Second of b.\n",
        ]
    )
    source = read_manifest(export).source
    assert source.files == {"*.txt": ("a.txt", "b.txt")}  # sorted, hidden and other files left out
    assert source.options == {"sample_by": "paragraph"}
    assert (source.data_dir, source.data_files) == (str(corpus), "*.txt")
    assert source.sha256 == {
        name: hashlib.sha256((corpus / name).read_bytes()).hexdigest() for name in ("a.txt", "b.txt")
    }
    assert source.rows == {"train": 4}


def test_folders_lists_and_splits_expand_to_every_file_in_order(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "valid").mkdir()
    (corpus / "valid" / "v.txt").write_text("held out\n")
    whole = spec(
        path="text", data_dir=str(corpus), data_files={"train": ["sub", "*.txt"], "validation": "valid"}
    )
    export = download_dataset("notes", whole, tmp_path / "cache")
    assert read_texts(export / "train.jsonl") == [
        "Nested c.",
        "Book a, one paragraph.",
        "Another of a.",
        "Book b, first paragraph",
        "still the first.",
        "Second of b.",
    ]
    assert read_texts(export / "validation.jsonl") == ["held out"]
    manifest = read_manifest(export)
    assert manifest.source.files == {
        "sub": ("sub/c.txt",),
        "*.txt": ("a.txt", "b.txt"),
        "valid": ("valid/v.txt",),
    }
    (corpus / "sub" / "d.txt").write_text("Nested d.\n")  # two rows: one for each split
    whole = spec(path="text", data_dir=str(corpus / "sub"), validation_fraction=0.5)
    everything = download_dataset("all", whole, tmp_path / "cache")
    assert read_manifest(everything).source.files == {".": ("c.txt", "d.txt")}  # no data_files: the folder


def test_a_file_that_is_not_utf8_names_its_line_and_the_encoding_option(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("fine\n")
    (corpus / "b.txt").write_bytes("first line\nsecond line\nthe caf\xe9 line\n".encode("latin-1"))
    notes = spec(path="text", data_dir=str(corpus), data_files="*.txt")
    with pytest.raises(ConfigError) as error:
        download_dataset("notes", notes, tmp_path / "cache", key="download.local.notes")
    assert str(error.value) == (
        f"download.local.notes: {corpus / 'b.txt'} line 3 is not valid utf-8 (byte 0xe9); convert the file "
        "to UTF-8, or set download.local.notes.options: {encoding: <its encoding>} (e.g. latin-1, cp1252)"
    )
    latin = spec(path="text", data_dir=str(corpus), data_files="*.txt", options={"encoding": "latin-1"})
    export = download_dataset("notes", latin, tmp_path / "cache")
    texts = read_texts(export / "train.jsonl") + read_texts(export / "validation.jsonl")
    assert "the café line" in texts


def test_a_damaged_binary_file_is_not_called_a_text_encoding_problem(tmp_path: Path) -> None:
    """A parquet file has no lines: its failure names the load, not a byte to convert from latin-1."""
    (tmp_path / "r.parquet").write_bytes(b"PAR1\xa0\xff not really parquet")
    table = spec(path="parquet", data_dir=str(tmp_path), data_files="r.parquet")
    with pytest.raises(PipelineError) as error:
        download_dataset("table", table, tmp_path / "cache")
    message = str(error.value)
    assert message.startswith("download.datasets.table: could not load 'parquet': ")
    assert "utf-8" not in message and "encoding" not in message


def test_a_json_line_without_the_text_names_its_line(tmp_path: Path) -> None:
    rows = ['{"text": "one"}', '{"text": "two"}', '{"body": "three"}', '{"text": "four"}']
    (tmp_path / "r.jsonl").write_text("\n".join(rows) + "\n")
    records = spec(path="json", data_dir=str(tmp_path), data_files="r.jsonl")
    with pytest.raises(ConfigError) as error:
        download_dataset("records", records, tmp_path / "cache")
    assert str(error.value) == (
        f"download.datasets.records: {tmp_path / 'r.jsonl'} line 3 has no text in 'text'; add it there, or "
        "set download.datasets.records.text_column to the field that holds the text"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"sample_by": "sentence"},
            r"^download.datasets.x.options.sample_by: expected one of 'line', 'paragraph'",
        ),
        (
            {"no_such": 1},
            r"^download.datasets.x.options: 'no_such' is not an option of the 'text' builder \(its",
        ),
        ({"cache_dir": "x"}, r"^download.datasets.x.options: 'cache_dir' is an argument of load_dataset"),
        ({"keep_linebreaks": "yes"}, r"^download.datasets.x.options.keep_linebreaks: expected true or false"),
    ],
)
def test_builder_options_are_checked_against_the_builders_declaration(
    tmp_path: Path, options: dict, message: str
) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    with pytest.raises(ConfigError, match=message):
        download_dataset(
            "x", spec(path="text", data_files=str(tmp_path / "a.txt"), options=options), tmp_path
        )


def test_patterns_that_match_nothing_or_leave_data_dir_are_refused(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    with pytest.raises(
        ConfigError, match=r"^download.datasets.x.data_files: '\*.csv' matches no file \(relative"
    ):
        download_dataset("x", spec(path="text", data_dir=str(corpus), data_files="*.csv"), tmp_path)
    with pytest.raises(ConfigError, match=r"^download.datasets.x.data_files: '../a.txt' is outside data_dir"):
        download_dataset("x", spec(path="text", data_dir=str(corpus), data_files="../a.txt"), tmp_path)
    with pytest.raises(
        ConfigError, match=r"^download.datasets.x.data_dir: folder '.*nowhere' does not exist$"
    ):
        download_dataset("x", spec(path="text", data_dir=str(tmp_path / "nowhere")), tmp_path)


#: The text of a file outside the corpus folder: it must reach no file the download writes.
OUTSIDE_MARKER = "marker-4f1c9e-outside-the-corpus-folder"


def files_holding(folder: Path, text: str) -> list[Path]:
    """The files under ``folder`` that hold ``text`` (links are not files of the folder: not read)."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return [p for p in files if text.encode() in p.read_bytes()]


@pytest.mark.parametrize("link", ["file", "folder", "nested file", "wildcard-free entry"])
def test_a_link_leading_out_of_data_dir_is_refused(link: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "books").mkdir(parents=True)
    (outside / "secret.txt").write_text(f"{OUTSIDE_MARKER}\n")
    (outside / "books" / "more.txt").write_text(f"{OUTSIDE_MARKER} in a folder\n")
    corpus = write_corpus(tmp_path / "project" / "corpus")
    named = {
        "file": corpus / "passwd.txt",
        "folder": corpus / "books",
        "nested file": corpus / "sub" / "deeper" / "x.txt",
        "wildcard-free entry": corpus / "secret.txt",
    }[link]
    named.parent.mkdir(parents=True, exist_ok=True)
    named.symlink_to(outside / "books" if link == "folder" else outside / "secret.txt")
    data_files = "secret.txt" if link == "wildcard-free entry" else "**/*.txt"
    notes = spec(path="text", data_dir=str(corpus), data_files=data_files)
    cache = tmp_path / "project" / "cache"
    with pytest.raises(ConfigError) as refused:
        download_dataset("notes", notes, cache, key="download.local.notes")
    message = str(refused.value)
    kind = "folder" if link == "folder" else "file"
    assert message.startswith(f"download.local.notes.data_dir: {named} is a link to the {kind} "), message
    assert "outside the folder; files outside data_dir are never read" in message
    assert OUTSIDE_MARKER not in message
    assert files_holding(tmp_path / "project", OUTSIDE_MARKER) == []


def test_a_link_that_stays_inside_data_dir_is_read(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "also_a.txt").symlink_to("a.txt")  # relative, inside
    (corpus / "nested").symlink_to(corpus / "sub", target_is_directory=True)
    (corpus / "loop").symlink_to(".", target_is_directory=True)  # a cycle: the walk does not follow it
    notes = spec(path="text", data_dir=str(corpus), data_files={"train": "*.txt", "validation": "nested"})
    export = download_dataset("notes", notes, tmp_path / "cache", key="download.local.notes")
    assert read_manifest(export).source.files["*.txt"] == ("a.txt", "also_a.txt", "b.txt")
    assert read_texts(export / "train.jsonl").count("Book a, one paragraph.") == 2
    assert read_texts(export / "validation.jsonl") == ["Nested c."]


def test_local_datasets_need_their_folder(tmp_path: Path) -> None:
    data = yaml.safe_load(PARAMS_FILE.read_text())
    data["download"]["local"] = {"notes": {"path": "text", "data_files": "corpus/*.txt"}}
    with pytest.raises(ConfigError, match=r"^download.local.notes.data_dir: required: the folder that holds"):
        parse_params(data)
    data["download"]["local"] = {"kjv": {"path": "text", "data_dir": "corpus"}}
    with pytest.raises(ConfigError, match=r"^download.local.kjv: the name is also in download.datasets"):
        parse_params(data)


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


def test_the_export_reads_the_prepared_rows_in_order_without_the_memory_map(tmp_path: Path) -> None:
    """The export reads the Arrow files from disk (a memory-mapped read would keep every page of the
    corpus resident): the rows, their order and the columns are the dataset's own, shards included."""
    from datasets import load_dataset

    from src.data.download import UnmappedSplit

    files = []
    for shard in range(3):
        files.append(tmp_path / f"part-{shard}.txt")
        files[-1].write_text("".join(f"row {shard}-{i}\n" for i in range(2500)))
    loaded = load_dataset(
        "text", data_files=[str(f) for f in files], cache_dir=str(tmp_path / "c"), num_proc=2
    )
    dataset = loaded["train"]
    assert len(dataset.cache_files) == 2  # one Arrow file per preparing process
    assert UnmappedSplit(dataset).files == [f["filename"] for f in dataset.cache_files]
    read = [row for batch in UnmappedSplit(dataset).iter(1000) for row in batch["text"].to_pylist()]
    assert read == list(dataset["text"])
    selected = dataset.select(range(10, 20))  # a slice of the files: read through datasets itself
    assert UnmappedSplit(selected).files is None
    assert [t for batch in UnmappedSplit(selected).iter(4) for t in batch["text"]] == list(selected["text"])

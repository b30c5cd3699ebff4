"""Which files an input names: hf: datasets, skipped files, id anchors, remote (fsspec) inputs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.corpora.inputs import expand_inputs
from assay.pipelines.executor import ExecutorConfig
from assay.pipelines.ingest import ingest

# Nothing may reach the Hub: datasets reads these when it is first imported.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPEECHES = [
    json.loads(line) for line in (FIXTURES / "ingest" / "inaugural_noid.jsonl").read_text().splitlines()
]


def _rows(n: int, prefix: str) -> dict[str, list]:
    """Real text (inaugural speeches) with an id column; rows 3, 4 and 5 have no usable text."""
    texts = [SPEECHES[i % len(SPEECHES)]["text"] for i in range(n)]
    texts[3], texts[4], texts[5] = None, "", "  \n "
    return {"doc_id": [f"{prefix}{i}" for i in range(n)], "text": texts, "year": list(range(1789, 1789 + n))}


@pytest.fixture(scope="module")
def hf_datasets(tmp_path_factory) -> Path:
    import datasets

    datasets.disable_progress_bars()
    base = tmp_path_factory.mktemp("hf")
    datasets.Dataset.from_dict(_rows(30, "s")).save_to_disk(str(base / "speeches"), num_shards=3)
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(_rows(20, "train-")),
            "test": datasets.Dataset.from_dict(_rows(8, "test-")),
        }
    ).save_to_disk(str(base / "splits"))
    hub = base / "hub" / "data"
    hub.mkdir(parents=True)
    train = pa.table(_rows(20, "hub-train-"))
    pq.write_table(train.slice(0, 10), hub / "train-00000-of-00002.parquet")
    pq.write_table(train.slice(10), hub / "train-00001-of-00002.parquet")
    with open(hub / "validation-00000-of-00001.jsonl", "w") as f:
        for row in pa.table(_rows(7, "hub-val-")).to_pylist():
            f.write(json.dumps(row) + "\n")
    (base / "hub" / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# speeches\n")
    return base


def test_hf_saved_dataset_one_unit_per_arrow_file(hf_datasets, tmp_path):
    root = tmp_path / "root"
    summary = ingest([f"hf:{hf_datasets / 'speeches'}"], root, IngestOptions(id_field="doc_id"), quiet=True)
    assert [Path(i["path"]).name for i in summary["inputs"]] == [
        "data-00000-of-00003.arrow",
        "data-00001-of-00003.arrow",
        "data-00002-of-00003.arrow",
    ]
    assert all(
        i["kind"] == "arrow" and i["records_read"] == i["docs"] + i["quarantined"] for i in summary["inputs"]
    )
    assert (summary["records_read"], summary["docs"], summary["quarantined"]) == (30, 27, 3)
    q = run_query(root, "SELECT line, reason FROM quarantine ORDER BY line").to_pylist()
    assert [(r["line"], r["reason"]) for r in q] == [
        (3, "missing_text"),
        (4, "empty_text"),
        (5, "empty_text"),
    ]
    docs = run_query(
        root, "SELECT id, source, text, meta->>'year' AS year FROM docs ORDER BY year"
    ).to_pylist()
    assert docs[0] == {"id": "s0", "source": "speeches", "text": SPEECHES[0]["text"], "year": "1789"}
    assert [d["id"] for d in docs] == [f"s{i}" for i in range(30) if i not in (3, 4, 5)]


def test_saved_dataset_folder_as_a_plain_input_is_read_the_same(hf_datasets, tmp_path):
    """Its state.json / dataset_info.json are descriptions, not records: nothing quarantined or skipped."""
    via_hf = ingest([f"hf:{hf_datasets / 'speeches'}"], tmp_path / "a", quiet=True)
    plain = ingest([str(hf_datasets / "speeches")], tmp_path / "b", quiet=True)
    assert plain["skipped"] == [] and plain["inputs"] == via_hf["inputs"]
    assert (plain["docs"], plain["quarantined"]) == (27, 3)
    ids = [run_query(tmp_path / r, "SELECT id FROM docs ORDER BY id").column(0).to_pylist() for r in "ab"]
    assert ids[0] == ids[1]
    # a folder holding datasets (a DatasetDict among them) is walked the same way
    everything = ingest([str(hf_datasets)], tmp_path / "c", quiet=True)
    assert everything["records_read"] == 30 + 20 + 8 + 20 + 7
    assert [Path(s["path"]).name for s in everything["skipped"]] == ["README.md"]


def test_hf_dataset_dict_splits(hf_datasets, tmp_path):
    spec = f"hf:{hf_datasets / 'splits'}"
    both = ingest([spec], tmp_path / "both", IngestOptions(id_field="doc_id"), quiet=True)
    assert (both["records_read"], both["docs"]) == (28, 22)
    test = ingest([spec + ":test"], tmp_path / "test", IngestOptions(id_field="doc_id"), quiet=True)
    assert [Path(i["path"]).parent.name for i in test["inputs"]] == ["test"]
    ids = run_query(tmp_path / "test", "SELECT id, source FROM docs ORDER BY id").to_pylist()
    assert ids[0] == {"id": "test-0", "source": "splits"} and len(ids) == 5
    with pytest.raises(ValueError, match="no split 'dev'; the dataset has train, test"):
        expand_inputs([spec + ":dev"])


def test_hf_hub_style_folder(hf_datasets, tmp_path):
    spec = f"hf:{hf_datasets / 'hub'}"
    train = expand_inputs([spec + ":train"])
    assert [Path(f.path).name for f in train.files] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    summary = ingest([spec], tmp_path / "root", IngestOptions(id_field="doc_id"), quiet=True)
    assert summary["skipped"] == []  # the Hub's README.md is not a data file
    assert (summary["records_read"], summary["docs"], summary["quarantined"]) == (27, 21, 6)
    n = run_query(tmp_path / "root", "SELECT count(*) FROM docs WHERE id LIKE 'hub-val-%'").column(0)[0]
    assert n.as_py() == 4
    with pytest.raises(FileNotFoundError, match="Assay downloads nothing"):
        expand_inputs(["hf:HuggingFaceFW/fineweb:train"])


def test_unreadable_files_are_reported_or_refused(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps({"text": "one document"}) + "\n")
    (src / "notes.md").write_text("not an input\n")
    (src / "table.csv").write_text("text\nhello\n")
    summary = ingest([str(src)], tmp_path / "root", quiet=True)
    assert summary["docs"] == 1
    assert [(Path(s["path"]).name, s["reason"]) for s in summary["skipped"]] == [
        ("notes.md", "not a JSONL, text, Parquet, Arrow or WARC file"),
        ("table.csv", "not a JSONL, text, Parquet, Arrow or WARC file"),
    ]
    with pytest.raises(ValueError, match="notes.md: unknown input format"):
        ingest([str(src / "notes.md")], tmp_path / "other", quiet=True)
    assert not (tmp_path / "other").exists()


def test_cli_prints_skipped_files_and_one_line_errors(tmp_path):
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps({"text": "one document"}) + "\n")
    (src / "notes.md").write_text("not an input\n")
    res = CliRunner().invoke(main, ["ingest", str(src), "--root", str(tmp_path / "root")])
    assert res.exit_code == 0, res.output
    assert "skipped 1 file(s)" in res.output and "notes.md: not a JSONL" in res.output
    res = CliRunner().invoke(main, ["ingest", f"hf:{tmp_path / 'missing'}", "--root", str(tmp_path / "r2")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.count("\n") == 1 and "no such folder" in res.output


# ---------------------------------------------------------------- id anchors


def _noid(path: Path, n: int, word: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": f"{word} document {i}"}) + "\n" for i in range(n)))
    return path


def _ids(root: Path) -> list[str]:
    return run_query(root, "SELECT id FROM docs ORDER BY id").column(0).to_pylist()


def test_derived_ids_do_not_depend_on_the_other_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _noid(tmp_path / "crawl" / "2024" / "x.jsonl", 3, "crawl")
    _noid(tmp_path / "books" / "y.jsonl", 2, "book")
    ingest(["crawl/2024/x.jsonl"], tmp_path / "alone", quiet=True)
    ingest([str(tmp_path / "crawl/2024/x.jsonl"), "books"], tmp_path / "together", quiet=True)
    x_ids = ["crawl/2024/x.jsonl:1", "crawl/2024/x.jsonl:2", "crawl/2024/x.jsonl:3"]
    assert _ids(tmp_path / "alone") == x_ids
    assert _ids(tmp_path / "together") == ["books/y.jsonl:1", "books/y.jsonl:2", *x_ids]


def test_appending_two_files_of_the_same_name_keeps_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = _noid(tmp_path / "a" / "x.jsonl", 3, "first")
    second = _noid(tmp_path / "b" / "x.jsonl", 3, "second")
    root = tmp_path / "root"
    ingest([str(first)], root, quiet=True)
    summary = ingest([str(second)], root, append=True, quiet=True)
    assert summary["quarantined"] == 0 and summary["docs"] == 3
    assert _ids(root) == [f"{d}/x.jsonl:{i}" for d in "ab" for i in (1, 2, 3)]
    assert run_query(root, "SELECT count(*) FROM quarantine").column(0)[0].as_py() == 0


def test_files_outside_the_current_folder_and_id_prefix(tmp_path, monkeypatch):
    data = _noid(tmp_path / "data" / "part" / "x.jsonl", 2, "far")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ingest([str(data)], tmp_path / "abs", quiet=True)
    assert _ids(tmp_path / "abs") == [f"{data.as_posix()}:1", f"{data.as_posix()}:2"]
    # --id-prefix: the same ids wherever the files lie and wherever the command runs
    ingest([str(tmp_path / "data")], tmp_path / "pre", IngestOptions(id_prefix="crawl-a/"), quiet=True)
    assert _ids(tmp_path / "pre") == ["crawl-a/part/x.jsonl:1", "crawl-a/part/x.jsonl:2"]
    ingest(
        [str(tmp_path / "data" / "*" / "*.jsonl")],
        tmp_path / "glob",
        IngestOptions(id_prefix="crawl-a"),
        quiet=True,
    )
    assert _ids(tmp_path / "glob") == _ids(tmp_path / "pre")


# ---------------------------------------------------------------- remote inputs (fsspec)


@pytest.fixture
def memory_inputs():
    """A JSONL and a Parquet file in fsspec's in-process memory filesystem (as if on s3://)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("memory://bucket/crawl/speeches.jsonl", "wb") as f:
        f.write((FIXTURES / "ingest" / "inaugural_noid.jsonl").read_bytes())
    buf = io.BytesIO()
    pq.write_table(pa.table(_rows(12, "m")), buf)
    with fs.open("memory://bucket/crawl/more.parquet", "wb") as f:
        f.write(buf.getvalue())
    yield "memory://bucket/crawl"
    fs.rm("memory://bucket", recursive=True)


def test_remote_and_local_inputs_together(memory_inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = _noid(tmp_path / "local" / "x.jsonl", 2, "local")
    root = tmp_path / "root"
    summary = ingest([memory_inputs + "/*", "local"], root, IngestOptions(id_field="doc_id"), quiet=True)
    per = {i["key"]: i for i in summary["inputs"]}
    assert list(per) == [
        "memory:///bucket/crawl/more.parquet",
        "memory:///bucket/crawl/speeches.jsonl",
        "local/x.jsonl",
    ]
    assert [(i["records_read"], i["docs"], i["quarantined"]) for i in per.values()] == [
        (12, 9, 3),
        (40, 40, 0),
        (2, 2, 0),
    ]
    ids = run_query(root, "SELECT id FROM docs WHERE source = 'speeches' ORDER BY source_offset").column(0)
    assert ids[0].as_py() == "memory:///bucket/crawl/speeches.jsonl:1"
    assert local.exists()
    # the memory filesystem lives in this process: worker processes would find it empty
    with pytest.raises(ValueError, match="--workers 1"):
        ingest([memory_inputs], tmp_path / "two", config=ExecutorConfig(workers=2), quiet=True)

"""Scorers from outside Assay: `module.path:Class[:ARG]`, the `assay.scorers` entry-point group,
and any datatrove filter as `<name>_keep` / `<name>_reason` columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.pipelines.annotate import annotate
from assay.pipelines.executor import WorkUnitsFailed
from assay.pipelines.ingest import ingest
from assay.scorers.registry import make_scorer

# An out-of-tree scorer exactly as a user would write one: no Assay import needed.
PLUGIN = textwrap.dedent(
    '''
    import pyarrow as pa
    import pyarrow.compute as pc


    class VowelShare:
        """Share of vowels among letters; ARG picks the vowels (default aeiou)."""

        input_columns = ("id", "text")

        def __init__(self, vowels="aeiou", batch_size=None):
            self.vowels = vowels
            self.name = "vowels"
            self.version = "1-" + vowels

        @classmethod
        def from_spec(cls, arg, root, **settings):
            return cls(arg or "aeiou", settings.get("batch_size"))

        def output_schema(self):
            return pa.schema([("vowel_share", pa.float64())])

        def score(self, batch):
            text = pc.utf8_lower(pc.fill_null(batch.column("text"), ""))
            vowels = pc.count_substring_regex(text, "[" + self.vowels + "]").cast(pa.float64())
            letters = pc.count_substring_regex(text, "[a-z]").cast(pa.float64())
            share = pc.if_else(pc.equal(letters, 0), None, pc.divide(vowels, letters))
            return pa.RecordBatch.from_arrays([share], schema=self.output_schema())


    class NoVersion:
        name = "broken"

        def output_schema(self):
            return pa.schema([("x", pa.int64())])
    '''
)

DOCS = [
    {"id": "a", "text": "Sunny days are good for a long walk.", "url": "https://example.org/a"},
    {"id": "b", "text": "xyz qrst", "url": "https://example.org/b"},
    {"id": "c", "text": "12345 !!!", "url": "https://example.org/c"},
    {"id": "d", "text": "An apple a day keeps the doctor away.", "url": "https://example.org/d"},
]


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    (folder / "my_scorers").mkdir(parents=True)
    (folder / "my_scorers" / "__init__.py").write_text(PLUGIN)
    (folder / "my_filters.py").write_text(
        "def has_digits(doc):\n    return not any(c.isdigit() for c in doc.text)\n"
    )
    # what pip writes for a package declaring [project.entry-points."assay.scorers"]
    dist = folder / "my_scorers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-scorers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[assay.scorers]\nvowels = my_scorers:VowelShare\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture()
def root(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    root = tmp_path / "root"
    ingest([str(src)], root, IngestOptions(shard_rows=2), quiet=True)
    return root


def _column(root: Path, query: str) -> list:
    return run_query(root, query).column(0).to_pylist()


def test_module_path_scorer_with_argument(plugin_dir, root):
    summary = annotate(root, ["my_scorers:VowelShare:aeiouy"], quiet=True)
    assert summary["scorers"]["vowels"]["docs"] == 4
    shares = _column(root, "SELECT vowel_share FROM annotations ORDER BY id")
    assert shares[1] == pytest.approx(1 / 7)  # "xyzqrst": only y counts as a vowel here
    assert shares[2] is None  # no letters


def test_entry_point_scorer_by_name(plugin_dir, root):
    scorer = make_scorer("vowels", root)
    assert type(scorer).__name__ == "VowelShare" and scorer.vowels == "aeiou"
    annotate(root, ["vowels"], quiet=True)
    assert _column(root, "SELECT count(*) FROM annotations_vowels") == [4]


def test_plugin_through_the_cli_in_a_fresh_process(plugin_dir, root):
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    cmd = [sys.executable, "-P", "-m", "assay", "annotate", "--root", str(root), "--scorer", "vowels"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=plugin_dir.parent)
    assert out.returncode == 0, out.stderr
    assert "vowels v1-aeiou: 4 docs" in out.stdout


def test_a_class_missing_the_contract_is_one_clear_error(plugin_dir, root):
    with pytest.raises(ValueError, match="lacks version, score"):
        make_scorer("my_scorers:NoVersion", root)
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        make_scorer("my_scorers:Nope", root)
    with pytest.raises(ValueError, match="unknown scorer 'nosuch'"):
        make_scorer("nosuch", root)


def _datatrove_answers(filter_obj, docs: list[dict]) -> list[tuple[bool, str | None]]:
    from datatrove.data import Document

    out = []
    for d in docs:
        r = filter_obj.filter(Document(text=d["text"], id=d["id"], metadata={"url": d["url"]}))
        keep, reason = r if isinstance(r, tuple) else (r, None)
        out.append((bool(keep), None if keep else (reason or "dropped")))
    return out


def test_datatrove_filters_as_columns_agree_with_datatrove(plugin_dir, root, tmp_path):
    from datatrove.pipeline.filters import RegexFilter, URLFilter

    words = tmp_path / "banned.txt"
    words.write_text("example\n")
    specs = [
        "datatrove:RegexFilter:regex_exp=apple",
        f"datatrove:URLFilter:extra_domains=[example.org],name=url_block,banned_words=lines:{words}",
        "datatrove:LambdaFilter:filter_function=py:my_filters:has_digits",
    ]
    summary = annotate(root, specs, quiet=True)
    assert set(summary["scorers"]) == {"regex", "url_block", "lambda"} and summary["errors"] == 0
    rows = run_query(
        root,
        "SELECT regex_keep, regex_reason, url_block_keep, url_block_reason, lambda_keep FROM annotations ORDER BY id",
    ).to_pylist()
    expected_regex = _datatrove_answers(RegexFilter(regex_exp="apple"), DOCS)
    assert [(r["regex_keep"], r["regex_reason"]) for r in rows] == expected_regex
    assert expected_regex[3] == (False, "dropped")  # "apple" in d
    expected_url = _datatrove_answers(
        URLFilter(extra_domains=["example.org"], banned_words=["example"]), DOCS
    )
    assert [(r["url_block_keep"], r["url_block_reason"]) for r in rows] == expected_url
    assert all(reason for keep, reason in expected_url if not keep)
    assert [r["lambda_keep"] for r in rows] == [True, True, False, True]


def test_datatrove_filter_errors_are_counted_and_random_filters_refused(root):
    # URLFilter asserts that a document has a url: documents without one are errors, not a crash
    bare = root.parent / "bare.jsonl"
    bare.write_text(json.dumps({"id": "z", "text": "no url here"}) + "\n")
    ingest([str(bare)], root, IngestOptions(), append=True, quiet=True)
    summary = annotate(root, ["datatrove:URLFilter"], quiet=True)
    assert summary["errors"] == 1 and summary["scorers"]["url"]["errors"] == 1
    row = run_query(root, "SELECT url_keep, url_reason FROM annotations_url WHERE id = 'z'").to_pylist()[0]
    assert row["url_keep"] is None and row["url_reason"].startswith("error: AssertionError")
    with pytest.raises(ValueError, match="random numbers"):
        make_scorer("datatrove:SamplerFilter:rate=0.5", root)
    with pytest.raises(ValueError, match="is not a datatrove filter"):
        make_scorer("datatrove:NoSuchFilter", root)


def test_run_records_count_this_runs_documents(root):
    first = annotate(root, ["stats", "heuristics"], quiet=True)
    assert first["docs"] == 4  # not 4 x 2 scorers
    assert {s["docs"] for s in first["scorers"].values()} == {4}
    again = annotate(root, ["stats"], quiet=True)
    assert again["docs"] == 0 and again["scorers"]["stats"]["docs_per_s"] is None
    from assay.corpora.manifest import load_manifest

    run = load_manifest(root)["runs"][-1]  # the no-op rerun starts no executor and records no run
    rate = run["scorers"]["stats"]["docs_per_s"]
    assert run["errors"] == 0 and rate == pytest.approx(4 / run["scorers"]["stats"]["seconds"], rel=0.05)


def test_joined_annotation_columns_are_checked_by_id(plugin_dir, root):
    annotate(root, ["stats"], quiet=True)
    # an annotation file that no longer describes its docs shard row by row
    part = root / "annotations" / "stats" / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.take([1, 0]), part)
    code = "cluster:k=2,columns=words+chars"
    with pytest.raises(
        WorkUnitsFailed, match=r"part-00000.parquet does not describe docs/part-00000.parquet"
    ):
        annotate(root, [code], quiet=True)
    from assay.corpora.manifest import load_manifest

    failed = load_manifest(root)["runs"][-1]
    assert failed["status"] == "failed" and failed["units_failed"] >= 1


def test_cli_plugin_import_error_is_one_line(root):
    from click.testing import CliRunner

    from assay.pipelines.cli import main

    res = CliRunner().invoke(main, ["annotate", "--root", str(root), "--scorer", "no.such.module:Thing"])
    assert res.exit_code == 1
    assert (
        res.output.startswith("Error: --scorer no.such.module:Thing: cannot import")
        and "Traceback" not in res.output
    )
    assert REPO.exists()

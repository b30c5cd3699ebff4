"""BETR: a corpus-wide ranking against real benchmark targets, exact top-k, fastText extension."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.pipelines.annotate import annotate
from assay.pipelines.cli import main
from assay.pipelines.ingest import ingest
from assay.scorers.betr import doc_scores, rank_documents, value
from assay.scorers.embed import EmbeddingScorer, vectors_of
from assay.scorers.registry import make_scorer

BETR = FIXTURES / "betr"
EMBED = "embed:max_tokens=64"


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def arc_text(r: dict) -> str:
    return f"{r['query']} {r['choices'][r['gold']]}"


def write_targets(root, name: str, rows: list[tuple[str, str, str, str]]) -> None:
    """targets/NAME.parquet as the targets loader writes it: benchmark, split, example_id, text."""
    columns = list(zip(*rows))
    table = pa.table(
        {c: pa.array(v, pa.string()) for c, v in zip(("benchmark", "split", "example_id", "text"), columns)}
    )
    (root / "targets").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "targets" / f"{name}.parquet")


def fixture_targets() -> list[tuple[str, str, str, str]]:
    rows = [
        ("gsm8k", "train", f"gsm8k-train-{i}", f"{r['question']} {r['answer']}")
        for i, r in enumerate(_jsonl(BETR / "gsm8k_train.jsonl"))
    ]
    # llm-foundry's ARC-Easy is the test split: BETR leaves it out unless splits=all
    rows += [
        ("arc_easy", "test", f"arc-{i}", arc_text(r))
        for i, r in enumerate(_jsonl(BETR / "arc_easy.jsonl")[:30])
    ]
    return rows


def fixture_docs(folder) -> list[str]:
    """GSM8K test problems and other ARC-Easy questions as documents, beside the sample's web pages."""
    path = folder / "bench_docs.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(_jsonl(BETR / "gsm8k_test.jsonl")):
            f.write(json.dumps({"id": f"gsm8k-test-{i}", "text": f"{r['question']} {r['answer']}"}) + "\n")
        for i, r in enumerate(_jsonl(BETR / "arc_easy.jsonl")[30:], start=30):
            f.write(json.dumps({"id": f"arc-{i}", "text": arc_text(r)}) + "\n")
        f.write(
            json.dumps({"id": "gsm8k-test-0-copy", "text": _jsonl(BETR / "gsm8k_test.jsonl")[0]["question"]})
        )
        f.write(
            "\n"
            + json.dumps(
                {"id": "gsm8k-test-0-copy2", "text": _jsonl(BETR / "gsm8k_test.jsonl")[0]["question"]}
            )
        )
    return [str(path), str(REPO / "sample/web")]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    work = tmp_path_factory.mktemp("betr")
    root = work / "root"
    ingest(fixture_docs(work), root, IngestOptions(shard_rows=30), quiet=True)
    annotate(root, [EMBED], quiet=True)
    write_targets(root, "fix", fixture_targets())
    return root


def embedded(root) -> tuple[list[str], np.ndarray]:
    """Ids and float16 vectors of the embed set, in docs-shard order."""
    ids, vectors = [], []
    for part in sorted((root / "annotations" / "embed").glob("part-*.parquet")):
        t = pq.read_table(part)
        v, valid = vectors_of(t.column("embedding"))
        ids += list(np.array(t.column("id").to_pylist(), dtype=object)[valid])
        vectors.append(v)
    return ids, np.concatenate(vectors)


def brute_force_ranks(targets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """rank[i, j] of document j for target i over the full similarity matrix (ties: lower j first)."""
    sims = targets.astype(np.float64) @ docs.astype(np.float64).T
    ranks = np.empty(sims.shape, dtype=np.int64)
    for i, row in enumerate(sims):
        ranks[i, np.lexsort((np.arange(len(row)), -row))] = np.arange(1, len(row) + 1)
    return ranks


def test_chunked_topk_equals_a_brute_force_full_ranking_on_real_embeddings(root):
    _, docs = embedded(root)
    docs = np.concatenate([docs, docs[:9]])  # exact duplicates: ties, broken by corpus order
    targets = EmbeddingScorer(max_tokens=64).embed_texts([r[3] for r in fixture_targets()])
    ranks = brute_force_ranks(targets, docs)
    n = len(docs)
    for k in (1, 10, n):
        want = np.argsort(ranks, axis=1)[:, :k]  # the documents at ranks 1..k
        for chunk in (1, 16, 50, n):
            for block_bytes in (1, 1 << 28):  # one target per block, or all at once
                sims, index = rank_documents(
                    targets, (docs[i : i + chunk] for i in range(0, n, chunk)), k, block_bytes=block_bytes
                )
                assert np.array_equal(index, want), (k, chunk)
                expect = np.take_along_axis(targets.astype(np.float64) @ docs.astype(np.float64).T, want, 1)
                assert np.array_equal(sims, expect)  # exact float64 cosines, whatever the chunking
    # the duplicates tie exactly and the earlier copy ranks first
    assert (ranks[:, :9] < ranks[:, n - 9 :]).all()

    sims, index = rank_documents(targets, [docs], n)
    for v in ("inv", "log"):
        full = value(ranks, v)
        s = doc_scores(sims, index, n, v=v, agg="max")
        assert np.array_equal(s["doc"], np.arange(n)) and np.array_equal(s["score"], full.max(axis=0))
        assert np.array_equal(s["rank"], ranks.min(axis=0))
        s = doc_scores(sims, index, n, v=v, agg="mean")
        assert np.allclose(s["score"], full.mean(axis=0), rtol=1e-12)


def test_annotate_ranks_the_whole_corpus_and_finds_the_benchmark_documents(root):
    annotate(root, ["betr:fix"], quiet=True)
    rows = run_query(
        root,
        "SELECT id, betr_fix, betr_fix_rank, betr_fix_benchmark FROM annotations ORDER BY betr_fix DESC, id",
    ).to_pylist()
    assert len(rows) == 93 and all(r["betr_fix"] is not None for r in rows)
    top = [r["id"] for r in rows[:22]]
    assert sum(i.startswith("gsm8k-test") for i in top) >= 20  # GSM8K train targets find GSM8K test problems
    assert {r["betr_fix_benchmark"] for r in rows} == {"gsm8k"}  # the ARC test split is not a target

    # the stored score is v(best rank) over the whole embedded corpus, exactly
    ids, docs = embedded(root)
    targets = EmbeddingScorer(max_tokens=64).embed_texts([r[3] for r in fixture_targets() if r[1] == "train"])
    best = brute_force_ranks(targets, docs).min(axis=0)
    by_id = {r["id"]: r for r in rows}
    scorer = make_scorer("betr:fix", root)
    k = scorer.meta()["k"]
    for doc_id, rank in zip(ids, best):
        r = by_id[doc_id]
        assert r["betr_fix_rank"] == (rank if rank <= k else None)
        assert r["betr_fix"] == (1.0 / rank if rank <= k else 1.0 / (k + 1))


def test_a_score_does_not_depend_on_its_batch_and_the_ranking_is_stored_once(root):
    scorer = make_scorer("betr:fix:k=5", root)
    stamp = scorer.ranking_path.stat().st_mtime_ns
    again = make_scorer("betr:fix:k=5", root)
    assert again.ranking_path == scorer.ranking_path and again.ranking_path.stat().st_mtime_ns == stamp
    assert again.version == scorer.version and scorer.version.startswith("1-rank-")
    part = sorted((root / "docs").glob("part-*.parquet"))[0]
    docs = pq.read_table(part, columns=["id"]).append_column(
        "embedding", pq.read_table(root / "annotations" / "embed" / part.name).column("embedding")
    )
    whole = pa.Table.from_batches([scorer.score(b) for b in docs.to_batches()])
    pieces = pa.Table.from_batches([scorer.score(b) for b in docs.to_batches(max_chunksize=3)])
    assert whole.equals(pieces)
    floor = whole.filter(pa.compute.is_null(whole.column("betr_fix_rank")))
    assert floor.num_rows > 0 and set(floor.column("betr_fix").to_pylist()) == {1 / 6}  # outside every top-5
    assert make_scorer("betr:fix:splits=all", root).version != make_scorer("betr:fix", root).version


def test_targets_in_every_split_find_both_benchmarks(root):
    annotate(root, ["betr:fix:splits=all,agg=mean,v=log"], quiet=True)
    rows = run_query(root, "SELECT id, betr_fix, betr_fix_benchmark AS b FROM annotations").to_pylist()
    arc = [r for r in rows if r["id"].startswith("arc-")]
    assert sum(r["b"] == "arc_easy" for r in arc) >= 0.8 * len(arc)
    web = [r["betr_fix"] for r in rows if r["id"].startswith("http")]
    assert np.median([r["betr_fix"] for r in arc]) > np.max(web)  # mean log-rank: benchmark-like first


def test_train_betr_extends_the_ranking_to_every_document(root):
    out = CliRunner().invoke(
        main,
        [
            "train",
            "betr",
            "fix",
            "--root",
            str(root),
            "--top",
            "0.2",
            "--epoch",
            "50",
            "--lr",
            "0.5",
            "--min-count",
            "1",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "held-out accuracy" in out.output and "top 20% of 93 ranked documents" in out.output
    scorer = make_scorer("betr:fix", root)
    assert scorer.version.startswith("1-fasttext-") and scorer.classifier_path.exists()
    record = json.loads(scorer.classifier_path.with_name(scorer.classifier_path.name + ".json").read_text())
    assert record["data"]["ranking_key"] == scorer.key and record["hyperparameters"]["balance"] is True
    assert make_scorer("betr:fix:mode=rank", root).version.startswith("1-rank-")

    annotate(root, ["betr:fix"], quiet=True)  # the rank version is stale: recomputed with the classifier
    rows = run_query(root, "SELECT id, betr_fix, betr_fix_rank FROM annotations").to_pylist()
    assert all(r["betr_fix"] is not None and 0 <= r["betr_fix"] <= 1 for r in rows)
    gsm = [r["betr_fix"] for r in rows if r["id"].startswith("gsm8k-test")]
    other = [r["betr_fix"] for r in rows if not r["id"].startswith("gsm8k-test")]
    assert np.mean(gsm) > np.mean(other) + 0.2
    assert any(r["betr_fix_rank"] is not None for r in rows)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("betr", "needs a targets set"),
        ("betr:nothing", "no targets set"),
        ("betr:fix:agg=median", "agg must be one of"),
        ("betr:fix:k=0", "k must be"),
        ("betr:fix:splits=validation", "no split"),
        ("betr:fix:per_benchmark=few", "per_benchmark must be"),
        ("betr:fix:colour=red", "unknown option"),
        ("betr:fix:splits=all,mode=classifier,k=7", "no classifier"),
        ("betr:fix:embeddings=vectors", "run `assay annotate --scorer embed` first"),
    ],
)
def test_bad_specs_are_one_clear_error(root, spec, message):
    with pytest.raises(ValueError, match=message):
        make_scorer(spec, root)


def test_only_test_examples_is_refused_unless_asked(root):
    write_targets(root, "only_test", [r for r in fixture_targets() if r[1] == "test"])
    with pytest.raises(ValueError, match="pass splits=all"):
        make_scorer("betr:only_test", root)
    assert make_scorer("betr:only_test:splits=all", root).meta()["splits"] == ["test"]


def test_real_benchmarks_against_a_real_corpus(tmp_path, shared_data):
    """GSM8K train and MMLU dev/val targets pick the held-out GSM8K and MMLU test questions out
    of State of the Union paragraphs and web pages."""
    b = shared_data / "benchmarks"
    gsm_train = _jsonl(b / "gsm8k/train.jsonl")[:300]
    gsm_test = _jsonl(b / "gsm8k/test.jsonl")[:60]

    def mmlu(split: str) -> list[list[str]]:
        rows = []
        for f in sorted((b / "mmlu" / split).glob("*.csv"))[:12]:
            rows += list(csv.reader(open(f, encoding="utf-8")))
        return rows

    def mmlu_text(r: list[str]) -> str:
        return f"{r[0]} {r[1 + 'ABCD'.index(r[5])]}"

    docs = tmp_path / "docs.jsonl"
    with open(docs, "w") as f:
        for i, r in enumerate(gsm_test):
            f.write(json.dumps({"id": f"gsm8k-{i}", "text": f"{r['question']} {r['answer']}"}) + "\n")
        for i, r in enumerate(mmlu("test")[:60]):
            f.write(json.dumps({"id": f"mmlu-{i}", "text": mmlu_text(r)}) + "\n")
    root = tmp_path / "root"
    ingest(
        [str(docs), str(REPO / "sample/speeches/state_union.jsonl.gz"), str(REPO / "sample/web")],
        root,
        quiet=True,
    )
    annotate(root, [EMBED], quiet=True)
    rows = [("gsm8k", "train", f"g{i}", f"{r['question']} {r['answer']}") for i, r in enumerate(gsm_train)]
    rows += [("mmlu", "dev", f"m{i}", mmlu_text(r)) for i, r in enumerate(mmlu("dev") + mmlu("val"))]
    write_targets(root, "core", rows)
    annotate(root, ["betr:core"], quiet=True)
    table = run_query(
        root, "SELECT id, betr_core AS s, betr_core_benchmark AS b FROM annotations ORDER BY s DESC, id"
    )
    ranked = table.to_pylist()
    top = ranked[:120]  # as many as there are benchmark documents; at random 38 of them would be
    assert sum(r["id"].startswith(("gsm8k-", "mmlu-")) for r in top) >= 85  # measured: 92
    gsm = [r["b"] for r in ranked if r["id"].startswith("gsm8k-")]
    mmlu_docs = [r["b"] for r in ranked if r["id"].startswith("mmlu-")]
    # the benchmark whose example ranks a document best (measured: 52 of 60 and 60 of 60; some
    # GSM8K problems rank first for an MMLU elementary-mathematics question)
    assert gsm.count("gsm8k") >= 0.8 * len(gsm) and mmlu_docs.count("mmlu") >= 0.9 * len(mmlu_docs)


@pytest.mark.slow  # 90 s: the GPU machine runs the script itself; `pytest -m slow` runs it here
def test_the_gpu_script_runs_here_without_cuda_and_without_the_cpu_only_packages(tmp_path):
    """bench/gpu_check.py imports Assay from the tree it sits in (a copy here, as on the GPU
    machine), with duckdb, polars, datatrove and fastText hidden, and reports CUDA as absent."""
    import shutil

    tree = tmp_path / "tree"
    for folder in ("assay", "corpora", "scorers"):
        shutil.copytree(REPO / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "bench").mkdir()
    shutil.copy(REPO / "bench/gpu_check.py", tree / "bench")
    texts = [f"{r['question']} {r['answer']}" for r in _jsonl(BETR / "gsm8k_test.jsonl")]
    texts += [arc_text(r) for r in _jsonl(BETR / "arc_easy.jsonl")]
    pq.write_table(pa.table({"text": texts}), tmp_path / "texts.parquet")
    out = subprocess.run(
        [
            sys.executable,
            "-P",
            str(tree / "bench/gpu_check.py"),
            str(tmp_path / "texts.parquet"),
            "--forbid-cpu-only",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["cuda"]["available"] is False and "reason" in summary["cuda"]
    assert all(path.startswith(str(tree)) for path in summary["imports"].values())
    assert summary["blocked"] == ["duckdb", "polars", "datatrove", "fasttext", "fasttext_pybind"]
    assert summary["cpu"]["purity_exact"] is True and summary["cpu"]["topk_equals_brute_force"] is True
    assert summary["ok"] is True

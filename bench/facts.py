"""Fact counting: Assay vs the script a user would write (Hyperscan or pyahocorasick), in one run.

    python bench/facts.py [--mb 110] [--naive-mb 1] [--docs 1000000] [--spacy-docs 50]

Input: real web text (the 1,027 trafilatura pages, replicated with unique ids into four JSONL.gz
files, as in bench/ingest.py) and the SMI paper's 12,671 ParaRel facts (read from ../shared,
never copied). Every count is the paper's test: ``(" " + subj) in text`` and ``(" " + obj) in
text``, case-sensitive, one count per document; the output is n_docs, n_subj, n_obj, n_both per
fact, written to Parquet.

1. Headline, each command in a fresh process tree (one worker; wall and CPU seconds and peak RSS
   from wait4, start-up included), the counts of every side asserted equal:
   * whole command from the JSONL.gz files: `assay ingest`, `assay facts add`, `assay annotate
     --scorer facts:pararel`, `assay sql "... FROM fact_counts ..." --format parquet` vs a script
     that reads the same files (gzip + orjson), matches every distinct pattern in one pass per
     document (Hyperscan literal + SINGLEMATCH, or pyahocorasick ``iter``) and counts;
   * inner step from the ingested Parquet docs: `assay annotate` + `assay sql` vs the same
     script reading those Parquet files with pyarrow.
2. Secondary: the SMI paper's naive loop (per document, per fact, two substring tests) on a slice
   of the same documents (it is too slow for all of them), its 2x2 table for every fact asserted
   identical to `fact_counts_where` over that slice; and the matching step alone inside Assay,
   Hyperscan vs pyahocorasick.
3. fact_counts: the annotated root is replicated shard by shard (ids made unique) to 1M+
   documents; the catalog's `fact_counts` view is timed against a hand-written DuckDB query on
   the raw Parquet files, and their results are asserted equal.
4. spaCy triples: docs/s on English pages, n_process 1 and 2.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from common import REPO, SHARED, real_records, replicate_jsonl_gz, run_child, run_command

PARAREL = SHARED / "eval_results" / "smi" / "search" / "pararel_15classes.json.gz"

# Counting in a child process: median of 3 runs, peak RSS, and a digest of the rows to compare.
QUERY = """
import hashlib, statistics, time, duckdb
con = duckdb.connect({db!r}, read_only={read_only})
con.execute("SET enable_progress_bar = false")
times = []
for _ in range(3):
    t = time.perf_counter()
    rows = con.execute({sql!r}).fetchall()
    times.append(time.perf_counter() - t)
print(statistics.median(times), rows[0][1], hashlib.sha256(repr(rows).encode()).hexdigest())
"""
VIEW_QUERY = "SELECT fact_id, n_docs, n_subj, n_obj, n_both FROM fact_counts WHERE fact_set = 'pararel'"
# The same algorithm as the view, written by hand against the Parquet files.
HAND_SAME = """
WITH f AS (SELECT * FROM read_parquet({facts})),
u AS (SELECT patterns, unnest(patterns) AS p FROM read_parquet({mentions})),
pp AS (SELECT p, count(*) AS n FROM u GROUP BY p),
nb AS (SELECT f.fact_id, count(*) AS n FROM u JOIN f ON f.subj_pattern = u.p
       WHERE list_contains(u.patterns, f.obj_pattern) GROUP BY f.fact_id)
SELECT f.fact_id, (SELECT count(*) FROM read_parquet({docs})) AS n_docs,
  coalesce(s.n, 0) AS n_subj, coalesce(o.n, 0) AS n_obj, coalesce(nb.n, 0) AS n_both
FROM f LEFT JOIN pp s ON s.p = f.subj_pattern LEFT JOIN pp o ON o.p = f.obj_pattern
LEFT JOIN nb USING (fact_id) ORDER BY f.fact_id
"""
# The obvious hand-written form: documents with the subject joined to documents with the object.
HAND_JOIN = """
WITH f AS (SELECT * FROM read_parquet({facts})),
m AS (SELECT doc_id, unnest(patterns) AS p FROM read_parquet({mentions})),
s AS (SELECT f.fact_id, m.doc_id FROM f JOIN m ON m.p = f.subj_pattern),
o AS (SELECT f.fact_id, m.doc_id FROM f JOIN m ON m.p = f.obj_pattern),
ns AS (SELECT fact_id, count(*) AS n FROM s GROUP BY fact_id),
no AS (SELECT fact_id, count(*) AS n FROM o GROUP BY fact_id),
nb AS (SELECT fact_id, count(*) AS n FROM s JOIN o USING (fact_id, doc_id) GROUP BY fact_id)
SELECT f.fact_id, (SELECT count(*) FROM read_parquet({docs})) AS n_docs,
  coalesce(ns.n, 0) AS n_subj, coalesce(no.n, 0) AS n_obj, coalesce(nb.n, 0) AS n_both
FROM f LEFT JOIN ns USING (fact_id) LEFT JOIN no USING (fact_id) LEFT JOIN nb USING (fact_id)
ORDER BY f.fact_id
"""


COUNTS_SQL = "SELECT fact_id, n_docs, n_subj, n_obj, n_both FROM fact_counts WHERE fact_set = 'pararel' ORDER BY fact_id"


def hyperscan_finder(patterns: list[str]):
    import hyperscan

    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(
        expressions=[p.encode() for p in patterns],
        ids=list(range(len(patterns))),
        flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(patterns),
        literal=True,
    )
    hits: set[int] = set()

    def on_match(pid, start, end, flags, ctx):
        hits.add(pid)

    def find(text: str) -> set[int]:
        hits.clear()
        db.scan(text.encode(), match_event_handler=on_match)
        return hits

    return find


def aho_finder(patterns: list[str]):
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for i, p in enumerate(patterns):
        automaton.add_word(p, i)
    automaton.make_automaton()
    return lambda text: {pid for _, pid in automaton.iter(text)}


def source_texts(source: Path):
    """The texts of the JSONL.gz files in `source`, or of its Parquet files (as annotate reads them)."""
    import orjson

    for path in sorted(source.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
            yield from batch.column(0).to_pylist()
    for path in sorted(source.glob("*.jsonl.gz")):
        with gzip.open(path) as f:
            for line in f:
                yield orjson.loads(line)["text"]


def baseline_counts(engine: str, source: Path, out: Path) -> None:
    """The script a user would write: all distinct patterns in one pass per document, then counts."""
    facts = json.load(gzip.open(PARAREL, "rt", encoding="utf-8"))
    patterns = sorted({" " + f["subj"] for f in facts} | {" " + f["obj"] for f in facts})
    pid = {p: i for i, p in enumerate(patterns)}
    subj = [pid[" " + f["subj"]] for f in facts]
    obj = [pid[" " + f["obj"]] for f in facts]
    by_subj = defaultdict(list)
    for k, (s, o) in enumerate(zip(subj, obj)):
        by_subj[s].append((k, o))
    find = hyperscan_finder(patterns) if engine == "hyperscan" else aho_finder(patterns)
    doc_freq, both, n_docs = [0] * len(patterns), [0] * len(facts), 0
    for text in source_texts(source):
        n_docs += 1
        found = find(text)
        for p in found:
            doc_freq[p] += 1
            for k, o in by_subj.get(p, ()):
                both[k] += o in found
    table = pa.table(
        {
            "fact_id": [f["idx"] for f in facts],
            "n_docs": [n_docs] * len(facts),
            "n_subj": [doc_freq[s] for s in subj],
            "n_obj": [doc_freq[o] for o in obj],
            "n_both": both,
        }
    )
    pq.write_table(table.sort_by("fact_id"), out)


def counts_of(path: Path) -> list[tuple]:
    t = pq.read_table(path)
    return list(zip(*(t.column(c).to_pylist() for c in ("fact_id", "n_docs", "n_subj", "n_obj", "n_both"))))


def headline(work: Path, inputs: list[Path]) -> tuple[Path, dict]:
    """Assay's commands and the baseline scripts, each timed in a fresh process tree."""
    assay = str(Path(sys.executable).with_name("assay"))
    root = work / "root"
    r = ["--root", str(root)]
    runs = {
        "ingest": run_command([assay, "ingest", *map(str, inputs), *r]),
        "facts add": run_command([assay, "facts", "add", "pararel", str(PARAREL), *r]),
        "annotate": run_command([assay, "annotate", "--scorer", "facts:pararel", *r]),
        "sql": run_command(
            [assay, "sql", COUNTS_SQL, "--format", "parquet", "--out", str(work / "assay.parquet"), *r]
        ),
    }
    expected = counts_of(work / "assay.parquet")
    for engine in ("hyperscan", "aho"):
        for kind, source in (("jsonl", inputs[0].parent), ("parquet", root / "docs")):
            out = work / f"{engine}-{kind}.parquet"
            runs[f"{engine} {kind}"] = run_command(
                [sys.executable, __file__, "--child", engine, str(source), str(out)]
            )
            assert counts_of(out) == expected, f"{engine} script from {kind}: counts differ from fact_counts"
    return root, runs


def add(*runs: dict) -> dict:
    return {
        "wall_s": sum(r["wall_s"] for r in runs),
        "cpu_s": sum(r["cpu_s"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    }


def docs_table(root: Path) -> pa.Table:
    return pq.read_table(root / "docs", columns=["id", "text"])


def engines(root: Path, docs: pa.Table, mb: float) -> dict[str, float]:
    """MB/s of the matching step alone (one core), build seconds, and a check that they agree."""
    from assay.corpora.facts import load_fact_set, pattern_strings
    from assay.scorers.facts import FactMentionExtractor

    patterns = pattern_strings(load_fact_set(root, "pararel"))
    results, speeds = {}, {}
    for engine in ("hyperscan", "aho"):
        x = FactMentionExtractor("pararel", patterns, engine=engine)
        t = time.perf_counter()
        x.matcher()  # build the automaton / compile the database outside the matching time
        speeds[f"{engine}_build"] = time.perf_counter() - t
        batches = docs.to_batches(max_chunksize=2048)
        t = time.perf_counter()
        results[engine] = pa.concat_tables([x.extract(b) for b in batches])
        speeds[engine] = mb / (time.perf_counter() - t)
    assert results["hyperscan"].equals(results["aho"]), "engines disagree"
    return speeds


def paper_loop(texts: list[str], facts: list[dict]) -> dict[int, tuple]:
    """The SMI paper's search as written: per document, per fact, two substring tests."""
    cells = {f["idx"]: [0, 0, 0, 0] for f in facts}
    for text in texts:
        for f in facts:
            s = (" " + f["subj"]) in text
            o = (" " + f["obj"]) in text
            c = cells[f["idx"]]
            c[0] += 1
            c[1] += s
            c[2] += o
            c[3] += s and o
    return {k: tuple(v) for k, v in cells.items()}


def naive_slice(root: Path, docs: pa.Table, naive_mb: float) -> tuple[float, float, int]:
    """Time the naive loop on the first documents up to `naive_mb`; assert equal counts."""
    from assay.corpora.catalog import run_query, sql_literal

    texts, ids, size = [], [], 0
    for doc_id, text in zip(docs.column("id").to_pylist(), docs.column("text").to_pylist()):
        if size >= naive_mb * 1e6:
            break
        texts.append(text)
        ids.append(doc_id)
        size += len(text.encode())
    facts = json.load(gzip.open(PARAREL, "rt", encoding="utf-8"))
    t = time.perf_counter()
    expected = paper_loop(texts, facts)
    seconds = time.perf_counter() - t
    pred = "id IN (" + ", ".join(sql_literal(i) for i in ids) + ")"
    rows = run_query(
        root, f"SELECT * FROM fact_counts_where({sql_literal(pred)}) WHERE fact_set = 'pararel'"
    ).to_pylist()
    got = {r["fact_id"]: (r["n_docs"], r["n_subj"], r["n_obj"], r["n_both"]) for r in rows}
    assert got == expected, "fact_counts differ from the naive loop"
    return size / 1e6 / seconds, seconds, len(texts)


def replicate_root(src: Path, dst: Path, n_docs: int) -> int:
    """Copy the docs and mention shards with ids suffixed #k until at least n_docs documents."""
    from assay.corpora.catalog import refresh_catalog
    from assay.corpora.manifest import load_manifest, save_manifest

    docs = pq.read_table(src / "docs")
    mentions = pq.read_table(src / "triples" / "facts_pararel")
    copies = -(-n_docs // docs.num_rows)
    (dst / "docs").mkdir(parents=True)
    (dst / "triples" / "facts_pararel").mkdir(parents=True)
    (dst / "facts").mkdir()
    shutil.copy(src / "facts" / "pararel.parquet", dst / "facts")
    manifest = load_manifest(src)
    manifest["shards"] = []
    for k in range(copies):
        part = f"part-{k:05d}.parquet"
        ids = pc.binary_join_element_wise(docs.column("id"), pa.scalar(f"#{k}"), "")
        pq.write_table(docs.set_column(0, "id", ids), dst / "docs" / part, compression="zstd")
        mids = pc.binary_join_element_wise(mentions.column("doc_id"), pa.scalar(f"#{k}"), "")
        pq.write_table(mentions.set_column(0, "doc_id", mids), dst / "triples" / "facts_pararel" / part)
        manifest["shards"].append({"name": f"docs/{part}", "rows": docs.num_rows})
    save_manifest(dst, manifest)
    refresh_catalog(dst)
    return copies * docs.num_rows


def fact_counts_timing(root: Path) -> list[tuple[str, float, float, int]]:
    """(name, median seconds, peak RSS MiB, n_docs) for the view and two hand-written queries."""
    from assay.corpora.catalog import open_catalog, sql_literal

    open_catalog(root).close()  # the views are current before timing starts
    paths = {
        "facts": sql_literal(str(root / "facts" / "pararel.parquet")),
        "mentions": sql_literal(str(root / "triples" / "facts_pararel" / "*.parquet")),
        "docs": sql_literal(str(root / "docs" / "*.parquet")),
    }
    runs = [
        ("catalog view fact_counts", str(root / "catalog.duckdb"), True, VIEW_QUERY),
        ("hand-written, same plan", ":memory:", False, HAND_SAME.format(**paths)),
        ("hand-written, self-join", ":memory:", False, HAND_JOIN.format(**paths)),
    ]
    out, digests = [], set()
    for name, db, read_only, sql in runs:
        _, peak, stdout = run_child(QUERY.format(db=db, read_only=read_only, sql=sql))
        seconds, n_docs, digest = stdout.strip().splitlines()[-1].split()
        digests.add(digest)
        out.append((name, float(seconds), peak, int(n_docs)))
    assert len(digests) == 1, "fact_counts differs from a hand-written query"
    return out


def spacy_rate(n: int) -> list[tuple[int, float, float]]:
    from assay.scorers.triples_spacy import SpacyTripleExtractor

    pages = [r for r in real_records() if r.get("lang") == "en"][:n]
    batch = pa.RecordBatch.from_pydict({"id": [r["id"] for r in pages], "text": [r["text"] for r in pages]})
    out = []
    for n_process in (1, 2):
        x = SpacyTripleExtractor(n_process=n_process, device="cpu")
        x.nlp()
        t = time.perf_counter()
        res = x.extract(batch)
        out.append((n_process, len(pages) / (time.perf_counter() - t), res["triples"].num_rows / len(pages)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=110, help="megabytes of JSON lines to ingest (text is ~95%%)")
    ap.add_argument("--naive-mb", type=float, default=1.0, help="megabytes of text for the naive loop")
    ap.add_argument(
        "--docs", type=int, default=1_000_000, help="documents in the replicated catalog (0: skip)"
    )
    ap.add_argument("--spacy-docs", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        baseline_counts(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    if not PARAREL.exists():
        raise SystemExit(f"needs {PARAREL} (the shared data folder beside the repository)")
    sys.path.insert(0, str(REPO))
    from assay.corpora.catalog import run_query

    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="assay-bench-facts-"))
    try:
        inputs, _, _ = replicate_jsonl_gz(work / "in", args.mb, files=4)
        root, runs = headline(work, inputs)
        n, text_bytes = (
            run_query(root, "SELECT count(*), sum(strlen(text)) FROM docs").to_pylist()[0].values()
        )
        mb = float(text_bytes) / 1e6
        distinct = len(real_records())
        print(
            f"input: 4 JSONL.gz files, {n:,} documents = {distinct:,} distinct real web pages x "
            f"{n / distinct:.1f} replicated copies (ids made unique), {mb:.1f} MB of UTF-8 text; 12,671 facts"
        )
        print(f"load average at start: {load[0]:.2f} on {os.cpu_count()} cores shared with other work")
        print("\nper-fact counts (n_docs, n_subj, n_obj, n_both), each command in a fresh process tree;")
        print("every side's counts asserted identical to Assay's fact_counts")
        print(f"  {'':44s}{'wall s':>8s}{'CPU s':>8s}{'MB/s':>8s}{'x best':>8s}{'peak RSS MiB':>14s}")
        groups = [
            (
                "whole command, from the JSONL.gz files",
                [
                    ("script: gzip+orjson, Hyperscan, counts", runs["hyperscan jsonl"]),
                    ("script: gzip+orjson, pyahocorasick, counts", runs["aho jsonl"]),
                    (
                        "assay ingest + facts add + annotate + sql",
                        add(runs["ingest"], runs["facts add"], runs["annotate"], runs["sql"]),
                    ),
                ],
            ),
            (
                "inner step, from the ingested Parquet docs",
                [
                    ("script: pyarrow, Hyperscan, counts", runs["hyperscan parquet"]),
                    ("script: pyarrow, pyahocorasick, counts", runs["aho parquet"]),
                    ("assay annotate + sql", add(runs["annotate"], runs["sql"])),
                ],
            ),
        ]
        for title, rows in groups:
            best = min(r["wall_s"] for _, r in rows[:2])
            print(f"  {title}")
            for name, r in rows:
                print(
                    f"    {name:42s}{r['wall_s']:8.2f}{r['cpu_s']:8.2f}{mb / r['wall_s']:8.1f}"
                    f"{best / r['wall_s']:7.2f}x{r['peak_rss_mib']:14.0f}"
                )
        print("  (x best: the faster script's wall seconds / this row's; peak RSS: largest process)")
        print(
            "  assay steps, wall s: "
            + ", ".join(f"{k} {runs[k]['wall_s']:.2f}" for k in ("ingest", "facts add", "annotate", "sql"))
        )

        docs = docs_table(root)
        naive, naive_s, naive_docs = naive_slice(root, docs, args.naive_mb)
        speeds = engines(root, docs, mb)
        print("\nsecondary, one core, MB of text per second")
        print(
            f"  naive paper loop     {naive:9.3f}  ({naive_docs} docs, {naive_s:.1f} s: a slice; counts identical);"
            f" assay annotate + sql is {mb / add(runs['annotate'], runs['sql'])['wall_s'] / naive:,.0f}x this"
        )
        print(
            f"  assay's matching step alone: Hyperscan {speeds['hyperscan']:.1f} (compile {speeds['hyperscan_build']:.2f} s),"
        )
        print(f"  pyahocorasick {speeds['aho']:.1f} (build {speeds['aho_build']:.2f} s)")

        if args.docs:
            total = replicate_root(root, work / "big", args.docs)
            print(f"\nfact_counts over {total:,} documents, median of 3, each in a fresh process")
            for name, seconds, peak, n_docs in fact_counts_timing(work / "big"):
                assert n_docs == total
                print(f"  {name:28s} {seconds:7.2f} s   peak RSS {peak:6.0f} MiB")
            print("  (all three give identical rows)")
        if args.spacy_docs:
            print("\nspaCy triples on English web pages (CPU)")
            for n_process, rate, per_doc in spacy_rate(args.spacy_docs):
                print(f"  n_process={n_process}: {rate:6.1f} docs/s  ({per_doc:.1f} triples per doc)")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

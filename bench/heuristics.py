"""Assay ``heuristics`` vs datatrove's four filters on the same real text, in one run.

    .venv/bin/python bench/heuristics.py [--mb 100] [--batch-docs 1000] [--json OUT.json]

Documents: the 1,027 trafilatura pages and the dolma Common Crawl heads in ../shared/data/corpora
(1,047 real documents, 5.9 MB of UTF-8 text), written again and again (ids made unique) into one
JSONL file until it holds ``--mb`` MB of text. Each side then reads that file in a fresh process
on one core, and reports docs/s per core (documents / CPU seconds of the process) and its peak
RSS (VmHWM):

* datatrove: ``LocalPipelineExecutor`` (one task, one worker) running ``JsonlReader`` and a step
  that hands every document to ``GopherQualityFilter``, ``GopherRepetitionFilter``,
  ``C4QualityFilter`` and ``FineWebQualityFilter`` (default settings), each on its own copy of the
  document: every filter sees every document and its original text, so the run yields the same
  four decisions per document as Assay. Chaining the filters would be cheaper but would decide
  less (a dropped document never reaches the next filter, and C4 rewrites the text it passes on).
  The filters run back to back on a document, so datatrove's word-split cache serves the three
  that split words, as it does in a chained pipeline.
* Assay: the same file read in batches of ``--batch-docs`` documents into Arrow record batches,
  each scored by ``HeuristicsScorer``. Batches never hold two copies of one document (a batch is
  smaller than the set of distinct documents), so no work is shared between copies.

Then the four decisions are compared document by document; every disagreement is listed with
the reason datatrove gave.

The whole command, as a user runs it, on the same JSONL file, each command in a fresh process
tree (one worker, one thread; wall and CPU seconds and peak RSS from wait4, start-up, imports and
spaCy loading included):

* Assay: ``assay ingest FILE --root R``, then ``assay annotate --scorer heuristics --root R
  --batch-size BATCH_DOCS`` (the batch size keeps copies of a document apart, as above). Reported
  alone and together with ingest, since datatrove's pipeline reads the JSONL itself.
* datatrove: a script running ``LocalPipelineExecutor`` (one task, one worker) over
  ``JsonlReader`` -> the four filters chained -> ``ParquetWriter`` (the kept documents). Chained,
  a dropped document skips the later filters, so datatrove does less work here than Assay,
  which decides all four filters on every document and writes 49 columns for each.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as bench/heuristics.py, Python puts bench/ first on the path, where a sibling script
# (select.py) would shadow the standard library: drop it, and put the repository there instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.append(str(REPO / "bench"))  # last, for common.py only

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from common import real_documents, run_command  # noqa: E402

KEEPS = ("gopher_quality_keep", "gopher_repetition_keep", "c4_keep", "fineweb_keep")
ONE_THREAD = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

# What a datatrove user runs for these four filters: one script, the filters chained.
DATATROVE_PIPELINE = """
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import (
    C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter

LocalPipelineExecutor(
    pipeline=[
        JsonlReader({folder!r}, glob_pattern={name!r}),
        GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter(),
        ParquetWriter({out!r}),
    ],
    tasks=1, workers=1, logging_dir={logs!r},
).run()
"""


def write_corpus(path: Path, megabytes: float) -> tuple[int, int, int]:
    """Write the real documents again and again until ``megabytes`` MB of text (UTF-8)."""
    docs = real_documents()
    target, text_bytes, n, copy = megabytes * 1e6, 0, 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while text_bytes < target or copy == 0:
            for doc_id, text in docs:
                out.write(json.dumps({"id": f"{doc_id}#{copy}", "text": text}, ensure_ascii=False) + "\n")
                text_bytes += len(text.encode("utf-8"))
                n += 1
            copy += 1
    return len(docs), n, text_bytes


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_datatrove(corpus: Path, out: Path) -> dict:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader

    filters = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]
    decisions: list[list] = []

    class FourFilterDecisions(PipelineStep):
        """Every filter decides on its own copy of every document."""

        name = "four filter decisions"

        def run(self, data, rank: int = 0, world_size: int = 1):
            for doc in data:
                row = [doc.id]
                for f in filters:
                    result = f.filter(Document(text=doc.text, id=doc.id))
                    keep, reason = result if isinstance(result, tuple) else (result, None)
                    row += [bool(keep), reason]
                decisions.append(row)
            yield from ()

    for f in filters:  # load spaCy before the clock starts, as Assay's warm-up does
        f.filter(Document(text="A warm-up sentence. It has words.", id="warm-up"))
    executor = LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(corpus.parent), glob_pattern=corpus.name, doc_progress=False),
            FourFilterDecisions(),
        ],
        tasks=1,
        workers=1,
        logging_dir=str(out.parent / "datatrove-logs"),
        skip_completed=False,
    )
    cpu, wall = time.process_time(), time.perf_counter()
    executor.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out.write_text(json.dumps(decisions))
    return {"docs": len(decisions), "cpu_s": cpu, "wall_s": wall, "peak_rss_mib": peak_rss_mib()}


def run_assay(corpus: Path, out: Path, batch_docs: int) -> dict:
    import orjson
    import pyarrow as pa

    from assay.scorers.heuristics import HeuristicsScorer

    scorer = HeuristicsScorer()
    scorer.score(pa.RecordBatch.from_pydict({"id": ["w"], "text": ["A warm-up sentence. It has words."]}))
    ids: list[str] = []
    keeps: dict[str, list[bool]] = {k: [] for k in KEEPS}

    def score(batch_ids: list[str], texts: list[str]) -> None:
        batch = pa.RecordBatch.from_pydict({"id": batch_ids, "text": texts})
        result = scorer.score(batch)
        ids.extend(batch_ids)
        for k in KEEPS:
            keeps[k].extend(result.column(k).to_pylist())

    cpu, wall = time.process_time(), time.perf_counter()
    batch_ids, texts = [], []
    with open(corpus, "rb") as f:
        for line in f:
            record = orjson.loads(line)
            batch_ids.append(record["id"])
            texts.append(record["text"])
            if len(texts) == batch_docs:
                score(batch_ids, texts)
                batch_ids, texts = [], []
    if texts:
        score(batch_ids, texts)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out.write_text(json.dumps({"ids": ids, **keeps}))
    return {"docs": len(ids), "cpu_s": cpu, "wall_s": wall, "peak_rss_mib": peak_rss_mib()}


def child(side: str, corpus: Path, out: Path, batch_docs: int) -> dict:
    """Run one side in a fresh single-threaded process; it prints its figures as JSON."""
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, __file__, "--child", side, str(corpus), str(out), "--batch-docs", str(batch_docs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{side} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.rglob("*.parquet"))


def whole_commands(corpus: Path, tmp: Path, batch_docs: int) -> dict:
    """The user-facing commands on the same file, each in a fresh process tree."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    assay = str(Path(sys.executable).with_name("assay"))
    root = tmp / "root"
    ingest = run_command([assay, "ingest", str(corpus), "--root", str(root)], ONE_THREAD)
    annotate = run_command(
        [assay, "annotate", "--scorer", "heuristics", "--root", str(root), "--batch-size", str(batch_docs)],
        ONE_THREAD,
    )
    script = DATATROVE_PIPELINE.format(
        folder=str(corpus.parent), name=corpus.name, out=str(tmp / "dt-kept"), logs=str(tmp / "dt-logs-cmd")
    )
    datatrove = run_command([sys.executable, "-c", script], ONE_THREAD)
    scores = pq.read_table(root / "annotations" / "heuristics", columns=list(KEEPS))
    all_four = pc.and_(
        pc.and_(scores["gopher_quality_keep"], scores["gopher_repetition_keep"]), scores["c4_keep"]
    )
    all_four = pc.and_(all_four, scores["fineweb_keep"])
    return {
        "assay_ingest": ingest,
        "assay_annotate": annotate,
        "assay_ingest_annotate": {k: ingest[k] + annotate[k] for k in ("wall_s", "cpu_s")}
        | {"peak_rss_mib": max(ingest["peak_rss_mib"], annotate["peak_rss_mib"])},
        "datatrove_pipeline": datatrove,
        "docs_ingested": parquet_rows(root / "docs"),
        "docs_annotated": scores.num_rows,
        "assay_all_four_kept": pc.sum(all_four).as_py(),
        "datatrove_chain_kept": parquet_rows(tmp / "dt-kept"),
    }


def compare(dt_path: Path, assay_path: Path, distinct: int) -> dict:
    dt = json.loads(dt_path.read_text())
    assay = json.loads(assay_path.read_text())
    by_id = {row[0]: row for row in dt}
    report = {}
    for i, k in enumerate(KEEPS):
        disagree = []
        for doc_id, mine in zip(assay["ids"], assay[k]):
            row = by_id[doc_id]
            if row[1 + 2 * i] != mine:
                disagree.append((doc_id, row[2 + 2 * i]))
        report[k] = {
            "agreement": 1 - len(disagree) / len(assay["ids"]),
            "datatrove_kept": sum(row[1 + 2 * i] for row in dt),
            "assay_kept": sum(assay[k]),
            "disagreements": disagree[:50],
            "distinct_disagreements": len({d.split("#")[0] for d, _ in disagree}),
        }
    report["documents_compared"] = len(assay["ids"])
    report["distinct_documents"] = distinct
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=100.0, help="MB of text to process (default 100)")
    parser.add_argument("--batch-docs", type=int, default=1000, help="documents per Assay batch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, corpus, out = args.child[0], Path(args.child[1]), Path(args.child[2])
        figures = (
            run_datatrove(corpus, out) if side == "datatrove" else run_assay(corpus, out, args.batch_docs)
        )
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="assay-bench-heuristics-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        distinct, n_docs, text_bytes = write_corpus(corpus, args.mb)
        if args.batch_docs > distinct:
            sys.exit(
                f"--batch-docs must be at most {distinct}, or a batch would hold two copies of a document"
            )
        copies = n_docs // distinct
        print(
            f"input: one JSONL file, {n_docs} documents = {distinct} distinct real documents x {copies} "
            f"replicated copies (ids made unique), {text_bytes / 1e6:.1f} MB of text"
        )
        print(
            f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores shared with other work"
        )
        dt = child("datatrove", corpus, tmp / "datatrove.json", args.batch_docs)
        assay = child("assay", corpus, tmp / "assay.json", args.batch_docs)
        agreement = compare(tmp / "datatrove.json", tmp / "assay.json", distinct)
        commands = whole_commands(corpus, tmp, args.batch_docs)
    assert commands["docs_ingested"] == commands["docs_annotated"] == n_docs, commands

    for side in (dt, assay):
        side["docs_per_cpu_s"] = side["docs"] / side["cpu_s"]
        side["docs_per_wall_s"] = side["docs"] / side["wall_s"]
        side["text_mb_per_cpu_s"] = text_bytes / 1e6 / side["cpu_s"]
    ratio = assay["docs_per_cpu_s"] / dt["docs_per_cpu_s"]
    print("\ninner step: the four decisions per document, spaCy loaded, clock inside the process")
    print(f"{'':12}{'docs/s per core':>17}{'MB/s per core':>15}{'wall s':>9}{'peak RSS MiB':>14}")
    for name, side in (("datatrove", dt), ("assay", assay)):
        print(
            f"{name:12}{side['docs_per_cpu_s']:>17.1f}{side['text_mb_per_cpu_s']:>15.3f}"
            f"{side['wall_s']:>9.1f}{side['peak_rss_mib']:>14.0f}"
        )
    print(f"ratio (assay / datatrove, docs/s per core): {ratio:.1f}x")

    print("\nwhole command on the same file, fresh process tree each (start-up, imports, spaCy included)")
    print(f"{'':34}{'wall s':>8}{'CPU s':>8}{'docs/s':>9}{'x dt':>7}{'peak RSS MiB':>14}")
    base = commands["datatrove_pipeline"]
    for key, name in (
        ("datatrove_pipeline", "datatrove JsonlReader->4->Parquet"),
        ("assay_annotate", "assay annotate"),
        ("assay_ingest", "assay ingest"),
        ("assay_ingest_annotate", "assay ingest + annotate"),
    ):
        c = commands[key]
        c["docs_per_wall_s"] = n_docs / c["wall_s"]
        c["ratio_wall"] = base["wall_s"] / c["wall_s"]
        print(
            f"{name:34}{c['wall_s']:>8.1f}{c['cpu_s']:>8.1f}{c['docs_per_wall_s']:>9.0f}"
            f"{c['ratio_wall']:>6.1f}x{c['peak_rss_mib']:>14.0f}"
        )
    print(
        f"(x dt: datatrove's wall seconds / this row's; by CPU seconds: annotate "
        f"{base['cpu_s'] / commands['assay_annotate']['cpu_s']:.1f}x, ingest + annotate "
        f"{base['cpu_s'] / commands['assay_ingest_annotate']['cpu_s']:.1f}x. Peak RSS: largest process)"
    )
    print(
        f"kept by all four: datatrove's chain {commands['datatrove_chain_kept']}, assay "
        f"{commands['assay_all_four_kept']} (in the chain FineWeb sees the text C4 rewrote)"
    )

    print(f"\nagreement over {agreement['documents_compared']} documents ({distinct} distinct x {copies}):")
    for k in KEEPS:
        a = agreement[k]
        print(
            f"  {k:24} {a['agreement']:.4%}  kept: datatrove {a['datatrove_kept']}, assay {a['assay_kept']}"
            f"  disagreeing distinct documents: {a['distinct_disagreements']}"
        )
        for doc_id, reason in a["disagreements"][:10]:
            print(f"    {doc_id}: datatrove reason {reason}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "datatrove": dt,
                    "assay": assay,
                    "ratio": ratio,
                    "commands": commands,
                    "agreement": agreement,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

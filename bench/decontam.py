"""Assay's ``contamination`` scorer vs datatrove's n-gram decontamination, same input, one run.

    .venv/bin/python bench/decontam.py [--mb 20] [--every 50] [--json OUT.json]

Targets: ARC-Easy, ARC-Challenge, TriviaQA, Jeopardy and BIG-bench qa_wikidata (llm-foundry
copies), the MMLU test set and the GSM8K test set from ../shared/data/benchmarks, registered once
with ``assay targets add``. Documents: the 1,027 trafilatura pages and the dolma Common Crawl heads
of ../shared/data/corpora (real text), written again and again (ids made unique) into one JSONL
file until it holds ``--mb`` MB of text; every ``--every``-th document gets one target example of
at least 13 words pasted between two of its paragraphs (a different example each time).

Each side runs as a user runs it, in a fresh process tree on one core (one worker, one polars
thread); CPU and wall seconds and peak RSS come from wait4 (start-up and imports included):

* Assay: ``assay annotate --scorer contamination:bench`` (13-grams) over the root that
  ``assay ingest`` made of the file; it builds its n-gram index from the targets set, then scores
  every docs shard. ``assay ingest`` is timed too, since datatrove reads the JSONL itself.
* datatrove: one script that builds the index as ``NGramsDecontIndexer`` does from documents
  (its ``compute_hashes`` on every example's text, all 13-grams, written as ``.index.hashes``;
  the class itself cannot be built without lighteval, which this environment lacks), then runs
  ``LocalPipelineExecutor`` (one task) over ``JsonlReader`` -> ``NGramsDecontFilter`` with an
  exclusion writer, so the dropped documents can be compared.

MB/s per core = MB of text / CPU seconds. Then the decisions are compared: a document is flagged
by Assay when ``contam_frac > 0`` (it shares a 13-gram with some example), by datatrove when its
filter drops it. The two differ only in word splitting (Assay splits datatrove's normalised text
at whitespace; datatrove runs spaCy's English tokenizer over it).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as bench/decontam.py, Python puts bench/ first on the path, where a sibling script
# (select.py) would shadow the standard library: drop it, and put the repository there instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.append(str(REPO / "bench"))  # last, for common.py only

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from common import real_documents, run_command  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
BENCH = SHARED / "benchmarks"
KNOWLEDGE = BENCH / "llm_foundry_local_data" / "world_knowledge"
TARGETS = [
    KNOWLEDGE / "arc_easy.jsonl",
    KNOWLEDGE / "arc_challenge.jsonl",
    KNOWLEDGE / "triviaqa_sm_sub.jsonl",
    KNOWLEDGE / "jeopardy_all.jsonl",
    KNOWLEDGE / "bigbench_qa_wikidata.jsonl",
    BENCH / "mmlu" / "test",
    BENCH / "gsm8k" / "test.jsonl",
]
ONE_THREAD = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

DATATROVE = """
import time
import numpy as np, pyarrow.parquet as pq
from types import SimpleNamespace
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import create_hash_func
from datatrove.utils.word_tokenizers import load_word_tokenizer

config = NGramsDecontConfig(n_grams=13)
indexer = SimpleNamespace(tokenizer=load_word_tokenizer("en"), config=config,
                          hash_func=create_hash_func(config.hash_config))
hashes = set()
for text in pq.read_table({targets!r}, columns=["text"]).column("text").to_pylist():
    hashes.update(NGramsDecontIndexer.compute_hashes(indexer, text))
np.array(list(hashes), dtype=config.hash_config.np_descr).tofile({index!r} + "/bench.index.hashes")
print("INDEX_CPU_S", time.process_time())
LocalPipelineExecutor(
    pipeline=[
        JsonlReader({folder!r}, glob_pattern={name!r}, doc_progress=False),
        NGramsDecontFilter({index!r}, config=config,
                           exclusion_writer=JsonlWriter({removed!r}, compression=None)),
    ],
    tasks=1, workers=1, logging_dir={logs!r}, skip_completed=False,
).run()
"""


def write_corpus(path: Path, megabytes: float, examples: list[dict], every: int) -> tuple[int, int, dict]:
    """Replicated real documents, every `every`-th with an example pasted in; (docs, bytes, planted)."""
    docs = real_documents()
    planted: dict[str, str] = {}
    target, text_bytes, n, copy = megabytes * 1e6, 0, 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while text_bytes < target or copy == 0:
            for doc_id, text in docs:
                doc_id = f"{doc_id}#{copy}"
                if n % every == 0:
                    example = examples[(n // every) % len(examples)]
                    cut = text.find("\n", len(text) // 2)
                    cut = len(text) if cut < 0 else cut
                    text = text[:cut] + "\n" + example["text"] + "\n" + text[cut:]
                    planted[doc_id] = f"{example['benchmark']}/{example['example_id']}"
                out.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                text_bytes += len(text.encode("utf-8"))
                n += 1
            copy += 1
    return n, text_bytes, planted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=20.0, help="MB of text to scan (default 20)")
    parser.add_argument("--every", type=int, default=50, help="plant an example in every N-th document")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    assay = str(Path(sys.executable).with_name("assay"))
    with tempfile.TemporaryDirectory(prefix="assay-bench-decontam-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        corpus = tmp / "corpus.jsonl"
        # the targets are loaded here only to choose what to plant; `assay targets add` registers them
        import polars as pl

        from assay.corpora.targets import load_targets
        from assay.scorers.contamination import NGramIndex

        table = load_targets(TARGETS, split="test")
        started = time.process_time()
        grams = NGramIndex(pl.from_arrow(table.column("text")), 13).grams
        index_cpu = time.process_time() - started
        long_enough = [r for r, g in zip(table.to_pylist(), grams.tolist()) if g > 0]
        n_docs, text_bytes, planted = write_corpus(corpus, args.mb, long_enough[::7], args.every)
        mb = text_bytes / 1e6
        print(
            f"input: {n_docs} documents, {mb:.1f} MB of text, {len(planted)} with a planted example; "
            f"targets: {table.num_rows} examples ({len(long_enough)} of at least 13 words)"
        )
        print(
            f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores shared with other work"
        )

        ingest = run_command([assay, "ingest", str(corpus), "--root", str(root)], ONE_THREAD)
        add = run_command(
            [assay, "targets", "add", "bench", *map(str, TARGETS), "--split", "test", "--root", str(root)],
            ONE_THREAD,
        )
        annotate = run_command(
            [assay, "annotate", "--scorer", "contamination:bench", "--root", str(root)], ONE_THREAD
        )
        (tmp / "index").mkdir()
        script = DATATROVE.format(
            targets=str(root / "targets" / "bench.parquet"),
            index=str(tmp / "index"),
            folder=str(corpus.parent),
            name=corpus.name,
            removed=str(tmp / "removed"),
            logs=str(tmp / "dt-logs"),
        )
        datatrove = run_command([sys.executable, "-c", script], ONE_THREAD)

        scores = pq.read_table(
            root / "annotations" / "contamination_bench",
            columns=["id", "contam_frac", "contam_benchmark", "contam_example_id"],
        ).to_pylist()
        dropped = set()
        for f in (tmp / "removed").rglob("*.jsonl"):
            dropped |= {json.loads(line)["id"] for line in f.read_text().splitlines() if line}
    flagged = {r["id"] for r in scores if r["contam_frac"] > 0}
    by_id = {r["id"]: r for r in scores}
    right = sum(
        by_id[d]["contam_frac"] == 1.0
        and f"{by_id[d]['contam_benchmark']}/{by_id[d]['contam_example_id']}" == ex
        for d, ex in planted.items()
    )
    figures = {
        "docs": n_docs,
        "text_mb": mb,
        "planted": len(planted),
        "assay_ingest": ingest,
        "assay_targets_add": add,
        "assay_annotate": annotate,
        "datatrove": datatrove,
        "assay_flagged": len(flagged),
        "datatrove_dropped": len(dropped),
        "both": len(flagged & dropped),
        "only_assay": sorted(flagged - dropped)[:20],
        "only_datatrove": sorted(dropped - flagged)[:20],
        "planted_found_with_their_example": right,
    }
    dt_index = float(datatrove["stdout"].split("INDEX_CPU_S")[1].split()[0])
    figures |= {"assay_index_cpu_s": index_cpu, "datatrove_index_cpu_s": dt_index}
    for k in ("assay_ingest", "assay_targets_add", "assay_annotate", "datatrove"):
        figures[k].pop("stdout", None)

    print(f"\n{'':34}{'CPU s':>8}{'wall s':>8}{'MB/s per core':>15}{'peak RSS MiB':>14}")
    rows = [
        ("assay annotate contamination", annotate),
        ("datatrove index + filter", datatrove),
        ("assay ingest (not in the ratio)", ingest),
    ]
    for name, r in rows:
        print(
            f"{name:34}{r['cpu_s']:>8.1f}{r['wall_s']:>8.1f}{mb / r['cpu_s']:>15.2f}{r['peak_rss_mib']:>14.0f}"
        )
    ratio = datatrove["cpu_s"] / annotate["cpu_s"]
    with_ingest = datatrove["cpu_s"] / (annotate["cpu_s"] + ingest["cpu_s"])
    figures |= {"ratio_per_core": ratio, "ratio_per_core_with_ingest": with_ingest}
    print(
        f"ratio (MB/s per core, assay annotate / datatrove): {ratio:.1f}x; with assay ingest: {with_ingest:.1f}x"
    )
    print(
        f"building the 13-gram index of the targets (inside the rows above): assay {index_cpu:.1f} CPU s "
        f"(in-process, warm), datatrove {dt_index:.1f} CPU s (from its start, imports and spaCy included); "
        f"assay targets add (reading the benchmark files): {add['cpu_s']:.1f} CPU s"
    )
    print(
        f"documents flagged: assay {len(flagged)}, datatrove {len(dropped)}, both {len(flagged & dropped)}; "
        f"planted examples found at frac 1.0 with their example id: {right}/{len(planted)}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

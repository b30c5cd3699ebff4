"""Ingest of one big JSONL file: one work unit vs line-aligned byte-range units on 1 and 2 workers.

    .venv/bin/python -P bench/ingest_split.py [--mb 128] [--work /tmp/ingest-split] [--reverse]

The input is the two bundled ``sample/web`` dolma files (ids dropped, so derived ids stay unique)
repeated to ``--mb`` MiB: replicated text. Every configuration must give the same shards (sha256);
printed per configuration: wall seconds, MiB/s and CPU seconds (this process and its workers).
``--reverse`` runs the configurations in the opposite order (page-cache warmth).
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_input(path: Path, mb: int) -> None:
    lines = b""
    for name in ("dolma_cc_en_head-0091", "dolma_cc_en_head-0174"):
        for line in gzip.decompress((REPO / "sample" / "web" / f"{name}.jsonl.gz").read_bytes()).splitlines():
            record = json.loads(line)
            record.pop("id", None)
            lines += json.dumps(record).encode() + b"\n"
    with open(path, "wb") as f:
        while f.tell() < mb * 2**20:
            f.write(lines)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    from assay.corpora.ingest import IngestOptions
    from assay.corpora.manifest import load_manifest
    from assay.pipelines.executor import ExecutorConfig
    from assay.pipelines.ingest import ingest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=128, help="Size of the JSONL input in MiB.")
    ap.add_argument("--work", default="/tmp/ingest-split", help="Work folder (input and roots).")
    ap.add_argument("--reverse", action="store_true", help="Run the configurations in reverse order.")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    big = work / f"big-{args.mb}.jsonl"
    if not big.exists():
        build_input(big, args.mb)
    size = big.stat().st_size / 2**20
    print(f"{big}: {size:.0f} MiB (replicated sample/web text)")
    configs = [
        ("one unit, 1 worker", 0, 1),
        ("64 MiB units, 1 worker", 64 << 20, 1),
        ("64 MiB units, 2 workers", 64 << 20, 2),
    ]
    if args.reverse:
        configs.reverse()
    shards = {}
    for name, split, workers in configs:
        root = work / f"root-{split}-{workers}"
        shutil.rmtree(root, ignore_errors=True)
        started, cpu = time.time(), cpu_seconds()
        summary = ingest(
            [str(big)], root, IngestOptions(split_bytes=split), ExecutorConfig(workers=workers), quiet=True
        )
        seconds, cpu = time.time() - started, cpu_seconds() - cpu
        shards[name] = tuple(s["sha256"] for s in load_manifest(root)["shards"])
        print(
            f"{name:<26} {seconds:6.1f} s  {size / seconds:6.1f} MiB/s  {cpu:6.1f} CPU s  {summary['docs']:,} docs"
        )
    print("identical shards:", len(set(shards.values())) == 1)


if __name__ == "__main__":  # the executor's worker processes import this module
    main()

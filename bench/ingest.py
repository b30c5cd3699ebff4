"""Ingest throughput: Assay vs datatrove's JsonlReader -> ParquetWriter on the same real text.

    python bench/ingest.py [--mb 500] [--workers 1]

Both run in a fresh process each (peak RSS is per process tree). Assay does more work per
record (quarantine checks, duplicate-id detection across the corpus, sha256 of every shard).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import replicate_jsonl_gz, run_child

ASSAY = """
from assay.pipelines.ingest import ingest
from assay.pipelines.executor import ExecutorConfig
s = ingest([{inp!r}], {out!r}, config=ExecutorConfig(workers={w}), quiet=True)
print(s["docs"], s["quarantined"])
"""

DATATROVE = """
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter
if __name__ == "__main__":
    ex = LocalPipelineExecutor(
        pipeline=[JsonlReader({inp!r}, glob_pattern="*.jsonl.gz"), ParquetWriter({out!r})],
        tasks={tasks}, workers={w}, logging_dir={logs!r},
    )
    ex.run()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=float, default=500, help="uncompressed JSONL megabytes to ingest")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="assay-bench-ingest-"))
    try:
        inputs, nbytes, ndocs = replicate_jsonl_gz(work / "in", args.mb, args.files)
        mb = nbytes / 1e6
        print(f"input: {len(inputs)} files, {ndocs} docs, {mb:.0f} MB of JSON lines (gzip)")
        rows = []
        dt_code = DATATROVE.format(
            inp=str(work / "in"),
            out=str(work / "dt"),
            tasks=len(inputs),
            w=args.workers,
            logs=str(work / "dt-logs"),
        )
        wall, peak, _ = run_child(
            dt_code.replace('if __name__ == "__main__":\n    ', "if True:\n    ")
            if args.workers == 1
            else dt_code
        )
        rows.append(("datatrove JsonlReader->ParquetWriter", wall, peak))
        wall, peak, out = run_child(
            ASSAY.format(inp=str(work / "in"), out=str(work / "assay"), w=args.workers)
        )
        docs, quarantined = map(int, out.split())
        assert docs == ndocs and quarantined == 0, (docs, quarantined)
        rows.append(("assay ingest (quarantine + dedupe + sha256)", wall, peak))
        print(f"{'tool':46s} {'seconds':>8s} {'docs/s':>9s} {'MB/s':>7s} {'peak RSS MiB':>13s}")
        for name, wall, peak in rows:
            print(f"{name:46s} {wall:8.1f} {ndocs / wall:9.0f} {mb / wall:7.1f} {peak:13.0f}")
        print(f"ratio assay/datatrove (throughput): {rows[0][1] / rows[1][1]:.2f}x  (workers={args.workers})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmarks: real text replicated to a size, peak memory of a child run."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PAGES = SHARED / "corpora" / "web_trafilatura_eval" / "trafilatura_eval_pages.jsonl.gz"


# The real English-ish pages both the heuristics and decontamination benches replicate.
DOC_SOURCES = [
    SHARED / "corpora" / "web_trafilatura_eval" / "trafilatura_eval_pages.jsonl.gz",
    *sorted((SHARED / "corpora" / "misc").glob("dolma_cc_en_head-*.jsonl.gz")),
]


def real_documents() -> list[tuple[str, str]]:
    """(id, text) of every document in DOC_SOURCES, in file order."""
    docs = []
    for path in DOC_SOURCES:
        if not path.exists():
            sys.exit(f"needs {path} (the shared data folder beside the repository)")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [(str(r["id"]), r["text"]) for r in map(json.loads, f)]
    return docs


def real_records() -> list[dict]:
    if not PAGES.exists():
        sys.exit(f"needs {PAGES} (the shared data folder beside the repository)")
    return [json.loads(line) for line in gzip.open(PAGES)]


def replicate_jsonl_gz(out_dir: Path, megabytes: float, files: int = 8) -> tuple[list[Path], int, int]:
    """Write the real pages again and again (ids made unique) until `megabytes` of JSON lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = real_records()
    target = int(megabytes * 1e6)
    per_file = target // files
    paths, total_bytes, total_docs, copy = [], 0, 0, 0
    for f in range(files):
        path = out_dir / f"pages-{f:03d}.jsonl.gz"
        written = 0
        with gzip.open(path, "wb", compresslevel=1) as out:
            while written < per_file:
                for r in records:
                    line = (json.dumps({**r, "id": f"{r['id']}-{copy}"}) + "\n").encode()
                    out.write(line)
                    written += len(line)
                    total_docs += 1
                copy += 1
        paths.append(path)
        total_bytes += written
    return paths, total_bytes, total_docs


def run_child(code: str, env: dict | None = None) -> tuple[float, float, str]:
    """Run python code in a fresh process: (wall seconds, peak RSS MiB of it and its children, stdout)."""
    # VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss across exec, so a child of a large parent
    # would report the parent's peak; the high-water mark of its own address space starts afresh
    code += (
        "\nimport resource as _r, sys as _s\n"
        "_hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print('PEAK', max(_hwm, _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss), file=_s.stderr)\n"
    )
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    wall = time.time() - started
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    peak = int(out.stderr.rsplit("PEAK", 1)[1].split()[0]) / 1024
    return wall, peak, out.stdout


def run_command(argv: list[str], env: dict | None = None) -> dict:
    """Run a command as a user would: wall and CPU seconds, peak RSS MiB, stdout.

    The figures come from wait4 on this one child, so they cover it and every descendant it
    waited for; peak RSS is that of the largest single process in the tree, not a sum.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{err.read().decode()[-3000:]}")
        return {
            "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "stdout": out.read().decode(),
        }


def show(title: str, frame, note: str = "", width: int = 250) -> None:
    """Print a polars table as Markdown under a heading (the backtest reports)."""
    import polars as pl

    print(f"\n## {title}\n")
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=width,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        float_precision=4,
        fmt_str_lengths=120,
        tbl_formatting="MARKDOWN",
    ):
        print(frame)
    if note:
        print(f"\n{note}")

"""Peak memory per worker for ingest and annotate, local vs Ray, at 1x and 10x the corpus.

    python bench/scale_out.py [--docs 2000] [--files 4] [--scales 1,10] [--grow docs|files]
                              [--executors local,ray]

The corpus is the sample's speech paragraphs written again and again (ids made unique) into
`--files` JSONL files. `--grow docs` (default): 10x means ten times the documents in each file,
so every work unit (one input file for ingest, one docs shard for annotate) has ten times the
data. `--grow files`: ten times the files, so ten times the units of the same size. Each worker
process reports its own high-water RSS (VmHWM) when it finishes a unit (the executor's
`started/` records); the figure is the largest over the run's workers. Ray runs on a 2-CPU
cluster the bench starts on 127.0.0.1 and stops again (the settings of tests/integration).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_corpus(folder: Path, files: int, docs: int) -> int:
    paras = []
    for name in ("state_union", "inaugural"):
        with gzip.open(REPO / "sample" / "speeches" / f"{name}.jsonl.gz", "rt") as f:
            for rec in map(json.loads, f):
                paras += [(name, p) for p in rec["text"].split("\n") if len(p) > 200]
    folder.mkdir(parents=True)
    n = 0
    for i in range(files):
        with open(folder / f"part{i}.jsonl", "w") as f:
            for j in range(docs):
                source, text = paras[(i * docs + j) % len(paras)]
                f.write(json.dumps({"id": f"f{i}-{j}", "text": text, "source": source}) + "\n")
                n += 1
    return n


def start_ray(tmp: Path) -> tuple[subprocess.Popen, dict]:
    home = tmp / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        HOME=str(home),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_USAGE_STATS_REPORT_URL="http://127.0.0.1:9/",
        RAY_ADDRESS=f"127.0.0.1:{port}",
        OMP_NUM_THREADS="1",
    )
    args = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}"]
    args += [
        "--num-cpus=2",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--temp-dir={tmp / 'ray'}",
    ]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, env
        time.sleep(0.3)
    raise SystemExit("Ray did not start")


def stop_session(sid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == sid:
                    os.kill(int(entry), sig)
            except OSError:
                pass
        time.sleep(3)


def run(args: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the calling process) of one `assay` command."""
    started = time.time()
    proc = subprocess.Popen([str(BIN / "assay"), *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"assay {' '.join(args)} failed ({status})")
    return time.time() - started, usage.ru_maxrss / 1024


def worker_peak(root: Path, stage: str) -> tuple[float, int]:
    records = [json.loads(p.read_text()) for p in root.glob(f".assay/logs/{stage}-*/started/u*.json")]
    return max(r.get("peak_rss_mb", 0) for r in records), len({r["pid"] for r in records})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="documents per input file at 1x")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--scales", default="1,10")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--grow", choices=("docs", "files"), default="docs")
    ap.add_argument("--scorer", default="stats")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="assay-scale-", dir="/tmp"))
    ray_proc, env = None, dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    try:
        if "ray" in a.executors.split(","):
            ray_proc, env = start_ray(tmp)
        for scale in [int(s) for s in a.scales.split(",")]:
            inputs = tmp / f"in-{scale}x"
            if a.grow == "docs":
                n = write_corpus(inputs, a.files, a.docs * scale)
            else:
                n = write_corpus(inputs, a.files * scale, a.docs)
            mb = sum(p.stat().st_size for p in inputs.iterdir()) / 1e6
            for kind in a.executors.split(","):
                root = tmp / f"root-{kind}-{scale}x"
                ex = ["--executor", kind, "--workers", "2"]
                for stage, args in (
                    ("ingest", ["ingest", str(inputs), "--root", str(root), *ex]),
                    ("annotate", ["annotate", "--root", str(root), "--scorer", a.scorer, *ex]),
                ):
                    seconds, caller = run(args, env, tmp)
                    peak, workers = worker_peak(root, stage)
                    rows.append((stage, kind, f"{scale}x", n, round(mb, 1), workers, peak, caller, seconds))
                    print(
                        f"{stage:8s} {kind:5s} {scale:>3d}x {n:>8,d} docs {mb:7.1f} MB  "
                        f"worker peak {peak:7.1f} MiB ({workers} processes)  caller {caller:6.1f} MiB  {seconds:6.1f} s",
                        flush=True,
                    )
    finally:
        if ray_proc is not None:
            stop_session(ray_proc.pid)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| stage | executor | corpus | docs | MB | worker peak RSS (MiB) | caller peak RSS (MiB) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for stage, kind, scale, n, mb, _, peak, caller, seconds in rows:
        print(f"| {stage} | {kind} | {scale} | {n:,} | {mb} | {peak:.0f} | {caller:.0f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()

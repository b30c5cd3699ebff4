"""Planning at 100k shards: how long the catalog takes to know a root, before and after the
manifest became its source of truth.

Builds a synthetic root of N tiny docs shards (one document each) with a `stats` annotation
set of N shards and a manifest naming them all, then times, each in the same run:

* the catalog fingerprint: the old one (every Parquet file found by listing) and the new one
  (the manifest's bytes and a few folder stats);
* view building: from a listing (globs) and from the manifest (lists of files);
* `refresh_catalog` (new: built under a temporary name, renamed into place);
* manifest load / locked save (what annotate and ingest do around every run);
* cold `assay sql "SELECT count(*) FROM docs"` in a new process: catalog current, and catalog
  stale (the manifest changed, so the command rebuilds first); and the old open (a listing
  fingerprint, then the query) in a new process;
* DuckDB's own `count(*)` over the N files: through a glob and through the manifest's file list
  (one string split at bind time: a 100k-element SQL list literal takes seconds to parse);
* annotate planning: `assay annotate --scorer stats` on the root where every shard is done (a
  new process: it plans, finds nothing to do, exits), and in this process the planning of a new
  scorer (which of the N shards lack its output);
* `assay select` in a new process (top 10 documents by `words`): the whole command, pool query
  over the N annotation and docs files included, and the mixture manifest's own
  `seconds_selecting`.

    .venv/bin/python -P bench/planning.py --shards 100000

Shards are written by patching a template Parquet file's id (same length, uncompressed, no
dictionary) rather than by pyarrow per file, so building 100k of them takes seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = b"Q7Z9Q7Z9Q7Z9"  # 12 bytes, replaced by doc{i:09d}


def _template(table, path: Path) -> bytes:
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=True)
    data = path.read_bytes()
    path.unlink()
    return data


def build_root(root: Path, n: int) -> None:
    import pyarrow as pa

    from assay.corpora.atomic import write_json_atomic
    from assay.corpora.schema import DOCS_SCHEMA

    pid = PLACEHOLDER.decode()
    docs = pa.table(
        {
            "id": [pid],
            "text": [f"tiny document {pid}"],
            "source": ["bench"],
            "url": [None],
            "meta": ["{}"],
            "source_file": ["bench.jsonl"],
            "source_offset": [0],
        },
        schema=DOCS_SCHEMA,
    )
    stats = pa.table(
        {
            "id": [pid],
            "chars": pa.array([26], pa.int64()),
            "bytes": pa.array([26], pa.int64()),
            "words": pa.array([3], pa.int64()),
            "lines": pa.array([1], pa.int64()),
            "tokens_est": pa.array([7], pa.int64()),
        }
    )
    (root / "docs").mkdir(parents=True)
    (root / "annotations" / "stats").mkdir(parents=True)
    t_docs = _template(docs, root / "t.parquet")
    t_stats = _template(stats, root / "t.parquet")
    assert t_docs.count(PLACEHOLDER) >= 2 and t_stats.count(PLACEHOLDER) >= 1
    shards, ann = [], {}
    for i in range(n):
        name = f"part-{i:06d}.parquet"
        new = f"doc{i:09d}".encode()
        d = t_docs.replace(PLACEHOLDER, new)
        (root / "docs" / name).write_bytes(d)
        a = t_stats.replace(PLACEHOLDER, new)
        (root / "annotations" / "stats" / name).write_bytes(a)
        shards.append({"name": f"docs/{name}", "rows": 1, "bytes": len(d), "sha256": "0" * 64})
        ann[name] = {"rows": 1, "sha256": "0" * 64}
    manifest = {
        "format": "assay-corpus/1",
        "inputs": [{"path": "bench.jsonl", "records_read": n, "docs": n, "quarantined": 0}],
        "shards": shards,
        "quarantine": [],
        "annotations": {
            "stats": {
                "spec": "stats",
                "version": "1",
                "kind": "scorer",
                "columns": {"stats": stats.column_names},
                "shards": ann,
            }
        },
        "runs": [],
    }
    write_json_atomic(root / "manifest.json", manifest)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def cli_seconds(args: list[str]) -> tuple[float, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-P", "-m", "assay.pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return time.perf_counter() - t, out.stdout.strip().splitlines()[-2:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=100_000)
    ap.add_argument("--root", default=None, help="where to build the synthetic root [a temporary folder]")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic root")
    ap.add_argument("--reuse", action="store_true", help="reuse the root a --root --keep run left")
    ap.add_argument("--threads", type=int, default=1, help="DuckDB threads")
    args = ap.parse_args()

    import duckdb

    from assay.corpora import catalog
    from assay.corpora.manifest import load_manifest, save_manifest

    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="assay-planning-"))
    root = base / "root"
    res: dict[str, object] = {"shards": args.shards}
    if args.reuse and (root / "manifest.json").exists():
        assert len(load_manifest(root)["shards"]) == args.shards, "--reuse: the root has another size"
    else:
        shutil.rmtree(root, ignore_errors=True)
        res["build_s"], _ = timed(build_root, root, args.shards)
    du = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    res["root_mb"] = round(du / 1e6, 1)
    res["manifest_mb"] = round((root / "manifest.json").stat().st_size / 1e6, 1)

    # before: the listing fingerprint and glob views; after: the manifest's
    res["old_fingerprint_s"], _ = timed(catalog.listing_fingerprint, root)
    res["new_fingerprint_s"], _ = timed(catalog.fingerprint, root)
    res["old_sources_s"], old_src = timed(catalog.listing_sources, root)
    res["load_manifest_s"], manifest = timed(load_manifest, root)
    res["new_sources_s"], new_src = timed(catalog.manifest_sources, root, manifest)
    manifest["runs"].append({"stage": "bench"})
    res["save_manifest_s"], _ = timed(save_manifest, root, manifest)
    res["old_refresh_s"], _ = timed(catalog.refresh_catalog, root, old_src)
    res["new_refresh_s"], _ = timed(catalog.refresh_catalog, root)

    # cold CLI: a new process, the catalog current; then stale (manifest changed: rebuild first)
    res["sql_cold_current_s"], out = cli_seconds(
        ["sql", "SELECT count(*) AS n FROM docs", "--root", str(root), "--format", "csv"]
    )
    res["sql_result"] = out[-1]
    m = load_manifest(root)
    m["runs"].append({"stage": "bench2"})
    save_manifest(root, m)
    res["sql_cold_stale_s"], _ = cli_seconds(
        ["sql", "SELECT count(*) AS n FROM docs", "--root", str(root), "--format", "csv"]
    )
    # before, in a new process the same way: the old open listed every Parquet file of the root
    # to fingerprint it (every command, even with a current catalog), then ran the query
    old_open = (
        "import sys, duckdb; from pathlib import Path; from assay.corpora import catalog as c; "
        "root = Path(sys.argv[1]); c.listing_fingerprint(root); "
        "con = duckdb.connect(str(root / 'catalog.duckdb'), read_only=True); "
        "print(con.execute('SELECT count(*) FROM docs').fetchone()[0])"
    )
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-P", "-c", old_open, str(root)], check=True, capture_output=True, cwd=REPO
    )
    res["old_sql_cold_current_s"] = time.perf_counter() - t
    res["status_s"], _ = cli_seconds(["status", "--root", str(root)])
    res["status_check_s"], _ = cli_seconds(["status", "--check", "--root", str(root)])

    # DuckDB's own time over N files, glob view vs list view, and the wide annotations view
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    for label, src in (("glob", old_src.docs), ("list", new_src.docs)):
        res[f"duckdb_count_{label}_s"], n = timed(
            lambda s=src: con.execute(f"SELECT count(*) FROM {s}").fetchone()
        )
        assert n[0] == args.shards, n
    con.close()
    con = catalog.open_catalog(root)
    res["duckdb_annotations_words_s"], n = timed(
        lambda: con.execute("SELECT sum(words) FROM annotations").fetchone()
    )
    con.close()
    # annotate planning: everything done (a rerun), and a new scorer's missing shards
    from assay.pipelines.annotate import _docs_to_score
    from assay.scorers.registry import make_scorer

    res["annotate_rerun_done_s"], _ = cli_seconds(["annotate", "--root", str(root), "--scorer", "stats"])
    res["annotate_plan_new_scorer_s"], todo = timed(
        _docs_to_score, root, load_manifest(root), [make_scorer("language", root)]
    )
    assert todo == args.shards, todo
    # select: the whole command in a new process
    recipe = base / "top10.yaml"
    recipe.write_text("rank: words\nbudget:\n  docs: 10\n")
    res["select_s"], _ = cli_seconds(
        ["select", "--root", str(root), "--recipe", str(recipe), "--name", "top10", "--force"]
    )
    mixture = json.loads((root / "mixtures" / "top10" / "manifest.json").read_text())
    res["select_seconds_selecting"] = mixture["seconds_selecting"]
    assert mixture["selected"]["docs"] == 10
    for k, v in res.items():
        if isinstance(v, float):
            res[k] = round(v, 3)
    print(json.dumps(res, indent=1))
    if not args.keep and not args.root:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Annotations are bit-reproducible: the same root annotated twice, each time in fresh processes,
gives byte-identical files for every scorer (a killed and resumed run relies on it)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, REPO

SPECS = [
    "stats",
    "heuristics",
    "language",
    "facts:trex",
    "triples",
    "datatrove:GopherQualityFilter",
    "cluster:k=3,columns=rp_unigram_entropy+gopher_word_count+chars",
]


def _assay(*args: str) -> None:
    out = subprocess.run([sys.executable, "-P", "-m", "assay", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _checksums(root: Path) -> dict[str, str]:
    files = sorted((root / "annotations").rglob("*.parquet")) + sorted((root / "triples").rglob("*.parquet"))
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_every_scorer_is_bit_reproducible_across_processes(tmp_path):
    base = tmp_path / "base"
    web = REPO / "sample" / "web"
    _assay("ingest", str(web), "--root", str(base), "--shard-rows", "8")
    _assay("facts", "add", "trex", str(FIXTURES / "facts" / "trex" / "P17.jsonl"), "--root", str(base))
    sums = []
    for attempt in ("a", "b"):
        root = tmp_path / attempt
        shutil.copytree(base, root)
        # first the sets the cluster scorer reads, then the rest; a worker pool of two
        _assay(
            "annotate", "--root", str(root), "--scorer", "stats", "--scorer", "heuristics", "--workers", "2"
        )
        _assay("annotate", "--root", str(root), *[x for s in SPECS[2:] for x in ("--scorer", s)])
        sums.append(_checksums(root))
    assert sums[0].keys() == sums[1].keys() and len(sums[0]) >= 7 * 3
    differ = sorted(name for name in sums[0] if sums[0][name] != sums[1][name])
    assert differ == [], differ

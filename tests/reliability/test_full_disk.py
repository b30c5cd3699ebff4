"""A corpus root on a full disk: `assay ingest` / `assay annotate` fail with one clear line (no
traceback), leave no corrupt shard (temporaries swept, the manifest whole), and once space is
freed the same command succeeds with outputs identical to a run on a roomy disk.

The disk is a small tmpfs (`mount -t tmpfs`), else a loop-mounted ext4 image; without the right
to mount either, the tests skip and say why.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ASSAY_PROGRESS_SECONDS": "3600"}
DISK_BYTES = 16 * 1024 * 1024


def _mount(folder: Path, image: Path) -> str | None:
    """Mount a small file system on folder; None when it worked, else why not."""
    tmpfs = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if tmpfs.returncode == 0:
        return None
    with open(image, "wb") as f:
        f.truncate(DISK_BYTES)
    steps = (["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(folder)])
    for step in steps:
        try:
            out = subprocess.run(step, capture_output=True, text=True)
        except FileNotFoundError as exc:
            return f"tmpfs: {tmpfs.stderr.strip()}; {exc}"
        if out.returncode != 0:
            return f"tmpfs: {tmpfs.stderr.strip()}; {' '.join(step[:1])}: {out.stderr.strip()}"
    return None


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    why = _mount(folder, tmp_path / "disk.img")
    if why is not None:
        pytest.skip(f"cannot mount a small file system here: {why}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(disk: Path, room: int) -> Path:
    """A filler file that leaves about `room` bytes free on the disk."""
    filler = disk / "filler.bin"
    st = os.statvfs(disk)
    size = max(st.f_bavail * st.f_frsize - room, 0)
    with open(filler, "wb") as f:
        block = b"\0" * (1 << 20)
        try:
            while size > 0:
                size -= f.write(block[: min(size, len(block))])
        except OSError:
            pass  # already full
    return filler


def _corpus(folder: Path) -> Path:
    """~1.3 MB of text in words drawn at random: it compresses little, so the shards are big."""
    rng = random.Random(5)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(4000)
    ]
    path = folder / "words.jsonl"
    with open(path, "w") as f:
        for _ in range(300):
            f.write(json.dumps({"text": " ".join(rng.choices(vocab, k=700))}) + "\n")
    return path


def _assay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-P", "-m", "assay", *args], capture_output=True, text=True, cwd=REPO, env=ENV
    )


def _one_clear_line(out: subprocess.CompletedProcess) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), out.stderr[-3000:]
    assert "no space left" in lines[0].lower(), lines[0]


def _nothing_corrupt(root: Path) -> None:
    """Whole files only: no temporary, every published shard readable and as the manifest says."""
    assert list(root.rglob("*.tmp-assay")) == []
    manifest = root / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())  # whole JSON, or this fails
        for entry in m["shards"]:
            data = (root / entry["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    for shard in [*root.glob("docs/*.parquet"), *root.glob("annotations/*/*.parquet")]:
        pq.ParquetFile(shard).metadata  # noqa: B018 - raises on a cut file


def _outputs(root: Path) -> dict[str, str]:
    files = sorted(root.glob("docs/*.parquet")) + sorted(root.glob("annotations/*/*.parquet"))
    files += sorted(root.glob("quarantine/*.parquet"))
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_full_disk_then_free_space_and_rerun(small_disk, tmp_path):
    corpus = _corpus(tmp_path)
    ingest = ["ingest", str(corpus), "--shard-rows", "50"]
    annotate = ["annotate", "--scorer", "stats"]
    reference = tmp_path / "reference"
    for command in (ingest, annotate):
        out = _assay(*command, "--root", str(reference))
        assert out.returncode == 0, out.stderr[-3000:]
    ingested = {k: v for k, v in _outputs(reference).items() if k.startswith("docs/")}
    assert sum(pq.ParquetFile(reference / k).metadata.num_rows for k in ingested) == 300

    root = small_disk / "root"
    # ingest: the docs shards need far more than the room left
    filler = _fill(small_disk, room=150 * 1024)
    out = _assay(*ingest, "--root", str(root))
    _one_clear_line(out)
    _nothing_corrupt(root)
    filler.unlink()
    out = _assay(*ingest, "--root", str(root))
    assert out.returncode == 0, out.stderr[-3000:]
    _nothing_corrupt(root)
    assert _outputs(root) == ingested

    # annotate: no room at all
    filler = _fill(small_disk, room=0)
    out = _assay(*annotate, "--root", str(root))
    _one_clear_line(out)
    _nothing_corrupt(root)
    filler.unlink()
    out = _assay(*annotate, "--root", str(root))
    assert out.returncode == 0, out.stderr[-3000:]
    _nothing_corrupt(root)
    assert _outputs(root) == _outputs(reference)
    shutil.rmtree(root)

"""kill -9 at a random moment of ingest, annotate and select, then the same command again: the
outputs equal an uninterrupted run's (every shard's sha256, the manifest's stable parts, the
catalog's counts), and no temporary or staging file is left.

The real `assay` command runs in a subprocess of its own session; SIGKILL goes to the whole
process group (the command and any worker it started), as when a node dies. A few seeds run in
the default suite, many under `-m slow`.

Dedup (issue 17) adds a stage here: put its command in STAGES (after annotate, reading the root
annotate leaves) and its output folder in OUTPUT_DIRS; the reference run and the checks pick it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO

INPUTS = [str(FIXTURES / "ingest" / "inaugural_noid.jsonl"), str(FIXTURES / "ingest" / "inaugural.jsonl.zst")]
RECIPE = """\
filter: "words > 300"
rank: chars
strategy: gumbel
temperature: 2.0
budget:
  fraction_of_tokens: 0.5
seed: 7
dedup: fuzzy
"""
# stage -> its command, given the root and the recipe path; run in this order
STAGES = {
    "ingest": lambda root, recipe: ["ingest", *INPUTS, "--root", root, "--shard-rows", "8"],
    "annotate": lambda root, recipe: ["annotate", "--root", root, "--scorer", "stats"],
    # corpus-level: signatures, clusters and annotation units in stages of their own
    "dedup": lambda root, recipe: ["annotate", "--root", root, "--scorer", "minhash"],
    "select": lambda root, recipe: ["select", "--root", root, "--recipe", recipe, "--name", "m"],
}
OUTPUT_DIRS = ("docs", "quarantine", "annotations", "triples", "mixtures")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ASSAY_PROGRESS_SECONDS": "3600"}


def _assay(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-P", "-m", "assay", *args], capture_output=True, text=True, cwd=REPO, env=ENV
    )
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _killed(args: list[str], delay: float) -> int:
    """Start the command, SIGKILL its process group after `delay` seconds; its return code."""
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "assay", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=ENV,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    try:  # workers that outlived the kill of the parent (none should: same group)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.returncode


def _checksums(root: Path) -> dict[str, str]:
    files = {}
    for folder in OUTPUT_DIRS:
        for f in sorted((root / folder).rglob("*")) if (root / folder).exists() else []:
            if f.is_file() and f.name != "manifest.json":
                files[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return files


def outputs(root: Path) -> dict:
    """What a rerun must reproduce exactly."""
    from assay.corpora.catalog import run_query

    files = _checksums(root)
    manifest = json.loads((root / "manifest.json").read_text())
    stable = {
        "inputs": manifest["inputs"],
        "shards": manifest["shards"],
        "quarantine": manifest["quarantine"],
        "annotations": manifest["annotations"],
        "runs": [(r["stage"], r.get("run")) for r in manifest["runs"] if r.get("status", "done") == "done"],
    }
    mixtures = {}
    for m in sorted((root / "mixtures").glob("*/manifest.json")) if (root / "mixtures").exists() else []:
        mix = json.loads(m.read_text())
        mixtures[m.parent.name] = {
            k: v for k, v in mix.items() if k not in ("created", "versions") and "seconds" not in k
        }
    counts = {
        view: run_query(root, f"SELECT count(*) FROM {view}").column(0)[0].as_py()
        for view in ("docs", "quarantine")
    }
    if manifest["annotations"]:
        counts["annotations"] = run_query(root, "SELECT count(*) FROM annotations").column(0)[0].as_py()
    return {"files": files, "manifest": stable, "mixtures": mixtures, "counts": counts}


def _leftovers(root: Path) -> list[str]:
    found = [str(p.relative_to(root)) for p in root.rglob("*.tmp-assay")]
    if (root / "docs" / ".staging").exists():
        found.append("docs/.staging")
    return found


def _reference(base: Path, stages: dict) -> dict:
    """An uninterrupted run: the root before each stage, the outputs after it, its wall time."""
    recipe = base / "recipe.yaml"
    recipe.write_text(RECIPE)
    root = base / "root"
    ref: dict = {"recipe": str(recipe), "stages": stages, "before": {}, "after": {}, "seconds": {}}
    for stage, command in stages.items():
        ref["before"][stage] = base / f"before-{stage}"
        if root.exists():
            shutil.copytree(root, ref["before"][stage])
        started = time.time()
        out = _assay(command(str(root), str(recipe)), check=False)
        if out.returncode != 0:
            ref["broken"] = f"the uninterrupted `assay {stage}` fails: {out.stderr.strip()[-400:]}"
            break
        ref["seconds"][stage] = time.time() - started
        ref["after"][stage] = outputs(root)
    return ref


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return _reference(tmp_path_factory.mktemp("kill-reference"), STAGES)


@pytest.fixture(scope="module")
def reference_heuristics(tmp_path_factory) -> dict:
    """The slow test's run: annotate also computes the 53 heuristics columns (spaCy-tokenised)."""
    stages = dict(STAGES)
    stages["annotate"] = lambda root, recipe: [*STAGES["annotate"](root, recipe), "--scorer", "heuristics"]
    return _reference(tmp_path_factory.mktemp("kill-reference-heuristics"), stages)


def _kill_and_rerun(reference: dict, stage: str, seed: int, tmp_path: Path) -> None:
    if stage not in reference["after"]:
        pytest.skip(reference.get("broken", f"no reference for {stage}"))
    root = tmp_path / "root"
    before = reference["before"][stage]
    if before.exists():
        shutil.copytree(before, root)
    command = reference["stages"][stage](str(root), reference["recipe"])
    delay = random.Random(seed).uniform(0.0, reference["seconds"][stage])
    _killed(command, delay)
    # resumes (or starts afresh, when the kill came before any work; a select killed after it
    # published finds the mixture already selected)
    out = _assay(command, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    got, want = outputs(root), reference["after"][stage]
    for part in ("counts", "files", "manifest", "mixtures"):
        assert got[part] == want[part], f"{stage}, seed {seed}, killed after {delay:.2f}s: {part} differ"
    # a catalog temporary of a killed refresh is swept by the next refresh (the catalog counts
    # above opened it)
    left = _leftovers(root)
    assert left == [], f"{stage}, seed {seed}, killed after {delay:.2f}s"


# a few seeds (each case runs the command twice, about 5 s on a loaded 2-core machine)
DEFAULT_CASES = [(stage, 1) for stage in STAGES] + [("ingest", 2)]


@pytest.mark.parametrize(("stage", "seed"), DEFAULT_CASES)
def test_kill_then_rerun_gives_the_same_outputs(reference, stage, seed, tmp_path):
    _kill_and_rerun(reference, stage, seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("seed", range(100, 125))
def test_kill_then_rerun_many_seeds(reference_heuristics, stage, seed, tmp_path):
    _kill_and_rerun(reference_heuristics, stage, seed, tmp_path)


def test_the_check_sees_a_damaged_shard(reference, tmp_path):
    """outputs() notices a shard that differs, so the comparisons above can fail."""
    if "ingest" not in reference["after"]:
        pytest.skip(reference.get("broken", "no reference"))
    root = tmp_path / "root"
    shutil.copytree(reference["before"]["annotate"], root)
    assert _checksums(root) == reference["after"]["ingest"]["files"]
    shard = sorted((root / "docs").glob("part-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    assert _checksums(root) != reference["after"]["ingest"]["files"]


SPLIT_INGEST = """
import sys
from assay.corpora.ingest import IngestOptions
from assay.pipelines.ingest import ingest
ingest([sys.argv[1]], sys.argv[2], IngestOptions(split_bytes=20_000, shard_rows=8), quiet=True)
"""


def test_kill_split_ingest_then_rerun(tmp_path):
    """A JSONL file read as byte-range units (merged at finalize): killed anywhere, the rerun
    gives the shards of an uninterrupted run. (Through the library until `assay ingest` has
    --split-bytes; then it belongs in STAGES.)"""
    src = tmp_path / "plain.jsonl"
    src.write_bytes(Path(INPUTS[0]).read_bytes())
    command = [sys.executable, "-P", "-c", SPLIT_INGEST, str(src)]
    started = time.time()
    subprocess.run([*command, str(tmp_path / "ref")], check=True, cwd=REPO, env=ENV, capture_output=True)
    seconds = time.time() - started
    want = _checksums(tmp_path / "ref")
    assert len(want) > 3
    for seed in (1, 2):
        root = tmp_path / f"root{seed}"
        proc = subprocess.Popen([*command, str(root)], cwd=REPO, env=ENV, start_new_session=True)
        try:
            proc.wait(timeout=random.Random(seed).uniform(0.0, seconds))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run([*command, str(root)], check=True, cwd=REPO, env=ENV, capture_output=True)
        assert _checksums(root) == want and _leftovers(root) == []

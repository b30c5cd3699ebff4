"""The README as a contract: every shell block runs, in order and as written, on the bundled sample.

Markers in the Markdown (HTML comments, invisible when rendered) on the line before a block:
`<!-- readme: skip REASON -->` skips it (reported as a skipped test), `<!-- readme: needs CMD -->`
runs it only where CMD is installed, and `<!-- readme: file NAME -->` before a non-shell block
writes its text to NAME for the commands that follow. `/data/my-corpus` becomes a temporary root
and `../shared` the shared data folder; the commands run from a folder where `sample/` is the
repository's sample corpus, with the installed `assay` first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA

FENCE = re.compile(
    r"(?:<!-- readme: (?P<marker>[a-z]+) ?(?P<arg>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S
)


@dataclass
class Block:
    line: int
    lang: str
    body: str
    marker: str | None
    arg: str


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [
        Block(text[: m.start()].count("\n") + 1, m["lang"], m["body"], m["marker"], (m["arg"] or "").strip())
        for m in FENCE.finditer(text)
    ]


def _id(b: Block) -> str:
    return f"README.md:{b.line}"


DOCS = (
    [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    if (REPO / "docs").is_dir()
    else [REPO / "README.md"]
)
ALL = [b for doc in DOCS for b in blocks(doc)]
SKIPPED = [b for b in ALL if b.lang == "bash" and b.marker == "skip"]


def test_the_readme_has_runnable_blocks():
    shell = [b for b in ALL if b.lang == "bash"]
    assert len(shell) >= 8 and all(b.marker in (None, "skip", "needs") for b in shell)
    assert all(b.arg for b in SKIPPED), "a skipped block says why"


@pytest.mark.parametrize("block", SKIPPED, ids=_id)
def test_illustrative_blocks_are_skipped_visibly(block):
    pytest.skip(f"README.md:{block.line}: {block.arg}")


def _script(work: Path, root: Path) -> tuple[str, list[str]]:
    """One bash script of every runnable block, each announced so a failure names its line."""
    parts, skipped = ["set -euo pipefail"], []
    for b in ALL:
        if b.marker == "file":
            (work / b.arg).write_text(b.body)
            continue
        if b.lang != "bash" or b.marker == "skip":
            continue
        if b.marker == "needs" and shutil.which(b.arg) is None:
            skipped.append(f"README.md:{b.line} (needs {b.arg})")
            continue
        body = b.body.replace("/data/my-corpus", str(root)).replace("../shared/", f"{SHARED_DATA.parent}/")
        parts.append(f"echo '### README.md:{b.line}'\n{body}")
    return "\n".join(parts) + "\n", skipped


def test_every_shell_block_runs_as_written(tmp_path, shared_data):
    work, root = tmp_path / "work", tmp_path / "root"
    work.mkdir()
    (work / "sample").symlink_to(REPO / "sample")
    script, skipped = _script(work, root)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ASSAY_ROOT", None)
    out = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=1200
    )
    ran = re.findall(r"^### (README\.md:\d+)$", out.stdout, re.M)
    assert out.returncode == 0, (
        f"failed in the block after {ran[-1] if ran else 'the start'}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    # what the blocks promise is really there
    assert (root / "mixtures" / "edu" / "manifest.json").exists() and (
        work / "forecast.png"
    ).stat().st_size > 10_000
    assert (work / "train" / "edu").is_dir() and (work / "models" / "quality.bin").exists()
    assert "Traceback" not in out.stdout + out.stderr and "at chance" not in out.stderr
    for line in skipped:
        print(f"skipped {line}")

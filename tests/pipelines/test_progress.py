"""Progress counts documents, not only work units, and reaches logs when there is no terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO


def test_progress_lines_count_documents_without_a_terminal(tmp_path):
    root = tmp_path / "root"
    env = {**os.environ, "ASSAY_PROGRESS_SECONDS": "0"}
    base = [sys.executable, "-P", "-m", "assay"]
    out = subprocess.run(
        [*base, "ingest", str(REPO / "sample" / "speeches"), "--root", str(root), "--shard-rows", "100"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [*base, "annotate", "--scorer", "stats", "--root", str(root), "--batch-size", "50"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("annotate stats: ")]
    assert lines, out.stdout
    last = re.match(r"annotate stats: (\d+)/(\d+) units, ([\d,]+)/([\d,]+) docs", lines[-1])
    assert last and last[1] == last[2] and last[3] == last[4] == "512", lines[-1]
    # datatrove's own log lines stay in the log file
    assert "Total Runtime" not in out.stdout + out.stderr
    assert list((root / ".assay" / "logs").glob("annotate-*/executor.log"))

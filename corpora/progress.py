"""Progress of a work unit while it runs: documents (and bytes) done so far.

The executor points a unit at its progress file before calling it; the unit calls `report` as
it goes (at most once a second reaches the disk) and the calling process adds the files up to
draw its progress bar. A unit run outside an executor reports nowhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from assay.corpora.atomic import write_json_atomic

_target: Path | None = None
_last_write = 0.0
EVERY_SECONDS = 1.0


def start(path: str | Path | None) -> None:
    global _target, _last_write
    _target = Path(path) if path else None
    _last_write = 0.0


def report(docs: int, nbytes: int = 0, final: bool = False) -> None:
    global _last_write
    if _target is None:
        return
    now = time.monotonic()
    if final or now - _last_write >= EVERY_SECONDS:
        write_json_atomic(_target, {"docs": int(docs), "bytes": int(nbytes)}, indent=None)
        _last_write = now


def read_all(folder: Path) -> tuple[int, int]:
    """(documents, bytes) over every unit's latest report in the folder."""
    docs = nbytes = 0
    for path in folder.glob("p*.json") if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now: the next poll reads it
            continue
        docs += record.get("docs", 0)
        nbytes += record.get("bytes", 0)
    return docs, nbytes

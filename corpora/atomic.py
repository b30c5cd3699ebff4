"""Atomic file writes: write under a temporary name in the same folder, then rename.

A killed process leaves either the old file or the new one, never half a file. Leftover
temporaries carry the suffix ``.tmp-assay`` so a rerun can sweep them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp-assay"


def temp_path_for(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n").encode())


def sweep_temporaries(folder: str | os.PathLike) -> int:
    """Remove temporaries a killed run left behind; returns how many."""
    folder = Path(folder)
    if not folder.exists():
        return 0
    n = 0
    for p in folder.rglob(f"*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        n += 1
    return n

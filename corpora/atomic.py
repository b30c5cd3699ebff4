"""Atomic file writes: write under a temporary name in the same folder, then rename.

A killed process leaves either the old file or the new one, never half a file. Leftover
temporaries carry the suffix ``.tmp-assay`` so a rerun can sweep them.
"""

from __future__ import annotations

import errno
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
    # a full disk is one clear error from every stage that writes a manifest or record
    with disk_full_is_clear(Path(path).parent), atomic_path(path) as tmp:
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


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """The device under a corpus root ran out of space; the message says what to do."""

    user_facing = True  # the CLI prints it as one line

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextmanager
def disk_full_is_clear(where: str | os.PathLike) -> Iterator[None]:
    """Turn "no space left on device" (and a full quota) into one clear DiskFull line.

    Every write is atomic, so what the run left is whole files and temporaries that the rerun
    sweeps: freeing space and running the same command again resumes.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE or isinstance(exc, DiskFull):
            raise
        raise DiskFull(
            f"{where}: no space left on the device ({exc.filename or exc.strerror}); "
            "free some space and rerun the same command, it resumes"
        ) from None

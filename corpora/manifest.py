"""manifest.json: what a corpus root holds (shards, checksums, annotation versions, runs).

The manifest is the root's source of truth: the catalog's views list the files it names, and a
directory listing is needed only to look for drift (`assay status --check`).

Concurrent writers (two `assay annotate` runs with different scorers on one root) are safe:
every write takes an exclusive lock on ``ROOT/.assay/manifest.lock``. `update_manifest(root, fn)`
runs a whole read-modify-write under the lock. `save_manifest` also takes it, and merges: a
manifest from `load_manifest` remembers what it was loaded from, so changes another process
saved in between (a new annotation set, an appended run) are kept, not overwritten.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from assay.corpora.atomic import write_bytes_atomic
from assay.corpora.storage import is_url, join, url_fs

FORMAT = "assay-corpus/1"
LOCK_NAME = "manifest.lock"


def manifest_path(root: str | Path) -> Path:
    return Path(root) / "manifest.json"


def local_state_dir(root: str | Path) -> Path:
    """Where a root keeps local state (locks, and for a URL root its catalog): ROOT/.assay, or
    for a URL root a folder per URL under $ASSAY_CACHE (default ~/.cache/assay/roots)."""
    if not is_url(root):
        return Path(root) / ".assay"
    import hashlib

    base = Path(os.environ.get("ASSAY_CACHE") or Path.home() / ".cache" / "assay") / "roots"
    return base / hashlib.sha256(str(root).rstrip("/").encode()).hexdigest()[:16]


def read_manifest_bytes(root: str | Path) -> bytes | None:
    """The manifest's bytes, or None when the root has none."""
    if is_url(root):
        fs, path = url_fs(root)
        try:
            return fs.cat_file(path + "/manifest.json")
        except FileNotFoundError:
            return None
    try:
        return manifest_path(root).read_bytes()
    except FileNotFoundError:
        return None


class Manifest(dict):
    """A manifest as loaded: a plain dict that also keeps the JSON text it was read from, so that
    `save_manifest` can tell this process's changes from another's (a three-way merge)."""

    base_text: str | None = None


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT, "inputs": [], "shards": [], "quarantine": [], "annotations": {}, "runs": []}


def _dumps(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: indented JSON (orjson: a 100k-shard manifest in well under a second)."""
    import orjson

    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str) + b"\n"


def _parse(text: str | bytes, path: str | Path) -> dict[str, Any]:
    import orjson

    manifest = orjson.loads(text)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not an Assay corpus manifest (format {manifest.get('format')!r})")
    return manifest


def load_manifest(root: str | Path) -> Manifest:
    raw = read_manifest_bytes(root)
    if raw is None:
        out = Manifest(empty_manifest())
        out.base_text = json.dumps(empty_manifest())
        return out
    out = Manifest(_parse(raw, join(root, "manifest.json")))
    out.base_text = raw.decode()
    return out


def require_root(root: str | Path) -> Path:
    """The root as a Path (a URL root stays a string), or a clear error when it is not a corpus root."""
    if read_manifest_bytes(root) is None:
        raise FileNotFoundError(
            f"{root}: not a corpus root (no manifest.json); create one with `assay ingest INPUTS --root {root}`"
        )
    return str(root).rstrip("/") if is_url(root) else Path(root)


# Locks this process holds, by lock file: flock is per open file, so a nested acquisition from the
# same process (update_manifest calling save_manifest) must not open the file again.
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.RLock()


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl.flock) on `path`, re-entrant within this process."""
    import fcntl

    path = Path(path)
    key = str(path.resolve())
    with _HELD_GUARD:
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _HELD[key] = 1
            try:
                yield
            finally:
                _HELD.pop(key, None)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


@contextmanager
def manifest_lock(root: str | Path) -> Iterator[None]:
    """Hold the root's manifest lock (other writers wait; readers never do). For a URL root the
    lock is local to this machine: writers on other machines are not excluded."""
    with file_lock(local_state_dir(root) / LOCK_NAME):
        yield


_MISSING = object()


def merge3(base: Any, ours: Any, theirs: Any) -> Any:
    """Our changes from `base` applied on top of `theirs` (another writer's save).

    Dicts merge key by key; a list both sides only appended to keeps both appendices (theirs
    first); any other conflict goes our way. `_MISSING` stands for an absent key."""
    if ours == base:
        return theirs
    if theirs == base or theirs is _MISSING or ours is _MISSING:
        return ours
    if isinstance(ours, dict) and isinstance(theirs, dict):
        base_d = base if isinstance(base, dict) else {}
        out = dict(theirs)
        for k in base_d.keys() - ours.keys():  # we removed it
            out.pop(k, None)
        for k, v in ours.items():
            merged = merge3(base_d.get(k, _MISSING), v, theirs.get(k, _MISSING))
            if merged is _MISSING:
                out.pop(k, None)
            else:
                out[k] = merged
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and isinstance(base, list):
        n = len(base)
        if ours[:n] == base and theirs[:n] == base:
            return theirs + ours[n:]
    return ours


def _write(root: str | Path, manifest: dict[str, Any]) -> None:
    if is_url(root):  # one PUT: object stores replace an object whole, readers see old or new
        fs, path = url_fs(root)
        fs.pipe_file(path + "/manifest.json", _dumps(manifest))
    else:
        write_bytes_atomic(manifest_path(root), _dumps(manifest))
    if isinstance(manifest, Manifest):
        manifest.base_text = None  # set by the caller, which knows what was written


def save_manifest(root: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest under the lock; changes saved by another process since `manifest` was
    loaded are merged in (see `merge3`). Returns what was written."""
    with manifest_lock(root):
        base_text = getattr(manifest, "base_text", None)
        out: dict[str, Any] = dict(manifest)
        raw = read_manifest_bytes(root) if base_text is not None else None
        if raw is not None:
            current = raw.decode()
            if current != base_text:
                out = merge3(
                    _parse(base_text, "base"), dict(manifest), _parse(current, join(root, "manifest.json"))
                )
        _write(root, out)
        if isinstance(manifest, Manifest):
            # what this object now derives from: a later save applies only the changes made after it
            manifest.base_text = _dumps(dict(manifest)).decode()
        return out


def update_manifest(
    root: str | Path, fn: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any]:
    """Read, change and write the manifest under the lock: `fn` changes it in place (or returns
    a new one). Returns the manifest written."""
    with manifest_lock(root):
        manifest = load_manifest(root)
        new = fn(manifest)
        out = dict(new if new is not None else manifest)
        _write(root, out)
        return out


def manifest_fingerprint(root: str | Path) -> str:
    """A hash of the manifest's bytes: what the catalog compares to know it is current."""
    import hashlib

    return hashlib.sha256(read_manifest_bytes(root) or b"").hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions recorded with every run, so a result can be traced to the code that made it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("assay", "datatrove", "pyarrow", "duckdb", "polars"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out

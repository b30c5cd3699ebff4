"""Paths that are either local folders or fsspec URLs (`s3://bucket/corpus`).

A local root is a `Path` and is written with a temporary name and a rename. A URL root stays a
string (Path would fold "s3://" into "s3:/") and is written one whole object at a time: an object
store has no rename, but replaces an object whole, so a reader sees the old object or the new one.

Commands that need a local file system for their intermediate files (ingest's staging, dedup's
stages, selection's work database) run on a *mirror*: a local folder under $ASSAY_CACHE holding
what the URL root's manifest commits (`sync_mirror`); the new files are then uploaded and the
manifest, written last, commits them (`publish_mirror`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa


def is_url(root: str | Path) -> bool:
    """A root on object storage or another fsspec filesystem (s3://bucket/corpus), not a folder."""
    return "://" in str(root)


def url_fs(root: str | Path):
    """(fsspec filesystem, path inside it) for a URL; credentials and the endpoint come from the
    usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""
    import fsspec

    return fsspec.core.url_to_fs(str(root).rstrip("/"))


def join(root: str | Path, *parts: str) -> str:
    """A path under the root as a string: a URL for a URL root, else an absolute local path."""
    base = str(root).rstrip("/") if is_url(root) else str(Path(root).resolve())
    return "/".join([base, *parts])


def as_root(root: str | Path) -> Path | str:
    """The root as commands hold it: a URL string without a trailing slash, or a Path."""
    return str(root).rstrip("/") if is_url(root) else Path(root)


def sub(root: Path | str, *parts: str) -> Path | str:
    """A path under a root held by `as_root` (same kind as the root)."""
    return "/".join([root, *parts]) if isinstance(root, str) else root.joinpath(*parts)


def exists(path: Path | str) -> bool:
    if isinstance(path, str) and is_url(path):
        fs, inner = url_fs(path)
        return fs.exists(inner)
    return Path(path).exists()


def open_read(path: Path | str):
    """A binary file object for reading, local or remote."""
    if isinstance(path, str) and is_url(path):
        fs, inner = url_fs(path)
        return fs.open(inner, "rb")
    return open(path, "rb")


def rmtree(folder: Path | str) -> None:
    if isinstance(folder, str) and is_url(folder):
        fs, inner = url_fs(folder)
        if fs.exists(inner):
            fs.rm(inner, recursive=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def write_table(table: pa.Table, path: Path | str) -> None:
    """One Parquet file: renamed into place locally, one PUT of the whole object remotely."""
    from assay.corpora.shards import write_table_atomic, write_table_url

    if isinstance(path, str) and is_url(path):
        write_table_url(table, path)
    else:
        write_table_atomic(table, Path(path))


def sha256(path: Path | str) -> str:
    from assay.corpora.shards import sha256_file, sha256_url

    return sha256_url(path) if isinstance(path, str) and is_url(path) else sha256_file(Path(path))


def duckdb_connect(
    root: str | Path, database: str | Path = ":memory:", read_only: bool = False, config: dict | None = None
):
    """A DuckDB connection that can read the root's files: for a URL root with its fsspec
    filesystem registered (DuckDB's httpfs extension would be downloaded, impossible offline)."""
    import duckdb

    con = duckdb.connect(str(database), read_only=read_only, config=config or {})
    if is_url(root):
        fs, _ = url_fs(root)
        if not con.filesystem_is_registered(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]):
            con.register_filesystem(fs)
    return con


def mirror_dir(url: str) -> Path:
    from assay.corpora.manifest import local_state_dir

    return local_state_dir(url) / "mirror"


ALL_PARTS = ("docs", "quarantine", "annotations")


def committed_files(manifest: dict, parts: tuple[str, ...] = ALL_PARTS) -> dict[str, str | None]:
    """Root-relative path -> sha256 of the files a manifest commits, of the given parts: docs
    shards, quarantine shards, annotation sets (with extractors' triple tables)."""
    wanted: dict[str, str | None] = {}
    for key, part in (("shards", "docs"), ("quarantine", "quarantine")):
        if part in parts:
            wanted.update((s["name"], s.get("sha256")) for s in manifest.get(key, []))
    if "annotations" in parts:
        for set_name, entry in manifest.get("annotations", {}).items():
            base = "triples" if entry.get("kind") == "extractor" else "annotations"
            for key, e in entry.get("shards", {}).items():
                rel = f"{base}/{key}" if "/" in key else f"{base}/{set_name}/{key}"
                wanted[rel] = e.get("sha256")
    return wanted


def sync_mirror(url: str, parts: tuple[str, ...] = ("docs", "annotations"), fresh_ok: bool = False) -> Path:
    """A local copy of the `parts` a URL root's manifest commits (see `committed_files`), then
    of the manifest, under $ASSAY_CACHE. A file already there with the manifest's checksum is not fetched
    again; committed-looking files the manifest does not name are removed. Hidden entries (a
    killed ingest's `docs/.staging`, temporaries) are kept, so a run on the mirror can resume.

    `fresh_ok`: a URL with no manifest yet (a new root for `assay ingest`) gives an empty mirror.
    The mirror's manifest.json is then the root's as it was: the base `publish_mirror` merges on."""
    from assay.corpora.atomic import atomic_path, write_bytes_atomic
    from assay.corpora.manifest import _parse, read_manifest_bytes
    from assay.corpora.shards import sha256_file

    raw = read_manifest_bytes(url)
    dest = mirror_dir(url)
    if raw is None:
        if not fresh_ok:
            raise FileNotFoundError(f"{url}: not a corpus root (no manifest.json)")
        (dest / "manifest.json").unlink(missing_ok=True)
        manifest: dict = {}
    else:
        manifest = _parse(raw, f"{url}/manifest.json")
    wanted = committed_files(manifest, parts)
    every = committed_files(manifest)
    for folder in ("docs", "quarantine", "annotations", "triples"):
        if (dest / folder).is_dir():
            for p in (dest / folder).rglob("*"):
                rel = p.relative_to(dest)
                if (
                    p.is_file()
                    and not any(part.startswith(".") for part in rel.parts)
                    and rel.as_posix() not in every
                ):
                    p.unlink()
    fs, inner = url_fs(url)
    # checksums of the files already fetched, by (size, mtime): a resync does not re-read them
    index_path = dest / ".assay" / "mirror-index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    for rel, sha in wanted.items():
        local = dest / rel
        if local.is_file() and sha is not None:
            st = local.stat()
            known = index.get(rel)
            if known and known[:2] == [st.st_size, st.st_mtime_ns]:
                if known[2] == sha:
                    continue
            elif sha256_file(local) == sha:
                index[rel] = [st.st_size, st.st_mtime_ns, sha]
                continue
        with atomic_path(local) as tmp:
            fs.get_file(f"{inner}/{rel}", str(tmp))
        st = local.stat()
        index[rel] = [st.st_size, st.st_mtime_ns, sha256_file(local)]
    index = {k: v for k, v in index.items() if k in every}
    write_bytes_atomic(index_path, json.dumps(index).encode())
    dest.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        write_bytes_atomic(dest / "manifest.json", raw)  # last: the copy is complete
    return dest


# Run state a killed run leaves on the mirror: valid only against the manifest it started from.
_RUN_STATE = ("docs/.staging", ".assay/units", ".assay/work")


def begin_mirror(url: str, parts: tuple[str, ...], fresh_ok: bool = False) -> tuple[Path, bytes]:
    """The mirror a command that writes into `url` runs on, and the root's manifest bytes it
    starts from (b"" for a new root): what `publish_mirror` merges against.

    When an earlier run on the mirror was killed and the root's manifest has not changed since
    it began, the mirror is kept as it is, so that run resumes (and a run that finished locally
    is published). Otherwise the mirror is synced afresh and a killed run's state is dropped:
    it refers to files the sync may have replaced or removed."""
    from assay.corpora.atomic import write_bytes_atomic
    from assay.corpora.manifest import _parse, read_manifest_bytes

    mirror = mirror_dir(url)
    marker = mirror / ".assay" / "mirror-base"
    current = read_manifest_bytes(url) or b""
    if marker.is_file() and marker.read_bytes() == current:
        if current:  # the parts this command needs that the killed run did not (no removals)
            fetch_missing(mirror, url, committed_files(_parse(current, url), parts))
        return mirror, current
    for state in _RUN_STATE:
        shutil.rmtree(mirror / state, ignore_errors=True)
    sync_mirror(url, parts, fresh_ok)
    base = (mirror / "manifest.json").read_bytes() if (mirror / "manifest.json").is_file() else b""
    write_bytes_atomic(marker, base)
    return mirror, base


def fetch_missing(mirror: Path, url: str, wanted: dict[str, str | None]) -> None:
    """Fetch the wanted files the mirror does not have."""
    from assay.corpora.atomic import atomic_path

    fs, inner = url_fs(url)
    for rel in wanted:
        if not (mirror / rel).is_file():
            with atomic_path(mirror / rel) as tmp:
                fs.get_file(f"{inner}/{rel}", str(tmp))


class PublishConflict(ValueError):
    """Another writer committed a file of the same name since this run began."""


def publish_mirror(mirror: Path, url: str, base: bytes) -> dict:
    """Upload the files this run added or changed on the mirror (relative to `base`, the root's
    manifest it started from), then commit the mirror's manifest there, merged with whatever
    another writer committed since `base`. A file another writer committed under one of the same
    names meanwhile is never overwritten: that is a conflict, and a rerun starts afresh from the
    root as it is then. Returns the manifest written."""
    from assay.corpora.manifest import Manifest, _parse, load_manifest, read_manifest_bytes, save_manifest

    local = load_manifest(mirror)
    before = committed_files(_parse(base, url)) if base else {}
    current = read_manifest_bytes(url)
    there = committed_files(_parse(current, url)) if current is not None else {}
    mine = {rel: sha for rel, sha in committed_files(local).items() if before.get(rel, "absent") != sha}
    clash = sorted(rel for rel in mine if there.get(rel, "absent") != before.get(rel, "absent"))
    if clash:
        (mirror / ".assay" / "mirror-base").unlink(missing_ok=True)  # the rerun resyncs
        raise PublishConflict(
            f"{url}: another writer committed {clash[0]} (and {len(clash) - 1} more) while this run "
            "was working; nothing was overwritten, run the command again"
        )
    fs, inner = url_fs(url)
    for rel in mine:
        fs.put_file(str(mirror / rel), f"{inner}/{rel}")
    out = Manifest(dict(local))
    # merged against the manifest the mirror started from: changes committed since are kept
    out.base_text = base.decode() if base else None
    written = save_manifest(url, out)
    (mirror / ".assay" / "mirror-base").unlink(missing_ok=True)
    return written

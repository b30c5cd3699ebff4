"""What an ingest input names: its files, and the stable name each file's derived ids start with.

An input is a local path, folder or glob, any fsspec URL (s3://, memory://, ...), or
`hf:PATH[:split]`: a Hugging Face dataset saved with `save_to_disk` (Arrow files listed in
`state.json`) or a hub-style folder of data files (`data/train-00000-of-00002.parquet`).
Files found in folders or globs that Assay cannot read are skipped and reported, never silently.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from assay.corpora.readers import detect_format, format_of

# What save_to_disk writes beside its Arrow files; read as descriptions, not as records.
HF_METADATA = ("state.json", "dataset_info.json", "dataset_dict.json")


@dataclass(frozen=True)
class InputFile:
    path: str  # what is opened: a local path or a full fsspec URL
    key: str  # derived ids are `<key>:<offset>`
    source: str | None = None  # default `source` (a Hugging Face dataset: its folder name)


@dataclass
class Inputs:
    files: list[InputFile] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: found but not readable


def expand_inputs(specs: list[str], id_prefix: str | None = None) -> Inputs:
    """The files named by paths, folders, globs, URLs and hf: specs, in order, de-duplicated."""
    out = Inputs()
    for spec in specs:
        if spec.startswith("hf:") and not spec.startswith("hf://"):  # hf:// is the Hub's fsspec URL
            _expand_hf(spec, id_prefix, out)
        else:
            _expand_path(spec, id_prefix, out)
    unique: dict[str, InputFile] = {}
    for f in out.files:
        unique.setdefault(f.path, f)
    out.files = list(unique.values())
    return out


def input_key(fs, path: str, base: str, id_prefix: str | None) -> str:
    """The anchor of a file's derived ids (see the README's Documents table).

    With an id prefix: `<prefix>/<path relative to the folder or glob that named it>`. Otherwise
    a local file's path relative to the current directory when it lies under it, else its
    absolute path; a remote file's URL.
    """
    if id_prefix:
        rel = PurePosixPath(path).relative_to(base) if path != base else PurePosixPath(path).name
        return f"{id_prefix.rstrip('/')}/{rel}"
    if not _is_local(fs):
        return fs.unstrip_protocol(path)
    absolute, cwd = os.path.abspath(path), os.getcwd()
    if os.path.commonpath([absolute, cwd]) == cwd:
        return PurePosixPath(os.path.relpath(absolute, cwd)).as_posix()
    return PurePosixPath(absolute).as_posix()


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _url(fs, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _add(out: Inputs, fs, path: str, base: str, id_prefix: str | None, source: str | None = None) -> None:
    out.files.append(InputFile(_url(fs, path), input_key(fs, path, base, id_prefix), source))


# ---------------------------------------------------------------- paths, folders, globs


def _expand_path(spec: str, id_prefix: str | None, out: Inputs) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(spec)
    if any(ch in path for ch in "*?["):
        base = _glob_base(path)
        found, skipped = len(out.files), len(out.skipped)
        for m in sorted(fs.glob(path)):
            if fs.isdir(m):
                _walk(fs, m, base, id_prefix, out)
            else:
                _add_found(fs, m, base, id_prefix, out)
        if len(out.files) == found:
            raise FileNotFoundError(f"{spec}: matched no input files{_unreadable(out, skipped)}")
    elif fs.isdir(path):
        found, skipped = len(out.files), len(out.skipped)
        _walk(fs, path, path, id_prefix, out)
        if len(out.files) == found:
            raise FileNotFoundError(f"{spec}: no input files in this folder{_unreadable(out, skipped)}")
    elif fs.exists(path):
        name = PurePosixPath(path).name
        parent = str(PurePosixPath(path).parent)
        if name in HF_METADATA and fs.exists(f"{parent}/state.json"):
            raise ValueError(f"{spec}: save_to_disk metadata, not records; ingest the folder: hf:{parent}")
        detect_format(path)  # a file named explicitly must be readable: a clear error otherwise
        _add(out, fs, path, parent, id_prefix)
    else:
        raise FileNotFoundError(f"{spec}: no such file, directory or glob match")


def _glob_base(path: str) -> str:
    """The folder a glob starts in: its components before the first wildcard."""
    parts = PurePosixPath(path).parts
    first_wild = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    return str(PurePosixPath(*parts[:first_wild])) if first_wild else "."


def _walk(fs, folder: str, base: str, id_prefix: str | None, out: Inputs) -> None:
    """Every file under folder; a save_to_disk dataset inside it is read through its state.json."""
    files = sorted(fs.find(folder))
    datasets = {
        str(PurePosixPath(f).parent): _saved_dataset_files(fs, str(PurePosixPath(f).parent))[0]
        for f in files
        if PurePosixPath(f).name == "state.json"
    }
    for f in files:
        parent, name = str(PurePosixPath(f).parent), PurePosixPath(f).name
        if parent in datasets:
            if name == "state.json":
                source = _dataset_name(fs, parent)
                for d in datasets[parent]:
                    _add(out, fs, d, base, id_prefix, source)
            elif name not in HF_METADATA and f not in datasets[parent]:
                out.skipped.append({"path": _url(fs, f), "reason": "not listed in its dataset's state.json"})
        elif name == "dataset_dict.json" and all(
            f"{parent}/{s}" in datasets for s in _read_json(fs, f).get("splits", [])
        ):
            continue  # a DatasetDict: each split is read through its own state.json
        else:
            _add_found(fs, f, base, id_prefix, out)


def _add_found(
    fs, path: str, base: str, id_prefix: str | None, out: Inputs, source: str | None = None
) -> None:
    """A file a folder or glob matched: read it when Assay can, else report it as skipped."""
    if format_of(path) is None:
        out.skipped.append(
            {"path": _url(fs, path), "reason": "not a JSONL, text, Parquet, Arrow or WARC file"}
        )
    else:
        _add(out, fs, path, base, id_prefix, source)


def _unreadable(out: Inputs, before: int) -> str:
    n = len(out.skipped) - before
    return f" ({n} file(s) of formats Assay does not read, e.g. {out.skipped[before]['path']})" if n else ""


# ---------------------------------------------------------------- hf:PATH[:split]


def _expand_hf(spec: str, id_prefix: str | None, out: Inputs) -> None:
    import fsspec

    location, split = _parse_hf(spec[3:])
    fs, root = fsspec.core.url_to_fs(location)
    root = root.rstrip("/") or "/"
    if not fs.isdir(root):
        raise FileNotFoundError(
            f"{spec}: no such folder (hf: reads a dataset saved with save_to_disk or a downloaded "
            "hub-style folder of data files; Assay downloads nothing)"
        )
    source = _dataset_name(fs, root)
    found = len(out.files)
    if fs.exists(f"{root}/dataset_dict.json"):
        splits = _read_json(fs, f"{root}/dataset_dict.json").get("splits", [])
        for s in _chosen(spec, splits, split):
            for d in _saved_dataset_files(fs, f"{root}/{s}")[0]:
                _add(out, fs, d, root, id_prefix, source)
    elif fs.exists(f"{root}/state.json"):
        data, saved_split = _saved_dataset_files(fs, root)
        if split is not None and saved_split not in (None, split):
            raise ValueError(f"{spec}: this dataset was saved as split {saved_split!r}, not {split!r}")
        for d in data:
            _add(out, fs, d, root, id_prefix, source)
    else:
        for files in _hub_splits(spec, fs, root, split).values():
            for f in files:
                _add_found(fs, fsspec.core.url_to_fs(f)[1], root, id_prefix, out, source)
    if len(out.files) == found:
        raise FileNotFoundError(f"{spec}: no data files")


def _parse_hf(rest: str) -> tuple[str, str | None]:
    """`PATH[:split]`: a split name is a final `:name` without slashes (URLs keep their `://`)."""
    head, sep, tail = rest.rpartition(":")
    if sep and head and re.fullmatch(r"[\w.-]+", tail) and not os.path.isdir(rest):
        return head, tail
    return rest, None


def _chosen(spec: str, splits: list[str], split: str | None) -> list[str]:
    if split is None:
        return list(splits)
    if split not in splits:
        raise ValueError(f"{spec}: no split {split!r}; the dataset has {', '.join(splits) or 'no splits'}")
    return [split]


def _saved_dataset_files(fs, folder: str) -> tuple[list[str], str | None]:
    """The Arrow files of a save_to_disk Dataset in their order, and the split it was saved as."""
    state = _read_json(fs, f"{folder}/state.json")
    files = [f"{folder}/{d['filename']}" for d in state.get("_data_files", [])]
    return files, state.get("_split")


def _hub_splits(spec: str, fs, root: str, split: str | None) -> dict[str, list[str]]:
    """Data files per split, by the Hub's own naming rules (datasets' data file patterns)."""
    from datasets.data_files import DataFilesDict, get_data_patterns
    from datasets.exceptions import DataFilesNotFoundError

    location = _url(fs, root)
    try:
        patterns = get_data_patterns(location)
    except (FileNotFoundError, DataFilesNotFoundError) as exc:
        raise FileNotFoundError(f"{spec}: no data files ({exc})") from None
    found = {str(k): list(v) for k, v in DataFilesDict.from_patterns(patterns, base_path=location).items()}
    return {s: found[s] for s in _chosen(spec, list(found), split)}


def _dataset_name(fs, folder: str) -> str:
    """A dataset's name: its folder's, or its DatasetDict's folder for a split folder."""
    parent = str(PurePosixPath(folder).parent)
    holder = parent if fs.exists(f"{parent}/dataset_dict.json") else folder
    return PurePosixPath(holder).name or "dataset"


def _read_json(fs, path: str) -> dict:
    with fs.open(path, "rb") as f:
        try:
            return json.load(f)
        except ValueError as exc:
            raise ValueError(f"{_url(fs, path)}: not valid JSON ({exc})") from None

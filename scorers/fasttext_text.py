"""What the fastText scorers share: text normalisation, model loading, names and file hashes.

fastText reads one document per line. Its Python ``predict`` rejects a string containing ``\\n``
(it appends its own end-of-line), and in a training file a newline would end the document. So
every Assay fastText path turns a document into one line the same way, ``one_line``: each ``\\n``
becomes a space. fastText already splits words on spaces, tabs, ``\\r``, ``\\v``, ``\\f`` and NUL,
so nothing else changes the tokens it sees; a document is the same words on one line.

The binding is ``fasttext-community`` 0.11.9: it trains without NaN at one or two threads and
predicts under numpy 2 (other packages install the same ``fasttext`` module; the Makefile
installs this one last so it wins).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

LABEL_PREFIX = "__label__"


def one_line(text: str) -> str:
    """A document as one fastText input line: newlines become spaces, nothing else changes."""
    return text.replace("\n", " ")


def has_words(text: str | None) -> bool:
    """False for null, empty or whitespace-only text: fastText would see no word, only end-of-line."""
    return bool(text) and not text.isspace()


def texts_of(batch: pa.RecordBatch) -> list[str | None]:
    """The ``text`` column as Python strings (fastText needs them), with a clear error when absent."""
    if "text" not in batch.schema.names:
        raise KeyError(f"batch has no 'text' column (columns: {', '.join(batch.schema.names)})")
    return batch.column("text").to_pylist()


def load_model(path: str | os.PathLike) -> Any:
    """Load a fastText ``.bin``/``.ftz`` with the installed binding; the error names the file."""
    import fasttext

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fastText model file")
    try:
        return fasttext.load_model(str(path))
    except ValueError as e:
        raise ValueError(f"{path}: not a fastText model ({e})") from e


def sanitise(name: str) -> str:
    """Lower-case ``[a-z0-9_]`` only, so the name works as a folder and an unquoted SQL column."""
    out = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    out = re.sub(r"_+", "_", out)
    if not out:
        raise ValueError(f"{name!r}: nothing left after keeping [a-z0-9_]; rename the file")
    return out if not out[0].isdigit() else f"m{out}"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def binding_version() -> str:
    """Which installed distribution the loaded ``fasttext`` extension came from, e.g.
    ``fasttext-community 0.11.9``: several ship the same module, so the file's hash decides."""
    import base64
    from importlib import metadata

    import fasttext_pybind

    so = Path(fasttext_pybind.__file__)
    digest = base64.urlsafe_b64encode(hashlib.sha256(so.read_bytes()).digest()).rstrip(b"=").decode()
    for dist in metadata.distributions():
        if "fasttext" not in (dist.metadata["Name"] or "").lower():
            continue
        for f in dist.files or ():
            if f.name == so.name and f.hash is not None and f.hash.value == digest:
                return f"{dist.metadata['Name']} {dist.version}"
    return f"unknown ({so.name})"

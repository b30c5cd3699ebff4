"""`betr`: Benchmark-Targeted Ranking (Mizrahi et al. 2025, arXiv 2507.12466; METHODS.md §3).

    assay annotate --scorer embed                 # document vectors (annotations/embed)
    assay annotate --scorer betr:core             # rank every embedded document against targets/core
    assay train betr core --top 0.10              # fastText: top 10 % by BETR score vs the rest
    assay annotate --scorer betr:core             # now the classifier's P(top) for every document

Every target example (the rows of ``targets/NAME.parquet``, embedded with the model of the
``embed`` set) ranks all embedded documents by cosine similarity, giving document j the rank
r_ij. The score is ``max_i v(r_ij)`` (default; the paper's choice, 62.2 vs 58.2 for the mean,
§3.1), i.e. the document's best rank over all targets, or ``mean_i v(r_ij)`` with ``agg=mean``.
``v=inv`` is 1/r (default), ``v=log`` is log2(1/r). With ``max`` every decreasing v gives the same
order, so v only changes the values. Only each target's top ``k`` documents are kept; a rank
beyond k counts as k+1, so documents outside every top-k share the floor v(k+1) (exact for
``max``; for ``mean`` exact when k is the corpus size).

Ranks are over the whole embedded corpus, so the ranking is computed once, when the scorer is
built: the document vectors stream from ``annotations/embed`` in chunks, each chunk's cosines
against a block of targets come from one matrix product (torch, CUDA when present), and a running
top-k per target keeps memory bound by the chunk size, never a documents x targets matrix. The
result is stored as ``models/betr_NAME_<key>.parquet`` (+ ``.json``), keyed by a hash of the
inputs (the targets' rows, the embed set's version and shard checksums, the options), so workers
and reruns load it; ``score`` looks documents up by id, so a score never depends on its batch.

Exact and deterministic: vectors are float16, so every product of two coordinates is a multiple
of 2^-48 and, with |cosine| <= 1, every partial sum of a dot product is exact in float64: the
cosine is the same bits in any order, chunking, BLAS or device. Ties rank the document that comes
first in the corpus (docs-shard order) first. ``tests/scorers/test_betr.py`` checks the chunked
top-k against a brute-force full ranking.

Columns (NAME sanitised): ``betr_NAME`` (float64: the score; after ``assay train betr NAME``, the
classifier's P(top) for every document with text), ``betr_NAME_rank`` (best rank over targets, null
outside every top-k or not embedded) and ``betr_NAME_benchmark`` (the benchmark of that target).

Options (``betr:NAME:k=v,...``): ``agg`` (max|mean), ``v`` (inv|log), ``k`` (top-k per target;
default max(100, ceil(documents / targets)), at most the corpus), ``splits`` (``train+dev``...;
default every split but ``test``: BETR targets training data, §3.1), ``per_benchmark`` (N or
``min``: at most that many examples per benchmark, chosen by hash of example_id, so that large
benchmarks do not dominate), ``sample`` (N or FRACTION of the embedded documents, by id hash, as
the paper ranks a sample of the pool), ``model`` (embed the targets with this model instead of
the embed set's; same dimension required), ``embeddings`` (the set, default ``embed``), ``mode``
(``auto``: the classifier when one was trained for this ranking, else the rank score; ``rank``;
``classifier``), ``chunk`` (documents per chunk, default 8,192).

Without a classifier, documents that have no vector get a null ``betr_NAME``. The compute
(``rank_documents``) imports only torch and numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from assay.scorers.embed import DEFAULT_MODEL, EmbeddingScorer, in_sample, parse_options, vectors_of

FORMAT = "assay.betr/1"
AGGS = ("max", "mean")
VALUES = ("inv", "log")
MODES = ("auto", "rank", "classifier")
_OPTIONS = ("agg", "v", "k", "splits", "per_benchmark", "sample", "model", "embeddings", "mode", "chunk")
DEFAULT_CHUNK = 8192
MIN_K = 100
BLOCK_BYTES = 256 << 20  # working memory of one (target block x candidates) step of the top-k


def value(ranks: np.ndarray, v: str) -> np.ndarray:
    """v(r): ``inv`` = 1/r, ``log`` = log2(1/r) (METHODS.md §3.1)."""
    r = np.asarray(ranks, dtype=np.float64)
    return 1.0 / r if v == "inv" else -np.log2(r)


def column_name(name: str) -> str:
    from assay.scorers.fasttext_text import sanitise

    return f"betr_{sanitise(name)}"


# --- the compute: a running top-k of cosine similarities per target (torch only) -------------


def rank_documents(
    targets: np.ndarray,
    doc_chunks: Iterable[np.ndarray],
    k: int,
    device: str = "cpu",
    block_bytes: int = BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Each target's top-k documents: ``(sims, index)``, both (targets, k), best first.

    ``targets`` (T, d) and each chunk (C, d) are float16 unit vectors; documents are numbered in
    the order the chunks give them. Cosines are exact (float64, see the module docstring); equal
    cosines rank the lower document index first. Memory: one chunk, the (T, k) running top-k, and
    blocks of targets x (k + C) candidates of about ``block_bytes``."""
    import torch

    t_all = torch.as_tensor(np.ascontiguousarray(targets, dtype=np.float16)).to(device, torch.float64)
    n_targets = t_all.shape[0]
    best_v = torch.full((n_targets, k), -math.inf, dtype=torch.float64, device=device)
    best_i = torch.full((n_targets, k), -1, dtype=torch.int64, device=device)  # ascending index order
    base = 0
    for chunk in doc_chunks:
        if len(chunk) == 0:
            continue
        d = torch.as_tensor(np.ascontiguousarray(chunk, dtype=np.float16)).to(device, torch.float64)
        n = d.shape[0]
        # bytes per candidate: float64 value, bool masks, int32 cumsum, topk scratch
        block = max(1, block_bytes // (32 * (k + n)))
        for lo in range(0, n_targets, block):
            hi = min(lo + block, n_targets)
            sims = t_all[lo:hi] @ d.T
            best_v[lo:hi], best_i[lo:hi] = _merge(best_v[lo:hi], best_i[lo:hi], sims, base, k)
        base += n
    if base < k:
        raise ValueError(f"betr: k={k} but only {base} documents to rank")
    # best first; a stable sort keeps the ascending index order among equal cosines
    order = torch.sort(best_v, dim=1, descending=True, stable=True).indices
    return (
        torch.gather(best_v, 1, order).cpu().numpy(),
        torch.gather(best_i, 1, order).cpu().numpy(),
    )


def _merge(run_v, run_i, sims, base: int, k: int):
    """The k best of the running top-k (entries in ascending index order) and a new chunk."""
    import torch

    cand = torch.cat([run_v, sims], dim=1)  # the chunk's indices all exceed the running ones
    kth = torch.topk(cand, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
    above = cand > kth
    tied = cand == kth
    need = k - above.sum(dim=1, keepdim=True)
    take = above | (tied & (torch.cumsum(tied, dim=1, dtype=torch.int32) <= need))  # lowest indices win
    pos = take.nonzero()[:, 1].view(-1, k)  # row-major: each row's k positions, in index order
    index = torch.where(pos < k, torch.gather(run_i, 1, pos.clamp(max=k - 1)), base + pos - k)
    return torch.gather(cand, 1, pos), index


def doc_scores(
    sims: np.ndarray, index: np.ndarray, n_docs: int, v: str = "inv", agg: str = "max"
) -> dict[str, np.ndarray]:
    """Per document that is in some target's top-k: its best rank, the target and cosine there,
    and its score. ``doc`` (ascending) says which document each row is."""
    n_targets, k = index.shape
    rank = np.broadcast_to(np.arange(1, k + 1), index.shape).ravel()
    target = np.repeat(np.arange(n_targets), k)
    doc = index.ravel()
    first = np.lexsort((target, rank, doc))  # per document: best rank, then the lowest target
    doc_sorted = doc[first]
    starts = np.flatnonzero(np.r_[True, doc_sorted[1:] != doc_sorted[:-1]])
    pick = first[starts]
    out = {
        "doc": doc[pick],
        "rank": rank[pick].astype(np.int64),
        "target": target[pick].astype(np.int32),
        "sim": sims.ravel()[pick],
    }
    floor = float(value(np.array([k + 1]), v)[0])
    if agg == "max":
        out["score"] = value(out["rank"], v)
    else:  # mean over every target; a rank beyond k counts as k+1
        dense = np.searchsorted(out["doc"], doc)
        total = np.bincount(dense, weights=value(rank, v), minlength=len(pick))
        count = np.bincount(dense, minlength=len(pick))
        out["score"] = (total + (n_targets - count) * floor) / n_targets
    out["floor"] = np.float64(floor)
    return out


# --- inputs: targets and the embed set -------------------------------------------------------


def read_targets(root: Path, name: str, splits: str | None, per_benchmark: str | None) -> pa.Table:
    """The target examples BETR uses: ``benchmark, split, example_id, text``, in file order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(root) / "targets" / f"{name}.parquet"
    if not path.is_file():
        raise ValueError(
            f"betr:{name}: no targets set {path}; register one with `assay targets add {name} ...`"
        )
    table = pq.read_table(path)
    missing = [c for c in ("benchmark", "split", "example_id", "text") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: lacks the targets columns {missing}")
    table = table.select(["benchmark", "split", "example_id", "text"])
    present = sorted(set(table.column("split").to_pylist()))
    if splits in (None, ""):
        keep = pc.invert(pc.equal(table.column("split"), "test"))
        what = "every split but test"
    elif splits == "all":
        keep, what = pc.is_valid(table.column("split")), "all"
    else:
        wanted = [s for s in splits.split("+") if s]
        unknown = [s for s in wanted if s not in present]
        if unknown:
            raise ValueError(f"betr:{name}: no split {unknown} in {path} (splits: {', '.join(present)})")
        keep, what = pc.is_in(table.column("split"), pa.array(wanted)), "+".join(wanted)
    table = table.filter(pc.fill_null(keep, False))
    texts = table.column("text").to_pylist()
    table = table.filter(pa.array([bool(t) and not t.isspace() for t in texts], pa.bool_()))
    if table.num_rows == 0:
        raise ValueError(
            f"betr:{name}: no target examples with text in splits {what} (splits in {path}: "
            f"{', '.join(present)}); pass splits=all to target test examples too"
        )
    if per_benchmark:
        table = _cap_per_benchmark(table, per_benchmark, name)
    return table


def _cap_per_benchmark(table: pa.Table, cap: str, name: str) -> pa.Table:
    benchmarks = table.column("benchmark").to_pylist()
    ids = table.column("example_id").to_pylist()
    counts: dict[str, int] = {}
    for b in benchmarks:
        counts[b] = counts.get(b, 0) + 1
    if cap == "min":
        limit = min(counts.values())
    elif cap.isdigit() and int(cap) > 0:
        limit = int(cap)
    else:
        raise ValueError(f"betr:{name}: per_benchmark must be a number or 'min' (got {cap!r})")
    keyed = sorted(
        range(len(ids)),
        key=lambda i: (
            benchmarks[i],
            hashlib.blake2b(f"{benchmarks[i]}\0{ids[i]}".encode(), digest_size=8).digest(),
        ),
    )
    keep, seen = [], {}
    for i in keyed:
        seen[benchmarks[i]] = seen.get(benchmarks[i], 0) + 1
        if seen[benchmarks[i]] <= limit:
            keep.append(i)
    return table.take(pa.array(sorted(keep)))  # file order, whatever the hash order


def _rows_digest(table: pa.Table) -> str:
    h = hashlib.sha256()
    for row in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        h.update("\0".join("" if x is None else str(x) for x in row).encode() + b"\1")
    return h.hexdigest()


def embed_entry(root: Path, embed_set: str, name: str) -> dict:
    """The manifest entry of the embed set, checked to cover every docs shard."""
    from assay.corpora.manifest import load_manifest, require_root

    manifest = load_manifest(require_root(root))
    entry = manifest["annotations"].get(embed_set)
    if entry is None:
        raise ValueError(
            f"betr:{name} ranks document embeddings: run `assay annotate --scorer embed` first "
            f"(no annotation set {embed_set!r} in {root})"
        )
    parts = [Path(s["name"]).name for s in manifest["shards"]]
    done = [p for p in parts if p in entry["shards"] and (root / "annotations" / embed_set / p).is_file()]
    if len(done) < len(parts):
        raise ValueError(
            f"betr:{name}: annotations/{embed_set} covers {len(done)} of {len(parts)} docs shards; "
            f"finish `assay annotate --scorer {entry.get('spec', embed_set)}` first"
        )
    return {**entry, "parts": parts}


def doc_vectors(
    root: Path, embed_set: str, parts: list[str], sample_below: int | None, chunk: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float16 vectors) of the embedded documents in the sample, in docs-shard order."""
    import pyarrow.parquet as pq

    for part in parts:
        f = pq.ParquetFile(root / "annotations" / embed_set / part)
        for batch in f.iter_batches(batch_size=chunk, columns=["id", "embedding"]):
            vectors, valid = vectors_of(batch.column(1))
            ids = np.asarray(batch.column(0).to_pylist(), dtype=object)[valid]
            keep = in_sample(list(ids), sample_below)
            yield list(ids[keep]), vectors[keep]


def _target_embedder(root: Path, entry: dict, model: str | None, device: str, name: str) -> EmbeddingScorer:
    """The embed set's own model (checked against its version), or the model the user named."""
    spec_arg = entry.get("spec", "embed").partition(":")[2]
    opts = parse_options(
        spec_arg, ("model", "sample", "max_tokens", "dtype", "batch_tokens"), "embed", "model"
    )
    kwargs: dict[str, Any] = {"model": model or opts.get("model", DEFAULT_MODEL), "device": device}
    if "max_tokens" in opts:
        kwargs["max_tokens"] = int(opts["max_tokens"])
    embedder = EmbeddingScorer(**kwargs)
    recorded = str(entry.get("version", "")).split("-")
    if model is None and (len(recorded) < 2 or recorded[1] != embedder.identity.short):
        raise ValueError(
            f"betr:{name}: the model behind annotations/embed (version {entry.get('version')}) is not "
            f"{embedder.model_path} (identity {embedder.identity.short}) any more: re-run "
            f"`assay annotate --scorer {entry.get('spec', 'embed')}`, or pass betr:{name}:model=PATH"
        )
    return embedder


# --- the scorer --------------------------------------------------------------------------------


@dataclass
class BetrScorer:
    """BETR score per document, from a corpus-wide ranking stored under ``models/``."""

    kind: ClassVar[str] = "scorer"
    target_set: str
    ranking_path: Path
    key: str
    classifier_path: Path | None = None
    floor: float = 0.0  # the score of an embedded document outside every top-k: v(k+1)
    embed_set: str = "embed"
    sample_below: int | None = None
    batch_size: int = 4096
    name: str = field(init=False)
    _lookup: Any = field(default=None, init=False, repr=False, compare=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.name = column_name(self.target_set)
        if self.classifier_path is not None:
            from assay.scorers.fasttext_text import file_sha256

            self._classifier_sha = file_sha256(self.classifier_path)

    @property
    def version(self) -> str:
        if self.classifier_path is None:
            return f"1-rank-{self.key[:12]}"
        return f"1-fasttext-{self._classifier_sha[:12]}-{self.key[:12]}"

    @property
    def input_columns(self) -> tuple[str, ...]:
        return ("id", "embedding") if self.classifier_path is None else ("id", "text", "embedding")

    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [
                (self.name, pa.float64()),
                (f"{self.name}_rank", pa.int64()),
                (f"{self.name}_benchmark", pa.string()),
            ]
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lookup": None, "_model": None}

    def meta(self) -> dict:
        return json.loads(self.ranking_path.with_suffix(".json").read_text())

    def ranking(self) -> pa.Table:
        """The stored ranking: one row per document in some target's top-k."""
        import pyarrow.parquet as pq

        if self._lookup is None:
            self._lookup = pq.read_table(self.ranking_path)
        return self._lookup

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow.compute as pc

        table = {c: self.ranking().column(c).combine_chunks() for c in ("id", "rank", "benchmark", "score")}
        ids = batch.column(batch.schema.get_field_index("id"))
        embedded = (
            batch.column(batch.schema.get_field_index("embedding")).is_valid().to_numpy(zero_copy_only=False)
        )
        population = embedded & in_sample(ids.to_pylist(), self.sample_below)
        at = pc.index_in(ids, value_set=table["id"])
        found = at.is_valid().to_numpy(zero_copy_only=False)
        where = pc.fill_null(at, 0)
        rank = pc.take(table["rank"], where).to_numpy(zero_copy_only=False)
        bench = pc.take(table["benchmark"], where)
        score = pc.take(table["score"], where).to_numpy(zero_copy_only=False).astype(np.float64)
        score = np.where(found, score, self.floor)
        if self.classifier_path is None:
            values = pa.array(score, pa.float64(), mask=~population)
        else:
            values = pa.array(self._p_top(batch.column(batch.schema.get_field_index("text")).to_pylist()))
        return pa.RecordBatch.from_arrays(
            [
                values,
                pa.array(rank, pa.int64(), mask=~found),
                pc.if_else(pa.array(found), bench, pa.scalar(None, pa.string())),
            ],
            schema=self.output_schema(),
        )

    def _p_top(self, texts: list[str | None]) -> pa.Array:
        from assay.scorers.fasttext_classifier import classifier_line, p_positive
        from assay.scorers.fasttext_text import has_words, load_model

        if self._model is None:
            self._model = load_model(self.classifier_path)
        out = np.full(len(texts), np.nan)
        rows = [i for i, t in enumerate(texts) if has_words(t)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            out[chunk] = p_positive(self._model, [classifier_line(texts[i]) for i in chunk])
        return pa.array(out, pa.float64(), mask=np.isnan(out))

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> BetrScorer:
        """``NAME[:k=v,...]``: load the ranking for these inputs, or compute and store it."""
        name, _, rest = (arg or "").partition(":")
        name = name.strip()
        if not name:
            raise ValueError("the betr scorer needs a targets set: --scorer betr:NAME (targets/NAME.parquet)")
        opts = parse_options(rest, _OPTIONS, f"betr:{name}")
        agg, v, mode = opts.get("agg", "max"), opts.get("v", "inv"), opts.get("mode", "auto")
        for option, got, allowed in (("agg", agg, AGGS), ("v", v, VALUES), ("mode", mode, MODES)):
            if got not in allowed:
                raise ValueError(f"betr:{name}: {option} must be one of {', '.join(allowed)} (got {got!r})")
        chunk = opts.get("chunk", str(DEFAULT_CHUNK))
        if not chunk.isdigit() or int(chunk) < 1:
            raise ValueError(f"betr:{name}: chunk must be a whole number >= 1 (got {chunk!r})")
        if "k" in opts and (not opts["k"].isdigit() or int(opts["k"]) < 1):
            raise ValueError(f"betr:{name}: k must be a whole number >= 1 (got {opts['k']!r})")
        root = Path(root)
        embed_set = opts.get("embeddings", "embed")
        entry = embed_entry(root, embed_set, name)
        targets = read_targets(root, name, opts.get("splits"), opts.get("per_benchmark"))
        sample_below = None
        if "sample" in opts:
            from assay.scorers.embed import sample_threshold

            sample_below = sample_threshold(opts["sample"], root, f"betr:{name}")
        inputs = {
            "format": FORMAT,
            "targets": _rows_digest(targets),
            "embed": {"set": embed_set, "version": entry["version"], "shards": entry["shards"]},
            "model": opts.get("model"),
            "agg": agg,
            "v": v,
            "k": opts.get("k"),
            "sample_below": sample_below,
        }
        key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
        stem = f"{column_name(name)}_{key[:12]}"
        ranking = root / "models" / f"{stem}.parquet"
        if not ranking.exists():
            _compute(
                root, name, targets, entry, embed_set, opts, settings, sample_below, int(chunk), ranking, key
            )
        classifier = classifier_path(root, name, key)
        if mode == "classifier" and not classifier.exists():
            raise ValueError(
                f"betr:{arg}: no classifier for this ranking ({classifier}); train it with "
                f"`assay train betr {arg.partition(':mode=')[0]}`"
            )
        use = classifier if mode != "rank" and classifier.exists() else None
        return cls(
            target_set=name,
            ranking_path=ranking,
            key=key,
            classifier_path=use,
            floor=float(json.loads(ranking.with_suffix(".json").read_text())["floor"]),
            embed_set=embed_set,
            sample_below=sample_below,
        )


def classifier_path(root: Path, name: str, key: str) -> Path:
    return Path(root) / "models" / f"{column_name(name)}_{key[:12]}.fasttext.bin"


def _compute(
    root, name, targets, entry, embed_set, opts, settings, sample_below, chunk, ranking, key
) -> None:
    """Embed the targets, rank every embedded document, write the ranking (sidecar first)."""
    from assay.corpora.atomic import write_json_atomic
    from assay.corpora.shards import write_table_atomic

    started = time.time()
    device = settings.get("device") or "auto"
    embedder = _target_embedder(root, entry, opts.get("model"), device, name)
    target_vectors = _target_vectors(root, targets, embedder)
    seconds_embed = time.time() - started
    ids: list[str] = []
    dims = set()
    for chunk_ids, vectors in doc_vectors(root, embed_set, entry["parts"], sample_below, chunk):
        ids.extend(chunk_ids)
        dims.add(vectors.shape[1])
    n_docs = len(ids)
    if n_docs == 0:
        raise ValueError(f"betr:{name}: annotations/{embed_set} holds no vectors (in the sample)")
    if dims != {target_vectors.shape[1]}:
        raise ValueError(
            f"betr:{name}: documents have {sorted(dims)}-d vectors but the target model gives "
            f"{target_vectors.shape[1]}-d; embed the targets with the embed set's model"
        )
    n_targets = len(target_vectors)
    k = int(opts["k"]) if "k" in opts else max(MIN_K, math.ceil(n_docs / n_targets))
    k = min(k, n_docs)
    started_rank = time.time()
    sims, index = rank_documents(
        target_vectors,
        (vec for _, vec in doc_vectors(root, embed_set, entry["parts"], sample_below, chunk)),
        k,
        device=embedder.device,
    )
    seconds_rank = time.time() - started_rank
    agg, v = opts.get("agg", "max"), opts.get("v", "inv")
    s = doc_scores(sims, index, n_docs, v=v, agg=agg)
    bench = np.asarray(targets.column("benchmark").to_pylist(), dtype=object)
    order = np.lexsort((s["doc"], -s["sim"], s["rank"], -s["score"]))  # the training order: best first
    table = pa.table(
        {
            "id": pa.array([ids[i] for i in s["doc"][order]], pa.string()),
            "position": pa.array(s["doc"][order], pa.int64()),
            "score": pa.array(s["score"][order], pa.float64()),
            "rank": pa.array(s["rank"][order], pa.int64()),
            "sim": pa.array(s["sim"][order], pa.float64()),
            "target": pa.array(s["target"][order], pa.int32()),
            "benchmark": pa.array(list(bench[s["target"][order]]), pa.string()),
            "example_id": pa.array(
                [targets.column("example_id")[int(t)].as_py() for t in s["target"][order]], pa.string()
            ),
        }
    )
    per_benchmark: dict[str, int] = {}
    for b in bench:
        per_benchmark[b] = per_benchmark.get(b, 0) + 1
    write_json_atomic(
        ranking.with_suffix(".json"),
        {
            "format": FORMAT,
            "targets_set": name,
            "key": key,
            "agg": agg,
            "v": v,
            "k": k,
            "floor": float(s["floor"]),
            "documents": n_docs,
            "documents_ranked": table.num_rows,
            "targets": n_targets,
            "targets_per_benchmark": per_benchmark,
            "splits": sorted(set(targets.column("split").to_pylist())),
            "embed": {"set": embed_set, "version": entry["version"], "spec": entry.get("spec")},
            "target_model": {
                "path": str(embedder.model_path),
                "sha256": embedder.identity.sha256,
                "dtype": embedder.dtype,
                "max_tokens": embedder.max_tokens,
            },
            "device": embedder.device,
            "sample_below": sample_below,
            "seconds_embed_targets": round(seconds_embed, 3),
            "seconds_rank": round(seconds_rank, 3),
        },
    )
    write_table_atomic(table, ranking)  # what later runs look for: written last


def _target_vectors(root: Path, targets: pa.Table, embedder: EmbeddingScorer) -> np.ndarray:
    """The targets' float16 vectors, cached under models/ by their rows and the embedder, so
    trying other options (k, agg, sample) does not embed them again."""
    from assay.corpora.atomic import atomic_path

    what = [
        _rows_digest(targets.select(["text"])),
        embedder.identity.sha256,
        embedder.dtype,
        embedder.max_tokens,
    ]
    digest = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    cache = Path(root) / "models" / f"betr_targets_{digest}.npy"
    if cache.exists():
        return np.load(cache)
    vectors = embedder.embed_texts(targets.column("text").to_pylist())
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
    return vectors


def population(scorer: BetrScorer, root: Path) -> list[str]:
    """Ids of the ranked population (embedded, in the sample), in docs-shard order."""
    entry = embed_entry(Path(root), scorer.embed_set, scorer.target_set)
    return [
        i
        for ids, _ in doc_vectors(Path(root), scorer.embed_set, entry["parts"], scorer.sample_below, 65_536)
        for i in ids
    ]


def top_split(scorer: BetrScorer, root: Path, top: float) -> tuple[set[str], set[str], dict]:
    """BETR's classifier labels (§3.1 step 4): the top ``top`` share of the ranked population
    by score (ties: best rank, higher cosine, corpus order) vs every other embedded document."""
    if not 0 < top < 1:
        raise ValueError(f"--top must be a share in (0, 1), got {top}")
    everyone = population(scorer, root)
    n_top = max(1, round(top * len(everyone)))
    ranked = scorer.ranking().column("id").to_pylist()  # stored best first
    if n_top > len(ranked):
        meta = scorer.meta()
        raise ValueError(
            f"betr:{scorer.target_set}: the top {top:.0%} is {n_top:,} documents but only {len(ranked):,} of "
            f"{len(everyone):,} are in some target's top k={meta['k']}; raise k (betr:{scorer.target_set}:k=...)"
        )
    positives = set(ranked[:n_top])
    negatives = set(everyone) - positives
    return positives, negatives, {"population": len(everyone), "top": n_top, "ranked": len(ranked)}

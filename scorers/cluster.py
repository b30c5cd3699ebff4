"""`cluster`: k-means cluster ids for cluster-based mixing (CLIMB, Diao et al. 2025; METHODS.md §9b).

    assay annotate --scorer cluster:k=8,columns=words+lines        # z-scored numeric annotations
    assay annotate --scorer cluster:k=1000,embeddings=embed:vector # an embedding annotation set

Options (comma-separated): `k` (required), `columns=a+b` or `embeddings=SET[:COLUMN]` (column
default `embedding`: a fixed-size list of floats, one row per document, rows in docs-shard order
like every annotation set), `seed` [0], `sample` [FIT_ROWS = 1,000,000 rows; `all` fits every row],
`algorithm` (`minibatch` [default] or `lloyd`).

The centroids are fitted once over the whole corpus (a uniform sample of rows across every shard,
never per shard) when the scorer is built, and saved as `models/cluster_<k>_<hash>.npy` with a
JSON sidecar; the hash covers the options and the input files, so workers and reruns load the
same centroids instead of refitting. `score` assigns each document its nearest centroid
(Euclidean; embeddings are L2-normalised first, the usual convention for sentence embeddings).
The version carries the centroid hash: new centroids make old cluster ids stale.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

# Rows used to fit: every row up to 1M, a uniform sample of 1M beyond. MiniBatchKMeans fits
# 1M x 384 MiniLM vectors into k=1000 clusters in about 23 s on 2 cores, and assigning them
# takes 6 s more (bench/select.py --part kmeans); faiss itself subsamples harder (256 per centroid).
FIT_ROWS = 1_000_000


def _options(arg: str | None) -> dict[str, str]:
    if not arg:
        raise ValueError("scorer cluster needs options, e.g. cluster:k=8,columns=words+lines")
    out = {}
    for part in arg.split(","):
        key, eq, value = part.partition("=")
        if not eq or not value.strip():
            raise ValueError(f"cluster option {part!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    unknown = set(out) - {"k", "columns", "embeddings", "seed", "sample", "algorithm"}
    if unknown:
        raise ValueError(
            f"cluster: unknown option(s) {sorted(unknown)}; known: k, columns, embeddings, seed, sample, algorithm"
        )
    return out


def _set_parts(folder: Path) -> list[Path]:
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise ValueError(f"{folder}: no annotation shards")
    return parts


def _column_sets(root: Path, columns: list[str]) -> dict[str, Path]:
    """The annotation set holding each column: the first in name order, as `annotate` joins them."""
    import pyarrow.parquet as pq

    found: dict[str, Path] = {}
    for folder in sorted(p for p in (root / "annotations").glob("*") if p.is_dir() and p.name != "cluster"):
        parts = sorted(folder.glob("part-*.parquet"))
        if parts:
            for c in pq.read_schema(parts[0]).names:
                if c in columns and c not in found:
                    found[c] = folder
    missing = [c for c in columns if c not in found]
    if missing:
        raise ValueError(f"cluster: columns {missing} are in no annotation set of {root}")
    return found


def _fingerprint(files: list[Path], root: Path) -> list:
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _as_matrix(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An embedding column as a float32 matrix (null rows as zeros) and a mask of valid rows."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    if isinstance(col.type, pa.FixedSizeListType):
        dim = col.type.list_size
    else:
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        dim = int(np.nanmax(lengths)) if len(lengths) else 0
        if np.any(lengths[valid] != dim):
            raise ValueError("cluster: embedding rows have different lengths")
    out = np.zeros((len(col), dim), dtype=np.float32)
    if valid.any():
        values = col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        out[valid] = values.astype(np.float32).reshape(-1, dim)
    return out, valid


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def nearest(x: np.ndarray, centroids: np.ndarray, block: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Index of and Euclidean distance to the nearest centroid, for every row of x.

    The argmin uses ||c||^2 - 2 x.c in float32 (one GEMM per block, as faiss does); the distance
    to the chosen centroid is then computed directly, so it carries no cancellation error."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    c_sq = (c * c).sum(axis=1)
    labels = np.empty(len(x), dtype=np.int32)
    dist = np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), block):
        xb = np.asarray(x[i : i + block], dtype=np.float32)
        j = np.argmin(c_sq[None, :] - 2.0 * (xb @ c.T), axis=1)
        labels[i : i + block] = j
        diff = xb - c[j]
        dist[i : i + block] = np.sqrt((diff * diff).sum(axis=1))
    return labels, dist


def fit_centroids(x: np.ndarray, k: int, seed: int, algorithm: str) -> tuple[np.ndarray, float]:
    """k-means centroids (float32) and inertia on the fit sample."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) < k:
        raise ValueError(f"cluster: k={k} but only {len(x)} rows to fit")
    if algorithm == "lloyd":
        km = KMeans(n_clusters=k, n_init=1, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=4096)
    km.fit(x)
    return km.cluster_centers_.astype(np.float32), float(km.inertia_)


@dataclass
class ClusterScorer:
    """Nearest-centroid cluster id and distance for every document."""

    name: ClassVar[str] = "cluster"
    centroids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))
    columns: tuple[str, ...] = ()  # numeric mode: z-scored with mean/std over the whole corpus
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    embedding: str | None = None  # embedding mode: the column holding the vectors
    model_path: Path | None = None

    @property
    def version(self) -> str:
        return "1-" + hashlib.sha256(np.ascontiguousarray(self.centroids).tobytes()).hexdigest()[:12]

    @property
    def input_columns(self) -> tuple[str, ...]:
        return ("id", *self.columns) if self.columns else ("id", self.embedding)

    def output_schema(self) -> pa.Schema:
        return pa.schema([("cluster", pa.int32()), ("cluster_distance", pa.float32())])

    def features(self, table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """The matrix k-means sees for these rows, and which rows have one."""
        if self.columns:
            raw = np.column_stack(
                [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in self.columns]
            )
            z = (raw - self.mean) / self.std
            return np.nan_to_num(z, nan=0.0).astype(np.float32), np.ones(len(raw), dtype=bool)  # NULL -> mean
        x, valid = _as_matrix(table.column(self.embedding))
        return _unit(x), valid

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        x, valid = self.features(batch)
        labels, dist = nearest(x, self.centroids)
        mask = ~valid
        return pa.RecordBatch.from_arrays(
            [pa.array(labels, pa.int32(), mask=mask), pa.array(dist, pa.float32(), mask=mask)],
            schema=self.output_schema(),
        )

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings) -> ClusterScorer:
        """Parse `k=..,columns=..|embeddings=..`; fit the centroids over the corpus or load them."""
        opts = _options(arg)
        try:
            k = int(opts["k"])
            seed = int(opts.get("seed", 0))
        except (KeyError, ValueError):
            raise ValueError(f"cluster: k and seed must be whole numbers (got {arg!r})") from None
        if k < 2:
            raise ValueError(f"cluster: k must be at least 2 (got {k})")
        algorithm = opts.get("algorithm", "minibatch")
        if algorithm not in ("minibatch", "lloyd"):
            raise ValueError(f"cluster: algorithm must be minibatch or lloyd (got {algorithm!r})")
        sample = opts.get("sample", str(FIT_ROWS))
        if sample != "all" and not sample.isdigit():
            raise ValueError(f"cluster: sample must be a number of rows or 'all' (got {sample!r})")
        if ("columns" in opts) == ("embeddings" in opts):
            raise ValueError("cluster: give exactly one of columns=a+b or embeddings=SET[:COLUMN]")
        root = Path(root)
        if "columns" in opts:
            columns = tuple(c for c in opts["columns"].split("+") if c)
            sets = _column_sets(root, list(columns))
            files = sorted({f for c in columns for f in _set_parts(sets[c])})
            embedding = None
        else:
            set_name, _, embedding = opts["embeddings"].partition(":")
            embedding = embedding or "embedding"
            columns, sets = (), {}
            files = _set_parts(root / "annotations" / set_name)
        key = json.dumps(
            [k, seed, sample, algorithm, columns, opts.get("embeddings"), _fingerprint(files, root)],
            sort_keys=True,
        )
        model = root / "models" / f"cluster_{k}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy"
        if model.exists():
            meta = json.loads(model.with_suffix(".json").read_text())
            return cls(
                centroids=np.load(model),
                columns=columns,
                mean=np.array(meta["mean"]) if meta["mean"] is not None else None,
                std=np.array(meta["std"]) if meta["std"] is not None else None,
                embedding=embedding,
                model_path=model,
            )
        return cls._fit(root, k, seed, sample, algorithm, columns, sets, embedding, files, model, arg)

    @classmethod
    def _fit(
        cls, root, k, seed, sample, algorithm, columns, sets, embedding, files, model, arg
    ) -> ClusterScorer:
        import pyarrow.parquet as pq

        from assay.corpora.atomic import atomic_path, write_json_atomic

        started = time.time()
        rng = np.random.default_rng(seed)
        scorer = cls(columns=columns, embedding=embedding)
        if columns:
            # numeric columns are small: read them whole, z-score over every row, then sample
            parts = sorted({f.name for f in files})
            raw = np.concatenate(
                [
                    np.column_stack(
                        [
                            pq.read_table(sets[c] / p, columns=[c]).column(c).to_numpy(zero_copy_only=False)
                            for c in columns
                        ]
                    ).astype(np.float64)
                    for p in parts
                ]
            )
            scorer.mean = np.nanmean(raw, axis=0)
            std = np.nanstd(raw, axis=0)
            scorer.std = np.where(std > 0, std, 1.0)
            total = len(raw)
            take = (
                np.arange(total)
                if sample == "all" or int(sample) >= total
                else np.sort(rng.choice(total, int(sample), replace=False))
            )
            x = np.nan_to_num((raw[take] - scorer.mean) / scorer.std, nan=0.0).astype(np.float32)
        else:
            # vectors are large: pick the sample's row numbers first, then read file by file
            sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
            total = sum(sizes)
            take = (
                np.arange(total)
                if sample == "all" or int(sample) >= total
                else np.sort(rng.choice(total, int(sample), replace=False))
            )
            starts = np.concatenate([[0], np.cumsum(sizes)])
            chunks = []
            for f, lo, hi in zip(files, starts[:-1], starts[1:]):
                local = take[(take >= lo) & (take < hi)] - lo
                if len(local):
                    vectors, valid = _as_matrix(
                        pq.read_table(f, columns=[embedding]).column(embedding).take(local)
                    )
                    chunks.append(_unit(vectors[valid]))
            x = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        scorer.centroids, inertia = fit_centroids(x, k, seed, algorithm)
        write_json_atomic(
            model.with_suffix(".json"),
            {
                "spec": f"cluster:{arg}",
                "k": k,
                "algorithm": algorithm,
                "seed": seed,
                "columns": list(columns),
                "embedding": embedding,
                "mean": None if scorer.mean is None else scorer.mean.tolist(),
                "std": None if scorer.std is None else scorer.std.tolist(),
                "rows_total": int(total),
                "rows_fit": int(len(x)),
                "inertia": inertia,
                "seconds": round(time.time() - started, 3),
                "version": scorer.version,
            },
        )
        # the .npy is what later runs look for: write it last, after its sidecar
        with atomic_path(model) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, scorer.centroids)
        scorer.model_path = model
        return scorer

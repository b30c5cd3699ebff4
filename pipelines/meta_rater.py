"""Learning Meta-rater weights over score columns with proxy LMs (METHODS.md §6.3); the CLI is
`assay fit meta-rater NAME` (`assay.pipelines.cli.meta_rater`).

    assay annotate --root R --scorer stats --scorer heuristics
    assay fit meta-rater web --root R --columns rp_word_count,rp_frac_unique_words,rp_unigram_entropy
    assay annotate --root R --scorer meta_rater:weights=web        # column meta_rater_web

The steps, all deterministic for a seed:

1. every column is normalised over the corpus exactly as the ``meta_rater`` scorer does
   (``--norm``; the statistics come from the same ``models/meta_rater_stats_*.json``);
2. a fixed held-out set: the documents whose id hash (the proxy ladder's, ``id_units``) is below
   2 %, whole documents up to 131,072 tokens. They are left out of every selection, and every
   proxy is measured on them, so the losses are comparable;
3. one byte-level BPE is trained on the rest (the pool) and the pool is tokenised once; a
   candidate's training stream is the concatenation of its selected documents' tokens, so no
   mixture is written;
4. candidate ``i`` draws its weights from a flat Dirichlet seeded by (seed, i), ranks the pool by
   Q_agg, and takes the top ``--select-fraction`` of the pool's tokens (``stats.tokens_est``)
   through ``assay select``'s own planner (``plan_selection``, strategy topk);
5. a proxy of ``--proxy-size`` non-embedding parameters (the ladder's shape and recipe,
   ``assay.scorers.proxy_lm``; the same initialisation for every candidate) trains on
   ``--proxy-tokens`` tokens of it and its held-out loss (nats per token) is recorded;
6. LightGBM maps weights to loss (``assay.predictors.meta_rater``; k-fold cross-validated error
   beside a constant baseline), ``--search-samples`` Dirichlet draws are predicted, and the mean
   of the ``--top-k`` best is the learned weight vector.

Written: ``models/meta_rater_NAME.json`` (``weights`` + every candidate's weights and loss, the
regressor's cross-validated error, the search). Work in progress lives in
``models/meta_rater_NAME.work/`` (tokenizer, token cache, one JSON per finished candidate): the
same command run again resumes there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.scorers import runtime
from assay.scorers.meta_rater import NORMS, PUBLISHED

FORMAT = "assay.meta_rater/1"
TOKENS_PER_PARAM = 20  # default proxy tokens: Chinchilla's 20 per (non-embedding) parameter


def _check_name(name: str) -> str:
    if not name or not name.replace("_", "a").isalnum():
        raise ValueError(
            f"meta-rater name {name!r}: use letters, digits and _ (it names models/meta_rater_NAME)"
        )
    return name


def resolve_columns(root: Path, columns: str | list[str]) -> list[str]:
    """A list of catalog columns; ``published`` means every published score's column that exists."""
    from assay.scorers.meta_rater import column_sets

    if isinstance(columns, str) and columns.strip() == "published":
        wanted = [c for _, c in PUBLISHED.values()]
        present = column_sets(root, wanted)
        columns = [c for c in wanted if c in present]
    elif isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    if len(columns) < 2:
        raise ValueError(f"--columns: weighting needs at least two columns (got {columns})")
    if len(set(columns)) != len(columns):
        raise ValueError(f"--columns: a column is named twice ({columns})")
    return list(columns)


@dataclass
class ProxySetup:
    """What every proxy run of one fit shares: normalised scores, pool, tokens, held-out set."""

    root: Path
    columns: list[str]
    z: np.ndarray  # pool docs x columns, normalised
    pool: Any  # assay.pipelines.select.Pool, in id order
    tokens: np.ndarray  # the pool's tokens, document after document (each starts with EOS)
    offsets: np.ndarray  # document p is tokens[offsets[p]:offsets[p + 1]]
    heldout: np.ndarray
    encoder: Any
    size: tuple[str, int]
    train_tokens: int
    seq_len: int
    seed: int
    device: str
    select_fraction: float
    info: dict = field(default_factory=dict)

    def select(self, weights: np.ndarray | None, seed: int = 0) -> np.ndarray:
        """Pool positions of the top ``select_fraction`` of tokens by Q_agg (``None``: uniform random)."""
        import pyarrow.compute as pc

        from assay.pipelines.recipe import Budget, Recipe
        from assay.pipelines.select import plan_selection

        if weights is None:
            recipe = Recipe(
                strategy="uniform", budget=Budget("tokens", fraction=self.select_fraction), seed=seed
            )
        else:
            q = self.z @ np.asarray(weights, dtype=np.float64)
            self.pool.score, self.pool.raw_score = q, q
            recipe = Recipe(rank="meta_rater", budget=Budget("tokens", fraction=self.select_fraction))
        chosen = plan_selection(self.pool, recipe).ids
        return np.sort(pc.index_in(chosen, value_set=self.pool.ids).to_numpy())

    def train(self, positions: np.ndarray, on_step=None) -> dict:
        """Train one proxy on the selected documents; its held-out loss and what it saw."""
        from assay.scorers import proxy_lm

        stream = np.concatenate([self.tokens[self.offsets[p] : self.offsets[p + 1]] for p in positions])
        n = self.size[1]
        shape = proxy_lm.shape_for(n)
        recipe = proxy_lm.recipe_for(n, shape, self.train_tokens, self.seq_len)
        blocks = proxy_lm.TokenBlocks(stream, self.seq_len, recipe.batch_seqs, self.seed)
        enc = self.encoder
        config = proxy_lm.llama_config(
            shape, enc.vocab_size, self.seq_len, enc.eos_id, enc.tokenizer.pad_token_id
        )
        model = proxy_lm.build_model(config, self.seed).to(self.device)
        last = proxy_lm.train(model, blocks.batches(), recipe, self.device, on_step=on_step)
        total, count = proxy_lm.heldout_loss(model, self.heldout, self.seq_len, self.device)
        return {
            "heldout_loss": total / count,
            "final_train_loss": last,
            "selected_docs": int(len(positions)),
            "selected_tokens": int(len(stream)),
            "epochs": round(blocks.epochs(recipe.steps), 4),
        }


def _texts(root: Path, ids) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(positions in ``ids``, texts) one docs shard at a time."""
    from assay.corpora.mixture import locate_docs, read_rows

    for path, rows, positions in locate_docs(root, ids):
        yield positions, [t or "" for t in read_rows(path, rows, ["text"]).column("text").to_pylist()]


def _save_array(path: Path, array: np.ndarray) -> None:
    from assay.corpora.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def prepare(
    root: str | Path,
    columns: list[str],
    work: Path,
    *,
    norm: str = "z",
    select_fraction: float = 0.1,
    proxy_size: str = "1M",
    proxy_tokens: int | str | None = None,
    seq_len: int = 256,
    vocab: int = 8192,
    seed: int = 0,
    device: str = "auto",
    request: dict | None = None,
) -> ProxySetup:
    """Normalised scores, the fixed held-out set and the tokenised pool (cached under ``work``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from assay.corpora.manifest import require_root
    from assay.pipelines.proxy import HELDOUT_FRACTION, HELDOUT_MAX_TOKENS, TOKENIZER_SAMPLE_BYTES, id_units
    from assay.pipelines.select import STATS_HINT, Pool
    from assay.scorers import proxy_lm
    from assay.scorers.meta_rater import column_sets, corpus_stats, normalise, read_columns
    from assay.scorers.runtime import resolve_device

    root = require_root(root)
    if norm not in NORMS:
        raise ValueError(f"--norm {norm!r}: use one of {', '.join(NORMS)}")
    if not 0 < select_fraction <= 1:
        raise ValueError(f"--select-fraction {select_fraction}: use a share of the pool's tokens in (0, 1]")
    sizes = proxy_lm.parse_sizes(proxy_size)
    if len(sizes) != 1:
        raise ValueError(f"--proxy-size {proxy_size!r}: give one size")
    n = sizes[0][1]
    tokens = (
        TOKENS_PER_PARAM * n
        if proxy_tokens is None
        else proxy_lm.parse_count(proxy_tokens, "--proxy-tokens")
        if isinstance(proxy_tokens, str)
        else int(proxy_tokens)
    )
    proxy_lm.recipe_for(n, proxy_lm.shape_for(n), tokens, seq_len)  # checks --proxy-tokens vs --seq-len
    if not column_sets(root, ["tokens_est"]):
        raise ValueError(f"{root}: no `stats` annotations; {STATS_HINT}")
    stats, stats_path = corpus_stats(root, columns, norm)
    ids, values, _ = read_columns(root, columns)
    size_ids, sizes_of, _ = read_columns(root, ["tokens_est", "chars"])
    if not size_ids.equals(ids):
        raise ValueError(
            f"{root}: the stats set and the score columns describe different documents; re-annotate"
        )
    order = pc.sort_indices(ids).to_numpy()  # id order, as `assay select` ranks (ties go by id)
    ids = ids.take(pa.array(order))
    z = np.column_stack([normalise(values[c][order], stats[c], norm) for c in columns])
    u = id_units(ids.to_pylist())
    held = u < HELDOUT_FRACTION if (u < HELDOUT_FRACTION).any() else u == u.min()  # at least one document
    pool_at = np.nonzero(~held)[0]
    if len(pool_at) < 2:
        raise ValueError(
            f"{root}: too few documents to select from ({len(pool_at)} outside the held-out set)"
        )
    pool = Pool(
        ids=ids.take(pa.array(pool_at)),
        score=np.zeros(len(pool_at)),
        tokens=np.nan_to_num(sizes_of["tokens_est"][order][pool_at]).astype(np.int64),
        chars=np.nan_to_num(sizes_of["chars"][order][pool_at]).astype(np.int64),
        stratum=np.zeros(len(pool_at), dtype=np.int64),
        raw_score=np.zeros(len(pool_at)),
        keys=[{}],
    )
    work.mkdir(parents=True, exist_ok=True)
    if request is not None:  # first, so a killed run's leftovers are known to be of these settings
        from assay.corpora.atomic import write_json_atomic

        write_json_atomic(work / "request.json", request)
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():

        def sample() -> Iterator[str]:
            seen = 0
            for _, texts in _texts(root, pool.ids):
                for t in texts:
                    yield t
                    seen += len(t.encode("utf-8"))
                    if seen >= TOKENIZER_SAMPLE_BYTES:
                        return

        tmp = work / "tokenizer.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        proxy_lm.save_tokenizer(proxy_lm.train_tokenizer(sample(), vocab), tmp, seq_len)
        tmp.rename(tok_dir)
    encoder = proxy_lm.load_encoder(tok_dir)
    if not (work / "pool_offsets.npy").is_file():
        per_doc: list[np.ndarray] = [np.zeros(0, np.int64)] * len(pool_at)
        for positions, texts in _texts(root, pool.ids):
            for p, t in zip(positions, encoder.encode(texts)):
                per_doc[p] = t
        lengths = np.array([len(t) for t in per_doc], dtype=np.int64)
        _save_array(work / "pool_tokens.npy", np.concatenate(per_doc).astype(np.uint32))
        held_tokens, total = [], 0
        for _, texts in _texts(root, ids.take(pa.array(np.nonzero(held)[0]))):
            for t in encoder.encode(texts):
                if total + len(t) <= HELDOUT_MAX_TOKENS:
                    held_tokens.append(t)
                    total += len(t)
        _save_array(
            work / "heldout_tokens.npy",
            np.concatenate(held_tokens or [np.zeros(0, np.int64)]).astype(np.uint32),
        )
        _save_array(work / "pool_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]))  # last: marks done
    heldout = np.load(work / "heldout_tokens.npy")
    if len(heldout) < 2:
        raise ValueError(f"{root}: the held-out documents have no text to measure loss on")
    return ProxySetup(
        root=root,
        columns=list(columns),
        z=z[pool_at],
        pool=pool,
        tokens=np.load(work / "pool_tokens.npy"),
        offsets=np.load(work / "pool_offsets.npy"),
        heldout=heldout,
        encoder=encoder,
        size=sizes[0],
        train_tokens=tokens,
        seq_len=seq_len,
        seed=seed,
        device=resolve_device(device),
        select_fraction=select_fraction,
        info={
            "norm": norm,
            "stats": str(stats_path.relative_to(root)),
            "pool_docs": int(len(pool_at)),
            "pool_tokens": int(np.load(work / "pool_offsets.npy")[-1]),
            "heldout_docs": int(held.sum()),
            "heldout_tokens": int(len(heldout)),
            "vocab_size": encoder.vocab_size,
            "tokenizer_sha256": hashlib.sha256((tok_dir / "tokenizer.json").read_bytes()).hexdigest(),
        },
    )


def candidate_weights(seed: int, index: int, n_columns: int) -> np.ndarray:
    """Candidate ``index``'s weights: flat Dirichlet, a function of (seed, index) only."""
    return np.random.default_rng([seed, index]).dirichlet(np.ones(n_columns))


def fit_meta_rater(
    root: str | Path,
    name: str,
    columns: str | list[str],
    *,
    candidates: int = 32,
    select_fraction: float = 0.1,
    proxy_size: str = "1M",
    proxy_tokens: int | str | None = None,
    norm: str = "z",
    seq_len: int = 256,
    vocab: int = 8192,
    search_samples: int = 100_000,
    top_k: int = 128,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = 1,
    quiet: bool = False,
) -> dict:
    """Run the whole search (module docstring) and write ``models/meta_rater_NAME.json``; returns it."""
    from assay.corpora.atomic import write_json_atomic
    from assay.corpora.manifest import require_root
    from assay.pipelines.proxy import TrainingProgress
    from assay.predictors.meta_rater import WeightRegressor, search_weights
    from assay.scorers.meta_rater import save_weights

    root = require_root(root)
    _check_name(name)
    columns = resolve_columns(root, columns)
    if candidates < 4:
        raise ValueError(f"--candidates {candidates}: the regressor needs at least 4 proxy runs")
    if not 1 <= top_k <= search_samples:
        raise ValueError(f"--top-k {top_k}: use 1 to --search-samples ({search_samples})")
    out = root / "models" / f"meta_rater_{name}.json"
    work = root / "models" / f"meta_rater_{name}.work"
    request = {
        "columns": columns,
        "norm": norm,
        "select_fraction": select_fraction,
        "proxy_size": proxy_size,
        "proxy_tokens": proxy_tokens,
        "seq_len": seq_len,
        "vocab": vocab,
        "seed": seed,
    }
    saved = work / "request.json"
    if saved.is_file() and json.loads(saved.read_text()) != request:
        shutil.rmtree(work)  # another fit's leftovers under this name: start over
    with runtime.torch_threads(threads):
        setup = prepare(
            root, columns, work, norm=norm, select_fraction=select_fraction, proxy_size=proxy_size,
            proxy_tokens=proxy_tokens, seq_len=seq_len, vocab=vocab, seed=seed, device=device, request=request,
        )  # fmt: skip
        from assay.scorers import proxy_lm

        steps = proxy_lm.recipe_for(
            setup.size[1], proxy_lm.shape_for(setup.size[1]), setup.train_tokens, seq_len
        ).steps
        runs = []
        with TrainingProgress(quiet) as progress:
            task = progress.task("proxies", candidates * steps, "steps")
            for i in range(candidates):
                path = work / "candidates" / f"c{i:05d}.json"
                if not path.is_file():
                    w = candidate_weights(seed, i, len(columns))
                    done = i * steps
                    result = setup.train(
                        setup.select(w),
                        on_step=lambda s, _n, loss, done=done: progress.update(task, done + s, loss=loss),
                    )
                    write_json_atomic(path, {"index": i, "weights": dict(zip(columns, w.tolist())), **result})
                runs.append(json.loads(path.read_text()))
                progress.update(task, (i + 1) * steps, loss=runs[-1]["heldout_loss"])
            progress.finish(task)
    x = np.array([[r["weights"][c] for c in columns] for r in runs])
    y = np.array([r["heldout_loss"] for r in runs])
    regressor = WeightRegressor(seed=seed).fit(x, y)
    found = search_weights(regressor, len(columns), search_samples, top_k, seed)
    best = runs[int(np.argmin(y))]
    doc_extra = {
        "kind": "meta_rater",
        "name": name,
        "norm": norm,
        "columns": columns,
        "request": request,
        "proxy": {
            "size": setup.size[0],
            "non_embedding_params_target": setup.size[1],
            "tokens": setup.train_tokens,
            "steps": steps,
            "seq_len": seq_len,
            **setup.info,
        },
        "regressor": {"method": "lightgbm", **regressor.backtest_},
        "search": {k: v for k, v in found.items() if k != "weights"},
        "best_candidate": {"index": best["index"], "heldout_loss": best["heldout_loss"]},
        "candidates": runs,
    }
    save_weights(out, dict(zip(columns, found["weights"].tolist())), **doc_extra)
    shutil.rmtree(work, ignore_errors=True)
    return json.loads(out.read_text()) | {"path": str(out)}

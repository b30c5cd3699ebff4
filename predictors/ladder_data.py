"""Ladder runs as one long table, and the two fitting sets the task ladder needs.

The long table has one row per (run, checkpoint, task):

    run   str      a training run ("1B-5xC")
    n     float    non-embedding parameters
    d     float    tokens seen at this checkpoint
    step  int      checkpoint step (any increasing number)
    task  str      mmlu, hellaswag, arc_challenge, arc_easy, piqa, csqa, socialiqa, openbookqa
    bpb   float    task loss: bits per byte of the correct answer (null when unknown)
    acc   float    accuracy in [0, 1]

`read_olmo_ladder` turns the OLMo ladder CSVs into it; `predictors.lm_eval` turns
lm-evaluation-harness output into it; users may bring their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

LONG_SCHEMA: dict[str, pl.DataType] = {
    "run": pl.String,
    "n": pl.Float64,
    "d": pl.Float64,
    "step": pl.Int64,
    "task": pl.String,
    "bpb": pl.Float64,
    "acc": pl.Float64,
}

TASKS = ("mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "csqa", "socialiqa", "openbookqa")

# Random-guess accuracy, the floor of the step-2 sigmoid (Bhagia et al. 2024, code `minimums_rc`).
CHANCE = {
    "mmlu": 0.25,
    "hellaswag": 0.25,
    "arc_challenge": 0.25,
    "arc_easy": 0.25,
    "piqa": 0.5,
    "csqa": 0.2,
    "socialiqa": 1 / 3,
    "openbookqa": 0.25,
}

# Non-embedding parameter counts of the OLMo ladder sizes (Bhagia et al. 2024, Table 1 / final.json);
# 3B is the OLMo-ladder 3.2B config, and it matches its 1xC runs: 63.42e9 tokens / 20.
LADDER_SIZES = {
    "190M": 190_354_176,
    "370M": 371_262_464,
    "760M": 758_220_288,
    "1B": 1_279_395_840,
    "3B": 3_169_537_280,
}

# The split and metric of each task in the OLMo ladder CSVs (the paper's "v2" keys: rc 5-shot,
# length-normalised accuracy; ARC and OBQA on their test splits, the rest on validation).
OLMO_KEYS = {
    "hellaswag": "hellaswag_val",
    "arc_challenge": "arc_challenge_test",
    "arc_easy": "arc_easy_test",
    "piqa": "piqa_val",
    "csqa": "csqa_val",
    "socialiqa": "socialiqa_val",
    "openbookqa": "openbookqa_test",
}

# MMLU combines its four groups weighted by their number of test questions (stem 3,018,
# humanities 4,705, social sciences 3,077, other 3,242 of 14,042), as the reference code does
# with weights 0.215 / 0.335 / 0.219 / 0.231.
MMLU_GROUPS = {
    "mmlu_stem_test": 3018,
    "mmlu_humanities_test": 4705,
    "mmlu_social_sciences_test": 3077,
    "mmlu_other_test": 3242,
}

_SIZE_RE = re.compile(r"^(?P<size>[0-9.]+[MB])-(?P<mult>[0-9.]+)xC")


def empty_long_table() -> pl.DataFrame:
    return pl.DataFrame(schema=LONG_SCHEMA)


def check_long_table(table: pl.DataFrame, where: str = "table") -> pl.DataFrame:
    """Cast a long table to its schema; name what is missing when it is not one."""
    missing = [c for c in LONG_SCHEMA if c not in table.columns]
    if missing:
        raise ValueError(
            f"{where}: missing columns {missing}; a ladder table needs {list(LONG_SCHEMA)} "
            "(one row per run, checkpoint and task)"
        )
    extra = [c for c in table.columns if c not in LONG_SCHEMA]
    out = table.select([pl.col(c).cast(t) for c, t in LONG_SCHEMA.items()] + extra)
    bad = out.filter(pl.col("acc").is_not_null() & ((pl.col("acc") < 0) | (pl.col("acc") > 1)))
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(
            f"{where}: accuracy must be in [0, 1], got {row['acc']} (run {row['run']}, task {row['task']})"
        )
    return out


def size_label(run: str) -> str:
    """'1B-5xC-rerun' -> '1B'; a run without the ladder naming keeps its whole name."""
    m = _SIZE_RE.match(run)
    return m.group("size") if m else run


def read_olmo_ladder(paths: Iterable[str | Path], sizes: dict[str, int] | None = None) -> pl.DataFrame:
    """Read OLMo ladder CSVs (`<size>-<k>xC[-rerun].csv`) into the long table.

    N comes from the size in the file name (`LADDER_SIZES`, or `sizes` for others); D is
    `throughput/total_tokens` (step x batch tokens when that column is absent).
    """
    sizes = {**LADDER_SIZES, **(sizes or {})}
    frames = []
    for path in sorted(Path(p) for p in paths):
        run = path.stem
        label = size_label(run)
        if label not in sizes:
            raise ValueError(
                f"{path}: cannot tell the model size from the file name; expected "
                f"'<size>-<k>xC.csv' with size one of {sorted(sizes)} (or pass sizes={{...}})"
            )
        frames.append(_read_one(path, run, float(sizes[label])))
    if not frames:
        raise ValueError("no ladder CSV files given")
    return pl.concat(frames).with_columns(size=pl.col("run").map_elements(size_label, return_dtype=pl.String))


def _read_one(path: Path, run: str, n: float) -> pl.DataFrame:
    raw = pl.read_csv(path, infer_schema_length=None)
    if "_step" not in raw.columns:
        raise ValueError(f"{path}: no '_step' column; is this an OLMo ladder CSV?")
    if "throughput/total_tokens" in raw.columns:
        d = raw["throughput/total_tokens"].cast(pl.Float64)
    elif "batch_size_in_tokens" in raw.columns:
        d = raw["_step"].cast(pl.Float64) * raw["batch_size_in_tokens"].cast(pl.Float64)
    else:
        raise ValueError(f"{path}: needs 'throughput/total_tokens' or 'batch_size_in_tokens' for D")
    parts = []
    for task in TASKS:
        if task == "mmlu":
            keys, weights = list(MMLU_GROUPS), np.array(list(MMLU_GROUPS.values()), dtype=float)
        else:
            keys, weights = [OLMO_KEYS[task]], np.ones(1)
        bpb_cols = [f"eval/downstream_bpb/{k}_rc_5shot_bpb" for k in keys]
        acc_cols = [f"eval/downstream/{k}_rc_5shot_len_norm" for k in keys]
        absent = [c for c in bpb_cols + acc_cols if c not in raw.columns]
        if absent:
            raise ValueError(f"{path}: missing column {absent[0]!r} for task {task}")
        w = weights / weights.sum()
        bpb = sum(raw[c].cast(pl.Float64) * wi for c, wi in zip(bpb_cols, w))
        acc = sum(raw[c].cast(pl.Float64) * wi for c, wi in zip(acc_cols, w))
        parts.append(
            pl.DataFrame(
                {
                    "run": run,
                    "n": n,
                    "d": d,
                    "step": raw["_step"].cast(pl.Int64),
                    "task": task,
                    "bpb": bpb,
                    "acc": acc,
                }
            )
        )
    return check_long_table(pl.concat(parts), str(path)).drop_nulls(["bpb", "acc"])


# ---------------------------------------------------------------- fitting sets


@dataclass
class FinalPoints:
    """One point per run for step 1: D is the run's final tokens, x the mean over its last checkpoints."""

    run: list[str]
    n: np.ndarray
    d: np.ndarray
    bpb: np.ndarray
    acc: np.ndarray


def final_points(table: pl.DataFrame, task: str, last: int = 5) -> FinalPoints:
    """Average the last `last` checkpoints of each run (Bhagia et al. 2024 §3.1, `--moving_avg 5`)."""
    rows = table.filter(pl.col("task") == task).drop_nulls(["bpb"]).sort("run", "step")
    agg = (
        rows.group_by("run", maintain_order=True)
        .agg(
            pl.col("n").first(),
            pl.col("d").max(),
            pl.col("bpb").tail(last).mean(),
            pl.col("acc").tail(last).mean(),
        )
        .sort("n", "d", "run")
    )
    return FinalPoints(
        run=agg["run"].to_list(),
        n=agg["n"].to_numpy(),
        d=agg["d"].to_numpy(),
        bpb=agg["bpb"].to_numpy(),
        acc=agg["acc"].to_numpy(),
    )


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean; the first window-1 points average what is there (as the reference does)."""
    c = np.cumsum(np.asarray(x, dtype=float))
    out = c.copy()
    out[window:] = c[window:] - c[:-window]
    counts = np.minimum(np.arange(1, len(c) + 1), window)
    return out / counts


def checkpoint_points(
    table: pl.DataFrame, task: str, skip: float = 0.1, window: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All intermediate checkpoints for step 2: per run drop the first `skip` share, then smooth.

    Returns (bpb, acc, n) with one entry per kept checkpoint (Bhagia et al. 2024 §3.2:
    skip 10 %, moving average 5).
    """
    rows = table.filter(pl.col("task") == task).drop_nulls(["bpb", "acc"]).sort("run", "step")
    xs, ys, ns = [], [], []
    for _, g in rows.group_by("run", maintain_order=True):
        start = int(np.ceil(skip * g.height))
        x = g["bpb"].to_numpy()[start:]
        y = g["acc"].to_numpy()[start:]
        if len(x) == 0:
            continue
        xs.append(moving_average(x, window))
        ys.append(moving_average(y, window))
        ns.append(np.full(len(x), g["n"][0]))
    if not xs:
        return np.empty(0), np.empty(0), np.empty(0)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ns)

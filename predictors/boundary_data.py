"""Pretraining compute for a table of models, with the table's data errors found and reported.

A capability boundary is fitted over z = log10(pretraining FLOPs), with FLOPs ≈ 6·N·D
(arXiv 2602.15327, METHODS.md §8.1; the authors' `compute_multiplier = 6.0`). Public tables of base models
carry errors that move a point by decades on that axis, so every row is checked before a fit:

* tokens beyond any pretraining run (> 100 T) — a unit slip (B written as T), e.g.
  `cerebras/btlm-3b-8k-base` listed with 627 T tokens (the truth is 627 B): corrected;
* a parameter count that contradicts the size in the model's own name (`open_llama_7b_v2` listed
  as 13 B): corrected to the named size (names of mixture-of-experts models are not used);
* tokens per parameter outside [0.5, 1e5]: dropped;
* a FLOPs column that disagrees with 6·N·D by more than 25 %: kept, reported;
* no FLOPs and no (N, D) to compute them from: dropped.

Nothing is changed silently: each finding is a `DataIssue`, emitted as a `DataIssueWarning` and
returned, and a fitted predictor stores the list in its JSON (`data_issues`).

Release dates, for the temporal backtest (fit on earlier releases, test on later ones; arXiv
2602.15327 §8.3): `release_months` reads a date column, or — for the observational-scaling table,
which has none — the approximate release months below (`dates="builtin"`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

MULTIPLIER = 6.0  # FLOPs ≈ 6·N·D (arXiv 2602.15327, METHODS.md §8.1; the authors' CLI default)
MAX_TOKENS = 1e14  # 100 T tokens: beyond every public pretraining run in this data's era (largest ~36 T)
TOKENS_PER_PARAM = (0.5, 1e5)  # plausible D/N; real rows here span 2 (BLOOM-176B) to 8,000
SIZE_NAME_RATIO = 1.5  # a listed size this far from the name's size is an error, not rounding
FLOPS_RATIO = 1.25  # a FLOPs column this far from 6·N·D is reported

_UNITS = {"T": 1e12, "B": 1e9, "M": 1e6, "K": 1e3}


class DataIssueWarning(UserWarning):
    """A row of an input table was corrected or dropped."""


@dataclass(frozen=True)
class DataIssue:
    model: str
    issue: str  # unit_slip, size_mismatch, tokens_per_param, flops_mismatch, no_compute, duplicate
    detail: str
    action: str  # corrected, dropped, kept

    def to_json(self) -> dict:
        return asdict(self)


def unit_scale(name: str, default: float) -> float:
    """Scale from a column name's unit: 'FLOPs (1E21)' -> 1e21, 'Model Size (B)' -> 1e9."""
    m = re.search(r"\(([^)]*)\)", name)
    if not m:
        return default
    unit = m.group(1).strip()
    if unit.upper() in _UNITS:
        return _UNITS[unit.upper()]
    try:
        return float(unit)
    except ValueError:
        return default


def _find_column(columns: list[str], patterns: list[str]) -> str | None:
    for pattern in patterns:
        for c in columns:
            if re.search(pattern, c, flags=re.IGNORECASE):
                return c
    return None


def size_from_name(model: str) -> float | None:
    """Parameter count written in a model's name ('llama-7b' -> 7e9), or None.

    Mixture-of-experts names ('Mixtral-8x7B', 'Qwen2-57B-A14B') give no single size: None.
    """
    name = model.split("/")[-1].lower()
    if re.search(r"\d+x\d+(\.\d+)?b|-a\d+(\.\d+)?b", name):
        return None
    name = re.sub(r"(\d)_(\d)", r"\1.\2", name)  # stablelm-2-1_6b
    name = re.sub(r"(\d)([bm])(\d)", r"\1.\3\2", name)  # rwkv-4-1b5, bloom-7b1
    found = re.findall(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z])", name)
    if len(found) != 1:
        return None
    value, unit = found[0]
    return float(value) * _UNITS[unit.upper()]


def prepare_compute_table(
    table: pl.DataFrame,
    *,
    model_col: str | None = None,
    flops_col: str | None = None,
    size_col: str | None = None,
    tokens_col: str | None = None,
    warn: bool = True,
) -> tuple[pl.DataFrame, list[DataIssue]]:
    """Add `model`, `params`, `tokens` and `flops` (raw FLOPs) to a table of models; check each row.

    Columns are found by name when not given ('FLOPs (1E21)', 'Model Size (B)',
    'Pretraining Data Size (T)', '#Params (B)', 'Pretraining tokens (T)'); the unit in brackets
    sets the scale. FLOPs come from the FLOPs column, else 6·N·D. Returns the kept rows and the
    issues found.
    """
    cols = table.columns
    model_col = model_col or _find_column(cols, [r"^model$", r"^model[ _]?(name|id)$", r"^name$"])
    flops_col = flops_col or _find_column(cols, [r"^flops\b", r"flops"])
    size_col = size_col or _find_column(cols, [r"model size", r"#?params", r"parameters", r"^n$"])
    tokens_col = tokens_col or _find_column(cols, [r"tokens", r"data size", r"^d$"])
    if flops_col is None and (size_col is None or tokens_col is None):
        raise ValueError(
            f"no compute in table columns {cols}: need a FLOPs column or both a model-size and a "
            "tokens column (e.g. 'Model Size (B)' and 'Pretraining Data Size (T)')"
        )
    n_rows = table.height
    models = table[model_col].cast(pl.Utf8).to_list() if model_col else [f"row {i}" for i in range(n_rows)]

    def column(name: str | None, default_scale: float) -> np.ndarray:
        if name is None:
            return np.full(n_rows, np.nan)
        values = table[name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
        return values * unit_scale(name, default_scale)

    params = column(size_col, 1.0)
    tokens = column(tokens_col, 1.0)
    flops = column(flops_col, 1.0)
    keep = np.ones(n_rows, dtype=bool)
    issues: list[DataIssue] = []

    seen: set[str] = set()
    for i, model in enumerate(models):
        if model_col and model in seen:
            issues.append(DataIssue(model, "duplicate", "model listed twice; first row kept", "dropped"))
            keep[i] = False
            continue
        seen.add(model)
        recompute = False
        named = size_from_name(model) if model_col else None
        if named and np.isfinite(params[i]) and max(named / params[i], params[i] / named) > SIZE_NAME_RATIO:
            issues.append(
                DataIssue(
                    model,
                    "size_mismatch",
                    f"listed {params[i] / 1e9:g} B params, the name says {named / 1e9:g} B",
                    "corrected",
                )
            )
            params[i], recompute = named, True
        if np.isfinite(tokens[i]) and tokens[i] > MAX_TOKENS:
            fixed = tokens[i] / 1e3
            ratio = fixed / params[i] if np.isfinite(params[i]) else np.nan
            ok = np.isfinite(ratio) and TOKENS_PER_PARAM[0] <= ratio <= TOKENS_PER_PARAM[1]
            issues.append(
                DataIssue(
                    model,
                    "unit_slip",
                    f"{tokens[i] / 1e12:g} T tokens exceeds any pretraining run; "
                    + (
                        f"read as {fixed / 1e9:g} B ({ratio:,.0f} tokens/param)"
                        if ok
                        else "no plausible reading"
                    ),
                    "corrected" if ok else "dropped",
                )
            )
            if not ok:
                keep[i] = False
                continue
            tokens[i], recompute = fixed, True
        has_nd = np.isfinite(params[i]) and np.isfinite(tokens[i]) and params[i] > 0
        if has_nd:
            ratio = tokens[i] / params[i]
            if not TOKENS_PER_PARAM[0] <= ratio <= TOKENS_PER_PARAM[1]:
                issues.append(
                    DataIssue(model, "tokens_per_param", f"{ratio:,.1f} tokens per parameter", "dropped")
                )
                keep[i] = False
                continue
            nd = MULTIPLIER * params[i] * tokens[i]
            if recompute or not np.isfinite(flops[i]):
                flops[i] = nd
            elif max(flops[i] / nd, nd / flops[i]) > FLOPS_RATIO:
                issues.append(
                    DataIssue(
                        model,
                        "flops_mismatch",
                        f"FLOPs column {flops[i]:.3g} vs 6·N·D {nd:.3g}; FLOPs column kept",
                        "kept",
                    )
                )
        if not (np.isfinite(flops[i]) and flops[i] > 0):
            issues.append(DataIssue(model, "no_compute", "no FLOPs and no (size, tokens) pair", "dropped"))
            keep[i] = False

    out = table.with_columns(
        pl.Series("model", models, dtype=pl.Utf8),
        pl.Series("params", params),
        pl.Series("tokens", tokens),
        pl.Series("flops", flops),
    ).filter(pl.Series(keep))
    if warn:
        for issue in issues:
            warnings.warn(f"{issue.model}: {issue.detail} ({issue.action})", DataIssueWarning, stacklevel=2)
    return out, issues


def summarise_issues(issues: list[DataIssue]) -> dict[str, int]:
    """Counts per (issue, action), e.g. {'no_compute/dropped': 25, 'unit_slip/corrected': 1}."""
    counts: dict[str, int] = {}
    for issue in issues:
        key = f"{issue.issue}/{issue.action}"
        counts[key] = counts.get(key, 0) + 1
    return counts


# ------------------------------------------------------------------------ release dates

# The observational-scaling table (base_llm_benchmark_eval.csv, and its sibling files) has no
# release date, version date or any other time field. The closest honest proxy is each model's
# approximate public-release month, written here from general knowledge of the releases (what
# METHODS.md calls [mem]): it is not in the data and not verified against a source in this
# repository, and a month or two off is possible. Family first-release months, then the members
# released later than their family's first models. Used only to order models in time.
RELEASE_MONTH_FAMILY = {
    "GPT-2": "2019-02", "XGLM": "2021-12", "GPT-Neo/J": "2021-03", "Codegen": "2022-03", "OPT": "2022-05",
    "BLOOM": "2022-07", "RWKV": "2022-09", "Llama": "2023-02", "Pythia": "2023-02", "Cerebras-GPT": "2023-03",
    "StableLM": "2023-04", "Falcon": "2023-05", "MPT": "2023-05", "RedPajama-INCITE-Base": "2023-05",
    "StarCoder": "2023-05", "OpenLlama": "2023-06", "Llama-2": "2023-07", "OpenLlamaV2": "2023-07",
    "BTLM": "2023-07", "CodeLlama": "2023-08", "Qwen": "2023-08", "Mistral": "2023-09", "Phi": "2023-09",
    "Yi": "2023-11", "Yi-200K": "2023-11", "DeepSeek-LLM": "2023-11", "DeepSeek-Coder": "2023-11",
    "Amber": "2023-12", "Mixtral": "2023-12", "DeciLM": "2023-12", "DeepSeek-MoE": "2024-01",
    "InternLM2": "2024-01", "H2O-Danube": "2024-01", "Qwen1.5": "2024-02", "Gemma": "2024-02",
    "OLMo": "2024-02", "StarCoder2": "2024-02", "Jamba": "2024-03", "TinyLlama": "2024-03",
    "Llama-3": "2024-04", "Yi-1.5": "2024-05", "DeepSeek-V2": "2024-05", "Qwen2": "2024-06",
    "DeepSeek-Coder-V2": "2024-06", "Gemma-2": "2024-06", "Llama-3.1": "2024-07", "SmolLM": "2024-07",
}  # fmt: skip
RELEASE_MONTH_MODEL = {
    "openai-community/gpt2-xl": "2019-11",
    "EleutherAI/gpt-j-6b": "2021-06",
    "EleutherAI/gpt-neox-20b": "2022-02",
    "RWKV/rwkv-raven-14b": "2023-04",
    "mosaicml/mpt-30b": "2023-06",
    "bigcode/starcoderbase-1b": "2023-08",
    "bigcode/starcoderbase-3b": "2023-08",
    "bigcode/starcoderbase-7b": "2023-08",
    "stabilityai/stablelm-base-alpha-7b-v2": "2023-08",
    "tiiuae/falcon-180B": "2023-09",
    "Qwen/Qwen-14B": "2023-09",
    "Qwen/Qwen-72B": "2023-11",
    "microsoft/phi-2": "2023-12",
    "stabilityai/stablelm-2-1_6b": "2024-01",
    "codellama/CodeLlama-70b-hf": "2024-01",
    "Qwen/Qwen1.5-32B": "2024-04",
    "Qwen/Qwen1.5-110B": "2024-04",
    "mistralai/Mixtral-8x22B-v0.1": "2024-04",
    "h2oai/h2o-danube2-1.8b-base": "2024-04",
    "allenai/OLMo-7B-0424-hf": "2024-04",
    "mistralai/Mistral-Nemo-Base-2407": "2024-07",
    "google/gemma-2-2b": "2024-07",
    "h2oai/h2o-danube3-500m-base": "2024-07",
    "h2oai/h2o-danube3-4b-base": "2024-07",
}
BUILTIN_DATES = "builtin"

_MONTH_RE = re.compile(r"^\s*(\d{4})-(\d{1,2})(?:-\d{1,2})?")


def month_index(value: object) -> float:
    """'2023-07', '2023-07-18' or a date -> months since year 0 (2023-07 -> 2023*12 + 6); NaN if none."""
    if value is None:
        return float("nan")
    if hasattr(value, "year") and hasattr(value, "month"):
        return float(value.year * 12 + value.month - 1)
    m = _MONTH_RE.match(str(value))
    if not m or not 1 <= int(m.group(2)) <= 12:
        return float("nan")
    return float(int(m.group(1)) * 12 + int(m.group(2)) - 1)


def month_label(index: float) -> str:
    """The inverse of `month_index`: 24282 -> '2023-07'."""
    year, month = divmod(int(index), 12)
    return f"{year:04d}-{month + 1:02d}"


def release_months(table: pl.DataFrame, dates: str) -> np.ndarray:
    """Release month of each row (`month_index`, NaN when unknown).

    `dates` is a column of dates ('2023-07', '2023-07-18' or a date type) or "builtin": the
    approximate months above, by the `model` column (as `prepare_compute_table` adds it) and, for
    models not listed, by a family column ('Model Family').
    """
    if dates != BUILTIN_DATES:
        if dates not in table.columns:
            raise ValueError(
                f"no date column {dates!r}; columns are {table.columns} (or 'builtin' for the approximate release months Assay knows)"
            )
        return np.array([month_index(v) for v in table[dates].to_list()], dtype=float)
    models = table["model"].to_list() if "model" in table.columns else [None] * table.height
    family_col = _find_column(table.columns, [r"family"])
    families = table[family_col].to_list() if family_col else [None] * table.height
    return np.array(
        [
            month_index(RELEASE_MONTH_MODEL.get(m) or RELEASE_MONTH_FAMILY.get(f))
            for m, f in zip(models, families)
        ],
        dtype=float,
    )

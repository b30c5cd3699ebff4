"""Selection recipes: the YAML a curator writes for `assay select`, parsed and checked field by field.

```yaml
filter: "lang = 'en' AND fineweb_keep"   # optional SQL boolean over the `annotations` view
rank: quality                            # column or SQL expression (topk, gumbel, threshold)
normalize: true                          # z-normalise the rank over the pool [default: gumbel only]
strategy: topk                           # threshold | topk | gumbel | uniform
temperature: 2.0                         # gumbel only; 0 gives topk exactly
threshold: 0.5                           # threshold only: keep rank >= 0.5 (z units if normalize)
budget:                                  # exactly one of these
  fraction_of_tokens: 0.10               # or fraction_of_chars / fraction_of_docs, or betr (+ compute_flops)
  # tokens: 3e10 | chars: 5e9 | docs: 100000
strata: [source]                         # quotas proportional to each value's share of the pool
# strata: {source: {web: 0.7, books: 0.3}, domain: pool}   # explicit mixture weights, then proportional
max_epochs: 1                            # a document appears at most this many times [1]
tokenizer: path/to/tokenizer.json        # count tokens with it instead of the `stats` estimate
dedup: fuzzy                             # keep dup_is_first (minhash) | exact: dup_exact_first
memory: 2GB                              # DuckDB's memory cap while selecting [1GB]; spills beyond
seed: 7
```

Every error is a `RecipeError` that names the field (`budget.tokens`, `strata.source`), so a
bad recipe stops before anything is written. SQL is checked against the catalog in `check_sql`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("threshold", "topk", "gumbel", "uniform")
UNITS = ("tokens", "chars", "docs")
KEYS = (
    "filter",
    "rank",
    "normalize",
    "strategy",
    "temperature",
    "threshold",
    "budget",
    "strata",
    "max_epochs",
    "tokenizer",
    "dedup",
    "memory",
    "seed",
)
# dedup mode -> (the column that marks the document kept from each cluster, the scorer writing it)
DEDUP = {"fuzzy": ("dup_is_first", "minhash"), "exact": ("dup_exact_first", "exact_dup")}
# DuckDB's cap while selecting; it sorts, joins and stores the pool on disk beyond it.
DEFAULT_MEMORY = "1GB"
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
# QuRating's best setting samples with tau = 2 (Wettig et al. 2024, §5.5-5.6 of METHODS.md).
DEFAULT_TEMPERATURE = 2.0
POOL = "pool"  # a strata column whose values get shares proportional to the pool


class RecipeError(ValueError):
    """A recipe field is missing, malformed or inconsistent with the corpus."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"recipe field {field_name!r}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Budget:
    unit: str  # tokens | chars | docs
    amount: int | None = None  # an absolute count in `unit`
    fraction: float | None = None  # a share of the filtered pool, in `unit`
    compute_flops: float | None = None  # set when the fraction is BETR's F_opt(C)


@dataclass(frozen=True)
class Strata:
    columns: tuple[str, ...] = ()
    # Explicit mixture weights over the first column's values (None: proportional to the pool).
    weights: dict[str | None, float] | None = None


@dataclass(frozen=True)
class Recipe:
    filter: str | None = None
    rank: str | None = None
    normalize: bool = False
    strategy: str = "topk"
    temperature: float | None = None
    threshold: float | None = None
    budget: Budget | None = None
    strata: Strata = field(default_factory=Strata)
    max_epochs: int = 1
    tokenizer: str | None = None
    dedup: str | None = None  # fuzzy | exact: keep only each duplicate cluster's first document
    memory: str | None = None  # DuckDB memory cap for this selection (None: DEFAULT_MEMORY)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.strata.weights is not None:
            out["strata"]["weights"] = [[k, v] for k, v in self.strata.weights.items()]
        return out


def betr_fraction(compute_flops: float) -> float:
    """BETR's compute-optimal kept share of tokens: F_opt(C) = 4e-5 * C^0.25 percent
    (Mizrahi et al. 2025, §6.2; METHODS.md §3.2), as a fraction, capped at 1."""
    return min(4e-5 * compute_flops**0.25 / 100.0, 1.0)


def _number(value: Any, name: str) -> float:
    # PyYAML reads `3e10` (no dot) as a string: accept it as the number it plainly is.
    if isinstance(value, bool):
        raise RecipeError(name, f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise RecipeError(name, f"expected a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise RecipeError(name, f"expected a finite number, got {value!r}")
    return float(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(name, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _budget(raw: Any) -> Budget:
    if not isinstance(raw, dict) or not raw:
        raise RecipeError("budget", "expected a mapping such as {tokens: 3e10} or {fraction_of_tokens: 0.1}")
    keys = [k for k in raw if k != "compute_flops"]
    allowed = [*UNITS, *(f"fraction_of_{u}" for u in UNITS)]
    for k in keys:
        if k not in allowed:
            raise RecipeError(f"budget.{k}", f"unknown budget; use one of {', '.join(allowed)}")
    if len(keys) != 1:
        raise RecipeError("budget", f"give exactly one of {', '.join(allowed)} (got {keys})")
    key = keys[0]
    name = f"budget.{key}"
    flops = raw.get("compute_flops")
    if key.startswith("fraction_of_"):
        unit = key.removeprefix("fraction_of_")
        if raw[key] == "betr":
            if flops is None:
                raise RecipeError(
                    "budget.compute_flops", "fraction 'betr' needs the training compute in FLOPs"
                )
            c = _number(flops, "budget.compute_flops")
            if c <= 0:
                raise RecipeError("budget.compute_flops", f"must be positive, got {flops!r}")
            return Budget(unit, fraction=betr_fraction(c), compute_flops=c)
        fraction = _number(raw[key], name)
        if fraction <= 0:
            raise RecipeError(name, f"must be positive, got {raw[key]!r}")
        if flops is not None:
            raise RecipeError("budget.compute_flops", "only used with a fraction of 'betr'")
        return Budget(unit, fraction=fraction)
    if flops is not None:
        raise RecipeError("budget.compute_flops", "only used with a fraction of 'betr'")
    amount = _number(raw[key], name)
    if amount < 1:
        raise RecipeError(name, f"must be at least 1, got {raw[key]!r}")
    return Budget(key, amount=int(round(amount)))


def check_memory(value: Any, name: str = "memory") -> str:
    """A DuckDB memory size such as `2GB` or `512MiB`."""
    if not isinstance(value, str) or not _MEMORY.match(value.strip()):
        raise RecipeError(name, f"expected a size such as 2GB or 512MiB, got {value!r}")
    return value.strip()


def _stratum_value(v: Any) -> str | None:
    """YAML keys as the catalog shows them after CAST(... AS VARCHAR)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _strata(raw: Any) -> Strata:
    if raw is None:
        return Strata()
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        cols = tuple(_text(c, "strata") for c in raw)
        if len(set(cols)) != len(cols):
            raise RecipeError("strata", f"a column is named twice: {list(cols)}")
        return Strata(cols)
    if not isinstance(raw, dict) or not raw:
        raise RecipeError("strata", "expected a list of columns or a mapping column -> weights | pool")
    cols = tuple(_text(c, "strata") for c in raw)
    weights = None
    for i, (col, spec) in enumerate(raw.items()):
        name = f"strata.{col}"
        if spec is None or spec == POOL:
            continue
        if not isinstance(spec, dict) or not spec:
            raise RecipeError(name, f"expected a mapping value -> weight, or '{POOL}'")
        if i > 0:
            raise RecipeError(name, "explicit weights are allowed on the first strata column only")
        weights = {}
        for value, w in spec.items():
            weight = _number(w, f"{name}.{value}")
            if weight < 0:
                raise RecipeError(f"{name}.{value}", f"weights cannot be negative (got {w!r})")
            weights[_stratum_value(value)] = weight
        total = sum(weights.values())
        if abs(total - 1.0) > 1e-6:
            raise RecipeError(name, f"weights must sum to 1 (they sum to {total:.6g})")
    return Strata(cols, weights)


def parse_recipe(raw: Any, base_dir: str | Path | None = None) -> Recipe:
    """Check a recipe mapping (as loaded from YAML); relative tokenizer paths resolve against base_dir."""
    if not isinstance(raw, dict):
        raise RecipeError("recipe", f"expected a YAML mapping, got {type(raw).__name__}")
    for k in raw:
        if k not in KEYS:
            raise RecipeError(str(k), f"unknown field; known fields: {', '.join(KEYS)}")
    strategy = raw.get("strategy", "topk")
    if strategy not in STRATEGIES:
        raise RecipeError("strategy", f"{strategy!r} is not one of {', '.join(STRATEGIES)}")
    filt = _text(raw["filter"], "filter") if raw.get("filter") is not None else None
    rank = _text(raw["rank"], "rank") if raw.get("rank") is not None else None
    if strategy != "uniform" and rank is None:
        raise RecipeError("rank", f"strategy {strategy!r} ranks documents: give a column or SQL expression")
    temperature = None
    if strategy == "gumbel":
        temperature = _number(raw.get("temperature", DEFAULT_TEMPERATURE), "temperature")
        if temperature < 0:
            raise RecipeError("temperature", f"must be >= 0, got {raw['temperature']!r}")
    threshold = None
    if strategy == "threshold":
        if raw.get("threshold") is None:
            raise RecipeError("threshold", "strategy 'threshold' needs a value: keep rank >= threshold")
        threshold = _number(raw["threshold"], "threshold")
    elif raw.get("threshold") is not None:
        raise RecipeError("threshold", f"only used with strategy 'threshold' (strategy is {strategy!r})")
    budget = _budget(raw["budget"]) if raw.get("budget") is not None else None
    if budget is None and strategy != "threshold":
        raise RecipeError(
            "budget", f"strategy {strategy!r} needs a budget (tokens, chars, docs or a fraction)"
        )
    normalize = raw.get("normalize", strategy == "gumbel")
    if not isinstance(normalize, bool):
        raise RecipeError("normalize", f"expected true or false, got {normalize!r}")
    max_epochs = raw.get("max_epochs", 1)
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise RecipeError("max_epochs", f"expected a whole number >= 1, got {max_epochs!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecipeError("seed", f"expected a whole number >= 0, got {seed!r}")
    tokenizer = None
    if raw.get("tokenizer") is not None:
        path = Path(_text(raw["tokenizer"], "tokenizer")).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise RecipeError("tokenizer", f"{path}: no such file (expected a tokenizers `tokenizer.json`)")
        tokenizer = str(path.resolve())
    dedup = raw.get("dedup")
    if dedup is not None and dedup not in DEDUP:
        raise RecipeError("dedup", f"{dedup!r} is not one of {', '.join(DEDUP)}")
    memory = raw.get("memory")
    if memory is not None:
        memory = check_memory(memory, "memory")
    strata = _strata(raw.get("strata"))
    if strata.columns and budget is None:
        raise RecipeError("strata", "quotas per stratum need a budget")
    return Recipe(
        filter=filt,
        rank=rank,
        normalize=normalize,
        strategy=strategy,
        temperature=temperature,
        threshold=threshold,
        budget=budget,
        strata=strata,
        max_epochs=max_epochs,
        tokenizer=tokenizer,
        dedup=dedup,
        memory=memory,
        seed=seed,
    )


def load_recipe(path: str | Path) -> tuple[Recipe, str]:
    """Read and check a YAML recipe file; returns the recipe and the file's text."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError("recipe", f"{path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError("recipe", f"{path}: not valid YAML ({exc})") from None
    return parse_recipe(raw, base_dir=path.parent), text


def _describe(con, sql: str, field_name: str) -> list[tuple[str, str]]:
    import duckdb

    try:
        return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {sql}").fetchall()]
    except duckdb.Error as exc:
        raise RecipeError(field_name, str(exc).splitlines()[0]) from None


def _numeric(dtype: str) -> bool:
    t = dtype.upper().removeprefix("U")
    return t in ("BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE") or (
        t.startswith("DECIMAL")
    )


def check_sql(recipe: Recipe, con) -> None:
    """Bind every SQL piece of the recipe against the catalog (no rows are read)."""
    from assay.corpora.catalog import ident

    if recipe.filter is not None:
        ((_, dtype),) = _describe(con, f"SELECT ({recipe.filter}) AS f FROM annotations", "filter")
        if dtype.upper() != "BOOLEAN":
            raise RecipeError("filter", f"must be a boolean condition, but it has type {dtype}")
        _describe(con, f"SELECT 1 FROM annotations WHERE ({recipe.filter})", "filter")
    if recipe.rank is not None:
        ((_, dtype),) = _describe(con, f"SELECT ({recipe.rank}) AS r FROM annotations", "rank")
        if not _numeric(dtype):
            raise RecipeError("rank", f"must be numeric, but {recipe.rank!r} has type {dtype}")
    for col in recipe.strata.columns:
        _describe(con, f"SELECT {ident(col)} FROM annotations", f"strata.{col}")

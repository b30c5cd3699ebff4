"""Benchmark targets: the examples a corpus is compared with (decontamination, benchmark similarity).

`assay targets add NAME PATH...` stores a set as ``targets/NAME.parquet``, one row per example:

    benchmark   string  ``--benchmark``, else derived from the path (`benchmark_name`)
    split       string  ``--split``, else read from the path (`infer_split`): train, dev, val, test
    example_id  string  the record's own id (``id``, ``example_id``, ``task_id``, ``uuid``), else
                        ``<file stem>:<row>`` with row the 1-based JSONL line or CSV record
    text        string  question + gold answer, plus any support text (a context, a passage),
                        joined by single spaces; how each format builds it is in `FORMATS`

This layout is a contract: other code (BETR, embeddings) reads these four columns. Schema
metadata ``assay.targets`` records the sources and ``content_sha256``, a hash of those four
columns that scorers put in their version, so that re-adding a set marks their annotations stale.

Formats with answer options also keep what ranked classification (RC, the cloze scoring of
lm-eval and llm-foundry) needs, in four more columns (`CHOICE_SCHEMA`); null for the formats
without options (cot, qa, lm, humaneval, question-answer, generic):

    context       string        what each option continues: the query (mc), the goal (piqa), the
                                question (mmlu); null for schema
    choices       list<string>  the options (mc, piqa, mmlu); for schema the context options
    gold          int32         index of the correct option; null when unknown (piqa without labels)
    continuation  string        schema only: the fixed text scored after each context option

Option i is scored as a prompt and a target: prompt ``context``, target ``choices[i]``; for schema
(Winogrande, WSC) prompt ``choices[i]`` and target ``continuation``, lm-eval's "partial scoring":
each option fills the blank and the same rest of the sentence is scored. These texts are stored
verbatim (not stripped, no prompt template); how prompt and target are joined is the scorer's
business (`assay.pipelines.proxy_eval`). Files written before these columns existed still read:
`read_targets(..., choices=True)` gives them null choices.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

TARGETS_DIR = "targets"
TARGET_SCHEMA = pa.schema(
    [("benchmark", pa.string()), ("split", pa.string()), ("example_id", pa.string()), ("text", pa.string())]
)
CHOICE_SCHEMA = pa.schema(
    [
        ("context", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("gold", pa.int32()),
        ("continuation", pa.string()),
    ]
)
# the columns of targets/NAME.parquet
TARGET_FILE_SCHEMA = pa.schema([*TARGET_SCHEMA, *CHOICE_SCHEMA])
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
# path words that name a split, and the split they name
SPLIT_WORDS = {
    "train": "train",
    "dev": "dev",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "tests": "test",
}
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
ID_FIELDS = ("id", "example_id", "task_id", "uuid")
MAP_KEYS = ("text", "context", "question", "answer", "id")

# format -> (fields a record must have, what the text is made of); detection tries them in order
FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "mc": (("query", "choices", "gold"), "query + choices[gold] (llm-foundry multiple choice)"),
    "schema": (
        ("context_options", "continuation", "gold"),
        "context_options[gold] + continuation (llm-foundry schema: Winogrande, WSC)",
    ),
    "cot": (("context", "chain_of_thought", "answer"), "context + chain_of_thought + answer (GSM8K, SVAMP)"),
    "qa": (("context", "answer"), "context + answer (llm-foundry QA: TriviaQA)"),
    "lm": (("context", "continuation"), "context + continuation (LAMBADA, Jeopardy, BIG-bench)"),
    "piqa": (("goal", "sol1", "sol2"), "goal + the labelled solution (labels: STEM-labels.lst beside it)"),
    "humaneval": (("prompt", "canonical_solution"), "prompt + canonical_solution (HumanEval)"),
    "question-answer": (
        ("question", "answer"),
        "question + answer, the first one if a list (GSM8K, NQ-open)",
    ),
    "mmlu": ((), "headerless CSV question, A, B, C, D, answer letter: question + the lettered option"),
    "generic": ((), "JSONL, or CSV with a header, and --map text=COL or context/question/answer=COL"),
}


def check_name(name: str) -> str:
    """Set names become file and view names: lowercase letters, digits and underscores."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"targets set name {name!r}: use lowercase letters, digits and _ (e.g. evals)")
    return name


def targets_path(root: str | Path, name: str) -> Path:
    return Path(root) / TARGETS_DIR / f"{name}.parquet"


# ---- naming: benchmark and split from a path ------------------------------------------------------
def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.rsplit(".", 1)[0] if name.endswith(DATA_SUFFIXES) else name


def _words(stem: str) -> list[str]:
    return [w for w in re.split(r"[._\-\s]+", stem.lower()) if w]


def infer_split(path: Path) -> str | None:
    """The split a path names: a split word in the file name (``anatomy_test.csv``,
    ``NQ-open.dev.jsonl``), else a folder named after one (``mmlu/val/…``); None when neither or
    when the file name holds two different ones."""
    found = {SPLIT_WORDS[w] for w in _words(_stem(path)) if w in SPLIT_WORDS}
    if len(found) == 1:
        return found.pop()
    if found:
        return None
    return SPLIT_WORDS.get(path.parent.name.lower())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def benchmark_name(path: Path) -> str:
    """A file in a folder named after a split takes the name of the folder above it
    (``mmlu/test/anatomy_test.csv`` -> ``mmlu``); any other file its name without split words and
    plain numbers (``NQ-open.efficientqa.dev.1.1.jsonl`` -> ``nq_open_efficientqa``), or, when
    nothing is left, its folder's name (``gsm8k/test.jsonl`` -> ``gsm8k``)."""
    if path.parent.name.lower() in SPLIT_WORDS and path.parent.parent.name:
        return _slug(path.parent.parent.name)
    kept = [w for w in _words(_stem(path)) if w not in SPLIT_WORDS and not w.isdigit()]
    return _slug("_".join(kept)) or _slug(path.parent.name) or "benchmark"


def data_files(path: Path) -> list[Path]:
    """A file as given, or the data files (.jsonl, .json, .csv, also .gz) under a folder, sorted."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.removesuffix(".gz").endswith(DATA_SUFFIXES)
    )
    if not files:
        raise ValueError(f"{path}: no .jsonl, .json or .csv files in this folder")
    return files


# ---- reading records -------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _json_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(row, record): JSON lines numbered by line, or a JSON array numbered from 1."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        rows = json.loads(text)
        yield from enumerate(rows, 1)
        return
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON text may hold U+2028
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: not a JSON object")
            yield line_no, record


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(_read_text(path))))


def _is_mmlu(rows: list[list[str]]) -> bool:
    return bool(rows) and len(rows[0]) == 6 and rows[0][5].strip() in ("A", "B", "C", "D")


def _detect(path: Path, record: dict) -> str:
    for fmt, (fields, _) in FORMATS.items():
        if fields and all(f in record for f in fields):
            return fmt
    raise ValueError(
        f"{path}: cannot tell the benchmark format from the fields {sorted(record)}; "
        "pass --map text=FIELD (or --map question=FIELD,answer=FIELD)"
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _choice(record: dict, options: str, where: str) -> Any:
    gold, choices = record["gold"], record[options]
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        raise ValueError(f"{where}: gold {gold!r} is not an index into its {len(choices)} {options}")
    return choices[gold]


def _parts(fmt: str, record: dict, where: str, label: int | None = None) -> list[Any]:
    """The pieces of an example's text, in reading order."""
    missing = [f for f in FORMATS[fmt][0] if f not in record]
    if missing:
        raise ValueError(f"{where}: a {fmt} record needs the fields {missing}")
    if fmt == "mc":
        return [record["query"], _choice(record, "choices", where)]
    if fmt == "schema":
        return [_choice(record, "context_options", where), record["continuation"]]
    if fmt == "cot":
        return [record["context"], record["chain_of_thought"], record["answer"]]
    if fmt == "qa":
        return [record["context"], record["answer"]]
    if fmt == "lm":
        return [record["context"], record["continuation"]]
    if fmt == "piqa":  # no labels file: the gold solution is unknown, so both are kept
        sols = [record["sol1"], record["sol2"]]
        return [record["goal"], *(sols if label is None else [sols[label]])]
    if fmt == "humaneval":
        return [record["prompt"], record["canonical_solution"]]
    return [record["question"], _first(record["answer"])]


NO_CHOICES = (None, None, None, None)


def _options(values: Any, where: str) -> list[str]:
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, str | int | float) for v in values)
    ):
        raise ValueError(f"{where}: the options must be a list of texts, found {str(values)[:60]!r}")
    return [str(v) for v in values]


def _choice_fields(fmt: str, record: dict, where: str, label: int | None = None) -> tuple:
    """(context, choices, gold, continuation) of a format with options; all None for the others.
    Call after `_parts`, which checks the fields and the gold index."""
    if fmt == "mc":
        return str(record["query"]), _options(record["choices"], where), record["gold"], None
    if fmt == "schema":
        options = _options(record["context_options"], where)
        return None, options, record["gold"], str(record["continuation"])
    if fmt == "piqa":
        return str(record["goal"]), _options([record["sol1"], record["sol2"]], where), label, None
    return NO_CHOICES


def _joined(parts: list[Any], where: str) -> str:
    texts = []
    for p in parts:
        if p is not None and not isinstance(p, str | int | float):
            raise ValueError(f"{where}: expected text, found {type(p).__name__} {str(p)[:60]!r}")
        if p is not None and str(p).strip():
            texts.append(str(p).strip())
    if not texts:
        raise ValueError(f"{where}: the example's text is empty")
    return " ".join(texts)


def _piqa_labels(path: Path, n_records: int) -> list[int] | None:
    labels = path.with_name(f"{_stem(path)}-labels.lst")
    if not labels.exists():
        return None
    values = [line.strip() for line in labels.read_text().splitlines() if line.strip()]
    if len(values) != n_records or any(v not in ("0", "1") for v in values):
        raise ValueError(f"{labels}: expected {n_records} labels 0 or 1, one a line, for {path.name}")
    return [int(v) for v in values]


def _mapped(record: dict, mapping: dict[str, str], where: str) -> tuple[str | None, str]:
    missing = [col for col in mapping.values() if col not in record]
    if missing:
        raise ValueError(f"{where}: no field {missing[0]!r} (fields: {sorted(record)}); check --map")
    keys = ["text"] if "text" in mapping else [k for k in ("context", "question", "answer") if k in mapping]
    text = _joined([_first(record[mapping[k]]) for k in keys], where)
    own = record[mapping["id"]] if "id" in mapping else None
    return (None if own is None else str(own)), text


def read_examples(
    path: Path, fmt: str = "auto", mapping: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """(example_id, text) of every record of one file, in file order."""
    return [row[:2] for row in read_records(path, fmt, mapping)]


def read_records(path: Path, fmt: str = "auto", mapping: dict[str, str] | None = None) -> list[tuple]:
    """(example_id, text, context, choices, gold, continuation) of every record of one file, in
    file order; the last four are None for formats without options."""
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"--format {fmt!r}: use one of auto, {', '.join(FORMATS)}")
    if mapping:
        fmt = "generic"
    elif fmt == "generic":
        raise ValueError("--format generic needs --map text=COL (or context/question/answer=COL)")
    stem, is_csv = _stem(path), path.name.removesuffix(".gz").endswith(".csv")
    out: list[tuple] = []
    if is_csv and fmt in ("auto", "mmlu"):
        rows = _csv_rows(path)
        if not _is_mmlu(rows):
            raise ValueError(
                f"{path}: not an MMLU-style CSV (question, A, B, C, D, answer letter); "
                "for a CSV with a header pass --map text=COL"
            )
        for i, row in enumerate(rows, 1):
            letter = row[5].strip() if len(row) == 6 else ""
            if letter not in ("A", "B", "C", "D"):
                raise ValueError(f"{path}: record {i}: expected question, A, B, C, D, answer letter")
            gold = "ABCD".index(letter)
            text = _joined([row[0], row[1 + gold]], f"{path}:{i}")
            out.append((f"{stem}:{i}", text, row[0], row[1:5], gold, None))
        return out
    if is_csv:
        if fmt != "generic":
            raise ValueError(f"{path}: a CSV is read as mmlu, or with --map; not as {fmt}")
        records = enumerate(csv.DictReader(io.StringIO(_read_text(path))), 1)
    else:
        records = _json_records(path)
    records = list(records)
    labels = None
    for index, (row, record) in enumerate(records):
        where = f"{path}:{row}"
        fields = NO_CHOICES
        if fmt == "generic":
            own, text = _mapped(record, mapping or {}, where)
        else:
            if fmt == "auto":
                fmt = _detect(path, record)
                if fmt == "piqa":
                    labels = _piqa_labels(path, len(records))
            own = next((record[f] for f in ID_FIELDS if record.get(f) is not None), None)
            label = labels[index] if labels is not None else None
            text = _joined(_parts(fmt, record, where, label), where)
            fields = _choice_fields(fmt, record, where, label)
        out.append((f"{stem}:{row}" if own is None else str(own), text, *fields))
    return out


def parse_map(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--map text=COL`` or ``--map question=A,answer=B`` (repeatable) as {key: column}."""
    mapping: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            key, sep, col = pair.partition("=")
            key, col = key.strip(), col.strip()
            if not sep or key not in MAP_KEYS or not col:
                raise ValueError(f"--map {item!r}: use KEY=COLUMN with KEY one of {', '.join(MAP_KEYS)}")
            mapping[key] = col
    if mapping and "text" in mapping and set(mapping) - {"text", "id"}:
        raise ValueError("--map: give text=COL alone, or context/question/answer columns, not both")
    if mapping and not set(mapping) - {"id"}:
        raise ValueError("--map: name the text: text=COL, or question=COL and answer=COL")
    return mapping


def cap_key(example_id: str) -> bytes:
    """The order in which per-benchmark caps keep examples: blake2b of the id, lowest first."""
    return hashlib.blake2b(example_id.encode(), digest_size=8).digest()


def load_targets(
    paths: list[str | Path],
    split: str | None = None,
    benchmark: str | None = None,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    per_benchmark: int | None = None,
    choices: bool = False,
) -> pa.Table:
    """Every example of the files (or folders) as TARGET_SCHEMA rows, in reading order; with
    ``choices`` as TARGET_FILE_SCHEMA rows (the options for ranked classification too).

    ``per_benchmark`` keeps, per benchmark, the examples whose ids hash lowest (blake2b of the
    example id): the same examples on every run, whatever the order of the inputs."""
    if per_benchmark is not None and per_benchmark < 1:
        raise ValueError(f"--per-benchmark {per_benchmark}: give a positive number of examples")
    if benchmark is not None and not _slug(benchmark):
        raise ValueError(f"--benchmark {benchmark!r}: give a name with letters or digits")
    rows: list[tuple] = []
    seen: dict[tuple[str, str], Path] = {}
    for given in paths:
        for path in data_files(Path(given)):
            file_split = split or infer_split(path)
            if file_split is None:
                raise ValueError(
                    f"{path}: cannot tell the split from its name; pass --split (e.g. --split test)"
                )
            bench = benchmark or benchmark_name(path)
            for example_id, text, *fields in read_records(path, fmt, mapping):
                if (bench, example_id) in seen:
                    raise ValueError(
                        f"{path}: example {example_id!r} of benchmark {bench!r} is already in "
                        f"{seen[bench, example_id]}; pass --benchmark to keep the files apart"
                    )
                seen[bench, example_id] = path
                rows.append((bench, file_split, example_id, text, *fields))
    if per_benchmark is not None:
        by_bench: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_bench.setdefault(row[0], []).append(i)
        keep = set()
        for indices in by_bench.values():
            keep.update(sorted(indices, key=lambda i: (cap_key(rows[i][2]), i))[:per_benchmark])
        rows = [r for i, r in enumerate(rows) if i in keep]
    schema = TARGET_FILE_SCHEMA if choices else TARGET_SCHEMA
    columns = list(zip(*rows)) if rows else [[]] * len(TARGET_FILE_SCHEMA)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, schema)], schema=schema)


def content_digest(table: pa.Table) -> str:
    """sha256 of the rows (benchmark, split, example_id, text) in order: the set's identity for the
    scorers that read the text (the options do not enter it)."""
    h = hashlib.sha256()
    for row in zip(*(table.column(c).to_pylist() for c in TARGET_SCHEMA.names)):
        h.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


# ---- registering and listing ---------------------------------------------------------------------
def add_targets(
    root: str | Path,
    name: str,
    paths: list[str | Path],
    split: str | None = None,
    benchmark: str | None = None,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    per_benchmark: int | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Load benchmark examples into ``targets/NAME.parquet`` (atomically) and refresh the catalog."""
    from assay.corpora.catalog import refresh_catalog
    from assay.corpora.manifest import require_root
    from assay.corpora.shards import write_table_atomic

    root = require_root(root)
    check_name(name)
    target = targets_path(root, name)
    if target.exists() and not replace:
        raise ValueError(f"targets set {name!r} already exists ({target}); pass --replace to overwrite it")
    table = load_targets(paths, split, benchmark, fmt, mapping, per_benchmark, choices=True)
    if table.num_rows == 0:
        raise ValueError(f"no examples in {', '.join(map(str, paths))}")
    meta = {
        "sources": [str(Path(p).resolve()) for p in paths],
        "format": fmt,
        "map": mapping or None,
        "split": split,
        "per_benchmark": per_benchmark,
        "content_sha256": content_digest(table),
    }
    write_table_atomic(table.replace_schema_metadata({"assay.targets": json.dumps(meta)}), target)
    refresh_catalog(root)
    return {"name": name, "path": str(target), "examples": table.num_rows, **meta}


def read_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"assay.targets")
    return json.loads(raw) if raw else {}


def registered_targets(root: str | Path) -> dict[str, Path]:
    base = Path(root) / TARGETS_DIR
    if not base.is_dir():
        return {}
    return {p.stem: p for p in sorted(base.glob("*.parquet")) if _NAME_RE.match(p.stem)}


def read_targets(root: str | Path, name: str, choices: bool = False) -> pa.Table:
    """A registered set's rows (TARGET_SCHEMA; with ``choices`` TARGET_FILE_SCHEMA, null options
    for a file written before they were kept); a clear error naming the registered sets when it
    is missing."""
    import pyarrow.parquet as pq

    path = targets_path(root, check_name(name))
    if not path.exists():
        known = ", ".join(registered_targets(root)) or "none"
        raise ValueError(
            f"no targets set {name!r} in {root} (registered: {known}); "
            f"add one with `assay targets add {name} PATH... --root {root}`"
        )
    if not choices:
        return pq.read_table(path, columns=TARGET_SCHEMA.names)
    table = pq.read_table(path)
    for field in CHOICE_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(TARGET_FILE_SCHEMA.names).cast(TARGET_FILE_SCHEMA)


def targets_digest(root: str | Path, name: str) -> str:
    """The set's content hash: from its metadata, or computed for a file written by other code."""
    path = targets_path(root, check_name(name))
    meta = read_meta(path) if path.exists() else {}
    return meta.get("content_sha256") or content_digest(read_targets(root, name))


def list_targets(root: str | Path) -> list[dict[str, Any]]:
    """Per set: examples, and examples per (benchmark, split)."""
    import pyarrow.parquet as pq

    out = []
    for name, path in registered_targets(root).items():
        table = pq.read_table(path, columns=["benchmark", "split"])
        counts = table.group_by(["benchmark", "split"]).aggregate([([], "count_all")])
        groups = sorted(
            zip(*(counts.column(c).to_pylist() for c in ("benchmark", "split", "count_all"))),
            key=lambda g: (g[0], g[1]),
        )
        out.append({"name": name, "examples": table.num_rows, "groups": groups, **read_meta(path)})
    return out


# ---- catalog -----------------------------------------------------------------------------------
_SQL_TYPES = {"context": "VARCHAR", "choices": "VARCHAR[]", "gold": "INTEGER", "continuation": "VARCHAR"}
_EMPTY = (
    "SELECT NULL::VARCHAR AS target_set, NULL::VARCHAR AS benchmark, NULL::VARCHAR AS split, "
    "NULL::VARCHAR AS example_id, NULL::VARCHAR AS text, "
    + ", ".join(f"NULL::{t} AS {c}" for c, t in _SQL_TYPES.items())
    + " WHERE false"
)


def catalog_statements(root: Path) -> list[str]:
    """Views ``targets`` (every set, with a ``target_set`` column) and ``targets_NAME`` per set
    (a catalog extension: see CATALOG_EXTENSIONS in corpora.catalog). A file written before the
    option columns existed shows them as nulls in ``targets``."""
    import pyarrow.parquet as pq

    from assay.corpora.catalog import ident, sql_literal

    stmts, union = [], []
    for name, path in registered_targets(root).items():
        src = f"read_parquet({sql_literal(str(path.resolve()))})"
        stmts.append(f"CREATE OR REPLACE VIEW {ident('targets_' + name)} AS SELECT * FROM {src}")
        present = set(pq.read_schema(path).names)
        options = [c if c in present else f"NULL::{t} AS {c}" for c, t in _SQL_TYPES.items()]
        union.append(
            f"SELECT {sql_literal(name)} AS target_set, benchmark, split, example_id, text, "
            f"{', '.join(options)} FROM {src}"
        )
    return ["CREATE OR REPLACE VIEW targets AS " + (" UNION ALL ".join(union) or _EMPTY), *stmts]

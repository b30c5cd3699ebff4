"""CLI: ingest, annotate, sql, status."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from assay.pipelines.cli.common import root_option


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # read by ExecutorConfig: datatrove's own task logs go to the terminal too
        os.environ["ASSAY_VERBOSE"] = "1"


def executor_options(f):
    f = click.option(
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_verbose,
        help="Also show datatrove's task logs (always kept in ROOT/.assay/logs/).",
    )(f)
    f = click.option(
        "--executor-opt",
        "executor_opts",
        multiple=True,
        metavar="KEY=VALUE",
        help="Option for the Slurm/Ray executor (e.g. partition=cpu, time=4:00:00).",
    )(f)
    f = click.option(
        "--workers",
        default=0,
        show_default=True,
        help="Parallel workers. 0: one process with --executor local; on Slurm and Ray every unit at "
        "once (the cluster's free CPUs decide). N caps how many run together.",
    )(f)
    f = click.option(
        "--executor",
        type=click.Choice(["local", "slurm", "ray"]),
        default="local",
        show_default=True,
        help="datatrove executor that runs the work units.",
    )(f)
    return f


def _config(executor: str, workers: int, executor_opts: tuple[str, ...]):
    from assay.pipelines.executor import ExecutorConfig

    opts = {}
    for item in executor_opts:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--executor-opt")
        k, v = item.split("=", 1)
        opts[k] = v
    return ExecutorConfig(kind=executor, workers=workers, options=opts)


def _console():
    from rich.console import Console

    return Console()


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@root_option
@click.option(
    "--text-field",
    default="text",
    show_default=True,
    help="Field holding the document text; a dotted path reaches into nested objects (doc.body).",
)
@click.option("--id-field", default="id", show_default=True, help="Field holding the id (derived if absent).")
@click.option("--url-field", default="url", show_default=True, help="Field holding the URL (metadata.url).")
@click.option("--source-field", default="source", show_default=True, help="Field holding the source name.")
@click.option("--source", default=None, help="Source name for records without a `source` field [file name].")
@click.option(
    "--txt-mode",
    type=click.Choice(["file", "line"]),
    default="file",
    show_default=True,
    help=".txt inputs: one document per file, or one per non-blank line.",
)
@click.option(
    "--id-prefix",
    default=None,
    help="Derived ids become PREFIX/<path under the named folder>:<line> (else the path from the current directory).",
)
@click.option("--shard-rows", default=100_000, show_default=True, help="Maximum documents per shard.")
@click.option("--shard-mb", default=512, show_default=True, help="Maximum text megabytes per shard.")
@click.option(
    "--max-record-mb", default=64, show_default=True, help="Records larger than this are quarantined."
)
@click.option(
    "--split-bytes",
    default="0",
    show_default=True,
    help="Cut each uncompressed JSONL input larger than this (e.g. 64MB) into line-aligned byte ranges, "
    "one work unit each; the same ids and shards as one unit. 0: never.",
)
@click.option("--append", is_flag=True, help="Add these inputs to a root that already holds a corpus.")
@executor_options
def ingest(
    inputs,
    root,
    text_field,
    id_field,
    url_field,
    source_field,
    source,
    txt_mode,
    id_prefix,
    shard_rows,
    shard_mb,
    max_record_mb,
    split_bytes,
    append,
    executor,
    workers,
    executor_opts,
):
    """Read INPUTS (JSONL or text [.gz|.zst|.bz2], Parquet, Arrow, WARC; files, folders, globs, fsspec URLs) into docs shards.

    hf:PATH[:split] reads a Hugging Face dataset saved with save_to_disk, or a hub-style folder of
    Parquet/JSONL/Arrow shards. Records that cannot become documents go to quarantine/ with a
    reason; the command prints, per input, records read = documents written + records
    quarantined, and any files it skipped. A rerun resumes.
    """
    from assay.corpora.ingest import IngestOptions, parse_size
    from assay.pipelines.ingest import ingest as run_ingest

    try:
        split = parse_size(split_bytes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--split-bytes") from exc
    options = IngestOptions(
        text_field=text_field,
        id_field=id_field,
        url_field=url_field,
        source_field=source_field,
        source=source,
        txt_mode=txt_mode,
        id_prefix=id_prefix,
        shard_rows=shard_rows,
        shard_bytes=shard_mb * 1024 * 1024,
        max_record_bytes=max_record_mb * 1024 * 1024,
        split_bytes=split,
    )
    try:
        summary = run_ingest(
            list(inputs), root, options, _config(executor, workers, executor_opts), append=append
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    from rich.table import Table

    table = Table(title="ingest balance" + (" (already ingested)" if summary["already_done"] else ""))
    for col in ("input", "read", "docs", "quarantined", "balanced"):
        table.add_column(col, justify="left" if col == "input" else "right")
    for e in summary["inputs"]:
        ok = e["records_read"] == e["docs"] + e["quarantined"]
        table.add_row(
            e.get("key", e["path"]),
            str(e["records_read"]),
            str(e["docs"]),
            str(e["quarantined"]),
            "yes" if ok else "NO",
        )
    table.add_row(
        "total", str(summary["records_read"]), str(summary["docs"]), str(summary["quarantined"]), ""
    )
    console = _console()
    console.print(table)
    for e in summary["inputs"]:
        if e.get("note"):
            console.print(
                f"note: {e.get('key', e['path'])}: {e['note']}", markup=False, highlight=False, soft_wrap=True
            )
    if summary["skipped"]:
        console.print(f"[yellow]skipped {len(summary['skipped'])} file(s) that are not inputs:[/yellow]")
        for skip in summary["skipped"]:
            console.print(
                f"  {skip['path']}: {skip['reason']}", markup=False, highlight=False, soft_wrap=True
            )


@click.command()
@root_option
@click.option(
    "--scorer",
    "scorers",
    multiple=True,
    required=True,
    help="Scorer spec, e.g. stats, language, fasttext:M.bin.",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda for model-backed scorers."
)
@click.option("--batch-size", default=None, type=int, help="Documents per scoring batch.")
@click.option(
    "--match",
    type=click.Choice(["substring", "word"]),
    default="substring",
    show_default=True,
    help="facts:NAME matching: the SMI paper's substring test, or word-bounded.",
)
@executor_options
def annotate(root, scorers, device, batch_size, match, executor, workers, executor_opts):
    """Run scorers over every docs shard into annotations/<scorer>/ (extractors: triples/<name>/).

    Finished shards are skipped; a scorer whose version changed is recomputed from scratch.

    \b
    Scorers (--scorer SPEC, repeatable):
      stats                      chars, bytes, words, lines, tokens_est
      heuristics                 Gopher / C4 / FineWeb / RedPajama signals, *_keep and *_reason
      language                   lang, lang_score, lang2, lang2_score (fastText lid.176)
      fasttext:MODEL.bin         <stem>_p_positive from `assay train fasttext`
      facts:NAME[:word]          fact mentions of a set from `assay facts add` (side table)
      triples[:k=v,...]          spaCy triples + entities; model=, n_process=, languages=en+de, max_chars=
      cluster:k=K,columns=a+b    k-means cluster per document; or embeddings=SET[:COLUMN];
                                 also seed=, sample=N|all, algorithm=minibatch|lloyd
      embed[:MODEL]              L2-normalised sentence embeddings (float16) in `embedding`
      lm_loss:MODEL[,k=v,...]    causal-LM loss: lm_<name>_bpb, _bpc, _tokens, _mink; name=, block=, stride=, mink=
      betr:NAME                  BETR benchmark similarity to the targets set NAME, in betr_NAME
      contamination:NAME[:n=13]  n-gram overlap with targets NAME: contam_frac, _benchmark, _example_id, _matches; floor=
      preselect:NAME[:strength]  PreSelect P(positive) in preselect_NAME (`assay train preselect`); S in preselect_NAME_s
      qurating:NAME              QuRating rater scores qurating_<criterion> (`assay train qurating`)
      rater:NAME                 distilled rater's estimate of a rating column in rater_NAME (`assay train rater`)
      dataman[:MODEL][,k=v,...]  DataMan 14 ratings 1-5 (dataman_overall...) + dataman_domain, raw answers;
                                 MODEL a folder or vllm:/openai:URL#NAME; template=gpt|dataman, max_length=;
                                 default SmolLM2-135M: plumbing only, its ratings carry no quality signal
      meta_rater:published       Meta-rater weighted sum of normalised scores in meta_rater; or weights=FILE|NAME,
                                 or COLUMN=W,...; norm=z|rank|none, name= (column meta_rater_NAME)
      exact_dup                  dup_exact_cluster, dup_exact_first: hash of the normalised text
      minhash[:k=v,...]          fuzzy duplicates (MinHash + LSH): dup_cluster, dup_cluster_size, dup_is_first;
                                 bands=14, rows=8, ngram=5, seed=1 (datatrove's defaults)
      datatrove:Class[:k=v,...]  any datatrove filter as <name>_keep, <name>_reason; name=, lines:FILE, py:mod:attr
      module.path:Class[:ARG]    a scorer from another package (contract: assay.scorers.base)
      NAME[:ARG]                 a scorer another package registers (entry points "assay.scorers")
    """
    from assay.pipelines.annotate import annotate as run_annotate

    if match == "word":
        scorers = tuple(s + ":word" if s.startswith("facts:") and s.count(":") == 1 else s for s in scorers)
    summary = run_annotate(root, list(scorers), _config(executor, workers, executor_opts), device, batch_size)
    for name, s in summary["scorers"].items():
        if not s["docs"]:
            click.echo(f"{name} v{s['version']}: up to date")
            continue
        errors = f", {s['errors']:,} documents could not be scored" if s["errors"] else ""
        click.echo(
            f"{name} v{s['version']}: {s['docs']:,} docs, {s['seconds']:.2f} s, {s['docs_per_s']:,.0f} docs/s{errors}"
        )
    if summary["stale_recomputed"]:
        click.echo(f"recomputed stale annotation sets: {', '.join(summary['stale_recomputed'])}")


@click.command()
@click.argument("query")
@root_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result to a file.")
@click.option("--max-rows", default=50, show_default=True, help="Rows shown in table format.")
def sql(query, root, fmt, out, max_rows):
    """Run QUERY on the catalog (views docs, annotations, quarantine, triples, fact_counts, mixtures).

    The catalog is opened read-only: statements that write are refused. Results stream: with
    --out, DuckDB's COPY writes csv / json / parquet without holding the result in memory.
    Repeated output names (SELECT d.id, a.* ...) become id, id_1, as in DuckDB.
    """
    from assay.corpora.catalog import COPY_FORMATS, copy_query, query_reader

    if out and fmt in COPY_FORMATS:
        rows = copy_query(root, query, out, fmt)
        click.echo(f"{rows:,} rows -> {out}", err=True)
        return
    if fmt == "parquet":
        raise click.UsageError("--format parquet needs --out FILE")
    with query_reader(root, query) as reader:
        write_result(reader, fmt, out, max_rows)


def write_result(reader, fmt: str, out: str | None, max_rows: int = 50) -> None:
    """Print Arrow batches as a table (the first max_rows rows), CSV or a JSON array, streaming."""
    import orjson
    import polars as pl
    import pyarrow as pa

    if fmt == "table":
        batches, n = [], 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if n > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, max_rows)
        with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            text = str(pl.from_arrow(table)) + "\n"
        if n > max_rows:
            text += f"(first {max_rows} rows; --max-rows N for more, --format csv --out FILE for all)\n"
        if out:
            from assay.corpora.atomic import write_bytes_atomic

            write_bytes_atomic(out, text.encode())
        else:
            sys.stdout.write(text)
        return
    stream = sys.stdout.buffer
    if fmt == "csv":
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(stream, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
    else:  # json: one array of row objects
        stream.write(b"[")
        first = True
        for batch in reader:
            for row in batch.to_pylist():
                stream.write((b"" if first else b",\n") + orjson.dumps(row, default=str))
                first = False
        stream.write(b"]\n")
    stream.flush()


@click.command()
@root_option
@click.option(
    "--check",
    is_flag=True,
    help="Also list the shard folders and compare them with the manifest (exit 1 if a file it names is missing).",
)
def status(root, check):
    """Show the corpus root: shards, annotation sets (done, incomplete, stale), quarantine, runs.

    The manifest is the root's truth; --check lists the folders to find drift: files the manifest
    names that are gone, and Parquet files it does not name (a running or killed run's output).
    """
    from assay.corpora.manifest import load_manifest, require_root

    m = load_manifest(require_root(root))
    shards = {Path(s["name"]).name for s in m["shards"]}
    docs = sum(s["rows"] for s in m["shards"])
    q = sum(s["rows"] or 0 for s in m["quarantine"])
    click.echo(f"root: {root if '://' in str(root) else os.path.abspath(root)}")
    click.echo(f"docs: {docs:,} in {len(shards)} shards; quarantined: {q:,}")
    for name, a in m["annotations"].items():
        done = _shards_done(name, a, shards)
        notes = []
        if done < len(shards):
            notes.append(f"incomplete: run `assay annotate --scorer {a['spec']}`")
        current = _current_version(a["spec"], root)
        if current is not None and current != a["version"]:
            notes.append(f"stale: this Assay writes v{current}; the next annotate recomputes it")
        suffix = f"  ({'; '.join(notes)})" if notes else ""
        click.echo(f"  {a['kind']} {name} v{a['version']}: {done}/{len(shards)} shards{suffix}")
    for r in m["runs"][-5:]:
        state = "" if r.get("status", "done") == "done" else f" [{r['status']}]"
        click.echo(f"  run {r['stage']} {r.get('run')} {r.get('started')} {r.get('seconds')} s{state}")
    if check:
        _check_drift(root)


def _check_drift(root: str) -> None:
    from assay.corpora.catalog import drift

    found = drift(root)
    if not found["missing"] and not found["unlisted"]:
        click.echo("check: every file the manifest names is present, and no other shard file")
        return
    for kind, note in (
        ("unlisted", "not in the manifest (a running or killed run's output, or a stray copy)"),
        ("missing", "named by the manifest but missing"),
    ):
        files = found[kind]
        if files:
            click.echo(f"check: {len(files):,} file(s) {note}:")
            for f in files[:10]:
                click.echo(f"  {f}")
            if len(files) > 10:
                click.echo(f"  ... and {len(files) - 10:,} more")
    if found["missing"]:
        raise click.ClickException(f"{len(found['missing']):,} file(s) the manifest names are missing")


def _shards_done(name: str, entry: dict, shards: set[str]) -> int:
    """Docs shards with every table of the set written (an extractor records one key per table)."""
    tables = entry.get("columns") or {name: None}
    keys = set(entry["shards"])
    return sum(all((part if t == name else f"{t}/{part}") in keys for t in tables) for part in shards)


# Scorers whose version is cheap to know without loading a model or fitting anything.
_CHEAP_VERSIONS = ("stats", "heuristics", "language", "fasttext", "datatrove")


def _current_version(spec: str, root: str) -> str | None:
    from assay.scorers.registry import make_scorer, parse_spec

    if parse_spec(spec)[0] not in _CHEAP_VERSIONS:
        return None
    try:
        return make_scorer(spec, root).version
    except (ValueError, OSError):  # a model file moved away: annotate will say so
        return None

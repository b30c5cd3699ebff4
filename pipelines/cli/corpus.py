"""CLI: ingest, annotate, sql, status."""

from __future__ import annotations

import os
import sys

import click

from assay.pipelines.cli.common import root_option


def executor_options(f):
    f = click.option(
        "--executor-opt",
        "executor_opts",
        multiple=True,
        metavar="KEY=VALUE",
        help="Option for the Slurm/Ray executor (e.g. partition=cpu, time=4:00:00).",
    )(f)
    f = click.option("--workers", default=1, show_default=True, help="Parallel worker processes.")(f)
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
@click.option("--text-field", default="text", show_default=True, help="Field holding the document text.")
@click.option("--id-field", default="id", show_default=True, help="Field holding the id (derived if absent).")
@click.option("--url-field", default="url", show_default=True)
@click.option("--source", default=None, help="Source name for records without a `source` field [file name].")
@click.option("--shard-rows", default=100_000, show_default=True, help="Maximum documents per shard.")
@click.option("--shard-mb", default=512, show_default=True, help="Maximum text megabytes per shard.")
@click.option(
    "--max-record-mb", default=64, show_default=True, help="Records larger than this are quarantined."
)
@click.option("--append", is_flag=True, help="Add these inputs to a root that already holds a corpus.")
@executor_options
def ingest(
    inputs,
    root,
    text_field,
    id_field,
    url_field,
    source,
    shard_rows,
    shard_mb,
    max_record_mb,
    append,
    executor,
    workers,
    executor_opts,
):
    """Read INPUTS (JSONL[.gz|.zst], Parquet, WARC; files, folders, globs, fsspec URLs) into docs shards.

    Records that cannot become documents go to quarantine/ with a reason; the command prints,
    per input, records read = documents written + records quarantined. A rerun resumes.
    """
    from assay.corpora.ingest import IngestOptions
    from assay.pipelines.ingest import ingest as run_ingest

    options = IngestOptions(
        text_field=text_field,
        id_field=id_field,
        url_field=url_field,
        source=source,
        shard_rows=shard_rows,
        shard_bytes=shard_mb * 1024 * 1024,
        max_record_bytes=max_record_mb * 1024 * 1024,
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
    _console().print(table)


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
    """
    from assay.pipelines.annotate import annotate as run_annotate

    if match == "word":
        scorers = tuple(s + ":word" if s.startswith("facts:") and s.count(":") == 1 else s for s in scorers)
    try:
        summary = run_annotate(
            root, list(scorers), _config(executor, workers, executor_opts), device, batch_size
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    for name, s in summary["scorers"].items():
        rate = f"{s['docs_per_s']:.0f} docs/s" if s["docs_per_s"] else "up to date"
        click.echo(f"{name} v{s['version']}: {summary['docs']} docs, {s['seconds']:.2f} s, {rate}")
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

    The catalog is opened read-only: statements that write are refused.
    """
    from assay.corpora.catalog import ReadOnlyError, run_query

    try:
        result = run_query(root, query)
    except ReadOnlyError as exc:
        raise click.ClickException(str(exc)) from None
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # DuckDB's own parser/binder errors are clear; show them plainly
        if type(exc).__module__.startswith("_duckdb") or "duckdb" in type(exc).__module__:
            raise click.ClickException(str(exc)) from None
        raise
    write_result(result, fmt, out, max_rows)


def write_result(result, fmt: str, out: str | None, max_rows: int = 50) -> None:
    """Print or save an Arrow table in the requested format."""
    import polars as pl

    df = pl.from_arrow(result)
    if fmt == "parquet":
        if not out:
            raise click.ClickException("--format parquet needs --out FILE")
        from assay.corpora.shards import write_table_atomic

        write_table_atomic(result, out)
        return
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            text = str(df)
    if out:
        from assay.corpora.atomic import write_bytes_atomic

        write_bytes_atomic(out, text.encode())
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@click.command()
@root_option
def status(root):
    """Show the corpus root: shards, annotation sets with versions, quarantine and recent runs."""
    from assay.corpora.manifest import load_manifest

    m = load_manifest(root)
    docs = sum(s["rows"] for s in m["shards"])
    q = sum(s["rows"] or 0 for s in m["quarantine"])
    click.echo(f"root: {os.path.abspath(root)}")
    click.echo(f"docs: {docs} in {len(m['shards'])} shards; quarantined: {q}")
    for name, a in m["annotations"].items():
        click.echo(f"  {a['kind']} {name} v{a['version']}: {len(a['shards'])}/{len(m['shards'])} shards")
    for r in m["runs"][-5:]:
        click.echo(f"  run {r['stage']} {r.get('run')} {r.get('started')} {r.get('seconds')} s")

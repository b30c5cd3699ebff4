"""CLI: select, mixtures list/show, export."""

from __future__ import annotations

import click

from assay.pipelines.cli.common import root_option


def _strata_table(manifest: dict, title: str):
    from rich.table import Table

    unit = manifest["budget"]["unit"]
    table = Table(title=title)
    for col in ("stratum", "weight", f"quota ({unit})", "pool docs", "pool tokens", "docs", "rows", "tokens"):
        table.add_column(col, justify="left" if col == "stratum" else "right")
    for col in ("epochs", "repeated", "score min"):
        table.add_column(col, justify="right")
    dedup = any("dedup_removed" in s for s in manifest["strata"])
    if dedup:
        table.add_column("dedup removed", justify="right")
    for s in manifest["strata"]:
        key = ", ".join(f"{k}={v}" for k, v in s["key"].items()) or "(all)"
        table.add_row(
            key,
            f"{s['weight']:.4f}",
            "-" if s["quota"] is None else f"{s['quota']:,}",
            f"{s['pool_docs']:,}",
            f"{s['pool_tokens']:,}",
            f"{s['selected_docs']:,}",
            f"{s['rows']:,}",
            f"{s['tokens']:,}",
            f"{s['epochs']:.3f}",
            f"{s['repeated_docs']:,}",
            "-" if s["score_min"] is None else f"{s['score_min']:.4g}",
            *([f"{s['dedup_removed']:,}"] if dedup else []),
        )
    return table


def _summary(manifest: dict) -> str:
    b, p, s = manifest["budget"], manifest["pool"], manifest["selected"]
    target = "all that pass" if b["target"] is None else f"{b['target']:,} {b['unit']}"
    counting = manifest["token_count"]["method"]
    return (
        f"mixture {manifest['name']}: strategy {manifest['strategy']}"
        + (f" (tau={manifest['temperature']})" if manifest["temperature"] is not None else "")
        + f", seed {manifest['seed']}, budget {target}, tokens counted by {counting}\n"
        f"pool: {p['docs']:,} docs, {p['tokens']:,} tokens; selected: {s['docs']:,} docs, {s['rows']:,} rows, "
        f"{s['tokens']:,} tokens ({s['repeated_docs']:,} docs repeated, at most {s['max_copies']} copies)"
    )


@click.command()
@root_option
@click.option("--recipe", "recipe_path", required=True, type=click.Path(dir_okay=False), help="YAML recipe.")
@click.option(
    "--name", required=True, help="Mixture name: the folder mixtures/NAME and the view mixture_NAME."
)
@click.option("--force", is_flag=True, help="Replace an existing mixture of this name.")
@click.option(
    "--memory",
    default=None,
    help="DuckDB memory cap while selecting, e.g. 2GB (overrides the recipe's `memory`; default 1GB). "
    "Beyond it the pool spills to .assay/tmp/ under the root.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="DuckDB threads [default: all cores]."
)
def select(root, recipe_path, name, force, memory, threads):
    """Select documents from a YAML recipe into mixtures/NAME (Parquet shards + manifest.json).

    Recipe fields: filter (SQL over the annotations view), rank (column or SQL expression),
    normalize, strategy (threshold | topk | gumbel | uniform), temperature, threshold, budget
    (tokens | chars | docs | fraction_of_tokens | fraction_of_chars | fraction_of_docs, or
    fraction_of_tokens: betr with compute_flops), strata (list of columns, or {column: {value:
    weight}}), max_epochs, tokenizer (tokenizer.json), dedup (fuzzy: keep dup_is_first from
    --scorer minhash; exact: keep dup_exact_first from --scorer exact_dup), memory, seed. A bad
    recipe writes nothing. Selection runs out of core: memory stays under the cap whatever the
    corpus size.
    """
    from assay.pipelines.recipe import RecipeError, load_recipe
    from assay.pipelines.select import select as run_select

    try:
        recipe, text = load_recipe(recipe_path)
        manifest = run_select(
            root, recipe, name, recipe_text=text, force=force, memory=memory, threads=threads
        )
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    from rich.console import Console

    if manifest.get("already_selected"):
        click.echo(f"mixture {name} was already selected with this recipe from this corpus; nothing to do")
    click.echo(_summary(manifest))
    Console(width=160).print(_strata_table(manifest, f"mixture {name}"))


@click.command()
@root_option
def mixtures_list(root):
    """List the mixtures of the root: documents, rows, tokens, strategy, creation time."""
    from assay.corpora.manifest import require_root
    from assay.corpora.mixture import list_mixtures, load_mixture

    names = list_mixtures(require_root(root))
    if not names:
        click.echo(f"no mixtures in {root}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mixtures")
    for col in ("name", "docs", "rows", "tokens", "strategy", "strata", "created"):
        table.add_column(col, justify="right" if col in ("docs", "rows", "tokens") else "left")
    for name in names:
        m = load_mixture(root, name)
        strata = ", ".join(m["recipe"]["strata"]["columns"]) or "-"
        s = m["selected"]
        table.add_row(
            name, f"{s['docs']:,}", f"{s['rows']:,}", f"{s['tokens']:,}", m["strategy"], strata, m["created"]
        )
    Console(width=160).print(table)


@click.command()
@click.argument("name")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def mixtures_show(name, root, as_json):
    """Show mixture NAME: recipe, budget, pool and selected counts, and the composition per stratum."""
    from assay.corpora.mixture import load_mixture

    try:
        manifest = load_mixture(root, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        import json

        click.echo(json.dumps(manifest, indent=2))
        return
    from rich.console import Console

    click.echo(_summary(manifest))
    r = manifest["recipe"]
    click.echo(f"filter: {r['filter'] or '-'}; rank: {r['rank'] or '-'}; max_epochs: {r['max_epochs']}")
    Console(width=160).print(_strata_table(manifest, f"mixture {name}"))
    click.echo(f"shards: {len(manifest['shards'])}; view: mixture_{_view(name)}")


def _view(name: str) -> str:
    from assay.corpora.catalog import view_name

    return view_name(name)


@click.command()
@click.argument("name")
@root_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write (must hold no part-* files).",
)
@click.option("--gzip", "use_gzip", is_flag=True, help="Compress JSONL files (part-NNNNN.jsonl.gz).")
def export(name, root, fmt, out, use_gzip):
    """Write mixture NAME for a trainer: one file per mixture shard, repeated documents included.

    Fields: id (document id), text, source (source name), url (may be null), meta (the source
    record's other fields: a JSON object in JSONL, JSON text in Parquet). Files are
    part-NNNNN.jsonl[.gz] or part-NNNNN.parquet.
    """
    from assay.corpora.mixture import export_mixture

    try:
        files = export_mixture(root, name, fmt, out, gzip=use_gzip)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sum(f["rows"] for f in files)
    click.echo(f"exported {rows:,} rows of mixture {name} to {out} ({len(files)} {fmt} files)")

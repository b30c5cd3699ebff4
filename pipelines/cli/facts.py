"""CLI: `assay facts add NAME FILE` and `assay facts list`."""

from __future__ import annotations

import click

from assay.pipelines.cli.common import root_option


@click.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True))
@root_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "pararel", "trex", "csv", "parquet"]),
    default="auto",
    show_default=True,
    help="pararel: JSON array of {idx, subj, rel, obj}; trex: JSON lines {sub_label, obj_label} "
    "(a file, or a folder of P*.jsonl named after the relation); csv/parquet: subject, relation, object columns.",
)
@click.option(
    "--replace", is_flag=True, help="Overwrite a set of the same name (its mention tables are dropped)."
)
def facts_add(name, file, root, fmt, replace):
    """Register the fact set in FILE as NAME (stored as ROOT/facts/NAME.parquet).

    Then count its mentions with `assay annotate --root ROOT --scorer facts:NAME` and query
    `SELECT * FROM fact_counts WHERE fact_set = 'NAME'` with `assay sql`.
    """
    from assay.corpora.facts import add_fact_set

    try:
        info = add_fact_set(root, name, file, fmt, replace=replace)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"registered fact set {name!r}: {info['facts']:,} facts, {info['patterns']:,} distinct search strings "
        f"({info['format']}) -> {info['path']}"
    )
    click.echo(f"next: assay annotate --root {root} --scorer facts:{name}")
    click.echo(
        f"      (word-bounded matching instead of the SMI paper's substring test: --scorer facts:{name}:word)"
    )


@click.command("list")
@root_option
def facts_list(root):
    """List the fact sets registered in ROOT and how far their mentions are annotated."""
    from assay.corpora.facts import list_fact_sets
    from assay.corpora.manifest import require_root

    require_root(root)

    sets = list_fact_sets(root)
    if not sets:
        click.echo(f"no fact sets in {root}; register one with `assay facts add NAME FILE --root {root}`")
        return
    for s in sets:
        modes = "; ".join(f"{m}: {s[m]}" for m in ("substring", "word") if m in s)
        click.echo(f"{s['name']}: {s['facts']:,} facts, {s['patterns']:,} search strings; annotated {modes}")
        if s["source"]:
            click.echo(f"  from {s['source']}")

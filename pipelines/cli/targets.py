"""CLI: `assay targets add|list` and `assay contamination report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from assay.corpora.targets import FORMATS
from assay.pipelines.cli.common import root_option

FORMAT_CHOICES = ["auto", *(f for f in FORMATS if f != "generic")]  # generic: what --map selects


@click.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@root_option
@click.option(
    "--split", default=None, help="Split of every example [read from each path: train, dev, val, test]."
)
@click.option("--benchmark", default=None, help="Benchmark name of every example [derived from each file].")
@click.option(
    "--per-benchmark",
    type=int,
    default=None,
    help="Keep at most N examples per benchmark (those whose ids hash lowest: the same on every run).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    default="auto",
    show_default=True,
    help="Record format; auto tells it from each file's fields (see the README for what each holds).",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="KEY=COL[,KEY=COL]",
    help="For other JSONL/CSV files: text=COL, or context/question/answer=COL; id=COL for the record id.",
)
@click.option("--replace", is_flag=True, help="Overwrite a set of the same name.")
def targets_add(name, paths, root, split, benchmark, per_benchmark, fmt, maps, replace):
    """Load the benchmark examples in PATHS (files or folders) as targets set NAME.

    Stored as ROOT/targets/NAME.parquet (benchmark, split, example_id, text); then look for them
    with `assay annotate --root ROOT --scorer contamination:NAME`.
    """
    from assay.corpora.targets import add_targets, parse_map

    try:
        mapping = parse_map(maps)
        info = add_targets(root, name, list(paths), split, benchmark, fmt, mapping, per_benchmark, replace)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"registered targets set {name!r}: {info['examples']:,} examples -> {info['path']}")
    import pyarrow.parquet as pq

    splits = set(pq.read_table(info["path"], columns=["split"]).column("split").to_pylist())
    if splits == {"test"}:  # held-out examples are looked for; training/dev examples rank the corpus
        click.echo(f"next: assay annotate --root {root} --scorer contamination:{name}")
    else:
        click.echo(f"next: assay annotate --root {root} --scorer embed, then --scorer betr:{name}")


@click.command("list")
@root_option
def targets_list(root):
    """List the targets sets of ROOT: per benchmark and split, how many examples."""
    from assay.corpora.manifest import require_root
    from assay.corpora.targets import list_targets

    try:
        require_root(root)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    sets = list_targets(root)
    if not sets:
        click.echo(f"no targets sets in {root}; add one with `assay targets add NAME PATH... --root {root}`")
        return
    for s in sets:
        benchmarks = len({g[0] for g in s["groups"]})
        click.echo(f"{s['name']}: {s['examples']:,} examples, {benchmarks} benchmark(s)")
        width = max(len(g[0]) for g in s["groups"])
        for bench, split, count in s["groups"]:
            click.echo(f"  {bench:<{width}}  {split:<5}  {count:>7,}")


def contamination_table(
    root: str | Path, name: str, n: int = 13, threshold: float = 0.5, mixture: str | None = None
) -> list[dict[str, Any]]:
    """Per benchmark of targets set NAME: examples, examples too short for n-grams, examples found
    (some document holds >= threshold of the example's n-grams) and the documents holding them,
    in the corpus and, with `mixture`, in that mixture."""
    import duckdb

    from assay.corpora.catalog import open_catalog, view_name
    from assay.corpora.manifest import load_manifest, require_root
    from assay.corpora.mixture import load_mixture
    from assay.corpora.targets import read_targets
    from assay.scorers.contamination import set_name
    from assay.scorers.registry import make_scorer

    manifest = load_manifest(require_root(root))
    read_targets(root, name)  # a clear error naming the registered sets
    annotation_set = set_name(name, n)
    entry = manifest["annotations"].get(annotation_set)
    spec = f"contamination:{name}" + ("" if n == 13 else f":n={n}")
    if entry is None:
        raise ValueError(
            f"targets set {name!r} is not annotated at n={n}; run `assay annotate --scorer {spec}`"
        )
    scorer = make_scorer(entry["spec"], root)
    if scorer.version != entry["version"]:
        raise ValueError(
            f"the {annotation_set} annotations are stale (targets set {name!r} changed since); "
            f"run `assay annotate --scorer {entry['spec']}` again"
        )
    missing = [s["name"] for s in manifest["shards"] if Path(s["name"]).name not in entry["shards"]]
    if missing:
        raise ValueError(
            f"{len(missing)} docs shard(s) lack {annotation_set} annotations (e.g. {missing[0]}); "
            f"run `assay annotate --scorer {entry['spec']}`"
        )
    if not 0 < threshold <= 1 or threshold < scorer.floor:
        raise ValueError(
            f"--threshold {threshold}: use a fraction in [{scorer.floor:g}, 1]; the annotations keep "
            f"matches from floor={scorer.floor:g} (annotate with `{spec}:floor=F` to go lower)"
        )
    if mixture is not None:
        load_mixture(root, mixture)  # a clear error naming the mixtures when it is missing
    index, benchmarks, _ = scorer.index()
    rows: dict[str, dict[str, Any]] = {}
    for bench, grams in zip(benchmarks.to_pylist(), index.grams.tolist()):
        row = rows.setdefault(
            bench, {"benchmark": bench, "examples": 0, "too_short": 0, "found": 0, "docs": 0}
        )
        row["examples"] += 1
        row["too_short"] += grams == 0
    query = (
        "SELECT m.benchmark, count(DISTINCT m.example_id), count(DISTINCT a.id) "
        f"FROM {view_name('annotations_' + annotation_set)} a, unnest(a.contam_matches) AS u(m) "
        "WHERE m.frac >= $threshold {where} GROUP BY 1"
    )
    parts = {"": ("found", "docs")}
    if mixture is not None:
        parts[f"AND a.id IN (SELECT id FROM {view_name('mixture_' + mixture)})"] = (
            "found_mixture",
            "docs_mixture",
        )
        for row in rows.values():
            row.update(found_mixture=0, docs_mixture=0)
    con = open_catalog(root, read_only=True)
    try:
        for where, (found, docs) in parts.items():
            result = con.execute(query.format(where=where), {"threshold": threshold}).fetchall()
            for bench, n_found, n_docs in result:
                rows[bench][found], rows[bench][docs] = n_found, n_docs
    except duckdb.Error as exc:
        raise ValueError(f"{root}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    return sorted(rows.values(), key=lambda r: r["benchmark"])


@click.command("report")
@click.argument("name")
@root_option
@click.option("--mixture", default=None, help="Also count what mixture M holds.")
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="An example is found when one document holds this fraction of its n-grams.",
)
@click.option("--n", "n", type=int, default=13, show_default=True, help="The n of the annotations to read.")
def contamination_report(name, root, mixture, threshold, n):
    """Per benchmark of targets set NAME: examples found in the corpus (and in a mixture).

    Reads the annotations of `assay annotate --scorer contamination:NAME`; an example counts as
    found when some document holds at least --threshold of its word n-grams.
    """
    try:
        rows = contamination_table(root, name, n, threshold, mixture)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    from rich.console import Console
    from rich.table import Table

    click.echo(
        f"targets {name}: an example is found where a document holds >= {threshold:g} of its {n}-grams"
        + (f"; *_mixture: documents of mixture {mixture}" if mixture else "")
    )
    table = Table()
    columns = list(rows[0]) if rows else ["benchmark"]
    for col in columns:
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for row in rows:
        table.add_row(*(str(v) if isinstance(v, str) else f"{v:,}" for v in row.values()))
    Console(width=160).print(table)
    click.echo("too_short: examples of fewer than n words, which have no n-grams and cannot be found")

"""CLI: `assay proxy eval` — ranked-classification accuracy and task loss of proxy LMs."""

from __future__ import annotations

import click

from assay.pipelines.cli.common import root_option


@click.command("eval")
@click.argument("folder", type=click.Path())
@root_option
@click.option("--targets", "targets", required=True, help="Targets set with multiple-choice examples.")
@click.option(
    "--split",
    default="dev",
    show_default=True,
    help="Split of the targets set to score ('all': every split).",
)
@click.option(
    "--max-per-benchmark",
    type=int,
    default=None,
    help="Score at most N examples per benchmark (those whose ids hash lowest: the same on every run).",
)
@click.option(
    "--shots", type=int, default=0, show_default=True, help="Solved examples of the same split before each."
)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where to write the results CSV [FOLDER/eval_<targets>.csv].",
)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    default="auto",
    show_default=True,
    help="auto: float16 on CUDA, float32 on CPU.",
)
@click.option(
    "--batch-tokens", type=int, default=8192, show_default=True, help="Padded tokens per forward pass."
)
def proxy_eval(folder, root, targets, split, max_per_benchmark, shots, out, device, dtype, batch_tokens):
    """Score the models of FOLDER (a ladder with ladder.json, or one Hugging Face causal-LM folder)
    on the multiple-choice examples of a targets set, by ranked classification.

    Per model and task: acc_raw (the option with the highest log-probability is the gold), acc_norm
    (log-probability per byte), bpb (bits per byte of the gold answer, the ladder's task loss) and
    acc (acc_norm; plain acc for ARC-Easy, BoolQ, Winogrande). Writes one row per (run, task) with
    columns run, n, d, step, task, bpb, acc, acc_raw, acc_norm, examples, skipped, shots: the long table
    `assay fit ladder --runs FILE` reads.

    Example: assay proxy eval ladder/ --root corpus --targets evals --split dev --max-per-benchmark 500
    """
    from rich.console import Console
    from rich.table import Table

    from assay.pipelines.proxy_eval import evaluate

    console = Console(width=140)
    with _progress(console) as show:
        rows, path = evaluate(
            folder,
            root,
            targets,
            None if split == "all" else split,
            max_per_benchmark,
            shots,
            device,
            dtype,
            batch_tokens,
            out,
            progress=show,
        )
    table = Table(title=f"targets {targets}, split {split}, {shots}-shot")
    for col, justify in [("run", "left"), ("task", "left"), ("examples", "right")]:
        table.add_column(col, justify=justify)
    for col in ("acc", "acc_raw", "acc_norm", "bpb"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["run"],
            r["task"],
            f"{r['examples']:,}",
            *("-" if r[c] is None else f"{r[c]:.3f}" for c in ("acc", "acc_raw", "acc_norm", "bpb")),
        )
    console.print(table)
    skipped = sum(r["skipped"] for r in rows)
    if skipped:
        click.echo(f"{skipped:,} example-scores left out: an option longer than the model's positions")
    click.echo(f"wrote {path}")


class _progress:
    """A live bar per model on a terminal; elsewhere one line when each model is done."""

    def __init__(self, console):
        self.console = console
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("options"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.bar.__enter__()
        return self.show

    def show(self, run: str, done: int, total: int) -> None:
        if self.bar is None:
            if done == total:
                click.echo(f"{run}: {total:,} options scored")
            return
        if run not in self.tasks:
            self.tasks[run] = self.bar.add_task(run, total=total)
        self.bar.update(self.tasks[run], completed=done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

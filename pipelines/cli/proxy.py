"""`assay proxy train`: a ladder of small Llama-style LMs trained on a corpus or a mixture."""

from __future__ import annotations

import click

from assay.pipelines.cli.common import root_option


@click.command("train")
@root_option
@click.option("--mixture", default=None, help="Train on mixtures/NAME instead of the root's docs.")
@click.option(
    "--sizes", required=True, help="Non-embedding parameter counts, comma-separated (e.g. 1M,4M,16M)."
)
@click.option("--tokens", required=True, help="Training tokens per size, the same for all (e.g. 2M).")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Folder for the models and ladder.json."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Initialisation and data order.")
@click.option(
    "--tokenizer",
    default=None,
    type=click.Path(file_okay=False),
    help="A Hugging Face tokenizer folder to use instead of training a byte-level BPE.",
)
@click.option("--vocab", default=8192, show_default=True, type=int, help="Vocabulary of the trained BPE.")
@click.option("--seq-len", default=256, show_default=True, type=int, help="Tokens per training sequence.")
@click.option(
    "--checkpoint-every",
    default=100,
    show_default=True,
    type=int,
    help="Optimizer steps between checkpoints.",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N."
)
@click.option(
    "--threads",
    default=None,
    type=int,
    help="CPU threads for torch [torch's default]; tiny models train fastest on 1.",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
def proxy_train(
    root: str,
    mixture: str | None,
    sizes: str,
    tokens: str,
    out: str,
    seed: int,
    tokenizer: str | None,
    vocab: int,
    seq_len: int,
    checkpoint_every: int,
    device: str,
    threads: int | None,
    quiet: bool,
) -> None:
    """Train one proxy LM per size on the same tokens; write OUT/<size>/ and OUT/ladder.json.

    Each OUT/<size>/ is a Hugging Face model folder (LlamaForCausalLM + tokenizer) that
    AutoModelForCausalLM and vLLM load. Held-out loss is measured on ~2% of the documents (by id
    hash) that no model trains on. Run the same command again after an interruption to resume
    from the last checkpoint.
    """
    from assay.pipelines.proxy import train_ladder

    run = train_ladder(
        root,
        sizes,
        tokens,
        out,
        mixture=mixture,
        seed=seed,
        tokenizer=tokenizer,
        vocab=vocab,
        seq_len=seq_len,
        checkpoint_every=checkpoint_every,
        device=device,
        threads=threads,
        quiet=quiet,
    )
    ladder = run.ladder
    if run.already_done:
        click.echo(f"{out}: this ladder is already trained (same settings); nothing to do")
    from rich.console import Console
    from rich.table import Table

    table = Table("size", "non-embedding", "params", "steps", "tokens", "held-out loss", "bpb", "tok/s")
    for s in ladder["sizes"]:
        speed = run.tokens_per_s.get(s["name"])
        table.add_row(
            s["name"],
            f"{s['non_embedding_params']:,}",
            f"{s['params']:,}",
            f"{s['steps']:,}",
            f"{s['tokens']:,}",
            f"{s['heldout_loss']:.4f}",
            f"{s['heldout_bpb']:.4f}",
            "-" if speed is None else f"{speed:,.0f}",
        )
    Console().print(table)
    data = ladder["data"]
    click.echo(
        f"held out: {data['heldout_documents']:,} documents, {data['heldout_tokens']:,} tokens; "
        f"trained on {data['train_documents']:,} documents ({data['train_tokens']:,} tokens)"
    )
    click.echo(f"wrote {out}/ladder.json")

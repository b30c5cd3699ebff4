"""The `assay` command. Sub-commands live in their own modules and are imported only when used,
so `assay --help` stays fast (no torch, duckdb or datatrove at start-up)."""

from __future__ import annotations

import importlib
import os
import sys

import click

# command path -> ("module:attribute", one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("assay.pipelines.cli.corpus:ingest", "Read JSONL/Parquet/WARC inputs into docs shards."),
    "annotate": ("assay.pipelines.cli.corpus:annotate", "Run scorers over docs shards into annotations/."),
    "sql": ("assay.pipelines.cli.corpus:sql", "Run a read-only SQL query on the corpus catalog."),
    "status": ("assay.pipelines.cli.corpus:status", "Show shards, annotation sets and runs of a root."),
    "train": ("", "Train models on the corpus (fastText classifiers)."),
    "train fasttext": (
        "assay.pipelines.cli.train:train_fasttext",
        "Train a fastText classifier from SQL-selected docs.",
    ),
    "train betr": (
        "assay.pipelines.cli.betr:train_betr",
        "Extend a BETR score to every document with a fastText classifier.",
    ),
    "train preselect": (
        "assay.pipelines.cli.preselect:train_preselect",
        "PreSelect: predictive strength of N models' losses, then a fastText classifier.",
    ),
    "train qurating": (
        "assay.pipelines.cli.qurating:train_qurating",
        "QuRating: a Bradley-Terry rater from pairwise judgments.",
    ),
    "train rater": (
        "assay.pipelines.cli.rater:train_rater",
        "Distil an expensive rating column into a cheap fastText or embedding rater.",
    ),
    "targets": ("", "Register benchmark examples (targets) for similarity and decontamination."),
    "targets add": ("assay.pipelines.cli.targets:targets_add", "Load benchmark examples into a targets set."),
    "targets list": ("assay.pipelines.cli.targets:targets_list", "List targets sets and their benchmarks."),
    "contamination": ("", "Report benchmark contamination found by the contamination scorer."),
    "contamination report": (
        "assay.pipelines.cli.targets:contamination_report",
        "Per benchmark: examples found in the corpus and in a mixture.",
    ),
    "facts": ("", "Register and inspect fact sets."),
    "facts add": (
        "assay.pipelines.cli.facts:facts_add",
        "Register a fact set (ParaRel, T-REx, CSV/Parquet).",
    ),
    "facts list": ("assay.pipelines.cli.facts:facts_list", "List registered fact sets."),
    "select": ("assay.pipelines.cli.select:select", "Select a mixture from a YAML recipe."),
    "mixtures": ("", "Inspect selected mixtures."),
    "mixtures list": ("assay.pipelines.cli.select:mixtures_list", "List mixtures in the root."),
    "mixtures show": ("assay.pipelines.cli.select:mixtures_show", "Show a mixture's composition."),
    "export": ("assay.pipelines.cli.select:export", "Write a mixture as JSONL or Parquet for a trainer."),
    "fit": ("", "Fit a predictor and save it as JSON."),
    "fit ladder": ("assay.pipelines.cli.ladder:fit_ladder", "Fit task-ladder scaling laws on ladder runs."),
    "fit boundary": (
        "assay.pipelines.cli.boundary:fit_boundary",
        "Fit a capability boundary (quantile sigmoid).",
    ),
    "fit mixture": (
        "assay.pipelines.cli.mixture:fit_mixture",
        "Fit mixture regression (RegMix / mixing law).",
    ),
    "fit smi": (
        "assay.pipelines.cli.smi:fit_smi",
        "Fit the SMI predictor from per-fact counts and accuracy.",
    ),
    "fit meta-rater": (
        "assay.pipelines.cli.meta_rater:fit_meta_rater_command",
        "Learn Meta-rater weights over score columns with proxy LMs.",
    ),
    "fit recipes": (
        "assay.pipelines.cli.recipes:fit_recipes",
        "Fit how each data recipe's scores grow with N and D.",
    ),
    "fit transfer": (
        "assay.pipelines.cli.forecast:fit_transfer",
        "Fit the validation-loss to task-loss link.",
    ),
    "predict": ("", "Apply a fitted predictor to a table."),
    "predict mixture": (
        "assay.pipelines.cli.mixture:predict_mixture",
        "Predict target loss per mixture row.",
    ),
    "predict recipes": (
        "assay.pipelines.cli.recipes:predict_recipes",
        "Predict recipe scores at (N, D) with intervals.",
    ),
    "predict smi": ("assay.pipelines.cli.smi:predict_smi", "Predict per-fact CBQA accuracy from counts."),
    "mix": ("", "Search mixture weights."),
    "mix search": (
        "assay.pipelines.cli.mixture:mix_search",
        "Propose the mixture with the lowest predicted loss.",
    ),
    "proxy": ("", "Train and evaluate small proxy language models."),
    "proxy train": (
        "assay.pipelines.cli.proxy:proxy_train",
        "Train a ladder of small Llama-style LMs on a corpus or mixture.",
    ),
    "proxy eval": (
        "assay.pipelines.cli.proxy_eval:proxy_eval",
        "Ranked-classification accuracy and task loss of LMs on targets.",
    ),
    "decide": (
        "assay.pipelines.cli.recipes:decide",
        "Rank recipes at a target scale with pairwise order probabilities.",
    ),
    "forecast": (
        "assay.pipelines.cli.forecast:forecast",
        "Expected task accuracy for a mixture and model size.",
    ),
    "forecast ladder": ("assay.pipelines.cli.ladder:forecast_ladder", "Chained ladder forecast for (N, D)."),
    "forecast boundary": (
        "assay.pipelines.cli.boundary:forecast_boundary",
        "Capability boundary at a FLOPs budget.",
    ),
    "forecast cbqa": (
        "assay.pipelines.cli.smi:forecast_cbqa",
        "Expected closed-book QA accuracy from fact counts.",
    ),
}


def _load(target: str) -> click.Command:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def __init__(self, *args, prefix: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def _children(self) -> dict[str, str]:
        depth = self.prefix.count(" ") + (1 if self.prefix else 0)
        out = {}
        for path in COMMANDS:
            parts = path.split(" ")
            if len(parts) == depth + 1 and " ".join(parts[:depth]) == self.prefix:
                out[parts[-1]] = path
        return out

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._children()) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        path = self._children().get(name)
        if path is None:
            return None
        target, help_text = COMMANDS[path]
        if target:
            # a parent has a default (e.g. `assay forecast --root ...`) and may also have children
            if any(p.startswith(path + " ") for p in COMMANDS):
                return _GroupWithDefault(name=name, prefix=path, help=help_text, target=target)
            return _LazyCommand(name=name, target=target, help_text=help_text)
        return LazyGroup(name=name, prefix=path, help=help_text)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            path = self._children().get(name)
            rows.append((name, COMMANDS[path][1] if path else ""))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _LazyCommand(click.Command):
    """Stands in for a command until it is invoked or asked for its own --help."""

    def __init__(self, name: str, target: str, help_text: str):
        super().__init__(name=name, help=help_text)
        self.target = target
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            self._real = _load(self.target)
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        return self.real().invoke(ctx)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.help or ""


class _GroupWithDefault(LazyGroup):
    """`assay forecast --root R ...` runs the default command; `assay forecast ladder ...` a child."""

    def __init__(self, *args, target: str, **kwargs):
        super().__init__(*args, invoke_without_command=True, **kwargs)
        self.target = target

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self._children():
            return super().parse_args(ctx, args)
        ctx.meta["assay_default_args"] = list(args)
        return []

    def invoke(self, ctx: click.Context):
        if "assay_default_args" in ctx.meta:
            default = _load(self.target)
            args = ctx.meta.pop("assay_default_args")
            if any(a in ctx.help_option_names for a in args):
                # the default command's own options, then the sub-verbs it shares its name with
                help_ctx = click.Context(default, info_name=ctx.info_name, parent=ctx.parent)
                formatter = ctx.make_formatter()
                self.format_commands(ctx, formatter)
                click.echo(default.get_help(help_ctx) + "\n\n" + formatter.getvalue().rstrip())
                ctx.exit(0)
            # a child context of the parent, so -h and the other inherited settings hold
            with default.make_context(ctx.info_name, args, parent=ctx.parent) as sub:
                return default.invoke(sub)
        return super().invoke(ctx)


# Errors a user can cause: bad paths, bad values, SQL DuckDB rejects. They print as one line
# (`Error: ...`); ASSAY_DEBUG=1 shows the traceback instead. Anything else is a bug and keeps
# its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def _is_user_error(exc: BaseException) -> bool:
    if getattr(exc, "user_facing", False) or isinstance(exc, USER_ERRORS):
        return True
    # DuckDB's errors are about the user's SQL; botocore's (no credentials, unknown endpoint) about
    # the user's object-store settings
    return type(exc).__module__.lstrip("_").startswith(("duckdb", "botocore"))


class RootGroup(LazyGroup):
    """The `assay` group: library errors caused by the user's input become one clear line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            if not _is_user_error(exc) or os.environ.get("ASSAY_DEBUG"):
                raise
            message = str(exc).strip() or type(exc).__name__
            raise click.ClickException(message) from None


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="assay")
def main() -> None:
    """Assay: annotate, query, select and forecast LLM pretraining corpora.

    Every command takes --root ROOT (default: $ASSAY_ROOT, else the current directory).
    """


if __name__ == "__main__":
    sys.exit(main())

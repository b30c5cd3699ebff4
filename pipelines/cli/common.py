"""Pieces every CLI module shares: the --root option and loading a fitted predictor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

root_option = click.option(
    "--root",
    default=lambda: os.environ.get("ASSAY_ROOT", "."),
    show_default="$ASSAY_ROOT or .",
    type=click.Path(file_okay=False),
    help="Corpus root folder.",
)


def expand_paths(patterns: str | tuple[str, ...], option: str = "--runs") -> list[str]:
    """Files matching each glob (``~`` expanded), or the path itself when it exists; sorted per
    pattern. A pattern that matches nothing is a usage error on ``option``."""
    import glob

    paths: list[str] = []
    for pattern in (patterns,) if isinstance(patterns, str) else patterns:
        found = sorted(glob.glob(os.path.expanduser(pattern))) or (
            [pattern] if Path(pattern).exists() else []
        )
        if not found:
            raise click.BadParameter(f"{pattern}: no file matches", param_hint=option)
        paths += found
    return paths


def load_fit(fit: str, root: str | Path, kind: str, cls=None):
    """A fit JSON given as a path or as a name registered under ROOT/predictors/.

    Returns (predictor or the raw dict when `cls` is None, path). Errors name the file and what
    to do about it.
    """
    path = Path(fit)
    if not path.is_file():
        path = Path(root) / "predictors" / (fit if fit.endswith(".json") else f"{fit}.json")
    if not path.is_file():
        raise click.BadParameter(
            f"{fit}: neither a file nor a registered predictor ({path} does not exist); "
            f"fit one with `assay fit {kind} ... --register NAME`",
            param_hint="--fit",
        )
    try:
        saved = json.loads(path.read_text())
        if saved.get("kind") not in (kind, None):
            raise ValueError(f"this is a {saved.get('kind')!r} fit, not a {kind!r} fit")
        return (saved if cls is None else cls.from_json(saved)), str(path)
    except (KeyError, ValueError, json.JSONDecodeError) as err:
        raise click.ClickException(f"{path}: {err}") from err


def fit_targets(out: str | Path | None, register: str | None, root: str | Path) -> list[Path]:
    """Where a fit is saved: --out FILE, ROOT/predictors/NAME.json for --register NAME, or both."""
    if out is None and register is None:
        raise click.UsageError("give --out FILE, --register NAME (saved under ROOT/predictors/), or both")
    if register is not None and not register.replace("-", "_").replace(".", "_").isidentifier():
        raise click.BadParameter(f"{register!r}: use letters, digits, - and _", param_hint="--register")
    targets = [Path(out)] if out else []
    if register:
        targets.append(Path(root) / "predictors" / f"{register}.json")
    return targets


def save_fit(doc: dict, targets: list[Path]) -> None:
    from assay.corpora.atomic import write_json_atomic

    for target in targets:
        write_json_atomic(target, doc)
        click.echo(f"wrote {target}")

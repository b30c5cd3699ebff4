"""lm-evaluation-harness output -> the ladder long table (run, n, d, step, task, bpb, acc).

One `results_*.json` per checkpoint. Accuracy is `acc_norm` where the task reports it, else `acc`.
The task loss (bits per byte of the correct answer) is not in the results file: it comes from the
per-sample logs (`--log_samples`, `samples_<task>_*.jsonl` beside the results), as
-loglikelihood(gold continuation) / (UTF-8 bytes of the continuation * ln 2), averaged over
questions; without those logs `bpb` is null and the ladder cannot use that checkpoint.
Groups (MMLU) average over all their questions, i.e. subjects weighted by question count.

Use the cloze ("rc") variants of the tasks (`mmlu_continuation` for MMLU): the ladder method
needs the loss of the answer text, not of an answer letter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from assay.predictors.ladder_data import LONG_SCHEMA, check_long_table

# lm-eval task or group name -> ladder task name
TASK_NAMES = {
    "mmlu_continuation": "mmlu",
    "mmlu": "mmlu",
    "hellaswag": "hellaswag",
    "arc_challenge": "arc_challenge",
    "arc_easy": "arc_easy",
    "piqa": "piqa",
    "commonsense_qa": "csqa",
    "csqa": "csqa",
    "social_iqa": "socialiqa",
    "siqa": "socialiqa",
    "openbookqa": "openbookqa",
}


def read_lm_eval(results: str | Path, *, run: str, n: float, d: float, step: int = 0) -> pl.DataFrame:
    """Rows of the long table for one checkpoint's lm-eval results file (and its sample logs)."""
    results = Path(results)
    try:
        data = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{results}: cannot read lm-eval results JSON ({e})") from e
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{results}: no 'results' object; is this an lm-evaluation-harness results file?")
    metrics = {**data.get("groups", {}), **data["results"]}
    subtasks = data.get("group_subtasks", {})
    rows, seen = [], set()
    for name, ours in TASK_NAMES.items():
        if name not in metrics or ours in seen:
            continue
        acc = _accuracy(metrics[name])
        if acc is None:
            continue
        seen.add(ours)
        bpb = _task_bpb(results.parent, _leaves(name, subtasks))
        rows.append(
            {
                "run": run,
                "n": float(n),
                "d": float(d),
                "step": int(step),
                "task": ours,
                "bpb": bpb,
                "acc": acc,
            }
        )
    if not rows:
        raise ValueError(
            f"{results}: none of the ladder tasks found (looked for {sorted(TASK_NAMES)}); "
            f"the file has {sorted(metrics)[:10]}"
        )
    return check_long_table(pl.DataFrame(rows, schema=LONG_SCHEMA), str(results))


def read_lm_eval_runs(manifest: str | Path | pl.DataFrame) -> pl.DataFrame:
    """Many checkpoints at once: a table (or CSV) with columns run, n, d, step, results (a path).

    Relative result paths are taken from the manifest file's folder.
    """
    base = Path(".")
    if not isinstance(manifest, pl.DataFrame):
        base = Path(manifest).parent
        manifest = pl.read_csv(manifest)
    need = ["run", "n", "d", "step", "results"]
    missing = [c for c in need if c not in manifest.columns]
    if missing:
        raise ValueError(f"lm-eval manifest: missing columns {missing}; it needs {need}")
    frames = [
        read_lm_eval(base / r["results"], run=str(r["run"]), n=r["n"], d=r["d"], step=int(r["step"]))
        for r in manifest.iter_rows(named=True)
    ]
    return pl.concat(frames)


def _accuracy(m: dict) -> float | None:
    for key in ("acc_norm,none", "acc_norm", "acc,none", "acc"):
        if isinstance(m.get(key), int | float):
            return float(m[key])
    return None


def _leaves(name: str, subtasks: dict[str, list[str]]) -> list[str]:
    """A group's leaf tasks (lm-eval's `group_subtasks`); a plain task is its own leaf."""
    if name not in subtasks or not subtasks[name]:
        return [name]
    out = []
    for child in subtasks[name]:
        out += _leaves(child, subtasks)
    return out


def _task_bpb(folder: Path, leaves: list[str]) -> float | None:
    values = []
    for leaf in leaves:
        files = sorted(folder.glob(f"samples_{leaf}_*.jsonl")) or sorted(folder.glob(f"samples_{leaf}.jsonl"))
        if files:  # several files: reruns of the same checkpoint; the last (newest date) wins
            values += _file_bpb(files[-1])
    return sum(values) / len(values) if values else None


def _file_bpb(path: Path) -> list[float]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = sample_bpb(json.loads(line))
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not an lm-eval loglikelihood sample ({e})") from e
            if value is not None:
                out.append(value)
    return out


def sample_bpb(sample: dict) -> float | None:
    """Bits per byte of the gold continuation of one logged sample; None when the gold is unknown."""
    args = sample["arguments"]
    if isinstance(args, dict):  # lm-eval >= 0.4.3 writes {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        conts = [args[f"gen_args_{i}"]["arg_1"] for i in range(len(args))]
    else:  # older files: [[ctx, cont], ...]
        conts = [a[1] for a in args]
    lls = [float(r[0]) if isinstance(r, list | tuple) else float(r) for r in sample["filtered_resps"]]
    gold = _gold_index(sample.get("target"), conts)
    if gold is None or gold >= len(lls):
        return None
    n_bytes = len(conts[gold].encode("utf-8"))
    return -lls[gold] / (n_bytes * math.log(2)) if n_bytes else None


def _gold_index(target: object, conts: list[str]) -> int | None:
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    text = str(target).strip()
    if text.isdigit():
        return int(text)
    stripped = [c.strip() for c in conts]
    return stripped.index(text) if text in stripped else None

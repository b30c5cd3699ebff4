"""`assay proxy eval`: ranked-classification (RC) accuracy and task loss of LMs on benchmark examples.

For every example of a targets set that has options and a known gold (`corpora.targets`), each
option is scored as a (prompt, target) pair: prompt = the context, target = the option (for the
schema format, Winogrande and WSC: prompt = the context option, target = the shared continuation).
The target is joined to its prompt by one space, as lm-eval's ``target_delimiter``, except after a
prompt that ends in whitespace or before a target that starts with whitespace or punctuation
(llm-foundry's HellaSwag endings start ", the man ..."). Texts are scored as stored, zero-shot; with
``shots=K`` each prompt is preceded by K solved examples of the same benchmark and split
(prompt + gold target, blank-line separated; the K of lowest blake2b("shot:" + id), never the
example itself).

Per example, with s_i = sum of the log-probabilities of target i's tokens and b_i its UTF-8 bytes
(delimiter included):

    acc_raw   argmax_i s_i == gold
    acc_norm  argmax_i s_i / b_i == gold     (per-byte normalisation: OLMo's ``len_norm`` divides
                                              by characters, lm-eval's ``acc_norm`` by characters
                                              of the option; bytes equal characters in ASCII)
    bpb       -s_gold / (b_gold * ln 2)       the task loss of Bhagia et al. 2024 §2.2

Each is averaged per model and task. An example with an option longer than the model's positions
cannot be scored: it is left out and counted in ``skipped``. Benchmarks map to the ladder's task names (`TASK_NAMES`);
others keep their own name, and benchmarks with the same task pool their examples. ``acc`` is
``acc_norm`` except for ARC-Easy, BoolQ and Winogrande, where the ladder uses plain accuracy
(METHODS §7.2, v1 keys). Ties go to the first option (numpy's argmax, as lm-eval).

The output is the ladder's long table (`predictors.ladder_data`: run, n, d, step, task, bpb, acc)
plus acc_raw, acc_norm, examples, skipped and shots, one row per (model, task), as CSV: `assay fit ladder
--runs FILE` reads it. A model's rows are also kept under ``.<out name>.parts/<run>.json`` beside
the output, keyed by the model's file hash and the scored pairs, so a killed run resumes with the
models it had finished.

Only pyarrow, numpy and the standard library here (and torch/transformers through
`scorers.choice_loglik`): the GPU machine has no polars or duckdb.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# bump when the scores of the same model and examples change
EVAL_VERSION = "1"

# benchmark name (as `assay targets add` derives it) -> ladder task name (predictors.ladder_data.TASKS)
TASK_NAMES = {
    "arc_easy": "arc_easy",
    "arc_challenge": "arc_challenge",
    "piqa": "piqa",
    "hellaswag": "hellaswag",
    "openbookqa": "openbookqa",
    "openbook_qa": "openbookqa",
    "obqa": "openbookqa",
    "csqa": "csqa",
    "commonsense_qa": "csqa",
    "socialiqa": "socialiqa",
    "social_iqa": "socialiqa",
    "siqa": "socialiqa",
    "mmlu": "mmlu",
}
# tasks whose ``acc`` is plain, not length-normalised, accuracy (METHODS §7.2)
PLAIN_ACC_TASKS = frozenset({"arc_easy", "boolq", "winogrande"})
RESULT_COLUMNS = [
    "run",
    "n",
    "d",
    "step",
    "task",
    "bpb",
    "acc",
    "acc_raw",
    "acc_norm",
    "examples",
    "skipped",
    "shots",
]
# a target starting with one of these follows its prompt without a space
_NO_SPACE_BEFORE = tuple(",.;:!?)'")


@dataclass(frozen=True)
class ProxyModel:
    """One model to evaluate: its run name, folder, and the ladder's N, D and step (None: unknown)."""

    run: str
    path: Path
    n: float | None = None
    d: float | None = None
    step: int = 0


@dataclass
class ChoiceItems:
    """The examples to score and their (prompt, target) pairs, example e owning pairs
    ``start[e] : start[e] + count[e]``."""

    task: list[str]
    example_id: list[str]
    gold: np.ndarray
    start: np.ndarray
    count: np.ndarray
    prompts: list[str]
    targets: list[str]

    @property
    def target_bytes(self) -> np.ndarray:
        return np.array([len(t.encode("utf-8")) for t in self.targets], dtype=np.float64)

    def digest(self) -> str:
        h = hashlib.sha256()
        for e in range(len(self.task)):
            pairs = list(range(self.start[e], self.start[e] + self.count[e]))
            row = [self.task[e], self.example_id[e], int(self.gold[e])]
            row += [[self.prompts[p], self.targets[p]] for p in pairs]
            h.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        return h.hexdigest()


# ---- models ----------------------------------------------------------------------------------------
def read_models(folder: str | Path) -> list[ProxyModel]:
    """The models of a ladder folder (``ladder.json``, as `assay proxy train` writes it), or the
    one Hugging Face model a folder with ``config.json`` holds."""
    folder = Path(folder)
    ladder = folder / "ladder.json"
    if ladder.is_file():
        return _ladder_models(ladder)
    if (folder / "config.json").is_file():
        return [ProxyModel(run=folder.resolve().name, path=folder)]
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (give a ladder folder or a Hugging Face model folder)")
    raise ValueError(
        f"{folder}: neither a ladder (no ladder.json) nor a Hugging Face model folder (no config.json)"
    )


def _ladder_models(ladder: Path) -> list[ProxyModel]:
    try:
        doc = json.loads(ladder.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{ladder}: not valid JSON ({e})") from None
    sizes = doc.get("sizes") if isinstance(doc, dict) else None
    if not isinstance(sizes, list) or not sizes:
        raise ValueError(
            f"{ladder}: needs a non-empty list 'sizes' of {{name, path, non_embedding_params, ...}}"
        )
    models, names = [], set()
    for i, size in enumerate(sizes):
        where = f"{ladder}: sizes[{i}]"
        need = ("name", "path", "non_embedding_params", "tokens", "steps")
        missing = [k for k in need if not isinstance(size, dict) or k not in size]
        if missing:
            raise ValueError(f"{where}: missing {missing} (each size needs {list(need)})")
        name, path = str(size["name"]), ladder.parent / str(size["path"])
        if name in names:
            raise ValueError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        if not (path / "config.json").is_file():
            raise ValueError(f"{where}: {path} holds no Hugging Face model (no config.json)")
        try:
            n, d, step = float(size["non_embedding_params"]), float(size["tokens"]), int(size["steps"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: non_embedding_params, tokens and steps must be numbers") from None
        models.append(ProxyModel(run=name, path=path, n=n, d=d, step=step))
    return models


# ---- examples and their (prompt, target) pairs ----------------------------------------------------
def task_name(benchmark: str) -> str:
    return TASK_NAMES.get(benchmark, benchmark)


def delimited(prompt: str, target: str) -> str:
    """The target as scored after its prompt: with a leading space unless the two join without one."""
    if not prompt or prompt[-1].isspace() or target[:1].isspace() or target.startswith(_NO_SPACE_BEFORE):
        return target
    return " " + target


def _shot_key(example_id: str) -> bytes:
    return hashlib.blake2b(f"shot:{example_id}".encode(), digest_size=8).digest()


def choice_items(
    table, split: str | None = "dev", max_per_benchmark: int | None = None, shots: int = 0
) -> ChoiceItems:
    """The examples of a targets table (TARGET_FILE_SCHEMA) in ``split`` with options and a gold,
    at most ``max_per_benchmark`` per benchmark (those whose ids hash lowest, as `targets add`
    caps), as scored pairs."""
    from assay.corpora.targets import cap_key

    if max_per_benchmark is not None and max_per_benchmark < 1:
        raise ValueError(f"--max-per-benchmark {max_per_benchmark}: give a positive number")
    if shots < 0:
        raise ValueError(f"--shots {shots}: give 0 or more")
    rows = table.to_pylist()
    present = sorted({r["split"] for r in rows if r["split"] is not None})
    usable = [
        r for r in rows if (split is None or r["split"] == split) and r["choices"] and r["gold"] is not None
    ]
    if not usable:
        with_options = sorted({r["benchmark"] for r in rows if r["choices"]})
        raise ValueError(
            f"no examples with options and a gold answer in split {split!r} (splits: "
            f"{', '.join(present) or 'none'}; benchmarks with options: {', '.join(with_options) or 'none'}); "
            "add multiple-choice files (llm-foundry MC or schema, MMLU CSV, PIQA with labels) with "
            "`assay targets add NAME PATH... --split dev`"
        )
    by_bench: dict[str, list[dict]] = {}
    for r in usable:
        by_bench.setdefault(r["benchmark"], []).append(r)
    tasks, ids, gold, start, count, prompts, targets = [], [], [], [], [], [], []
    for bench in sorted(by_bench):
        examples = by_bench[bench]
        pool = sorted(examples, key=lambda r: _shot_key(r["example_id"]))[: shots + 1] if shots else []
        if max_per_benchmark is not None:
            examples = sorted(examples, key=lambda r: cap_key(r["example_id"]))[:max_per_benchmark]
        for r in examples:
            solved = [s for s in pool if s["example_id"] != r["example_id"]][:shots]
            prefix = "".join(_solved(s) + "\n\n" for s in solved)
            tasks.append(task_name(bench))
            ids.append(f"{bench}:{r['example_id']}")
            gold.append(r["gold"])
            start.append(len(prompts))
            count.append(len(r["choices"]))
            for prompt, target in _pairs(r):
                prompts.append(prefix + prompt)
                targets.append(delimited(prefix + prompt, target))
    as_array = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    return ChoiceItems(tasks, ids, as_array(gold), as_array(start), as_array(count), prompts, targets)


def _pairs(row: dict) -> list[tuple[str, str]]:
    if row["continuation"] is not None:  # schema: the options are contexts, the continuation is fixed
        return [(option, row["continuation"]) for option in row["choices"]]
    return [(row["context"] or "", option) for option in row["choices"]]


def _solved(row: dict) -> str:
    prompt, target = _pairs(row)[row["gold"]]
    return prompt + delimited(prompt, target)


# ---- scores ----------------------------------------------------------------------------------------
def example_scores(logprobs: Sequence[np.ndarray], target_bytes: Sequence[float], gold: int) -> dict:
    """acc_raw, acc_norm (per byte) and bpb of one example from its options' token log-probs."""
    sums = np.array([float(np.sum(lp, dtype=np.float64)) for lp in logprobs])
    nbytes = np.asarray(target_bytes, dtype=np.float64)
    return {
        "acc_raw": float(np.argmax(sums) == gold),
        "acc_norm": float(np.argmax(sums / nbytes) == gold),
        "bpb": float(-sums[gold] / (nbytes[gold] * math.log(2))),
    }


def task_scores(items: ChoiceItems, logprobs: Sequence[np.ndarray | None]) -> list[dict[str, Any]]:
    """Per task (sorted): examples scored, skipped (an option too long for the model), and the
    means over the scored examples of bpb, acc_raw, acc_norm, and acc (None when none was scored)."""
    nbytes = items.target_bytes
    per_task: dict[str, list[dict | None]] = {}
    for e, task in enumerate(items.task):
        first, last = int(items.start[e]), int(items.start[e] + items.count[e])
        options = logprobs[first:last]
        scores = None
        if all(lp is not None for lp in options):
            scores = example_scores(options, nbytes[first:last], int(items.gold[e]))
        per_task.setdefault(task, []).append(scores)
    out = []
    for task in sorted(per_task):
        scores = [s for s in per_task[task] if s is not None]
        mean = {
            k: float(np.mean([s[k] for s in scores])) if scores else None
            for k in ("bpb", "acc_raw", "acc_norm")
        }
        acc = mean["acc_raw"] if task in PLAIN_ACC_TASKS else mean["acc_norm"]
        skipped = len(per_task[task]) - len(scores)
        out.append({"task": task, "examples": len(scores), "skipped": skipped, **mean, "acc": acc})
    return out


# ---- the run ---------------------------------------------------------------------------------------
def default_output(folder: str | Path, targets: str) -> Path:
    return Path(folder) / f"eval_{targets}.csv"


def evaluate(
    folder: str | Path,
    root: str | Path,
    targets: str,
    split: str | None = "dev",
    max_per_benchmark: int | None = None,
    shots: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    batch_tokens: int = 8192,
    out: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], Path]:
    """Score every model of ``folder`` on targets set ``targets`` of ``root`` and write the long
    table (`RESULT_COLUMNS`) to ``out`` (default ``folder/eval_<targets>.csv``), atomically.

    Returns (rows, path). ``progress(run, pairs done, pairs of this model)`` is called as it goes."""
    from assay.corpora.atomic import write_bytes_atomic, write_json_atomic
    from assay.corpora.manifest import require_root
    from assay.corpora.targets import read_targets
    from assay.scorers import runtime
    from assay.scorers.choice_loglik import continuation_logprobs, load_causal_lm, non_embedding_params

    if batch_tokens < 1:
        raise ValueError(f"--batch-tokens {batch_tokens}: give a positive number")
    require_root(root)
    table = read_targets(root, targets, choices=True)
    models = read_models(folder)
    items = choice_items(table, split, max_per_benchmark, shots)
    device = runtime.resolve_device(device)
    dtype = runtime.resolve_dtype(device, dtype)
    out = Path(out) if out is not None else default_output(folder, targets)
    parts = out.parent / f".{out.name}.parts"
    base_key = {
        "version": EVAL_VERSION,
        "pairs": items.digest(),
        "device": device.split(":")[0],
        "dtype": dtype,
    }
    rows: list[dict[str, Any]] = []
    for m in models:
        key = {**base_key, "model": runtime.model_identity(m.path).sha256}
        part = parts / (re.sub(r"[^A-Za-z0-9._-]", "_", m.run) + ".json")
        saved = _read_part(part)
        if saved is None or saved.get("key") != key:
            model, tokenizer, _ = load_causal_lm(m.path, device, dtype)
            logprobs = continuation_logprobs(
                model,
                tokenizer,
                items.prompts,
                items.targets,
                device,
                batch_tokens,
                progress=_counter(m.run, len(items.prompts), progress),
            )
            saved = {"key": key, "params": non_embedding_params(model), "tasks": task_scores(items, logprobs)}
            del model
            write_json_atomic(part, saved)
        elif progress is not None:
            progress(m.run, len(items.prompts), len(items.prompts))
        n = m.n if m.n is not None else float(saved["params"])
        rows += [
            {"run": m.run, "n": n, "d": m.d, "step": m.step, **s, "shots": shots} for s in saved["tasks"]
        ]
    rows = [{c: r[c] for c in RESULT_COLUMNS} for r in rows]
    write_bytes_atomic(out, results_csv(rows).encode())
    return rows, out


def _counter(run: str, total: int, progress: Callable[[str, int, int], None] | None) -> Callable[[int], None]:
    done = 0

    def step(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(run, done, total)

    return step


def _read_part(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in RESULT_COLUMNS])
    return buf.getvalue()


def benchmark_average(eval_csv: str | Path) -> dict[str, float]:
    """Per run of an eval CSV (as `evaluate` writes it): the mean ``acc`` over its tasks (those
    with a value), in file order: a one-number ordering of models by capability."""
    path = Path(eval_csv)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the eval CSV ({e.strerror})") from None
    if not records or not {"run", "task", "acc"} <= set(records[0]):
        raise ValueError(f"{path}: not an eval CSV (needs the columns run, task, acc and at least one row)")
    per_run: dict[str, list[float]] = {}
    for i, r in enumerate(records, 2):
        if r["acc"] in ("", None):  # a task with no example the model could score
            continue
        try:
            per_run.setdefault(r["run"], []).append(float(r["acc"]))
        except ValueError:
            raise ValueError(f"{path}:{i}: acc {r['acc']!r} is not a number") from None
    return {run: float(np.mean(accs)) for run, accs in per_run.items()}

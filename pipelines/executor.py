"""Running work units as datatrove tasks: local (default), Slurm or Ray.

A work unit is a plain function call `func(unit_index=i, unit=units[i], **args)` that writes
its outputs atomically and a unit record last. One datatrove task runs one unit, so
datatrove's completion markers and Assay's unit records agree, and a rerun skips finished
units either way. The calling process draws a progress bar by counting unit records.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

EXECUTORS = ("local", "slurm", "ray")


def load_function(target: str) -> Callable:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


class WorkUnitsFailed(RuntimeError):
    """Some work units of a run did not finish; the message names the first error and the log."""

    user_facing = True  # the CLI prints the message, not a traceback of the calling thread


class UnitStep(PipelineStep):
    """A datatrove pipeline step that runs work unit number `rank`."""

    name = "assay work unit"
    type = "ASSAY"

    def __init__(
        self,
        func: str,
        units: list[dict],
        args: dict[str, Any],
        error_dir: str | None = None,
        progress_dir: str | None = None,
    ):
        super().__init__()
        self.func = func
        self.units = units
        self.args = args
        self.error_dir = error_dir
        self.progress_dir = progress_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator:
        from assay.corpora import progress

        progress.start(Path(self.progress_dir) / f"p{rank:05d}.json" if self.progress_dir else None)
        try:
            record = load_function(self.func)(unit_index=rank, unit=self.units[rank], **self.args)
        except Exception as exc:
            # the calling process reports the unit's own error, not only "tasks failed"
            if self.error_dir:
                Path(self.error_dir).mkdir(parents=True, exist_ok=True)
                text = f"{type(exc).__name__}: {exc}"
                (Path(self.error_dir) / f"u{rank:05d}.txt").write_text(text)
            raise
        finally:
            progress.start(None)
        self.stat_update("units")
        for key in ("records_read", "docs", "rows", "quarantined"):
            value = record.get(key) if isinstance(record, dict) else None
            if isinstance(value, int):
                self.stat_update(key, value=value)
        yield from ()


@dataclass
class ExecutorConfig:
    kind: str = "local"
    workers: int = 1
    options: dict[str, str] = field(default_factory=dict)  # passed to the Slurm/Ray executor
    # datatrove's task logs on the terminal as well as in the log file (`--verbose`)
    verbose: bool = field(default_factory=lambda: bool(os.environ.get("ASSAY_VERBOSE")))

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.kind!r}")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")


def build_executor(step: UnitStep, n_tasks: int, logging_dir: Path, config: ExecutorConfig):
    """The datatrove executor for these tasks (constructed, not started)."""
    opts = dict(config.options)
    if config.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(
            pipeline=[step], tasks=n_tasks, workers=min(config.workers, n_tasks), logging_dir=str(logging_dir)
        )
    if config.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        for required in ("partition",):
            if required not in opts:
                raise ValueError(f"--executor slurm needs --executor-opt {required}=...")
        return SlurmPipelineExecutor(
            pipeline=[step],
            tasks=n_tasks,
            workers=config.workers,
            time=opts.pop("time", "24:00:00"),
            partition=opts.pop("partition"),
            logging_dir=str(logging_dir),
            venv_path=opts.pop("venv_path", str(Path(sys.prefix) / "bin" / "activate")),
            job_name=opts.pop("job_name", "assay"),
            **opts,
        )
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(
        pipeline=[step],
        tasks=n_tasks,
        workers=config.workers,
        logging_dir=str(logging_dir),
        cpus_per_task=int(opts.pop("cpus_per_task", 1)),
        mem_per_cpu_gb=float(opts.pop("mem_per_cpu_gb", 2)),
        **opts,
    )


@contextlib.contextmanager
def _stderr_to(path: Path, verbose: bool = False):
    """datatrove logs every task to stderr; keep that in the run's log file, not on the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_units(
    func: str,
    units: list[dict],
    args: dict[str, Any],
    logging_dir: Path,
    config: ExecutorConfig,
    count_done: Callable[[], int],
    label: str,
    quiet: bool = False,
    totals: dict[str, int] | None = None,
) -> float:
    """Run every unit not yet done; returns wall seconds. Raises if any unit is left unfinished.

    `totals` ({"docs": N} and/or {"bytes": B}, for the units still to run) sizes the progress
    shown beside the unit count; units report what they have done through `corpora.progress`.
    On a terminal that is a live bar; otherwise one line every ASSAY_PROGRESS_SECONDS (30).
    """
    from rich.console import Console

    started = time.time()
    if count_done() >= len(units):
        return 0.0
    error_dir, progress_dir = logging_dir / "errors", logging_dir / "progress"
    for folder in (error_dir, progress_dir):
        shutil.rmtree(folder, ignore_errors=True)
    step = UnitStep(func, units, args, str(error_dir), str(progress_dir))
    executor = build_executor(step, len(units), logging_dir, config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            executor.run()
        except BaseException as exc:  # surfaced below, in the calling thread
            errors.append(exc)

    report = _ProgressReport(label, len(units), totals or {}, progress_dir, started)
    console = Console()
    log_path = logging_dir / "executor.log"
    with _stderr_to(log_path, config.verbose):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        with _progress_display(console, label, quiet) as show:
            # Slurm's run() returns once the jobs are submitted: keep polling until they finish.
            waiting_on_jobs = config.kind == "slurm"
            while thread.is_alive() or (waiting_on_jobs and not errors and count_done() < len(units)):
                thread.join(0.25)
                if waiting_on_jobs and not thread.is_alive():
                    time.sleep(1.0)  # submitted: poll the unit records, not the submit thread
                show(report, count_done(), final=False)
            show(report, count_done(), final=True)
    done = count_done()
    if errors or done < len(units):
        unit_errors = sorted(error_dir.glob("u*.txt")) if error_dir.exists() else []
        if unit_errors:
            cause = f"unit {unit_errors[0].stem[1:].lstrip('0') or '0'}: {unit_errors[0].read_text()}"
        else:
            cause = f"{type(errors[0]).__name__}: {errors[0]}" if errors else "tasks failed"
        raise WorkUnitsFailed(
            f"{label}: {len(units) - done} of {len(units)} work units did not finish ({cause}); "
            f"log: {log_path}; rerun the same command to resume"
        )
    # Unit records are the resume state; datatrove's markers would make a later run with the
    # same key skip units whose records were already cleaned up.
    shutil.rmtree(logging_dir / "completions", ignore_errors=True)
    return time.time() - started


class _ProgressReport:
    """Units, documents and bytes done, and the document rate, as one line of text."""

    def __init__(self, label: str, n_units: int, totals: dict[str, int], folder: Path, started: float):
        self.label, self.n_units, self.totals, self.folder, self.started = (
            label,
            n_units,
            totals,
            folder,
            started,
        )

    def detail(self) -> str:
        from assay.corpora import progress

        docs, nbytes = progress.read_all(self.folder)
        parts = []
        total_docs = self.totals.get("docs")
        parts.append(f"{docs:,}/{total_docs:,} docs" if total_docs else f"{docs:,} docs")
        if self.totals.get("bytes"):
            parts.append(f"{nbytes / 1e6:,.0f}/{self.totals['bytes'] / 1e6:,.0f} MB")
        elapsed = time.time() - self.started
        if docs and elapsed > 0:
            parts.append(f"{docs / elapsed:,.0f} docs/s")
        return ", ".join(parts)

    def line(self, done: int) -> str:
        elapsed = int(time.time() - self.started)
        return (
            f"{self.label}: {done}/{self.n_units} units, {self.detail()}, {elapsed // 60}m{elapsed % 60:02d}s"
        )


@contextlib.contextmanager
def _progress_display(console, label: str, quiet: bool):
    """A live rich bar on a terminal; elsewhere (logs, CI, Slurm) a periodic plain line."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        yield lambda report, done, final: None
        return
    if not console.is_terminal:
        every = float(os.environ.get("ASSAY_PROGRESS_SECONDS", "30"))
        last = [time.monotonic(), ""]

        def show_line(report: _ProgressReport, done: int, final: bool) -> None:
            if final or time.monotonic() - last[0] >= every:
                line = report.line(done)
                if line.split(", ")[:2] != last[1].split(", ")[:2]:  # units and docs moved on
                    print(line, flush=True)
                last[:] = [time.monotonic(), line]

        yield show_line
        return
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("units  {task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None, detail="")

        def show_bar(report: _ProgressReport, done: int, final: bool) -> None:
            bar.update(task, total=report.n_units, completed=done, detail=report.detail())

        yield show_bar

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

    def __init__(self, func: str, units: list[dict], args: dict[str, Any], error_dir: str | None = None):
        super().__init__()
        self.func = func
        self.units = units
        self.args = args
        self.error_dir = error_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator:
        try:
            record = load_function(self.func)(unit_index=rank, unit=self.units[rank], **self.args)
        except Exception as exc:
            # the calling process reports the unit's own error, not only "tasks failed"
            if self.error_dir:
                Path(self.error_dir).mkdir(parents=True, exist_ok=True)
                text = f"{type(exc).__name__}: {exc}"
                (Path(self.error_dir) / f"u{rank:05d}.txt").write_text(text)
            raise
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
def _stderr_to(path: Path):
    """datatrove logs every task to stderr; keep that in the run's log file, not on the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
) -> float:
    """Run every unit not yet done; returns wall seconds. Raises if any unit is left unfinished."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.time()
    if count_done() >= len(units):
        return 0.0
    error_dir = logging_dir / "errors"
    shutil.rmtree(error_dir, ignore_errors=True)
    step = UnitStep(func, units, args, str(error_dir))
    executor = build_executor(step, len(units), logging_dir, config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            executor.run()
        except BaseException as exc:  # surfaced below, in the calling thread
            errors.append(exc)

    log_path = logging_dir / "executor.log"
    with _stderr_to(log_path):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        with Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=quiet,
            transient=False,
        ) as progress:
            task = progress.add_task(label, total=len(units), completed=count_done())
            # Slurm's run() returns once the jobs are submitted: keep polling until they finish.
            waiting_on_jobs = config.kind == "slurm"
            while thread.is_alive() or (waiting_on_jobs and not errors and count_done() < len(units)):
                thread.join(0.25)
                if not thread.is_alive():
                    time.sleep(1.0)
                progress.update(task, completed=count_done())
            progress.update(task, completed=count_done())
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

"""Running work units as datatrove tasks: local (default), Slurm or Ray.

A work unit is a plain function call `func(unit_index=i, unit=units[i], **args)` that writes
its outputs atomically and a unit record last. One datatrove task runs one unit, so
datatrove's completion markers and Assay's unit records agree, and a rerun skips finished
units either way. The calling process draws a progress bar by counting unit records.

Slurm and Ray run the same step on other processes (other machines), so everything a unit
needs travels by name: the unit function is `module:attr` of an installed package, paths are
resolved against the calling process's working directory, and the calling process learns what
happened from the unit records, the unit error files and the scheduler, never from memory.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from assay.corpora.atomic import write_bytes_atomic, write_json_atomic

EXECUTORS = ("local", "slurm", "ray")

# Slurm states of a job (array task) that is finished for good, and those it may still leave
TERMINAL_FAILED = {
    "BOOT_FAIL",
    "CANCELLED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "TIMEOUT",
}
ACTIVE_STATES = {
    "CONFIGURING",
    "COMPLETING",
    "PENDING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "RUNNING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "SUSPENDED",
}
# pending reasons that no amount of waiting resolves
HOPELESS_REASONS = {
    "BadConstraints",
    "DependencyNeverSatisfied",
    "InvalidAccount",
    "InvalidQOS",
    "PartitionConfig",
    "PartitionDown",
    "PartitionInactive",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
}
# executor options that arrive as text from --executor-opt but are numbers to datatrove
_INT_OPTS = {
    "cpus_per_task",
    "gpus_per_task",
    "nodes_per_task",
    "max_array_size",
    "tasks_per_job",
    "randomize_start_duration",
    "stagger_max_array_jobs",
    "job_id_position",
    "retries",
}
_FLOAT_OPTS = {"mem_per_cpu_gb", "wait_timeout", "poll_seconds"}
_BOOL_OPTS = {"requeue", "with_srun", "max_array_launch_parallel", "run_on_dependency_fail", "skip_completed"}


def _peak_rss_mb() -> float:
    """High-water resident memory of this process (VmHWM: unlike ru_maxrss, it does not carry
    the peak of the process that exec'd this one)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_function(target: str) -> Callable:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _option(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if key in _INT_OPTS:
            return int(value)
        if key in _FLOAT_OPTS:  # whole numbers stay whole: Slurm's `--mem-per-cpu=1G`, not 1.0G
            number = float(value)
            return int(number) if number.is_integer() else number
    except ValueError:
        raise ValueError(f"--executor-opt {key}={value}: expected a number") from None
    if key in _BOOL_OPTS:
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"--executor-opt {key}={value}: expected true or false")
        return value.lower() in ("1", "true", "yes")
    return value


def slurm_seconds(limit: str) -> int:
    """Seconds in a Slurm time limit: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, rest = limit.partition("-") if "-" in limit else ("0", "", limit)
    parts = [int(p) for p in rest.split(":")]
    if "-" in limit:  # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = parts[:3]
    return int(days) * 86400 + h * 3600 + m * 60 + s


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
        started_dir: str | None = None,
    ):
        super().__init__()
        self.func = func
        self.units = units
        self.args = args
        self.error_dir = error_dir
        self.progress_dir = progress_dir
        self.started_dir = started_dir
        # Ray and Slurm workers start in another directory: relative paths in the unit's
        # arguments (a `--root corpus`) must mean what they meant to the calling process.
        self.cwd = os.getcwd()

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator:
        from assay.corpora import progress

        if os.path.isdir(self.cwd) and os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        if self.started_dir:
            # which units this run started, and where: a rerun's count of these is the work it redid
            started = {"unit": rank, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
            write_json_atomic(Path(self.started_dir) / f"u{rank:05d}.json", started)
        progress.start(Path(self.progress_dir) / f"p{rank:05d}.json" if self.progress_dir else None)
        try:
            record = load_function(self.func)(unit_index=rank, unit=self.units[rank], **self.args)
        except Exception as exc:
            # the calling process reports the unit's own error, not only "tasks failed"
            if self.error_dir:
                text = f"{type(exc).__name__}: {exc}"
                write_bytes_atomic(Path(self.error_dir) / f"u{rank:05d}.txt", text.encode())
            raise
        finally:
            progress.start(None)
        if self.started_dir:
            # this worker process's peak memory so far (Ray and datatrove reuse processes)
            peak = _peak_rss_mb()
            finished = started | {
                "seconds": round(time.time() - started["time"], 3),
                "peak_rss_mb": round(peak, 1),
            }
            write_json_atomic(Path(self.started_dir) / f"u{rank:05d}.json", finished)
        self.stat_update("units")
        for key in ("records_read", "docs", "rows", "quarantined"):
            value = record.get(key) if isinstance(record, dict) else None
            if isinstance(value, int):
                self.stat_update(key, value=value)
        yield from ()


@dataclass
class ExecutorConfig:
    """How to run work units. `workers` 0 means: one process locally; on Slurm and Ray, every
    unit at once (the cluster's free CPUs decide how many really run together)."""

    kind: str = "local"
    workers: int = 0
    options: dict[str, str] = field(default_factory=dict)  # passed to the Slurm/Ray executor
    # datatrove's task logs on the terminal as well as in the log file (`--verbose`)
    verbose: bool = field(default_factory=lambda: bool(os.environ.get("ASSAY_VERBOSE")))

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.kind!r}")
        if self.workers < 0:
            raise ValueError("--workers must be 0 (automatic) or more")
        if self.kind == "local" and self.workers == 0:
            self.workers = 1


def _check_importable(func: str) -> None:
    """A Slurm job or Ray worker imports the unit function by name: it must not live in __main__."""
    module = func.split(":")[0]
    if module == "__main__" or importlib.util.find_spec(module) is None:
        raise ValueError(
            f"work unit function {func!r} is not importable by a Slurm job or Ray worker; "
            "define it in an installed module"
        )


def build_executor(step: UnitStep, n_tasks: int, logging_dir: Path, config: ExecutorConfig):
    """The datatrove executor for these tasks (constructed, not started)."""
    opts = {k: _option(k, v) for k, v in config.options.items()}
    if config.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(
            pipeline=[step], tasks=n_tasks, workers=min(config.workers, n_tasks), logging_dir=str(logging_dir)
        )
    _check_importable(step.func)
    opts.pop("poll_seconds", None)  # read by run_units
    workers = config.workers or -1  # datatrove's -1: no limit
    if config.kind == "slurm":
        if "partition" not in opts:
            raise ValueError("--executor slurm needs --executor-opt partition=...")
        opts.pop("wait_timeout", None)  # read by run_units
        env = {}
        activate = Path(sys.prefix) / "bin" / "activate"
        if "venv_path" not in opts and "env_command" not in opts and "condaenv" not in opts:
            # the job must run this interpreter's `assay` (and datatrove's launcher), not the node's
            if activate.exists():
                env["venv_path"] = str(activate)
            else:
                env["env_command"] = f'export PATH="{Path(sys.executable).parent}:$PATH"'
        return _construct(
            "AssaySlurmExecutor",
            pipeline=[step],
            tasks=n_tasks,
            workers=workers,
            time=opts.pop("time", "24:00:00"),
            partition=opts.pop("partition"),
            logging_dir=str(logging_dir),
            job_name=opts.pop("job_name", "assay"),
            **env,
            **opts,
        )
    address = opts.pop("address", None)
    _connect_ray(address)
    return _construct(
        "AssayRayExecutor",
        pipeline=[step],
        tasks=n_tasks,
        workers=n_tasks if workers == -1 else workers,
        logging_dir=str(logging_dir),
        cpus_per_task=int(opts.pop("cpus_per_task", 1)),
        mem_per_cpu_gb=float(opts.pop("mem_per_cpu_gb", 2)),
        retries=int(opts.pop("retries", 2)),
        **opts,
    )


def _construct(name: str, **kwargs: Any) -> Any:
    try:
        return __getattr__(name)(**kwargs)
    except TypeError as exc:  # an --executor-opt datatrove's executor does not take
        raise ValueError(f"--executor-opt: {exc}".replace("__init__() ", "")) from None


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
    `logging_dir/started/` names the units this run started (a rerun starts only missing ones).
    """
    from rich.console import Console

    started = time.time()
    if count_done() >= len(units):
        return 0.0
    logging_dir = Path(logging_dir).absolute()  # datatrove's markers, read by remote workers too
    error_dir, progress_dir, started_dir = (logging_dir / d for d in ("errors", "progress", "started"))
    for folder in (error_dir, progress_dir, started_dir):
        shutil.rmtree(folder, ignore_errors=True)
    step = UnitStep(func, units, args, str(error_dir), str(progress_dir), str(started_dir))
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
        # inside: datatrove's and Ray's start-up messages belong in the log, not on the terminal
        executor = build_executor(step, len(units), logging_dir, config)
        watch = _SlurmWatch(executor, config, len(units)) if config.kind == "slurm" else None
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        with _progress_display(console, label, quiet) as show:
            try:
                # Slurm's run() returns once the jobs are submitted: then watch the jobs themselves
                while thread.is_alive() or (watch and not errors and not watch.finished(count_done())):
                    thread.join(0.25)
                    if watch and not thread.is_alive():
                        time.sleep(watch.poll_seconds)
                    show(report, count_done(), final=False)
            except KeyboardInterrupt:
                if watch:
                    watch.cancel()  # no job keeps writing behind the user's back
                raise
            show(report, count_done(), final=True)
    done = count_done()
    if errors or done < len(units):
        unit_errors = sorted(error_dir.glob("u*.txt")) if error_dir.exists() else []
        if unit_errors:
            cause = f"unit {unit_errors[0].stem[1:].lstrip('0') or '0'}: {unit_errors[0].read_text()}"
        elif watch and watch.problem:
            cause = watch.problem
        else:
            cause = f"{type(errors[0]).__name__}: {errors[0]}" if errors else "tasks failed"
            said = (
                _scheduler_said(log_path)
                if errors and isinstance(errors[0], subprocess.CalledProcessError)
                else ""
            )
            cause += f": {said}" if said else ""
        where = watch.failed_tasks() if watch else ""
        raise WorkUnitsFailed(
            f"{label}: {len(units) - done} of {len(units)} work units did not finish ({cause}); "
            f"{where}log: {log_path}; rerun the same command to resume"
        )
    # Unit records are the resume state; datatrove's markers would make a later run with the
    # same key skip units whose records were already cleaned up.
    shutil.rmtree(logging_dir / "completions", ignore_errors=True)
    return time.time() - started


def _scheduler_said(log_path: Path) -> str:
    """sbatch's own complaint (it writes to the log, which holds this process's stderr)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.startswith("sbatch: error")), "")


class _SlurmWatch:
    """Follows the array jobs a Slurm run submitted until every task has left the queue.

    `squeue --states=all` answers for tasks the controller still remembers (finished ones for
    MinJobAge, 300 s by default); `sacct`, where accounting is set up, for older ones. A task
    that failed, a job stuck pending for a reason no wait fixes, or `wait_timeout` passing ends
    the watch; the timeout cancels what is left."""

    def __init__(self, executor: Any, config: ExecutorConfig, n_tasks: int):
        self.executor = executor
        self.poll_seconds = float(config.options.get("poll_seconds", 5))
        limit = slurm_seconds(str(config.options.get("time", "24:00:00")))
        waves = math.ceil(n_tasks / config.workers) if config.workers else 1
        # a task cannot run past its time limit; a day on top for waiting in the queue
        self.timeout = float(config.options.get("wait_timeout", limit * waves + 86400))
        self.started = time.monotonic()
        self.states: dict[str, tuple[str, str]] = {}
        self.problem = ""
        self.failures = 0

    def finished(self, done: int) -> bool:
        if done >= self.executor.tasks or getattr(self.executor, "job_id", None) == -1:
            return True
        job_ids = self.executor.job_ids
        if not job_ids:
            return True  # nothing was submitted (the submit thread's error says why)
        states = self._query(job_ids)
        if states is None:
            return False
        self.states.update(states)
        active = {k: v for k, v in self.states.items() if v[0] in ACTIVE_STATES}
        hopeless = sorted(
            k for k, (state, reason) in active.items() if state == "PENDING" and reason in HOPELESS_REASONS
        )
        if hopeless:
            self.problem = (
                f"Slurm job {hopeless[0]} can never start: {self.states[hopeless[0]][1]}; cancelled"
            )
            self.cancel()
            return True
        if time.monotonic() - self.started > self.timeout:
            self.problem = f"Slurm jobs not finished after wait_timeout={self.timeout:g} s; cancelled"
            self.cancel()
            return True
        return not active

    def _query(self, job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
        """{"JOB_TASK": (state, reason)} for every array task Slurm knows; None if it did not answer."""
        ids = ",".join(job_ids)
        found: dict[str, tuple[str, str]] = {}
        try:
            out = subprocess.run(
                ["squeue", "-h", "-r", "--states=all", "-j", ids, "-o", "%i|%T|%r"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            out = subprocess.CompletedProcess([], 1, "", str(exc))
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                task, state, reason = (line.split("|") + ["", ""])[:3]
                found[task.strip()] = (state.strip().split()[0] if state.strip() else "", reason.strip())
        seen_jobs = {t.split("_")[0] for t in found}
        if out.returncode != 0 or seen_jobs != set(job_ids):
            # squeue no longer (or never) knew some job: ask accounting
            acct = (
                subprocess.run(
                    ["sacct", "-n", "-P", "-X", "-j", ids, "-o", "JobID,State,Reason"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                if shutil.which("sacct")
                else None
            )
            if acct is not None and acct.returncode == 0:
                for line in acct.stdout.splitlines():
                    task, state, reason = (line.split("|") + ["", ""])[:3]
                    if task and task not in found and "[" not in task:
                        found[task] = ((state.split() or [""])[0], reason)
            elif out.returncode != 0:
                self.failures += 1
                if self.failures >= 5:  # squeue has failed for a while: stop rather than wait blind
                    self.problem = (
                        f"squeue keeps failing: {out.stderr.strip().splitlines()[-1:] or out.returncode}"
                    )
                    return {}
                return None
        self.failures = 0
        return found

    def failed_tasks(self) -> str:
        failed = sorted((k, v[0]) for k, v in self.states.items() if v[0] in TERMINAL_FAILED)
        if not failed:
            return ""
        parts = []
        for task, state in failed[:3]:
            job, _, index = task.partition("_")
            rank = self.executor.array_rank(job, int(index)) if index.isdigit() else None
            log = Path(self.executor.slurm_logs_folder) / f"{task}.out"
            parts.append(f"Slurm task {task} (unit {rank}) {state}, log: {log}")
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        return "; ".join(parts) + more + "; "

    def cancel(self) -> None:
        if self.executor.job_ids:
            subprocess.run(["scancel", *self.executor.job_ids], capture_output=True, timeout=60)


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


# ---------------------------------------------------------------------------------------------
# Slurm and Ray. The two executor classes subclass datatrove's, which take a second to import,
# so they are made on first use; `__getattr__` lets a job unpickling the executor find them here.


def __getattr__(name: str) -> Any:
    if name in ("AssaySlurmExecutor", "AssayRayExecutor"):
        _define_engines()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _JobIds:
    """datatrove's sbatch job-id parser that also keeps every id it has seen (one per array)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, output: str) -> str:
        job_id = output.split()[-1]
        self.ids.append(job_id)
        return job_id


def _ray_run_rank(executor: Any, rank: int) -> None:
    """One Ray task: one rank, in the Ray worker process itself (see AssayRayExecutor)."""
    executor._run_for_rank(rank)


def _define_engines() -> None:
    if "AssaySlurmExecutor" in globals():
        return
    from datatrove.executor import RayPipelineExecutor, SlurmPipelineExecutor

    class AssaySlurmExecutor(SlurmPipelineExecutor):
        """datatrove's Slurm executor without its stats-merging job.

        That job waits on `afterok` of the array: when one task fails it stays pending forever.
        Assay's unit records already say what each unit did, and `run_units` watches the
        array itself (`job_ids`) to notice failed tasks."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("job_id_retriever", _JobIds())
            super().__init__(*args, **kwargs)

        @property
        def job_ids(self) -> list[str]:
            return list(getattr(self.job_id_retriever, "ids", []))

        def launch_merge_stats(self) -> None:
            return None

        def array_rank(self, job_id: str, task_id: int) -> int | None:
            """The unit rank that array task `task_id` of job `job_id` runs."""
            try:
                ranks = json.loads(Path(self.logging_dir.resolve_paths("ranks_to_run.json")).read_text())
                offset = self.job_ids.index(job_id)
            except (OSError, ValueError):
                return None
            index = (offset * self.max_array_size + task_id) * self.tasks_per_job
            return ranks[index] if index < len(ranks) else None

    class AssayRayExecutor(RayPipelineExecutor):
        """datatrove's Ray executor, each rank one plain Ray task.

        datatrove runs a rank inside a `multiprocess` pool that lives in an actor; when the
        pool's process is killed (OOM killer, `kill -9`) the pool never returns and the run
        hangs. Here a rank runs in the Ray worker process itself, so Ray sees the worker die:
        it retries the rank (`retries`, default 2) or reports it failed. Application errors
        are not retried: the unit's own error is what the user needs to see."""

        def __init__(self, *args: Any, retries: int = 2, wait_timeout: float | None = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.retries = retries
            self.wait_timeout = wait_timeout

        def run(self) -> None:
            import ray

            ranks = self.get_incomplete_ranks(range(self.world_size))
            if not ranks:
                return
            self.save_executor_as_json()
            executor_ref = ray.put(self)
            task = ray.remote(_ray_run_rank).options(
                num_cpus=self.cpus_per_task,
                num_gpus=self.gpus_per_task,
                memory=int(self.mem_per_cpu_gb * self.cpus_per_task * 2**30),
                max_retries=self.retries,
                retry_exceptions=False,
                **(self.ray_remote_kwargs or {}),
            )
            pending, running, failed = deque(ranks), {}, []
            deadline = time.monotonic() + self.wait_timeout if self.wait_timeout else None
            try:
                while pending or running:
                    while pending and len(running) < self.workers:
                        rank = pending.popleft()
                        running[task.remote(executor_ref, rank)] = rank
                    done, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
                    for ref in done:
                        rank = running.pop(ref)
                        try:
                            ray.get(ref)
                        except Exception as exc:  # the first line is Ray's; the unit's own is in errors/
                            failed.append((rank, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
                    if deadline and time.monotonic() > deadline:
                        raise TimeoutError(
                            f"Ray tasks still running after wait_timeout={self.wait_timeout:g} s "
                            f"({len(running)} running, {len(pending)} not started); cancelled"
                        )
            finally:
                for ref in running:
                    ray.cancel(ref, force=True)
            if failed:
                rank, why = sorted(failed)[0]
                raise RuntimeError(f"{len(failed)} Ray task(s) failed; first: unit {rank}: {why}")

    globals()["AssaySlurmExecutor"] = AssaySlurmExecutor
    globals()["AssayRayExecutor"] = AssayRayExecutor
    for cls in (AssaySlurmExecutor, AssayRayExecutor):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__


def _connect_ray(address: str | None) -> None:
    """Join a running Ray cluster; never start one (a fresh `ray.init()` listens on every interface)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'assay[ray]'") from None
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        raise ValueError(
            f"--executor ray: no Ray cluster at {address} ({str(exc).splitlines()[0]}); start one with "
            "`ray start --head` and set RAY_ADDRESS or --executor-opt address=HOST:PORT"
        ) from None

"""The executor seam without a cluster: option parsing, the Slurm array the executor would
submit, that a job can unpickle it, and that units see the caller's working directory.
The real Ray and Slurm runs are in tests/integration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assay.pipelines.executor import (
    ExecutorConfig,
    UnitStep,
    _check_importable,
    _option,
    _SlurmWatch,
    build_executor,
    slurm_seconds,
)


def write_here(unit_index: int, unit: dict, name: str) -> dict:
    """A work unit that writes a file at a relative path."""
    Path(name).write_text(f"unit {unit_index}")
    return {"docs": 1}


def test_workers_zero_means_one_process_locally_and_no_cap_on_a_cluster():
    assert ExecutorConfig().workers == 1
    assert ExecutorConfig(kind="local", workers=0).workers == 1
    assert ExecutorConfig(kind="slurm").workers == 0
    with pytest.raises(ValueError, match="--workers"):
        ExecutorConfig(workers=-1)


def test_slurm_array_runs_every_task_at_once_unless_capped(tmp_path):
    step = UnitStep("assay.corpora.ingest:ingest_unit_task", [{}] * 4, {})
    free = build_executor(step, 4, tmp_path / "a", ExecutorConfig(kind="slurm", options={"partition": "cpu"}))
    assert type(free).__name__ == "AssaySlurmExecutor"
    assert free.get_sbatch_args(4)["array"] == "0-3"
    capped = build_executor(
        step, 4, tmp_path / "b", ExecutorConfig(kind="slurm", workers=2, options={"partition": "cpu"})
    )
    assert capped.get_sbatch_args(4)["array"] == "0-3%2"
    assert free.launch_merge_stats() is None  # no stats job left pending after a failed task
    assert "activate" in free.venv_path  # the job runs this environment's assay


def test_a_job_can_unpickle_the_executor_by_name(tmp_path):
    import dill

    step = UnitStep("assay.corpora.ingest:ingest_unit_task", [{}], {})
    ex = build_executor(step, 1, tmp_path, ExecutorConfig(kind="slurm", options={"partition": "cpu"}))
    (tmp_path / "executor.pik").write_bytes(dill.dumps(ex))
    # a fresh interpreter, as `launch_pickled_pipeline` in the job is: the class is found by name
    code = (
        "import dill, sys; ex = dill.load(open(sys.argv[1], 'rb')); "
        "print(type(ex).__module__, type(ex).__name__, ex.pipeline[0].func)"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code, str(tmp_path / "executor.pik")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "assay.pipelines.executor",
        "AssaySlurmExecutor",
        "assay.corpora.ingest:ingest_unit_task",
    ]


def test_unit_function_must_be_importable_by_a_job():
    with pytest.raises(ValueError, match="not importable"):
        _check_importable("__main__:run")
    with pytest.raises(ValueError, match="not importable"):
        _check_importable("no_such_module_here:run")
    _check_importable("assay.pipelines.annotate:annotate_unit")


def test_options_from_the_command_line_become_numbers():
    assert _option("mem_per_cpu_gb", "1") == 1 and isinstance(_option("mem_per_cpu_gb", "1"), int)
    assert _option("mem_per_cpu_gb", "1.5") == 1.5
    assert _option("cpus_per_task", "2") == 2
    assert _option("requeue", "false") is False
    assert _option("partition", "cpu") == "cpu"
    with pytest.raises(ValueError, match="expected a number"):
        _option("wait_timeout", "soon")


@pytest.mark.parametrize(
    "limit, seconds",
    [("10", 600), ("1:30", 90), ("4:00:00", 14400), ("1-12", 129600), ("2-00:30:00", 174600)],
)
def test_slurm_time_limits(limit, seconds):
    assert slurm_seconds(limit) == seconds


def test_slurm_wait_has_a_timeout_by_default(tmp_path):
    step = UnitStep("assay.corpora.ingest:ingest_unit_task", [{}] * 4, {})
    config = ExecutorConfig(kind="slurm", options={"partition": "cpu", "time": "1:00:00"})
    watch = _SlurmWatch(build_executor(step, 4, tmp_path, config), config, 4)
    assert watch.timeout == 3600 + 86400  # one time limit (no cap: one wave) and a day in the queue
    config = ExecutorConfig(kind="slurm", workers=2, options={"partition": "cpu", "time": "1:00:00"})
    assert _SlurmWatch(build_executor(step, 4, tmp_path, config), config, 4).timeout == 2 * 3600 + 86400
    config = ExecutorConfig(kind="slurm", options={"partition": "cpu", "wait_timeout": "30"})
    assert _SlurmWatch(build_executor(step, 4, tmp_path, config), config, 4).timeout == 30


def test_units_resolve_relative_paths_against_the_callers_directory(tmp_path, monkeypatch):
    caller, elsewhere = tmp_path / "caller", tmp_path / "elsewhere"
    caller.mkdir()
    elsewhere.mkdir()
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.chdir(caller)
    step = UnitStep(
        "test_executor:write_here", [{}, {}], {"name": "out.txt"}, started_dir=str(tmp_path / "s")
    )
    monkeypatch.chdir(elsewhere)  # where a Ray worker or Slurm job might start
    list(step.run(rank=1))
    assert (caller / "out.txt").read_text() == "unit 1"
    assert not (elsewhere / "out.txt").exists()
    started = json.loads((tmp_path / "s" / "u00001.json").read_text())
    assert started["unit"] == 1 and isinstance(started["pid"], int)


def test_an_unknown_executor_option_is_one_clear_error(tmp_path):
    step = UnitStep("assay.corpora.ingest:ingest_unit_task", [{}], {})
    config = ExecutorConfig(kind="slurm", options={"partition": "cpu", "colour": "blue"})
    with pytest.raises(ValueError, match="--executor-opt: .*colour"):
        build_executor(step, 1, tmp_path, config)

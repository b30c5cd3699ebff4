"""Real scale-out engines on 127.0.0.1: a 2-worker Ray cluster and a single-node Slurm.

Each fixture starts its servers in their own process session (so teardown stops exactly the
processes it started, by id), keeps every file under a temporary folder and waits for the
server to answer before yielding. Nothing listens on another interface (checked) and nothing
reaches outside: Ray's usage reporting and cloud probes are switched off as
../shared/ENVIRONMENT.md describes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# the same names as tests/conftest.py: a test here that does `from conftest import ...` gets this module
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Every live process in session `sid` (the servers a fixture started, and their children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def stop_session(sid: int, grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and _alive(session_pids(sid)):
            time.sleep(0.2)


def _alive(pids: list[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except OSError:
            pass
    return False


def listening_off_loopback(pids: list[int]) -> list[str]:
    """Sockets these processes listen on that are not 127.0.0.1 (must be none)."""
    import psutil

    bad = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.Error, OSError):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1"):
                bad.append(f"pid {pid} listens on {c.laddr.ip}:{c.laddr.port}")
    return bad


def _wait_for(check, what: str, seconds: float, log: Path | None = None) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up in {seconds:g} s\n{tail}")


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray head with 2 CPUs (2 workers) on 127.0.0.1; yields the environment a client needs."""
    pytest.importorskip("ray", reason="needs the ray extra: pip install 'assay[ray]'")
    tmp = Path(tempfile.mkdtemp(prefix="assay-ray-", dir="/tmp"))  # Ray's socket paths must stay short
    home = tmp / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")  # skips the cloud-metadata probes
    port = free_port()
    env = dict(
        os.environ,
        HOME=str(home),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_USAGE_STATS_REPORT_URL="http://127.0.0.1:9/",
        RAY_ADDRESS=f"127.0.0.1:{port}",
        OMP_NUM_THREADS="1",
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    )
    log = tmp / "ray-start.log"
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--disable-usage-stats",
            "--include-dashboard=false",
            f"--temp-dir={tmp / 'ray'}",
        ],
        env=env,
        cwd=tmp,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited {proc.returncode}: {log.read_text()[-2000:]}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        _wait_for(up, "Ray head", 90, log)
        yield {"env": env, "pids": lambda: session_pids(proc.pid), "dir": tmp}
    finally:
        stop_session(proc.pid)
        shutil.rmtree(tmp, ignore_errors=True)


SLURM_CONF = """\
ClusterName=assaytest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SrunPortRange={srun_lo}-{srun_hi}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=16000 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

SLURM_BINARIES = ("sbatch", "squeue", "scancel", "slurmctld", "slurmd", "munged", "mungekey")


def _slurm_installed() -> bool:
    return all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in SLURM_BINARIES)


def _ensure_slurm() -> None:
    """Install Debian's slurm-wlm and munge if they are missing, or skip saying why not."""
    if _slurm_installed():
        return
    if os.geteuid() != 0:
        pytest.skip(
            "Slurm is not installed and installing it needs root (apt-get install -y slurm-wlm munge)"
        )
    if not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and there is no apt-get to install slurm-wlm and munge")
    res = subprocess.run(
        ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"],
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if res.returncode != 0 or not _slurm_installed():
        pytest.skip(f"apt-get install slurm-wlm munge failed: {res.stderr.strip()[-300:]}")


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@pytest.fixture(scope="session")
def slurm_cluster():
    """munged + slurmctld + slurmd for one node `localhost` (2 CPUs), partition `test`, on 127.0.0.1."""
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm runs its daemons as root (SlurmUser=root)")
    _ensure_slurm()
    d = Path(tempfile.mkdtemp(prefix="assay-slurm-", dir="/tmp"))
    d.chmod(0o755)  # munged insists its socket directory is not writable by others
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
        (d / sub).chmod(0o755)
    key, sock = d / "munge" / "munge.key", d / "munge" / "munge.socket"
    subprocess.run([_sbin("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    srun_lo = free_port()
    conf = d / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            d=d,
            ctld_port=free_port(),
            d_port=free_port(),
            srun_lo=srun_lo,
            srun_hi=srun_lo + 20,
            munge_socket=sock,
        )
    )
    env = dict(
        os.environ,
        SLURM_CONF=str(conf),
        OMP_NUM_THREADS="1",
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    )
    started: list[subprocess.Popen] = []

    def daemon(args: list[str], log: str) -> None:
        started.append(
            subprocess.Popen(
                args,
                env=env,
                cwd=d,
                stdout=open(d / log, "wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    try:
        daemon(
            [
                _sbin("munged"),
                "--foreground",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={d / 'munge' / 'munged.pid'}",
                f"--log-file={d / 'munge' / 'munged.log'}",
                f"--seed-file={d / 'munge' / 'munged.seed'}",
                "--origin=127.0.0.1",
            ],
            "munged.out",
        )
        _wait_for(sock.exists, "munged", 20, d / "munged.out")
        daemon([_sbin("slurmctld"), "-D", "-f", str(conf)], "slurmctld.out")

        def ctld_up() -> bool:
            return subprocess.run(["scontrol", "ping"], env=env, capture_output=True).returncode == 0

        _wait_for(ctld_up, "slurmctld", 60, d / "slurmctld.log")
        daemon([_sbin("slurmd"), "-D", "-N", "localhost", "-f", str(conf)], "slurmd.out")

        def node_idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout
            return out.strip().rstrip("*") in ("idle", "mixed", "allocated")

        _wait_for(node_idle, "slurmd", 60, d / "slurmd.log")
        pids = [pid for p in started for pid in session_pids(p.pid)]
        yield {"env": env, "dir": d, "partition": "test", "pids": pids}
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30)
        for p in reversed(started):
            stop_session(p.pid)
        shutil.rmtree(d, ignore_errors=True)


def run_cli(args: list[str], env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """`assay ARGS` as a user runs it: the installed console script, in its own process."""
    return subprocess.run(
        [str(VENV_BIN / "assay"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------
# The same small corpus through ingest -> annotate (two scorers) -> select, on any executor.

RECIPE = """\
filter: "fineweb_keep"
rank: rp_unigram_entropy
strategy: gumbel
temperature: 2.0
budget:
  fraction_of_tokens: 0.5
strata: [source]
seed: 7
"""
SCORERS = ("stats", "heuristics")  # a cheap scorer and a set of heuristic rules


def make_inputs(folder: Path, files: int = 4, docs: int = 20) -> Path:
    """`files` JSONL inputs of `docs` real paragraphs each (the sample's speeches): one ingest
    unit and one docs shard per file."""
    import gzip
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("state_union", "inaugural"):
        with gzip.open(REPO / "sample" / "speeches" / f"{name}.jsonl.gz", "rt") as f:
            for rec in map(json.loads, f):
                paras = [p for p in rec["text"].split("\n") if len(p) > 200][:2]
                rows += [{"id": f"{rec['id']}#{j}", "text": p, "source": name} for j, p in enumerate(paras)]
    rows = rows[::3]  # both sources in every file
    for i in range(files):
        with open(folder / f"part{i}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[i * docs : (i + 1) * docs])
    return folder


def run_pipeline(
    root: Path, inputs: Path, executor: list[str], env: dict, cwd: Path, snapshot: Path | None = None
) -> dict[str, float]:
    """ingest, annotate and select through the CLI; the seconds each took. `snapshot`: a copy of
    the root as ingest left it."""
    recipe = cwd / "recipe.yaml"
    recipe.write_text(RECIPE)
    scorers = [a for s in SCORERS for a in ("--scorer", s)]
    steps = {
        "ingest": ["ingest", str(inputs), "--root", str(root), *executor],
        "annotate": ["annotate", "--root", str(root), *scorers, *executor],
        "select": ["select", "--root", str(root), "--recipe", str(recipe), "--name", "mix"],
    }
    seconds = {}
    for name, args in steps.items():
        t = time.time()
        res = run_cli(args, env, cwd)
        assert res.returncode == 0, f"{name}: {res.stdout[-1500:]}{res.stderr[-1500:]}"
        seconds[name] = round(time.time() - t, 1)
        if name == "ingest" and snapshot is not None:
            shutil.copytree(cwd / root, snapshot)
    return seconds


_UNSTABLE = {"runs", "created", "seconds_selecting"}  # wall times and dates differ run to run


def stable(obj):
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if k not in _UNSTABLE}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def digests(root: Path, mixture: bool = True) -> dict[str, str]:
    """sha256 of every Parquet file under the root (docs, annotations and, with `mixture`, the
    mixture) and of the stable parts of the corpus (and mixture) manifest."""
    import hashlib
    import json

    out = {}
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(".assay/") and (mixture or not rel.startswith("mixtures/")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifests = [root / "manifest.json"] + ([root / "mixtures" / "mix" / "manifest.json"] if mixture else [])
    for manifest in manifests:
        for key, part in stable(json.loads(manifest.read_text())).items():  # per key: a diff names it
            text = json.dumps(part, sort_keys=True)
            out[f"{manifest.relative_to(root).as_posix()}:{key}"] = hashlib.sha256(text.encode()).hexdigest()
    return out


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The corpus built with the local executor: what Ray and Slurm must reproduce byte for byte."""
    work = tmp_path_factory.mktemp("reference")
    inputs = make_inputs(work / "inputs")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    seconds = run_pipeline(work / "root", inputs, [], env, work, snapshot=work / "ingested")
    return {
        "inputs": inputs,
        "root": work / "root",
        "ingested": work / "ingested",  # tests of annotate failures start from a copy of this
        "digests": digests(work / "root"),
        "corpus_digests": digests(work / "root", mixture=False),
        "seconds": seconds,
    }


__all__ = [
    "FIXTURES",
    "REPO",
    "SHARED_DATA",
    "VENV_BIN",
    "digests",
    "make_inputs",
    "run_pipeline",
    "free_port",
    "listening_off_loopback",
    "run_cli",
    "session_pids",
    "stop_session",
]

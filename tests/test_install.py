"""The wheel installs beside a package that owns the generic name `pipelines`, and both work.

Assay's four code folders install as `assay.corpora`, `assay.scorers`, `assay.pipelines` and
`assay.predictors`; a distribution of its own that ships a top-level `pipelines` module (as
one on the registries does) must neither shadow Assay nor be overwritten or removed by it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

SOURCES = ["assay", "corpora", "scorers", "pipelines", "predictors", "pyproject.toml", "README.md", "LICENSE"]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}"
    return out


def _build_wheel(source: Path, dist: Path) -> Path:
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)])
    (wheel,) = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with Assay's wheel and a rival `pipelines` distribution, both --no-deps;
    Assay's dependencies come from the test's own environment through a .pth line (installing
    torch & co. again would take minutes and prove nothing about file ownership)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name)
    for cache in src.rglob("__pycache__"):
        shutil.rmtree(cache)
    wheel = _build_wheel(src, base / "dist")

    rival = base / "rival"
    (rival / "pipelines").mkdir(parents=True)
    (rival / "pipelines" / "__init__.py").write_text("OWNER = 'rival'\n")
    (rival / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=77"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "rival-pipelines"
            version = "1.0"
            [tool.setuptools]
            packages = ["pipelines"]
            """
        )
    )
    rival_wheel = _build_wheel(rival, base / "rival-dist")

    env_dir = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages")]
    # after the venv's own site-packages, so the freshly installed wheels win
    (site / "zz_test_deps.pth").write_text("\n".join(ours) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python")]
    _run([*pip, "install", "-q", "--no-deps", "--no-index", str(rival_wheel), str(wheel)])
    return env_dir


def test_wheel_installs_beside_a_rival_pipelines_package(venv, tmp_path):
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ASSAY_ROOT")}
    code = "import assay, assay.pipelines.cli, pipelines; print(assay.__version__, assay.__file__, pipelines.OWNER)"
    out = _run([str(python), "-c", code], cwd=tmp_path, env=env).stdout.split()
    assert out[0] == "0.1.0" and str(venv) in out[1] and out[2] == "rival"

    assay = venv / "bin" / "assay"
    assert "ingest" in _run([str(assay), "--help"], cwd=tmp_path, env=env).stdout
    # a folder named `pipelines` in the working directory shadows nothing of Assay's
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "__init__.py").write_text("raise ImportError('shadow')\n")
    root = tmp_path / "root"
    res = _run(
        [str(assay), "ingest", str(REPO / "sample" / "speeches"), "--root", str(root)], cwd=tmp_path, env=env
    )
    assert "total" in res.stdout and (root / "docs" / "part-00000.parquet").exists()

    # uninstalling the rival leaves Assay whole
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    _run([*pip, "uninstall", "-q", "-y", "rival-pipelines"])
    assert "annotate" in _run([str(assay), "--help"], cwd=tmp_path, env=env).stdout

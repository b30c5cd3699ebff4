"""`assay forecast`: registered predictors composed into one table per task (real fixtures)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.pipelines.cli import main
from assay.pipelines.ingest import ingest

TASKS = ["mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "csqa", "socialiqa", "openbookqa"]


def invoke(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast") / "root"
    ingest([str(REPO / "sample" / "web")], root, quiet=True)
    runs = str(FIXTURES / "ladder" / "*.csv")
    out = tmp_path_factory.mktemp("fits")
    invoke(
        "fit",
        "ladder",
        "--runs",
        runs,
        "--out",
        str(out / "l.json"),
        "--root",
        str(root),
        "--register",
        "ladder",
    )
    invoke(
        "fit",
        "transfer",
        "--runs",
        runs,
        "--out",
        str(out / "t.json"),
        "--root",
        str(root),
        "--register",
        "link",
    )
    rm = FIXTURES / "regmix"
    invoke(
        "fit",
        "mixture",
        "--mixtures",
        str(rm / "train_mixture_1m.csv"),
        "--losses",
        str(rm / "train_pile_loss_1m.csv"),
        "--target",
        "pile_cc",
        "--root",
        str(root),
        "--register",
        "regmix",
    )
    return root


def forecast(root, weights: dict, tmp_path, *extra: str) -> list[dict]:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(weights))
    out = invoke(
        "forecast",
        "--root",
        str(root),
        "--weights",
        str(path),
        "--n",
        "7e9",
        "--d",
        "2e12",
        "--format",
        "json",
        *extra,
    )
    return json.loads(out)


def test_rows_per_task_with_composed_predictors(root, tmp_path):
    rows = forecast(root, {"pile_cc": 0.5, "wikipedia_en": 0.3, "arxiv": 0.2}, tmp_path)
    assert [r["task"] for r in rows] == TASKS
    for r in rows:
        assert 0 <= r["lower"] <= r["predicted"] <= r["upper"] <= 1
        assert r["predictor"] == "ladder:ladder+mixture:regmix+transfer:link"
        assert r["backtest_abs_error"] is not None and r["loss_ratio"] > 0


def test_lower_predicted_loss_means_higher_accuracy(root, tmp_path):
    from assay.predictors.mixture import MixturePredictor

    saved = json.loads((root / "predictors" / "regmix.json").read_text())
    reg = MixturePredictor.from_json(saved)
    a, b = {"pile_cc": 0.9, "github": 0.1}, {"github": 0.9, "pile_cc": 0.1}
    la, lb = reg.predict_mixture(a)["predicted"], reg.predict_mixture(b)["predicted"]
    ra, rb = forecast(root, a, tmp_path), forecast(root, b, tmp_path)
    better, worse = (ra, rb) if la < lb else (rb, ra)
    assert all(x["predicted"] > y["predicted"] for x, y in zip(better, worse))


def test_plot_is_written(root, tmp_path):
    png = tmp_path / "f.png"
    forecast(root, {"pile_cc": 1.0}, tmp_path, "--plot", str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_no_predictors_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    ingest([str(FIXTURES / "ingest" / "inaugural_noid.jsonl")], empty, quiet=True)
    res = CliRunner().invoke(main, ["forecast", "--root", str(empty), "--n", "7e9", "--d", "1e12"])
    assert res.exit_code != 0 and "no usable predictors" in res.output

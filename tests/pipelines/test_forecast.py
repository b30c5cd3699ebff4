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


def test_boundary_fit_registered_does_not_crash_and_flags_its_range(root, tmp_path):
    invoke(
        "fit", "boundary", "--table", str(FIXTURES / "boundary" / "base_llm_benchmark_eval_cut.csv"),
        "--y", "MMLU", "--out", str(tmp_path / "b.json"), "--root", str(root), "--register", "mmlu_frontier",
    )  # fmt: skip
    try:
        rows = forecast(root, {"pile_cc": 1.0}, tmp_path)
        frontier = [r for r in rows if r["predictor"] == "boundary:mmlu_frontier"]
        assert len(frontier) == 1 and 0 < frontier[0]["predicted"] < 1
        # 6 * 7e9 * 2e12 = 8.4e22 FLOPs lies inside the public models' compute
        assert frontier[0]["warning"] is None
        path = tmp_path / "w.json"
        out = invoke(
            "forecast",
            "--root",
            str(root),
            "--weights",
            str(path),
            "--n",
            "1e13",
            "--d",
            "1e15",
            "--format",
            "json",
        )
        far = {r["predictor"]: r for r in json.loads(out)}
        assert "FLOPs = 6e+28 is" in far["boundary:mmlu_frontier"]["warning"]
    finally:
        (root / "predictors" / "mmlu_frontier.json").unlink()


def test_forecasts_outside_the_fitted_range_say_so(root, tmp_path):
    rows = forecast(root, {"pile_cc": 0.5, "wikipedia_en": 0.3, "arxiv": 0.2}, tmp_path)
    # the ladder fixture stops at 1B parameters: 7e9 is an extrapolation, and the row says how far
    assert all(r["warning"] and r["warning"].startswith("N = 7e+09 is ") for r in rows)
    # no training mixture of the regressor puts 100 % on one domain
    lone = forecast(root, {"arxiv": 1.0}, tmp_path)
    assert all("weights beyond every training mixture: arxiv 1.00 >" in r["warning"] for r in lone)
    res = CliRunner().invoke(
        main,
        ["forecast", "--root", str(root), "--weights", str(tmp_path / "w.json"), "--n", "7e9", "--d", "2e12"],
    )
    assert res.exit_code == 0 and "warning: extrapolating: N = 7e+09" in res.output


@pytest.mark.parametrize(
    ("n", "d", "message"),
    [("7", "2e12", "at least 1e6 parameters"), ("7e9", "2", "fewer tokens than")],
)
def test_absurd_scales_are_refused(root, tmp_path, n, d, message):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"pile_cc": 1.0}))
    res = CliRunner().invoke(
        main, ["forecast", "--root", str(root), "--weights", str(path), "--n", n, "--d", d]
    )
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output


def test_mixture_and_weights_together_is_an_error(root, tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"pile_cc": 1.0}))
    args = [
        "forecast",
        "--root",
        str(root),
        "--weights",
        str(path),
        "--mixture",
        "m",
        "--n",
        "7e9",
        "--d",
        "2e12",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "not both" in res.output


def test_builtin_pool_baseline(root, tmp_path):
    rows = forecast(
        root,
        {"pile_cc": 1.0},
        tmp_path,
        "--baseline",
        "pool",
        "--map",
        "dolma_sample-0000=pile_cc",
        "--map",
        "common-crawl=pile_cc",
    )
    assert all("gain_vs_baseline" in r for r in rows)
    res = CliRunner().invoke(
        main,
        [
            "forecast",
            "--root",
            str(root),
            "--weights",
            str(tmp_path / "w.json"),
            "--n",
            "7e9",
            "--d",
            "2e12",
            "--baseline",
            "random",
        ],
    )
    assert (
        res.exit_code == 1
        and "no mixture 'random'" in res.output
        and "`pool` is the whole corpus" in res.output
    )


@pytest.mark.parametrize("verb", ["transfer", "smi"])
def test_register_without_out(tmp_path, verb):
    root = tmp_path / "root"
    if verb == "transfer":
        args = ["fit", "transfer", "--runs", str(FIXTURES / "ladder" / "*.csv")]
    else:
        smi = REPO.parent / "shared" / "data" / "eval_results" / "smi"
        files = sorted(smi.glob("**/pythia-1.4b*.json*")) + sorted(smi.glob("**/pythia-2.8b*.json*"))
        if len(files) < 2:
            pytest.skip("needs the SMI results in ../shared/data")
        args = ["fit", "smi", "--no-backtest", *(x for f in files[:2] for x in ("--model", str(f)))]
    res = CliRunner().invoke(main, [*args, "--register", "x"], env={"ASSAY_ROOT": str(root)})
    assert res.exit_code == 0, res.output
    assert json.loads((root / "predictors" / "x.json").read_text())["kind"] == verb

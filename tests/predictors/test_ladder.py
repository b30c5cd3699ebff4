"""Task-ladder predictor: fits recover known parameters; real OLMo ladder runs backtest within 2 points."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from assay.pipelines.cli import main
from assay.predictors.ladder import LadderOptions, LadderPredictor
from assay.predictors.ladder_data import (
    LADDER_SIZES,
    MMLU_GROUPS,
    TASKS,
    checkpoint_points,
    final_points,
    moving_average,
    read_olmo_ladder,
)
from assay.predictors.ladder_fit import (
    fit_accuracy_curve,
    fit_loss_law,
    fit_loss_laws_shared,
    loss_law,
    sigmoid,
)
from assay.predictors.lm_eval import read_lm_eval, read_lm_eval_runs, sample_bpb

SIZES = np.array([190_354_176, 371_262_464, 758_220_288, 1_279_395_840], dtype=float)
MULTS = np.array([1.0, 2.0, 5.0, 10.0])


@pytest.fixture(scope="module")
def ladder(fixtures) -> pl.DataFrame:
    return read_olmo_ladder(sorted((fixtures / "ladder").glob("*.csv")))


def _grid() -> tuple[np.ndarray, np.ndarray]:
    n = np.repeat(SIZES, len(MULTS))
    return n, n * 20 * np.tile(MULTS, len(SIZES))


# ------------------------------------------------------------- synthetic: known parameters


def test_loss_law_recovers_known_parameters():
    rng = np.random.default_rng(0)
    true = np.array([5.0, 4.5, 0.32, 0.23, 0.55])
    n, d = _grid()
    loss = loss_law(true, n, d) * np.exp(rng.normal(0, 2e-4, len(n)))
    law = fit_loss_law(n, d, loss)
    assert law.params[2] == pytest.approx(0.32, abs=0.03)
    assert law.params[3] == pytest.approx(0.23, abs=0.03)
    assert law.params[4] == pytest.approx(0.55, abs=0.05)
    # what matters is the extrapolation: a 13B model on 5T tokens
    target = loss_law(true, np.array([13.2e9]), np.array([5e12]))
    assert law(np.array([13.2e9]), np.array([5e12])) == pytest.approx(target, rel=0.01)


def test_shared_exponents_recover_each_task():
    rng = np.random.default_rng(1)
    n, d = _grid()
    truths = {"t1": (5.0, 4.0, 0.4), "t2": (6.0, 5.5, 0.9), "t3": (4.0, 3.0, 0.2)}
    points = {}
    for t, (a, b, e) in truths.items():
        p = np.array([a, b, 0.35, 0.25, e])
        points[t] = (n, d, loss_law(p, n, d) * np.exp(rng.normal(0, 2e-4, len(n))))
    laws = fit_loss_laws_shared(points)
    for t, (a, b, e) in truths.items():
        alpha, beta = laws[t].params[2], laws[t].params[3]
        assert alpha == pytest.approx(0.35, abs=0.02) and beta == pytest.approx(0.25, abs=0.02)
        assert laws[t].params[4] == pytest.approx(e, abs=0.03)
        assert laws[t].cov.shape == (5, 5)
        truth = loss_law(np.array([a, b, 0.35, 0.25, e]), np.array([7e9]), np.array([4e12]))
        assert laws[t](np.array([7e9]), np.array([4e12])) == pytest.approx(truth, rel=0.01)


def test_accuracy_curve_recovers_known_parameters_and_its_error():
    rng = np.random.default_rng(2)
    true = (-0.7, 0.8, 6.0, 0.95)  # a, L0, k, b: floor 0.25, ceiling 0.95
    x = rng.uniform(0.7, 1.8, 600)
    y = sigmoid(x, *true) + rng.normal(0, 0.01, len(x))
    curve = fit_accuracy_curve(x, y, chance=0.25)
    for got, want, tol in zip(curve.params, true, (0.05, 0.05, 0.6, 0.03)):
        assert got == pytest.approx(want, abs=tol)
    assert curve.resid_std == pytest.approx(0.01, rel=0.15)
    # the delta-method error of the curve agrees with refits on fresh noise
    at = np.array([0.6])
    refits = [
        fit_accuracy_curve(x, sigmoid(x, *true) + rng.normal(0, 0.01, len(x)), chance=0.25)(at)[0]
        for _ in range(30)
    ]
    assert curve.std(at)[0] == pytest.approx(np.std(refits), rel=0.3)


def test_synthetic_ladder_end_to_end_predicts_a_larger_model():
    """Runs built from known laws, checkpoint by checkpoint: the chained forecast lands within a point."""
    rng = np.random.default_rng(3)
    law = np.array([5.0, 4.5, 0.32, 0.23, 0.55])
    curve = (-0.75, 0.8, 5.0, 1.0)
    rows = []
    for n in SIZES:
        for m in MULTS:
            d_final = 20 * n * m
            for step in range(1, 41):
                d = d_final * step / 40
                bpb = loss_law(law, np.array([n]), np.array([d]))[0]
                acc = sigmoid(bpb, *curve) + rng.normal(0, 0.003)
                rows.append(
                    {
                        "run": f"{n:.0f}-{m}",
                        "n": n,
                        "d": d,
                        "step": step,
                        "task": "hellaswag",
                        "bpb": bpb,
                        "acc": acc,
                    }
                )
    p = LadderPredictor().fit(pl.DataFrame(rows))
    out = p.predict(pl.DataFrame({"n": [7e9], "d": [4e12]})).row(0, named=True)
    expected = sigmoid(loss_law(law, np.array([7e9]), np.array([4e12]))[0], *curve)
    assert out["predicted"] == pytest.approx(expected, abs=0.01)
    assert out["lower"] <= out["predicted"] <= out["upper"]


def test_smoothing_and_skipping_follow_the_reference():
    assert moving_average(np.array([1.0, 2, 3, 4, 5, 6]), 3) == pytest.approx([1, 1.5, 2, 3, 4, 5])
    table = pl.DataFrame(
        {"run": "r", "n": 1e9, "d": np.arange(1, 21) * 1e9, "step": np.arange(20), "task": "piqa",
         "bpb": np.arange(20, dtype=float), "acc": np.linspace(0.5, 0.7, 20)}
    )  # fmt: skip
    x, _, _ = checkpoint_points(table, "piqa", skip=0.1, window=5)
    assert len(x) == 18 and x[0] == 2.0 and x[-1] == pytest.approx(np.mean([15, 16, 17, 18, 19]))
    fp = final_points(table, "piqa", last=5)
    assert fp.bpb[0] == pytest.approx(17.0) and fp.d[0] == 20e9


# ------------------------------------------------------------------ real ladder fixtures


def test_read_olmo_ladder_layout(ladder, fixtures):
    assert set(ladder["task"].unique()) == set(TASKS)
    one = ladder.filter(pl.col("run") == "3B-10xC")
    assert one["n"][0] == LADDER_SIZES["3B"] == 3_169_537_280
    assert one["d"].max() == 633_939_689_472  # the run's final throughput/total_tokens
    raw = pl.read_csv(fixtures / "ladder" / "3B-10xC.csv").tail(1)
    w = np.array(list(MMLU_GROUPS.values()), float) / sum(MMLU_GROUPS.values())
    bpb = sum(wi * raw[f"eval/downstream_bpb/{g}_rc_5shot_bpb"][0] for g, wi in zip(MMLU_GROUPS, w))
    last = one.filter((pl.col("task") == "mmlu") & (pl.col("step") == one["step"].max()))
    assert last["bpb"][0] == pytest.approx(bpb)
    assert ladder["acc"].is_between(0, 1).all()


def test_backtest_on_real_fixtures_within_two_points(ladder):
    p = LadderPredictor()
    rows = p.backtest(ladder, hold_out="3B")
    assert set(rows["run"].unique()) == {"3B-1xC", "3B-2xC", "3B-5xC", "3B-10xC"}
    assert rows.height == 4 * len(TASKS)
    assert (rows["lower"] <= rows["predicted"]).all() and (rows["predicted"] <= rows["upper"]).all()
    assert p.backtest_["mean_abs_error_points"] < 2.0
    assert max(t["abs_error_points"] for t in p.backtest_["per_task"].values()) < 4.0
    assert p.backtest_["fitted_on_sizes"] == sorted(float(v) for k, v in LADDER_SIZES.items() if k != "3B")


def test_runs_under_1xc_are_left_out_unless_asked(ladder):
    kept = LadderPredictor(LadderOptions(calibrate=False)).fit(ladder).fitted_on_
    assert "190M-0.5xC" not in {p["run"] for p in kept["final_points"]}
    everything = (
        LadderPredictor(LadderOptions(min_tokens_per_param=0, calibrate=False)).fit(ladder).fitted_on_
    )
    assert everything["runs"] == kept["runs"] + 1


def test_json_round_trip_predicts_the_same(ladder):
    p = LadderPredictor().fit(ladder)
    p.backtest(ladder, "3B")
    saved = json.loads(json.dumps(p.to_json()))
    assert saved["kind"] == "ladder" and saved["version"] == "2"
    assert {"params", "fitted_on", "backtest"} <= set(saved)
    assert saved["params"]["calibration"]["factor"] == p.factor > 1.0
    assert saved["fitted_on"]["sizes"] == sorted(float(v) for v in LADDER_SIZES.values())
    back = LadderPredictor.from_json(saved)
    targets = pl.DataFrame({"n": [6.9e9, 13.2e9], "d": [4e12, 5e12]})
    a, b = p.predict(targets), back.predict(targets)
    assert a["predicted"].to_list() == pytest.approx(b["predicted"].to_list(), abs=1e-12)
    assert a["upper"].to_list() == pytest.approx(b["upper"].to_list(), abs=1e-12)
    assert back.backtest_ == saved["backtest"]
    # a version-1 fit (before calibration) still loads, with its plain delta-method interval
    old = json.loads(json.dumps(saved))
    old["version"] = "1"
    del old["params"]["calibration"]
    for key in ("calibrate", "calibration_min_sizes"):
        del old["params"]["options"][key]
    v1 = LadderPredictor.from_json(old)
    assert v1.factor == 1.0 and not v1.options.calibrate
    c = v1.predict(targets)
    assert c["predicted"].to_list() == pytest.approx(a["predicted"].to_list(), abs=1e-12)
    assert ((c["upper"] - c["lower"]) < (a["upper"] - a["lower"])).all()


def test_calibration_factor_comes_only_from_the_calibration_sizes(ladder):
    """The factor of a 190M-1B fit is set by its forward steps (760M from 190M-370M, 1B from
    190M-760M): the 3B runs play no part, so changing them changes nothing."""
    no_3b = ladder.filter(pl.col("size") != "3B")
    base = LadderPredictor().fit(no_3b)
    cal = base.calibration_
    assert [s["hold_out"] for s in cal["steps"]] == ["760M", "1B"]
    assert cal["steps"][0]["fitted_on"] == ["190M", "370M"]
    assert cal["residuals"] == sum(s["residuals"] for s in cal["steps"]) == 2 * 4 * len(TASKS)
    # the backtest's copy fits on the same rows as `base`, whatever the 3B rows say
    shifted = ladder.with_columns(
        acc=pl.when(pl.col("size") == "3B").then(pl.col("acc") * 0.5).otherwise(pl.col("acc")),
        bpb=pl.when(pl.col("size") == "3B").then(pl.col("bpb") * 2.0).otherwise(pl.col("bpb")),
    )
    p = LadderPredictor()
    p.backtest(shifted, "3B")
    assert p.backtest_["calibration"]["factor"] == pytest.approx(base.factor, rel=1e-12)
    # ... while changing a calibration size does change it
    moved = ladder.with_columns(
        acc=pl.when(pl.col("size") == "1B").then(pl.col("acc") + 0.02).otherwise(pl.col("acc"))
    )
    assert LadderPredictor().fit(moved.filter(pl.col("size") != "3B")).factor != pytest.approx(base.factor)


def test_calibration_widens_the_interval_only(ladder):
    """Point predictions do not move; the interval grows by the factor; coverage on the held-out
    3B runs is reported before and after, at the values measured on the fixture runs."""
    plain, calibrated = LadderPredictor(LadderOptions(calibrate=False)), LadderPredictor()
    a, b = plain.backtest(ladder, "3B"), calibrated.backtest(ladder, "3B")
    assert b["predicted"].to_list() == a["predicted"].to_list()
    assert calibrated.backtest_["mean_abs_error_points"] == plain.backtest_["mean_abs_error_points"]
    factor = calibrated.backtest_["calibration"]["factor"]
    assert b["sd"].to_numpy() == pytest.approx(factor * a["sd"].to_numpy(), rel=1e-12)
    assert plain.backtest_["calibration"] is None
    assert b["covered_uncalibrated"].to_list() == a["covered"].to_list()
    s = calibrated.backtest_
    # measured on the fixture (every third checkpoint of the real runs, 3B at 1-10xC): 32 rows
    assert factor == pytest.approx(1.48, abs=0.05)
    assert s["coverage_uncalibrated"] == pytest.approx(27 / 32, abs=1.5 / 32)
    assert s["coverage"] == pytest.approx(31 / 32, abs=1.5 / 32)
    assert s["coverage"] > s["coverage_uncalibrated"]


def test_calibration_needs_three_sizes():
    rows = [
        {"run": f"{n:.0f}-{m}xC", "n": n, "d": 20 * n * m * s / 10, "step": s, "task": "piqa",
         "bpb": 1.0 + 50 / n**0.3 + 40 / (20 * n * m * s / 10) ** 0.25, "acc": 0.6 + 0.01 * s}
        for n in SIZES[:2] for m in MULTS for s in range(1, 11)
    ]  # fmt: skip
    p = LadderPredictor().fit(pl.DataFrame(rows))
    assert p.factor == 1.0 and "no forward step" in p.calibration_["note"]


def test_clear_errors():
    with pytest.raises(ValueError, match="not fitted"):
        LadderPredictor().predict(pl.DataFrame({"n": [1e9], "d": [1e10]}))
    with pytest.raises(ValueError, match="missing columns"):
        LadderPredictor().fit(pl.DataFrame({"run": ["a"], "n": [1.0]}))
    with pytest.raises(ValueError, match="not a ladder"):
        LadderPredictor.from_json({"kind": "smi", "version": "1"})


# ------------------------------------------------------------------------- shared data


def test_reproduces_the_published_13b_predictions(shared_data):
    """Per-task fits on 190M-1B at 1-10xC give the paper's chained 13B-5T predictions (OLMo-ladder
    repository, src/scripts/paper/figures/chained_main.csv)."""
    paths = sorted((shared_data / "eval_results" / "olmo_ladder" / "ladder-runs").glob("*.csv"))
    table = read_olmo_ladder(p for p in paths if not p.stem.startswith("3B") and "rerun" not in p.stem)
    # point predictions only: the interval calibration (three more per-task fits) is not needed
    p = LadderPredictor(LadderOptions(shared_exponents=False, calibrate=False)).fit(table)
    pred = dict(
        p.predict(pl.DataFrame({"n": [13_202_396_160], "d": [5_000_080_130_048]}))
        .select("task", "predicted")
        .iter_rows()
    )
    published = {"mmlu": 0.51268, "hellaswag": 0.85304, "arc_challenge": 0.52671, "arc_easy": 0.77242,
                 "piqa": 0.82080, "csqa": 0.77609, "socialiqa": 0.59948, "openbookqa": 0.44865}  # fmt: skip
    for task, value in published.items():
        assert pred[task] == pytest.approx(value, abs=2e-3), task


def test_backtest_on_all_shared_runs(shared_data):
    table = read_olmo_ladder((shared_data / "eval_results" / "olmo_ladder" / "ladder-runs").glob("*.csv"))
    p = LadderPredictor()
    rows = p.backtest(table, "3B")
    assert rows["run"].n_unique() == 6  # 0.5xC to 10xC and the rerun
    # the figure of the README (the 3B MAE is unchanged by the interval calibration)
    assert p.backtest_["mean_abs_error_points"] == pytest.approx(1.126, abs=5e-3)
    # 95 % coverage on the 48 held-out 3B rows: 38 before calibration, 46 after (factor 1.74 from
    # 760M and 1B, fitted without 3B)
    assert p.backtest_["coverage_uncalibrated"] == pytest.approx(38 / 48, abs=1.5 / 48)
    assert p.backtest_["coverage"] == pytest.approx(46 / 48, abs=1.5 / 48)
    assert p.backtest_["calibration"]["factor"] == pytest.approx(1.74, abs=0.05)


# ---------------------------------------------------------------------------------- CLI


def test_cli_fit_and_forecast(fixtures, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ladder.json"
    res = runner.invoke(
        main, ["fit", "ladder", "--runs", str(fixtures / "ladder" / "*.csv"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "backtest" in res.output and out.exists()
    assert "interval factor x" in res.output and "uncalibrated" in res.output
    res = runner.invoke(
        main, ["forecast", "ladder", "--fit", str(out), "--n", "6.9e9", "--d", "4e12", "--format", "json",
               "--plot", str(tmp_path / "f.png")]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["task"] for r in rows] == list(TASKS)
    for r in rows:
        assert set(r) == {"task", "predicted", "lower", "upper"}
        assert 0 <= r["lower"] <= r["predicted"] <= r["upper"] <= 1
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(main, ["forecast", "ladder", "--fit", str(out), "--n", "6.9e9", "--d", "4e12"])
    assert res.exit_code == 0 and "arc_challenge" in res.output and "interval" in res.output


def test_cli_register_and_long_table_input(ladder, tmp_path):
    long_csv = tmp_path / "runs.csv"
    ladder.filter(pl.col("task").is_in(["piqa", "hellaswag"])).drop("size").write_csv(long_csv)
    runner = CliRunner()
    args = ["fit", "ladder", "--runs", str(long_csv)]
    res = runner.invoke(main, args)
    assert res.exit_code == 2 and "give --out FILE, --register NAME" in res.output
    # $ASSAY_ROOT is the root, as for every verb; nothing lands in the working directory
    with runner.isolated_filesystem(temp_dir=tmp_path) as cwd:
        res = runner.invoke(main, [*args, "--register", "olmo"], env={"ASSAY_ROOT": str(tmp_path / "root")})
        assert res.exit_code == 0, res.output
        assert list(Path(cwd).iterdir()) == []
    assert (tmp_path / "root" / "predictors" / "olmo.json").exists()
    res = runner.invoke(
        main, ["forecast", "ladder", "--fit", "olmo", "--root", str(tmp_path / "root"), "--n", "7e9", "--d", "2e12", "--format", "json"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(r["task"] for r in json.loads(res.output)) == ["hellaswag", "piqa"]
    plain = tmp_path / "plain.json"
    res = runner.invoke(main, [*args, "--out", str(plain), "--no-calibration", "--no-backtest"])
    assert res.exit_code == 0 and "interval factor" not in res.output, res.output
    saved = json.loads(plain.read_text())
    assert saved["params"]["options"]["calibrate"] is False and saved["params"]["calibration"] == {}
    assert LadderPredictor.from_json(saved).factor == 1.0


# ---------------------------------------------------------------------------- lm-eval


def _sample(target, conts, lls, layout="dict"):
    args = (
        {f"gen_args_{i}": {"arg_0": "Question: ...\nAnswer:", "arg_1": c} for i, c in enumerate(conts)}
        if layout == "dict"
        else [["Question: ...\nAnswer:", c] for c in conts]
    )
    return {
        "doc_id": 0,
        "target": target,
        "arguments": args,
        "filtered_resps": [[str(v), "False"] for v in lls],
    }


def test_sample_bpb_arithmetic():
    conts = [" dry palms", " wet palms"]  # 10 UTF-8 bytes each
    s = _sample("1", conts, [-9.0, -6.931471805599453])
    assert sample_bpb(s) == pytest.approx(6.931471805599453 / (10 * math.log(2)))
    assert sample_bpb(_sample("wet palms", conts, [-1.0, -2.0], layout="list")) == pytest.approx(
        2 / (10 * math.log(2))
    )
    assert sample_bpb(_sample("unknown", conts, [-1.0, -2.0])) is None


def test_read_lm_eval_results_and_samples(tmp_path):
    results = {
        "results": {
            "arc_easy": {"alias": "arc_easy", "acc,none": 0.61, "acc_norm,none": 0.58},
            "commonsense_qa": {"acc,none": 0.41},
            "mmlu_continuation": {"acc,none": 0.33},
        },
        "group_subtasks": {
            "mmlu_continuation": ["mmlu_continuation_stem"],
            "mmlu_continuation_stem": ["mmlu_x", "mmlu_y"],
        },
    }
    (tmp_path / "results_2025-01-01.json").write_text(json.dumps(results))
    ln2 = math.log(2)
    lines = {
        "arc_easy": [_sample("0", [" ab"], [-3 * ln2])],  # 3 bytes, 3 bits -> 1.0
        "mmlu_x": [_sample("0", [" a"], [-2 * ln2])],  # 2 bytes -> 1.0
        "mmlu_y": [_sample("0", [" a"], [-4 * ln2]), _sample("0", [" a"], [-8 * ln2])],  # 2.0 and 4.0
    }
    for task, samples in lines.items():
        (tmp_path / f"samples_{task}_2025-01-01.jsonl").write_text(
            "\n".join(json.dumps(s) for s in samples) + "\n"
        )
    rows = read_lm_eval(tmp_path / "results_2025-01-01.json", run="m-1xC", n=1e9, d=2e10, step=100)
    got = {r["task"]: r for r in rows.iter_rows(named=True)}
    assert set(got) == {"arc_easy", "csqa", "mmlu"}
    assert got["arc_easy"]["acc"] == 0.58 and got["arc_easy"]["bpb"] == pytest.approx(1.0)
    assert got["mmlu"]["bpb"] == pytest.approx((1 + 2 + 4) / 3)  # questions weigh alike across subjects
    assert got["csqa"]["bpb"] is None and got["csqa"]["acc"] == 0.41
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("run,n,d,step,results\nm-1xC,1e9,2e10,100,results_2025-01-01.json\n")
    assert read_lm_eval_runs(manifest).height == 3
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="results"):
        read_lm_eval(tmp_path / "bad.json", run="x", n=1, d=1)

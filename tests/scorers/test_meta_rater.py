"""Meta-rater: published weights on the real heuristics columns, exact normalisation, batch
independence, weights files, and the learned chain (proxies -> LightGBM -> search) on the sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import REPO

from assay.pipelines.cli import main
from assay.scorers import meta_rater as mr
from assay.scorers.registry import make_scorer


def _run(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def web_root(tmp_path_factory):
    """The sample's web documents with real stats and heuristics annotations."""
    root = tmp_path_factory.mktemp("meta_rater_web") / "root"
    _run(["ingest", str(REPO / "sample" / "web"), "--root", str(root)])
    _run(["annotate", "--root", str(root), "--scorer", "stats", "--scorer", "heuristics"])
    return root


def _hand_root(tmp_path, parts: list[dict]) -> tuple:
    """A root whose only annotation set `hand` holds the given columns, one file per part."""
    for i, cols in enumerate(parts):
        path = tmp_path / "annotations" / "hand" / f"part-{i:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = len(next(iter(cols.values())))
        ids = [f"d{i}-{j}" for j in range(n)]
        pq.write_table(pa.table({"id": ids, **cols}), path)
    return tmp_path


def test_published_weights_are_the_25_of_the_card():
    from assay.scorers.heuristics import HeuristicsScorer

    assert len(mr.PUBLISHED) == 25
    assert sum(w for w, _ in mr.PUBLISHED.values()) == pytest.approx(1.0, abs=0.005)
    assert mr.PUBLISHED["educational_value"][0] == 0.0564 and mr.PUBLISHED["writing_style"][0] == 0.0005
    columns = [c for _, c in mr.PUBLISHED.values()]
    assert len(set(columns)) == 25
    # the 11 RedPajama signals are columns the heuristics scorer really writes
    rp = [c for c in columns if c.startswith("rp_")]
    assert len(rp) == 11 and set(rp) <= set(HeuristicsScorer().output_schema().names)


def test_published_on_real_columns_names_the_missing_and_renormalises(web_root, capsys):
    scorer = make_scorer("meta_rater:published", web_root)
    note = capsys.readouterr().err
    assert "11 of 25 scores present" in note and "fineweb_edu" in note and "professionalism" in note
    assert scorer.name == "meta_rater" and len(scorer.weights) == 11
    assert sum(scorer.weights.values()) == pytest.approx(1.0, abs=1e-12)
    ratio = scorer.weights["rp_word_count"] / scorer.weights["rp_mean_word_length"]
    assert ratio == pytest.approx(0.0423 / 0.0065)  # renormalising keeps the published proportions
    meta = json.loads(scorer.output_schema().field("meta_rater").metadata[b"assay.meta_rater"])
    assert meta["renormalised"] is True and len(meta["missing"]) == 14 and "dsir_wiki" in meta["missing"]
    assert meta["published_weight_present"] == pytest.approx(sum(mr.PUBLISHED[s][0] for s in meta["present"]))
    # annotate writes the column; it is the weighted sum of z-scores over the whole corpus
    _run(["annotate", "--root", str(web_root), "--scorer", "meta_rater:published"])
    ids, values, _ = mr.read_columns(web_root, list(scorer.weights))
    expected = sum(
        w * (values[c] - np.nanmean(values[c])) / np.nanstd(values[c]) for c, w in scorer.weights.items()
    )
    got = pa.concat_tables(
        pq.read_table(p) for p in sorted((web_root / "annotations" / "meta_rater").glob("part-*.parquet"))
    )
    assert got.column("id").to_pylist() == ids.to_pylist()
    np.testing.assert_allclose(
        got.column("meta_rater").to_numpy(), np.nan_to_num(expected), rtol=1e-9, atol=1e-9
    )


def test_missing_and_bad_specs_are_clear_errors(web_root, tmp_path):
    with pytest.raises(ValueError, match=r"columns \['nosuch'\] are in no annotation set"):
        make_scorer("meta_rater:nosuch=1,rp_word_count=2", web_root)
    with pytest.raises(ValueError, match="exactly one of published"):
        make_scorer("meta_rater:published,rp_word_count=2", web_root)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_scorer("meta_rater:published,norm=minmax", web_root)
    with pytest.raises(ValueError, match="needs weights"):
        make_scorer("meta_rater", web_root)
    with pytest.raises(ValueError, match="none of the 25 published scores"):
        make_scorer("meta_rater:published", _hand_root(tmp_path, [{"x": [1.0, 2.0]}]))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        make_scorer(f"meta_rater:weights={tmp_path / 'bad.json'}", web_root)
    with pytest.raises(ValueError, match="does not exist"):
        make_scorer(f"meta_rater:weights={tmp_path / 'none.json'}", web_root)


def test_z_and_rank_normalisation_are_exact_on_hand_built_columns():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    z = mr.normalise(x, mr.column_stats(x, "z"), "z")
    mean, std = 2.5, math.sqrt(1.25)
    np.testing.assert_array_equal(z, [(v - mean) / std for v in (1.0, 2.0, 3.0, 4.0)] + [0.0])
    # 1,001 distinct values: the quantile table holds every one, so the percentile is exact
    values = np.random.default_rng(0).permutation(1001).astype(float) * 0.5
    r = mr.normalise(values, mr.column_stats(values, "rank"), "rank")
    np.testing.assert_allclose(r, values / 500.0, rtol=0, atol=1e-12)
    # between table points: linear; outside the corpus range: clipped; NULL: the median
    stats = mr.column_stats(values, "rank")
    np.testing.assert_allclose(
        mr.normalise(np.array([0.25, -3.0, 900.0, np.nan]), stats, "rank"), [0.0005, 0, 1, 0.5]
    )
    const = np.full(7, 3.0)
    assert (mr.normalise(const, mr.column_stats(const, "z"), "z") == 0).all()
    assert (mr.normalise(const, mr.column_stats(const, "rank"), "rank") == 0.5).all()
    np.testing.assert_array_equal(mr.normalise(x, mr.column_stats(x, "none"), "none"), [1, 2, 3, 4, 0])


def test_scores_use_corpus_statistics_and_never_depend_on_the_batch(tmp_path):
    rng = np.random.default_rng(1)
    parts = [{"a": rng.normal(5, 2, 40), "b": rng.integers(0, 9, 40)} for _ in range(2)]
    parts[1]["a"][3] = np.nan
    root = _hand_root(tmp_path, parts)
    scorer = make_scorer("meta_rater:a=2,b=-0.5,norm=z,name=hand", root)
    assert scorer.name == "meta_rater_hand" and scorer.input_columns == ("id", "a", "b")
    a = np.concatenate([p["a"] for p in parts])
    b = np.concatenate([p["b"] for p in parts]).astype(float)
    expected = 2 * np.nan_to_num((a - np.nanmean(a)) / np.nanstd(a)) - 0.5 * (b - b.mean()) / b.std()
    whole = pa.concat_tables(pq.read_table(p) for p in sorted(root.glob("annotations/hand/*.parquet")))
    batch = whole.combine_chunks().to_batches()[0]
    full = scorer.score(batch).column(0).to_numpy()
    np.testing.assert_allclose(full, expected, rtol=1e-12, atol=1e-12)
    # one row at a time, and a shuffled batch: the same bits for every document
    single = np.concatenate([scorer.score(batch.slice(i, 1)).column(0).to_numpy() for i in range(80)])
    order = rng.permutation(80)
    shuffled = scorer.score(batch.take(pa.array(order))).column(0).to_numpy()
    assert single.tobytes() == full.tobytes() and shuffled.tobytes() == full[order].tobytes()
    # a second build (a worker, a rerun) loads the saved statistics: same version, same scores
    again = make_scorer("meta_rater:a=2,b=-0.5,norm=z,name=hand", root)
    assert again.version == scorer.version and len(list(root.glob("models/meta_rater_stats_*.json"))) == 1
    assert make_scorer("meta_rater:a=2,b=-0.4,name=hand", root).version != scorer.version


def test_weights_file_round_trip(tmp_path):
    root = _hand_root(tmp_path, [{"a": [1.0, 5.0, 2.0], "b": [0.0, 1.0, 1.0]}])
    mr.save_weights(
        root / "models" / "meta_rater_mine.json", {"b": 0.25, "a": 0.75}, name="mine", norm="rank"
    )
    by_path = make_scorer(f"meta_rater:weights={root / 'models' / 'meta_rater_mine.json'}", root)
    by_name = make_scorer("meta_rater:weights=mine", root)
    assert by_path.weights == by_name.weights == {"b": 0.25, "a": 0.75}
    assert by_path.name == "meta_rater_mine" and by_path.norm == "rank" and by_path.version == by_name.version
    assert make_scorer("meta_rater:weights=mine,norm=z,name=other", root).name == "meta_rater_other"
    table = pq.read_table(root / "annotations" / "hand" / "part-00000.parquet")
    # rank of a: 0, 1, 0.5; rank of b: ties at 1 share their mid-percentile
    got = by_path.score(table.to_batches()[0]).column(0).to_numpy()
    rb = mr.normalise(np.array([0.0, 1.0, 1.0]), mr.column_stats(np.array([0.0, 1.0, 1.0]), "rank"), "rank")
    np.testing.assert_allclose(got, 0.75 * np.array([0.0, 1.0, 0.5]) + 0.25 * rb, atol=1e-12)


def test_regressor_learns_a_known_surface_and_search_finds_its_minimum():
    from assay.predictors.meta_rater import WeightRegressor, search_weights

    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=60)
    y = 3.0 + 2.0 * (x[:, 0] - 0.7) ** 2 + x[:, 2]  # lowest near w = (0.7, 0.3, 0)
    reg = WeightRegressor(seed=0).fit(x, y)
    assert reg.backtest_["mae"] < 0.5 * reg.backtest_["baseline_mae"] and reg.backtest_["spearman"] > 0.8
    found = search_weights(reg, 3, n_samples=5000, top_k=50, seed=0)
    assert found["weights"].sum() == pytest.approx(1.0) and found["weights"][2] < 0.15
    assert abs(found["weights"][0] - 0.7) < 0.2
    again = search_weights(WeightRegressor(seed=0).fit(x, y), 3, n_samples=5000, top_k=50, seed=0)
    assert again["weights"].tobytes() == found["weights"].tobytes()
    with pytest.raises(ValueError, match="too few"):
        WeightRegressor().fit(x[:3], y[:3])


@pytest.fixture(scope="module")
def speech_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta_rater_speech") / "root"
    _run(["ingest", str(REPO / "sample" / "speeches"), "--root", str(root)])
    _run(["annotate", "--root", str(root), "--scorer", "stats"])
    return root


def test_learned_chain_on_the_sample(speech_root):
    """Proxies on top-k selections -> LightGBM -> search -> a weights file the scorer reads."""
    from assay.pipelines import meta_rater as fit

    columns = ["words", "lines", "chars"]
    # a killed run left candidate 3 finished: the rerun keeps it and trains only 0-2
    work = speech_root / "models" / "meta_rater_speech.work"
    request = {
        "columns": columns, "norm": "z", "select_fraction": 0.1, "proxy_size": "0.05M",
        "proxy_tokens": "3000", "seq_len": 32, "vocab": 400, "seed": 0,
    }  # fmt: skip
    left = {"index": 3, "weights": dict(zip(columns, fit.candidate_weights(0, 3, 3).tolist()))}
    left |= {"heldout_loss": 5.4321, "selected_docs": 1, "selected_tokens": 1, "epochs": 1.0}
    (work / "candidates").mkdir(parents=True)
    (work / "request.json").write_text(json.dumps(request))
    (work / "candidates" / "c00003.json").write_text(json.dumps(left))
    out = _run(
        [
            "fit", "meta-rater", "speech", "--root", str(speech_root), "--columns", ",".join(columns),
            "--candidates", "4", "--proxy-size", "0.05M", "--proxy-tokens", "3000", "--seq-len", "32",
            "--vocab", "400", "--search-samples", "500", "--top-k", "16", "--quiet",
        ]
    )  # fmt: skip
    assert "wrote" in out and "regressor cross-validated MAE" in out
    doc = json.loads((speech_root / "models" / "meta_rater_speech.json").read_text())
    assert doc["format"] == mr.FORMAT and doc["columns"] == columns and doc["norm"] == "z"
    assert sum(doc["weights"].values()) == pytest.approx(1.0) and min(doc["weights"].values()) >= 0
    runs = doc["candidates"]
    assert [r["index"] for r in runs] == [0, 1, 2, 3]
    assert runs[3] == left
    for r in runs[:3]:
        assert 2.0 < r["heldout_loss"] < math.log(400)  # it learned something, on the same held-out set
        np.testing.assert_allclose(list(r["weights"].values()), fit.candidate_weights(0, r["index"], 3))
        assert r["selected_docs"] < doc["proxy"]["pool_docs"] / 4  # a top-10 % selection, not the pool
    assert len({r["heldout_loss"] for r in runs[:3]}) > 1  # the selection changed the proxies
    assert doc["proxy"]["heldout_docs"] >= 1 and doc["proxy"]["heldout_tokens"] > 100
    assert {"mae", "rmse", "baseline_mae", "spearman"} <= set(doc["regressor"]) and doc["regressor"]["n"] == 4
    assert not (speech_root / "models" / "meta_rater_speech.work").exists()
    # deterministic: a fresh setup retrains candidate 1 to the same loss, bit for bit
    setup = fit.prepare(
        speech_root,
        columns,
        speech_root / "check.work",
        proxy_size="0.05M",
        proxy_tokens=3000,
        seq_len=32,
        vocab=400,
    )
    from assay.scorers.runtime import torch_threads

    with torch_threads(1):
        again = setup.train(setup.select(fit.candidate_weights(0, 1, 3)))
    assert again["heldout_loss"] == runs[1]["heldout_loss"]
    # the scorer reads the learned weights by name
    _run(["annotate", "--root", str(speech_root), "--scorer", "meta_rater:weights=speech"])
    table = pq.read_table(next((speech_root / "annotations" / "meta_rater_speech").glob("part-*.parquet")))
    assert table.column_names == ["id", "meta_rater_speech"] and table.column(1).null_count == 0

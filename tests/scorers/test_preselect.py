"""PreSelect: predictive strength on hand-built loss matrices, labels, the classifier on a real
separable task (Shakespeare vs State of the Union), the two preselect scorers, and the chain
`assay train preselect` -> `assay annotate --scorer preselect:NAME` -> `assay select`."""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from scipy.stats import kendalltau

from assay.corpora.catalog import run_query
from assay.corpora.ingest import IngestOptions
from assay.pipelines.annotate import annotate
from assay.pipelines.cli import main
from assay.pipelines.cli.preselect import capability_from_eval
from assay.pipelines.ingest import ingest
from assay.scorers.base import check_scored
from assay.scorers.fasttext_classifier import sidecar_path
from assay.scorers.preselect import (
    PRESELECT_FASTTEXT,
    PredictiveStrengthScorer,
    PreselectScorer,
    choose_labels,
    label_of,
    model_path,
    predictive_strength,
    set_for_run,
)
from assay.scorers.registry import make_scorer

nan = np.nan

# --- the score on hand-built matrices ------------------------------------------------------------


def test_three_models_exact_with_ties_nulls_and_an_unsorted_capability():
    capability = np.array([30.1, 33.0, 31.4])  # weakest -> strongest: model 0, model 2, model 1
    losses = np.array(
        [
            [3.0, 1.0, 2.0],  # in capability order 3 > 2 > 1: every pair concordant
            [1.0, 3.0, 2.0],  # 1 < 2 < 3: none
            [2.0, 1.0, 3.0],  # 2, 3, 1: (2>3) no, (2>1) yes, (3>1) yes
            [2.0, 1.0, 2.0],  # 2, 2, 1: the tied pair counts 0
            [2.0, 2.0, 2.0],  # all tied
            [nan, 1.0, 2.0],  # a missing loss: no score
            [1.2, 1.0, 1.1],  # small real-looking bpc values
        ]
    )
    s = predictive_strength(losses, capability)
    np.testing.assert_array_equal(s[[0, 1, 2, 3, 4, 6]], [1.0, 0.0, 2 / 3, 2 / 3, 0.0, 1.0])
    assert np.isnan(s[5])
    assert s[0] == 1.0  # exactly: positives are S == 1


def test_six_models_exact_and_equal_to_kendall_tau():
    capability = np.array([75.38, 81.19, 76.30, 80.47, 77.27, 79.46])  # METHODS.md §2.2 values, shuffled
    order = np.argsort(capability)
    ascending = np.array(
        [
            [6, 5, 4, 3, 2, 1],  # 15 of 15
            [1, 2, 3, 4, 5, 6],  # 0
            [5, 6, 4, 3, 2, 1],  # one swap of the two weakest: 14
            [6, 5, 5, 3, 2, 1],  # one tie: 14
            [6, 1, 5, 4, 3, 2],  # the second-weakest beats the 4 above it... and loses to the weakest: 11
        ],
        dtype=float,
    )
    losses = np.empty_like(ascending)
    losses[:, order] = ascending  # columns in the given (unsorted) model order
    s = predictive_strength(losses, capability)
    np.testing.assert_array_equal(s, np.array([15, 0, 14, 14, 11]) / 15)

    # without ties S is the share of discordant (capability, loss) pairs: (1 - tau) / 2
    rng = np.random.default_rng(0)
    random_losses = rng.normal(1.0, 0.1, size=(200, 6))
    s = predictive_strength(random_losses, capability)
    expected = [(1 - kendalltau(capability, row).statistic) / 2 for row in random_losses]
    np.testing.assert_allclose(s, expected, atol=1e-12)
    # rows scored alone give the same values as in a batch
    np.testing.assert_array_equal(
        [predictive_strength(r[None], capability)[0] for r in random_losses[:20]], s[:20]
    )


@pytest.mark.parametrize(
    "losses, capability, message",
    [
        (np.ones((2, 3)), [1.0, 2.0, 1.0], "models 0 and 2 have the same capability 1"),
        (np.ones((2, 3)), [1.0, 2.0], "3 models in the losses but 2 capability"),
        (np.ones((2, 1)), [1.0], "at least 2"),
        (np.ones(3), [1.0, 2.0, 3.0], "matrix"),
        (np.ones((2, 2)), [1.0, nan], "finite"),
    ],
)
def test_bad_inputs_are_clear_errors(losses, capability, message):
    with pytest.raises(ValueError, match=message):
        predictive_strength(losses, np.array(capability))


def test_labels_are_perfect_vs_lowest_and_do_not_depend_on_order():
    ids = [f"d{i:03d}" for i in range(60)]
    s = np.array([1.0] * 12 + [0.0] * 5 + [1 / 3] * 20 + [2 / 3] * 23)
    labels = choose_labels(ids, s)
    assert (labels.positives, labels.negatives) == (12, 12)
    chosen = labels.table.to_pydict()
    positives = {i for i, lab in zip(chosen["id"], chosen["label"]) if lab == 1}
    negatives = {i for i, lab in zip(chosen["id"], chosen["label"]) if lab == 0}
    assert positives == set(ids[:12])
    assert set(ids[12:17]) <= negatives and negatives <= set(ids[12:37])  # all the S = 0, then 7 at 1/3
    assert labels.negative_max_s == pytest.approx(1 / 3)
    perm = np.random.default_rng(1).permutation(60)
    again = choose_labels([ids[i] for i in perm], s[perm]).table.to_pydict()
    assert sorted(zip(again["id"], again["label"])) == sorted(zip(chosen["id"], chosen["label"]))

    with pytest.raises(
        ValueError, match=r"only 3 of 13 .* S = 1.*10 have S = 0, so check that the capability"
    ):
        choose_labels(ids[:13], np.array([1.0] * 3 + [0.0] * 10))
    with pytest.raises(ValueError, match="only 4 of 16 scored documents have S < 1"):
        choose_labels(ids[:16], np.array([1.0] * 12 + [0.5] * 4))


def test_run_names_map_to_lm_sets_and_an_eval_csv_orders_them(tmp_path):
    assert [set_for_run(r) for r in ("1M", "OLMo-150M", "llama 7b")] == [
        "lm_1m",
        "lm_olmo_150m",
        "lm_llama_7b",
    ]
    csv = tmp_path / "eval.csv"
    csv.write_text(
        "run,task,acc\n1M,arc_easy,0.30\n1M,piqa,0.50\n4M,arc_easy,0.34\n4M,piqa,0.56\n16M,arc_easy,0.41\n"
    )
    assert capability_from_eval(csv, ["lm_16m", "lm_1m", "lm_4m"]) == pytest.approx([0.41, 0.40, 0.45])
    with pytest.raises(ValueError, match=r"no run maps to annotation set lm_64m \(runs: 16M -> lm_16m"):
        capability_from_eval(csv, ["lm_1m", "lm_64m"])
    (tmp_path / "bad.csv").write_text("model,score\n1M,0.3\n")
    with pytest.raises(ValueError, match="not an eval CSV"):
        capability_from_eval(tmp_path / "bad.csv", ["lm_1m"])


# --- a corpus with three proxy models' losses ----------------------------------------------------

# Stands in for lm_loss: one model's bits per character given per document id in a Parquet table
# (id + one column per set), written exactly as lm_loss's annotation sets are laid out.
PLUGIN = textwrap.dedent(
    """
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq


    class GivenLosses:
        input_columns = ("id", "text")

        def __init__(self, name, table):
            self.name, self.table = name, table
            with open(table, "rb") as f:
                self.version = "1-" + hashlib.sha256(f.read()).hexdigest()[:12]

        @classmethod
        def from_spec(cls, arg, root, **settings):
            name, _, table = arg.partition(":")
            return cls(name, table)

        def output_schema(self):
            n = self.name
            return pa.schema(
                [(n + "_bpb", pa.float64()), (n + "_bpc", pa.float64()), (n + "_tokens", pa.int64()), (n + "_mink", pa.float64())]
            )

        def score(self, batch):
            given = pq.read_table(self.table, columns=["id", self.name])
            at = pc.index_in(batch.column("id"), value_set=given.column("id").combine_chunks())
            bpc = pc.take(given.column(self.name).combine_chunks(), at)
            text = pc.fill_null(batch.column("text"), "")
            chars = pc.utf8_length(text).cast(pa.float64())
            bpb = pc.divide(pc.multiply(bpc, chars), pc.binary_length(text).cast(pa.float64()))
            tokens = pc.count_substring_regex(text, r"\\S+").cast(pa.int64())
            mink = pa.nulls(batch.num_rows, pa.float64())
            return pa.RecordBatch.from_arrays([bpb, bpc, tokens, mink], schema=self.output_schema())
    """
)

CAPABILITY = {"lm_small": 30.1, "lm_mid": 31.4, "lm_big": 33.0}
MODELS_GIVEN = "lm_big,lm_small,lm_mid"  # not in capability order
VALUES_GIVEN = "33.0,30.1,31.4"
SMALL_DATA = ["--epoch", "25", "--lr", "0.5", "--dim", "32"]  # a few hundred documents need more passes


def _docs() -> list[dict]:
    docs = []
    for name in ("shakespeare.jsonl", "state_union.jsonl"):
        with open(FIXTURES / "fasttext" / name, encoding="utf-8") as f:
            docs += [json.loads(line) for line in f]
    return docs


def given_losses(docs: list[dict]) -> dict[str, list[float | None]]:
    """Per model, a bpc per document: the text's real zlib bits per character, scaled so that the
    models' ranking follows capability on Shakespeare and is reversed on the speeches; every 10th
    document gets another order, every 40th a tie and every 25th a missing loss."""
    orders = list(itertools.permutations([1.2, 1.1, 1.0]))
    out: dict[str, list[float | None]] = {m: [] for m in CAPABILITY}
    for i, doc in enumerate(docs):
        base = 8 * len(zlib.compress(doc["text"].encode(), 9)) / len(doc["text"])
        factors = orders[0] if doc["id"].startswith("shakespeare") else orders[-1]
        if i % 10 == 3:
            factors = orders[i % 6]
        small, mid, big = (base * f for f in factors)
        if i % 40 == 7:
            mid = small
        out["lm_small"].append(small)
        out["lm_mid"].append(None if i % 25 == 11 else mid)
        out["lm_big"].append(big)
    return out


def brute_force_s(row: dict[str, float | None]) -> float | None:
    if any(v is None for v in row.values()):
        return None
    pairs = [(a, b) for a in row for b in row if CAPABILITY[a] < CAPABILITY[b]]
    return sum(row[a] > row[b] for a, b in pairs) / len(pairs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("preselect")
    (base / "plugins").mkdir()
    (base / "plugins" / "given_losses.py").write_text(PLUGIN)
    sys.path.insert(0, str(base / "plugins"))
    docs = _docs()
    losses = given_losses(docs)
    table = base / "losses.parquet"
    pq.write_table(pa.table({"id": [d["id"] for d in docs], **losses}), table)
    root = base / "root"
    inputs = [str(FIXTURES / "fasttext" / n) for n in ("shakespeare.jsonl", "state_union.jsonl")]
    ingest(inputs, root, IngestOptions(shard_rows=128), quiet=True)
    annotate(root, ["stats", *(f"given_losses:GivenLosses:{m}:{table}" for m in CAPABILITY)], quiet=True)
    expected = {d["id"]: brute_force_s({m: losses[m][i] for m in CAPABILITY}) for i, d in enumerate(docs)}
    yield root, expected
    sys.path.remove(str(base / "plugins"))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def trained(corpus):
    root, expected = corpus
    out = invoke(
        "train",
        "preselect",
        "styles",
        "--root",
        str(root),
        "--models",
        MODELS_GIVEN,
        "--capability",
        VALUES_GIVEN,
        *SMALL_DATA,
    )
    assert out.exit_code == 0, out.output
    return root, expected, out.output


def test_train_writes_s_for_every_document_as_an_annotation_set(trained):
    root, expected, output = trained
    assert "lm_small (30.1) < lm_mid (31.4) < lm_big (33)" in output
    rows = run_query(root, "SELECT id, preselect_styles_s AS s FROM annotations").to_pylist()
    assert len(rows) == 500
    for r in rows:
        want = expected[r["id"]]
        assert (r["s"] is None) == (want is None), r
        assert want is None or r["s"] == want, r
    assert sum(r["s"] is None for r in rows) == 20
    config = json.loads((root / "models" / "preselect_styles.strength.json").read_text())
    assert config["models"] == ["lm_small", "lm_mid", "lm_big"]
    assert config["columns"] == ["lm_small_bpc", "lm_mid_bpc", "lm_big_bpc"]


def test_the_classifier_learns_the_split_on_held_out_documents(trained):
    root, expected, output = trained
    record = json.loads(sidecar_path(model_path(root, "styles")).read_text())
    data, counts = record["data"], record["counts"]
    perfect = sum(v == 1.0 for v in expected.values())
    assert data["positives"] == data["negatives"] == perfect
    assert data["models"] == ["lm_small", "lm_mid", "lm_big"] and data["capability"] == [30.1, 31.4, 33.0]
    assert data["strength_histogram"]["3/3"] == perfect and data["documents_without_s"] == 20
    assert data["negative_max_s"] == 0.0  # more S = 0 speeches than perfect documents
    assert counts["positive_heldout"] + counts["positive_train"] == perfect
    assert record["hyperparameters"]["lr"] == 0.5 and record["hyperparameters"]["balance"] is True
    assert record["heldout_accuracy"] >= 0.85, record["heldout_accuracy"]  # chance is 0.5
    assert f"held-out accuracy {record['heldout_accuracy']:.3f}" in output


def test_the_scorer_writes_p_positive_for_every_document_and_select_keeps_ten_percent_of_chars(trained):
    root, _, _ = trained
    scorer = make_scorer("preselect:styles", root)
    assert isinstance(scorer, PreselectScorer) and scorer.name == scorer.column == "preselect_styles"
    assert scorer.version == scorer.training_record()["sha256"][:12]
    out = invoke("annotate", "--root", str(root), "--scorer", "preselect:styles")
    assert out.exit_code == 0, out.output
    rows = run_query(
        root, "SELECT id, source, chars, preselect_styles AS p FROM annotations ORDER BY id"
    ).to_pylist()
    assert all(r["p"] is not None and 0.0 <= r["p"] <= 1.0 for r in rows)
    shakespeare = np.mean([r["p"] for r in rows if r["source"] == "shakespeare"])
    speeches = np.mean([r["p"] for r in rows if r["source"] == "state_union"])
    assert shakespeare > 0.75 and speeches < 0.25, (shakespeare, speeches)

    recipe = FIXTURES / "select" / "preselect.yaml"
    out = invoke("select", "--root", str(root), "--recipe", str(recipe), "--name", "preselect10")
    assert out.exit_code == 0, out.output
    chosen = {r["id"] for r in run_query(root, "SELECT id FROM mixture_preselect10").to_pylist()}
    # the cut by hand: best first (ties by id), until the characters reach 10 % of the pool
    best_first = sorted(rows, key=lambda r: (-r["p"], r["id"]))
    target = round(0.10 * sum(r["chars"] for r in rows))
    taken, total = set(), 0
    for r in best_first:
        if total >= target:
            break
        taken.add(r["id"])
        total += r["chars"]
    assert chosen == taken
    manifest = json.loads((root / "mixtures" / "preselect10" / "manifest.json").read_text())
    assert manifest["budget"]["unit"] == "chars" and manifest["budget"]["target"] == target
    assert target <= manifest["selected"]["chars"] < target + max(r["chars"] for r in rows)
    assert sum(r["source"] == "shakespeare" for r in rows if r["id"] in chosen) >= 0.9 * len(chosen)


def test_a_ladder_eval_orders_the_models_and_the_defaults_are_preselects(trained, tmp_path):
    root, _, _ = trained
    csv = tmp_path / "proxy_eval.csv"  # `assay proxy eval` long format: one row per run and task
    csv.write_text(
        "run,task,acc\nbig,piqa,0.60\nMID,arc_easy,0.33\nsmall,arc_easy,0.30\n"
        "MID,piqa,0.55\nbig,arc_easy,0.40\nsmall,piqa,0.50\n"
    )
    out = invoke(
        "train",
        "preselect",
        "ladder",
        "--root",
        str(root),
        "--models",
        MODELS_GIVEN,
        "--ladder-eval",
        str(csv),
    )
    assert out.exit_code == 0, out.output
    assert "lm_small (0.4) < lm_mid (0.44) < lm_big (0.5)" in out.output  # by the mean acc per run
    record = json.loads(sidecar_path(model_path(root, "ladder")).read_text())
    hyper = record["hyperparameters"]
    assert {
        k: hyper[k] for k in PRESELECT_FASTTEXT
    } == PRESELECT_FASTTEXT  # lr 0.1, 3 epochs, bigrams, dim 100
    assert record["data"]["capability_source"]["mean_acc"] == pytest.approx(
        {"lm_big": 0.50, "lm_small": 0.40, "lm_mid": 0.44}
    )
    assert record["heldout_accuracy"] > 0.6  # PreSelect's 3 epochs on ~400 short documents: above chance 0.5
    # the same order as the --capability values: the same S for every document
    rows = run_query(
        root, "SELECT preselect_styles_s AS a, preselect_ladder_s AS b FROM annotations"
    ).to_pylist()
    assert all(r["a"] == r["b"] for r in rows if r["a"] is not None)
    assert sum(r["b"] is None for r in rows) == 20


def test_too_few_positives_is_one_error_and_writes_no_model(trained):
    root, _, _ = trained
    out = invoke(
        "train", "preselect", "few", "--root", str(root), "--models", MODELS_GIVEN, "--capability", VALUES_GIVEN,
        "--min-per-class", "1000",
    )  # fmt: skip
    assert out.exit_code != 0
    assert [line for line in out.output.splitlines() if line.startswith("Error:")] == [
        "Error: preselect few: only 208 of 480 scored documents have S = 1 (every model pair in capability "
        "order); the classifier needs at least 1000 positives; 231 have S = 0, so check that the capability "
        "order is not reversed"
    ]
    assert not model_path(root, "few").exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("preselect", "needs a name"),
        (
            "preselect:nosuch",
            "no classifier .*preselect_nosuch.bin; train it with `assay train preselect nosuch",
        ),
        ("preselect:nosuch:strength", "no model ordering"),
        ("preselect:styles:ranks", "unknown mode 'ranks'"),
        ("preselect:web_s", "may not end in '_s'"),
    ],
)
def test_bad_specs_are_one_clear_error(trained, spec, message):
    with pytest.raises(ValueError, match=message):
        make_scorer(spec, trained[0])


def test_the_strength_scorer_is_checked_against_its_inputs(trained):
    root, expected, _ = trained
    scorer = make_scorer("preselect:styles:strength", root)
    assert isinstance(scorer, PredictiveStrengthScorer) and scorer.name == "preselect_styles_s"
    assert scorer.input_columns == ("id", "lm_small_bpc", "lm_mid_bpc", "lm_big_bpc")
    batch = pa.RecordBatch.from_pydict(
        {"id": ["x", "y"], "lm_small_bpc": [2.0, 1.0], "lm_mid_bpc": [1.5, None], "lm_big_bpc": [1.0, 2.0]}
    )
    assert check_scored(batch, scorer.score(batch), scorer).column(0).to_pylist() == [1.0, None]
    assert label_of("Web Crawl") == "web_crawl"
    with pytest.raises(ValueError, match="no annotation set 'lm_huge'"):
        invoke_or_raise(root, "lm_small,lm_huge")
    with pytest.raises(ValueError, match="lm_small and lm_big have the same capability 30"):
        invoke_or_raise(root, "lm_small,lm_big", "30,30")


def invoke_or_raise(root, models: str, capability: str = "1,2"):
    from assay.scorers.preselect import write_strength_config

    values = [float(v) for v in capability.split(",")]
    write_strength_config(root, "check", models.split(","), values, {"capability": capability})


def test_retraining_on_the_same_losses_gives_the_same_model_and_keeps_the_scores(trained):
    root, _, _ = trained
    before = make_scorer("preselect:styles", root).version
    annotate(root, ["preselect:styles"], quiet=True)
    args = ["--models", "lm_mid,lm_big,lm_small", "--capability", "31.4,33.0,30.1", *SMALL_DATA]
    out = invoke("train", "preselect", "styles", "--root", str(root), *args)  # the models in another order
    assert out.exit_code == 0, out.output
    assert make_scorer("preselect:styles", root).version == before  # fastText at thread 1: the same bytes
    out = invoke(
        "annotate",
        "--root",
        str(root),
        "--scorer",
        "preselect:styles",
        "--scorer",
        "preselect:styles:strength",
    )
    assert out.exit_code == 0, out.output
    assert f"preselect_styles v{before}: up to date" in out.output
    assert "preselect_styles_s v1-" in out.output and out.output.count("up to date") == 2

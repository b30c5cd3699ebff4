"""QuRating: prompts, debiasing, the confidence filter, the Bradley–Terry rater and chunked scoring.

The rater is trained on synthetic judgments over real texts: five real sources (Shakespeare, web
pages, State of the Union paragraphs, ARC-Easy questions, GSM8K problems) get latent quality
levels 0..4, and each pair's label is drawn from σ(1.5 (level_b − level_a) + noise). The fitted
rater must order held-out documents (none of them in any pair) by their level.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from assay.pipelines.cli import main
from assay.scorers import qurating

SOURCES = ("shakespeare", "web", "state_union", "arc_easy", "gsm8k")  # latent level = position
PER_SOURCE, TRAIN_PER_SOURCE = 30, 20


def _cut(text: str, chars: int = 400) -> str:
    """A prefix of at most ``chars`` characters, ending at a word boundary."""
    return text if len(text) <= chars else text[:chars].rsplit(None, 1)[0]


def _source_texts(source: str) -> list[str]:
    if source in ("shakespeare", "state_union"):
        rows = [json.loads(line) for line in open(FIXTURES / "fasttext" / f"{source}.jsonl")]
        return [r["text"] for r in rows]
    if source == "web":
        with gzip.open(FIXTURES / "heuristics" / "docs.jsonl.gz", "rt") as f:
            return [r["text"] for r in map(json.loads, f) if len(r["text"]) > 200]
    if source == "arc_easy":
        rows = [json.loads(line) for line in open(FIXTURES / "betr" / "arc_easy.jsonl")]
        return [r["query"] + " " + " ".join(r["choices"]) for r in rows]
    rows = [json.loads(line) for line in open(FIXTURES / "betr" / "gsm8k_train.jsonl")]
    return [r["question"] + "\n" + r["answer"] for r in rows]


def synthetic_corpus() -> list[dict]:
    rng = np.random.default_rng(0)
    docs = []
    for level, source in enumerate(SOURCES):
        texts = _source_texts(source)
        for k, i in enumerate(rng.permutation(len(texts))[:PER_SOURCE]):
            docs.append(
                {"id": f"{source}-{k}", "text": _cut(texts[i]), "level": level, "train": k < TRAIN_PER_SOURCE}
            )
    return docs


def synthetic_judgments(docs: list[dict], n_pairs: int = 1200) -> list[dict]:
    """Pairs of training documents; p from the latent levels, reported with a position bias that the
    debiasing formula removes exactly: p_ab = p + δ, p_ba = 1 − p + δ."""
    rng = np.random.default_rng(1)
    train = [d for d in docs if d["train"]]
    rows = []
    for _ in range(n_pairs):
        a, b = rng.choice(len(train), size=2, replace=False)
        da, db = train[a], train[b]
        p = 1 / (1 + np.exp(-(1.5 * (db["level"] - da["level"]) + rng.normal(0, 0.5))))
        delta = 0.3 * min(p, 1 - p)
        rows.append(
            {
                "doc_a": da["id"],
                "doc_b": db["id"],
                "criterion": "educational_value",
                "p_ab": p + delta,
                "p_ba": 1 - p + delta,
                "p_true": p,
            }
        )
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("qurating")
    docs = synthetic_corpus()
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    root = work / "root"
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", str(corpus), "--root", str(root)])
    assert res.exit_code == 0, res.output
    judgments = synthetic_judgments(docs)
    path = work / "judged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in judgments))
    res = runner.invoke(
        main, ["train", "qurating", "syn", "--root", str(root), "--judgments", str(path), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        main, ["annotate", "--root", str(root), "--scorer", "qurating:syn", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    table = pa.concat_tables(
        pq.read_table(p) for p in sorted((root / "annotations" / "qurating_syn").glob("part-*.parquet"))
    )
    scores = dict(zip(table.column("id").to_pylist(), table.column("qurating_educational_value").to_pylist()))
    scorer = qurating.QuRatingScorer(root / "models" / "qurating_syn", device="cpu")
    return {
        "root": root,
        "docs": docs,
        "judgments": judgments,
        "path": path,
        "scores": scores,
        "scorer": scorer,
    }


def test_the_rater_recovers_the_latent_order_on_held_out_documents(trained):
    from scipy.stats import spearmanr

    held = [d for d in trained["docs"] if not d["train"]]
    rho = spearmanr([trained["scores"][d["id"]] for d in held], [d["level"] for d in held]).statistic
    assert rho >= 0.9, rho
    print(f"held-out Spearman {rho:.3f}")
    record = json.loads((trained["root"] / "models" / "qurating_syn" / "rater.json").read_text())
    result = record["results"]["educational_value"]
    assert result["heldout_accuracy"] >= 0.9 and result["train_accuracy"] >= 0.9
    assert record["criteria"] == ["educational_value"] and record["encoder"]["chunk_tokens"] == 512
    assert record["data"]["sha256"] and trained["scores"].keys() == {d["id"] for d in trained["docs"]}


def test_held_out_pairs_are_those_of_unseen_documents(trained):
    """The held-out share is of documents, chosen by a keyed hash (not by the judgments' order),
    and every pair that involves one is left out of training."""
    table = qurating.read_judgments(trained["path"], trained["root"])
    texts = sorted(set(table.column("text_a").to_pylist()) | set(table.column("text_b").to_pylist()))
    held = qurating.heldout_texts(texts, 0.1, 0)
    assert held.sum() == round(len(texts) * 0.1)
    order = np.random.default_rng(1).permutation(len(texts))
    shuffled = qurating.heldout_texts([texts[i] for i in order], 0.1, 0)
    assert {texts[i] for i in order[shuffled]} == {t for t, h in zip(texts, held) if h}
    assert not np.array_equal(held, qurating.heldout_texts(texts, 0.1, 1))  # the seed keys the hash
    record = json.loads((trained["root"] / "models" / "qurating_syn" / "rater.json").read_text())
    result = record["results"]["educational_value"]
    unseen = {t for t, h in zip(texts, held) if h}
    p = table.column("p").to_numpy(zero_copy_only=False)
    sure = np.abs(p - 0.5) >= record["settings"]["confidence"]
    touching = [
        (a in unseen or b in unseen)
        for a, b, ok in zip(table.column("text_a").to_pylist(), table.column("text_b").to_pylist(), sure)
        if ok
    ]
    assert result["heldout_docs"] == len(unseen)
    assert result["heldout_pairs"] == sum(touching) and result["train_pairs"] == len(touching) - sum(touching)


def test_debiasing_removes_a_position_bias_and_the_confidence_filter_keeps_sure_pairs(trained):
    table = qurating.read_judgments(trained["path"], trained["root"])
    truth = np.array([r["p_true"] for r in trained["judgments"]])
    np.testing.assert_allclose(table.column("p").to_numpy(), truth, atol=1e-12)
    np.testing.assert_allclose(qurating.debias([0.9, 0.6], [0.3, 0.6]), [0.8, 0.5])
    assert qurating.confident(np.array([0.75, 0.25, 0.7499, 0.5, 1.0])).tolist() == [
        True,
        True,
        False,
        False,
        True,
    ]
    record = json.loads((trained["root"] / "models" / "qurating_syn" / "rater.json").read_text())
    assert record["results"]["educational_value"]["kept"] == int(qurating.confident(truth).sum())
    assert record["results"]["educational_value"]["pairs"] == len(truth)


def test_chunked_scores_are_the_token_weighted_mean_of_chunk_scores(trained):
    import torch

    scorer = trained["scorer"]
    model = scorer.encoder.load()
    scorer.encoder.chunk_tokens = 64  # short chunks: several of them in a short document
    long_text = " ".join(d["text"] for d in trained["docs"] if d["id"].startswith("shakespeare"))[:900]
    short_text = trained["docs"][-1]["text"]
    got, valid = scorer.scores([long_text, ""])
    assert valid.tolist() == [True, False]
    tok = model.tokenizer
    ids = tok(long_text, add_special_tokens=False)["input_ids"]
    pieces = [ids[i : i + 62] for i in range(0, len(ids), 62)]
    assert len(pieces) >= 3
    chunk_scores = []
    for piece in pieces:  # each chunk alone: [CLS] piece [SEP], no padding
        input_ids = torch.tensor([[tok.cls_token_id, *piece, tok.sep_token_id]])
        features = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids),
        }
        with torch.inference_mode():
            e = model(features)["sentence_embedding"][0].double().numpy()
        chunk_scores.append(e @ scorer.weight[0] + scorer.bias[0])
    weights = np.array([len(p) for p in pieces], float)
    assert got[0, 0] == pytest.approx(float(np.dot(weights, chunk_scores) / weights.sum()), abs=1e-5)
    # a one-chunk document scores as the head on sentence-transformers' own embedding of it
    scorer.encoder.chunk_tokens = 512
    got, _ = scorer.scores([short_text])
    e = model.encode([short_text], convert_to_numpy=True)[0].astype(np.float64)
    assert got[0, 0] == pytest.approx(float(e @ scorer.weight[0] + scorer.bias[0]), abs=1e-5)
    r = scorer.score(pa.record_batch({"id": ["x"], "text": [""]}))
    assert r.column(0).null_count == 1 and r.schema.field(0).type == pa.float32()


def test_a_document_scores_the_same_alone_or_in_any_batch(trained):
    texts = [d["text"] for d in trained["docs"][::30]]
    scorer = trained["scorer"]
    together = scorer.score(pa.record_batch({"id": [str(i) for i in range(len(texts))], "text": texts}))
    for i, text in enumerate(texts):
        alone = scorer.score(pa.record_batch({"id": ["a"], "text": [text]}))
        assert alone.column(0)[0].as_py() == together.column(0)[i].as_py()
    in_pool = np.array([trained["scores"][d["id"]] for d in trained["docs"][::30]], np.float32)
    assert in_pool.tobytes() == together.column(0).to_numpy().tobytes()  # as `assay annotate` wrote them
    assert scorer.version.startswith("1-") and scorer.encoder.identity.short in scorer.version


def test_prompts_name_the_criterion_and_both_options():
    prompt = qurating.pairwise_prompt("facts_and_trivia", "first text", "second text")
    assert "[Option A]\nfirst text" in prompt and "[Option B]\nsecond text" in prompt
    assert "trivia" in prompt and "single word" in prompt
    assert len({qurating.pairwise_prompt(c, "a", "b") for c in qurating.CRITERIA}) == 4
    with pytest.raises(ValueError, match="unknown QuRating criterion 'style'"):
        qurating.pairwise_prompt("style", "a", "b")


def test_judgment_files_in_every_format_and_their_errors(tmp_path):
    rows = [{"text_a": "one text", "text_b": "another text", "criterion": "writing_style", "p": 0.8}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "j.parquet")
    (tmp_path / "j.csv").write_text("text_a,text_b,criterion,p\none text,another text,writing_style,0.8\n")
    for name in ("j.parquet", "j.csv"):
        t = qurating.read_judgments(tmp_path / name)
        assert t.schema == qurating.JUDGMENT_SCHEMA and t.column("p").to_pylist() == [0.8]
    bad = {
        "criterion": ({"text_a": "a", "text_b": "b", "p": 0.5}, "no criterion column"),
        "p": ({"text_a": "a", "text_b": "b", "criterion": "writing_style", "p": 1.5}, "row 1: p must be"),
        "unknown": ({"text_a": "a", "text_b": "b", "criterion": "wit", "p": 0.5}, "unknown criterion 'wit'"),
        "texts": (
            {"doc_a": "x", "doc_b": "y", "criterion": "writing_style", "p": 0.5},
            "a corpus root is needed",
        ),
    }
    for key, (row, message) in bad.items():
        path = tmp_path / f"{key}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=message):
            qurating.read_judgments(path)


def test_collect_judgments_with_a_tiny_llama_judge(tmp_path):
    generation = pytest.importorskip(
        "assay.scorers.generation", reason="assay.scorers.generation (the judge LM backend) is not there yet"
    )
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [d["text"] for d in synthetic_corpus()[::10]]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        texts + ["A B"], trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"])
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=4096,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    backend = generation.make_backend(str(tmp_path / "judge"), device="cpu")
    pairs = [(texts[0], texts[1]), (texts[2], texts[3])]
    table = qurating.collect_judgments(backend, pairs, "educational_value", ids=[("a", "b"), ("c", "d")])
    assert table.schema == qurating.JUDGMENT_SCHEMA and table.num_rows == 2
    probs = backend.option_probabilities(
        [qurating.pairwise_prompt("educational_value", b, a) for a, b in pairs], ["A", "B"]
    )
    np.testing.assert_allclose(table.column("p_ba").to_numpy(), probs[:, 1], atol=1e-6)
    expected = (table.column("p_ab").to_numpy() + 1 - table.column("p_ba").to_numpy()) / 2
    np.testing.assert_allclose(table.column("p").to_numpy(), expected)

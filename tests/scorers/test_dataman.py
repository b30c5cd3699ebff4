"""DataMan: the prompt, parsing of real-format and malformed answers, the scorer on a tiny real Llama."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from test_generation import build_tiny_chat_lm, speeches

from assay.corpora.catalog import run_query
from assay.pipelines.cli import main
from assay.pipelines.recipe import load_recipe
from assay.scorers.dataman import (
    COLUMNS,
    CRITERIA,
    DOMAINS,
    TEMPLATES,
    DataManScorer,
    parse_answer,
    truncate,
)
from assay.scorers.registry import make_scorer

FAST = "template=dataman,max_length=24,max_new_tokens=12,retries=1"

GPT_ANSWER = """Let's go step by step. The text is a speech about government.
[1]Textual Accuracy: The text is well written. **4/5**
[2]Semantic Coherence: 5/5
[3]Language Consistency: 5/5
[4]Ratio of Valid Semantic Content: 4/5
[5]Novelty of Knowledge: 2/5
[6]Topic Focus: 4/5
[7]Creative Expression Ratio: 3/5
[8]Professionalism: 4/5
[9]Style Consistency: 5/5
[10]Richness of Grammatical Structures: 4/5
[11]Standardization of Structure: 3/5
[12]Non-repetitiveness of Content: 4/5
[13]Appropriateness of Sensitive Content: 5/5
[14]Overall Score: 4/5
Domain Type: [I] Government"""
BARE_ANSWER = "I\n4\n5\n5\n4\n2\n4\n3\n4\n5\n4\n3\n4\n5\n4"
SCORES = [4, 5, 5, 4, 2, 4, 3, 4, 5, 4, 3, 4, 5, 4]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_chat_lm(tmp_path_factory.mktemp("dm") / "Tiny-Rater")


def test_the_prompts_hold_the_14_criteria_and_15_domains_exactly():
    assert len(CRITERIA) == 14 and len(DOMAINS) == 15 and len(COLUMNS) == 14
    assert COLUMNS[-1] == "dataman_overall" and CRITERIA[-1][0] == "Overall Score"
    gpt, short = TEMPLATES["gpt"], TEMPLATES["dataman"]
    for k, (long, _, name, _) in enumerate(CRITERIA, 1):
        assert f"[{k}]{long}: The higher the score, " in gpt
        assert f"[{k}]{name}:_/5" in short
    for letter, domain in zip("ABCDEFGHIJKLMNO", DOMAINS):
        assert f"[{letter}]{domain}" in gpt
    assert "Let's think step by step" in gpt and "{text}" in gpt and "{text}" in short
    assert "Retail E-commerce" in DOMAINS and "Cambridge" not in gpt and "Educational Value" not in gpt
    assert gpt.count("_/5") == 13  # the Overall Score line has no blank in DataMan's prompt


def test_parse_well_formed_answers():
    assert parse_answer(GPT_ANSWER) == {"domain": "Government", "scores": SCORES}
    assert parse_answer(BARE_ANSWER) == {"domain": "Government", "scores": SCORES}
    qwen = "Domain:I\n" + "\n".join(f"[{k}]{c[2]}:{s}/5" for k, (c, s) in enumerate(zip(CRITERIA, SCORES), 1))
    assert parse_answer(qwen) == {"domain": "Government", "scores": SCORES}
    numbered = (
        GPT_ANSWER.replace("[1]", "1.")
        .replace("[14]", "14)")
        .replace("Domain Type: [I] Government", "Domain: Finance")
    )
    assert parse_answer(numbered) == {"domain": "Finance", "scores": SCORES}
    # a reasoning pass, then the final lines: the last rating of a criterion wins
    revised = "[14]Overall Score: 2/5 at first glance\n" + GPT_ANSWER
    assert parse_answer(revised)["scores"][-1] == 4
    assert parse_answer(GPT_ANSWER.replace("**4/5**", "4.0/5"))["scores"][0] == 4


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "I cannot rate this text.",
        GPT_ANSWER.replace("[7]Creative Expression Ratio: 3/5\n", ""),  # a criterion missing
        GPT_ANSWER.replace("[2]Semantic Coherence: 5/5", "[2]Semantic Coherence: 6/5"),  # off the scale
        GPT_ANSWER.replace("[2]Semantic Coherence: 5/5", "[2]Semantic Coherence: 4.5/5"),  # not whole
        GPT_ANSWER.replace("[2]Semantic Coherence: 5/5", "[2]Semantic Coherence: N/A"),
        GPT_ANSWER.replace("Domain Type: [I] Government", ""),  # no domain
        GPT_ANSWER.replace("Domain Type: [I] Government", TEMPLATES["gpt"].split("\n")[4]),  # echoed list
        BARE_ANSWER.replace("\n3\n", "\nthree\n"),
        BARE_ANSWER.replace("I\n", "Z\n"),
    ],
)
def test_parse_rejects_malformed_answers(answer):
    assert parse_answer(answer) is None


def test_truncation_keeps_head_and_tail(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    text = speeches()[0]
    cut = truncate(text, 20_000, 40, tok)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert cut.startswith(tok.decode(ids[:20]).strip()) and cut.endswith(tok.decode(ids[-20:]).strip())
    assert " ... " in cut and len(tok(cut)["input_ids"]) < 50
    short = "A short text."
    assert truncate(short, 20_000, 40, tok) == short
    by_chars = truncate("a" * 100 + "b" * 100, 50, 10_000)
    assert by_chars == "a" * 25 + "b" * 25
    assert truncate("x" * 100 + "y" * 100, 10_000, 10) == "x" * 20 + " ... " + "y" * 20


def test_scorer_keeps_raw_model_answers_and_counts_the_unparseable(tiny):
    scorer = make_scorer(f"dataman:{tiny},{FAST}", ".", device="cpu")
    assert isinstance(scorer, DataManScorer) and scorer.template == "dataman" and scorer.max_length == 24
    texts = [t[:300] for t in speeches()[:5]] + ["", "   "]
    batch = pa.record_batch({"id": [str(i) for i in range(len(texts))], "text": texts})
    out = scorer.score(batch)
    assert out.schema == scorer.output_schema()
    assert out.schema.field("dataman_overall").type == pa.int8()
    rows = out.to_pylist()
    # the tiny random model cannot follow the format: every answer is unparseable, asked twice
    first = scorer.backend().generate(scorer.prompts(texts[:5]), 12)
    for row, answer in zip(rows[:5], first):
        assert (
            row["dataman_attempts"] == 2 and row["dataman_raw"][0] == answer and len(row["dataman_raw"]) == 2
        )
        assert all(row[c] is None for c in COLUMNS) and row["dataman_domain"] is None
    assert [r["dataman_attempts"] for r in rows[5:]] == [0, 0] and rows[5]["dataman_raw"] == []
    assert scorer.errors == 5
    # a document's record does not depend on its batch companions
    alone = scorer.score(batch.slice(2, 1)).to_pylist()[0]
    assert alone == rows[2]


def test_version_names_prompt_model_and_truncation(tiny, tmp_path):
    a = make_scorer(f"dataman:{tiny},{FAST}", ".", device="cpu")
    other = build_tiny_chat_lm(tmp_path / "Other", seed=1)
    assert make_scorer(f"dataman:{tiny},{FAST}", ".", device="cpu").version == a.version
    versions = {
        a.version,
        make_scorer(f"dataman:{other},{FAST}", ".", device="cpu").version,
        make_scorer(
            f"dataman:{tiny},{FAST.replace('max_length=24', 'max_length=32')}", ".", device="cpu"
        ).version,
        make_scorer(f"dataman:{tiny},max_length=24,max_new_tokens=12,retries=1", ".", device="cpu").version,
    }
    assert len(versions) == 4
    assert a.version.startswith("1-dataman-p") and "-L24-c20000-n12-r1" in a.version
    with pytest.raises(ValueError, match="template must be one of"):
        make_scorer(f"dataman:{tiny},template=nosuch", ".")
    with pytest.raises(ValueError, match="unknown option"):
        make_scorer(f"dataman:{tiny},temperature=1", ".")
    with pytest.raises(ValueError, match="never downloads"):
        make_scorer(f"dataman:{tmp_path}/missing", ".")


def test_annotate_end_to_end_and_the_overall5_recipe(tiny, tmp_path):
    src = tmp_path / "docs.jsonl"
    with src.open("w") as f:
        for i, t in enumerate(speeches()[:6]):
            f.write(
                json.dumps({"id": f"d{i}", "text": t[:400], "source": "inaugural" if i % 2 else "web"}) + "\n"
            )
    root = tmp_path / "root"
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", str(src), "--root", str(root)])
    assert res.exit_code == 0, res.output
    args = [
        "annotate",
        "--root",
        str(root),
        "--scorer",
        "stats",
        "--scorer",
        f"dataman:{tiny},{FAST}",
        "--device",
        "cpu",
    ]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "6 documents could not be scored" in res.output
    table = run_query(
        root, "SELECT id, dataman_overall, dataman_domain, len(dataman_raw) AS n FROM annotations ORDER BY id"
    )
    assert table.column("n").to_pylist() == [2] * 6 and table.column("dataman_overall").null_count == 6
    recipe, _ = load_recipe(FIXTURES / "select" / "dataman_overall5.yaml")
    assert recipe.strata.columns == ("source", "dataman_domain") and recipe.filter == "dataman_overall = 5"
    # no Overall = 5 from a model that cannot rate: `assay select` stops with one clear line
    res = runner.invoke(
        main,
        [
            "select",
            "--recipe",
            str(FIXTURES / "select" / "dataman_overall5.yaml"),
            "--name",
            "dm5",
            "--root",
            str(root),
        ],
    )
    assert res.exit_code != 0 and "no document of the corpus passes it" in res.output
    assert runner.invoke(main, args).output.count("up to date") == 2  # a rerun skips finished work

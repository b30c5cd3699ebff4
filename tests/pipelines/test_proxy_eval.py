"""`assay proxy eval`: continuation log-probabilities, ranked-classification scores, the ladder table.

The models are real and built here: a seeded random-init Llama with a byte-level BPE tokenizer
trained on public-domain speeches (for the log-probability plumbing), and bigram LMs built from
counts of those speeches (zero transformer layers, one-hot embeddings, an output head holding
add-one bigram log-probabilities), which prefer real word order to shuffled words.
"""

from __future__ import annotations

import gzip
import json
import math
import re

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import REPO

from assay.corpora.targets import TARGET_FILE_SCHEMA, add_targets, load_targets, read_targets
from assay.pipelines.cli import main
from assay.pipelines.proxy_eval import (
    RESULT_COLUMNS,
    benchmark_average,
    choice_items,
    delimited,
    evaluate,
    example_scores,
    task_scores,
)
from assay.scorers.choice_loglik import continuation_logprobs, load_causal_lm, non_embedding_params

SPEECHES = REPO / "sample" / "speeches" / "inaugural.jsonl.gz"
TRAIN_DOCS, HELD_OUT = slice(0, 40), slice(200, 260)  # bigram counts / the examples scored


def speeches() -> list[str]:
    with gzip.open(SPEECHES, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def tokenizer_for(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def bigram_lm(folder, texts: list[str], vocab: int) -> tuple[int, int]:
    """Save a bigram LM of `texts` as a Llama folder; returns (vocabulary size, tokens counted)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer_for(texts, vocab)
    size = len(tok)
    counts = np.ones((size, size))
    tokens = 0
    for text in texts:
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        np.add.at(counts, (np.array(ids[:-1]), np.array(ids[1:])), 1)
        tokens += len(ids) - 1
    logp = np.log(counts / counts.sum(1, keepdims=True))
    config = LlamaConfig(
        vocab_size=size,
        hidden_size=size,
        intermediate_size=4,
        num_hidden_layers=0,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=256,
        rms_norm_eps=1e-12,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # the final RMSNorm maps a one-hot row to itself; the head reads the bigram row
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        model.model.norm.weight.fill_(1 / math.sqrt(size))
        model.lm_head.weight.copy_(torch.from_numpy(logp.T).float())
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return size, tokens


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("lm") / "tiny"
    tok = tokenizer_for(speeches()[:20], 400)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """Four bigram LMs: two vocabularies x two amounts of text, described by a ladder.json."""
    folder = tmp_path_factory.mktemp("ladder")
    texts = speeches()[TRAIN_DOCS]
    sizes = []
    for vocab in (300, 500):
        for docs in (10, 40):
            name = f"v{vocab}-{docs}"
            size, tokens = bigram_lm(folder / name, texts[:docs], vocab)
            sizes.append(
                {
                    "name": name,
                    "path": name,
                    "params": 2 * size * size + size,
                    "non_embedding_params": size * size + size,
                    "tokens": tokens,
                    "steps": docs,
                }
            )
    (folder / "ladder.json").write_text(json.dumps({"sizes": sizes}))
    return folder


def word_order_items(texts: list[str], n: int, seed: int = 0) -> list[dict]:
    """llm-foundry MC items: six words of a sentence, then its next six words (gold) or three
    shuffles of them (the same bytes, so per-byte and plain accuracy agree); `rest` keeps the
    words after them."""
    rng = np.random.default_rng(seed)
    items = []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            if len(words) < 14 or len(set(words[6:12])) < 6:
                continue
            gold = words[6:12]
            options = [" ".join(gold)]
            while len(options) < 4:
                option = " ".join(rng.permutation(gold))
                if option not in options:
                    options.append(option)
            at = int(rng.integers(4))
            options[0], options[at] = options[at], options[0]
            items.append({"query": " ".join(words[:6]), "choices": options, "gold": at, "rest": words[12:]})
            if len(items) == n:
                return items
    return items


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A corpus root with targets set `evals`: MC items (as hellaswag and arc_easy) and schema
    items (as winogrande) in split dev, MC items in split test."""
    tmp = tmp_path_factory.mktemp("proxy")
    docs = tmp / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "A document."}) + "\n")
    res = CliRunner().invoke(main, ["ingest", str(docs), "--root", str(tmp / "root")])
    assert res.exit_code == 0, res.output
    held_out = speeches()[HELD_OUT]
    items = word_order_items(held_out, 60)
    files = {"hellaswag": items[:40], "arc_easy": items[40:50]}
    schema = []
    for item in items[:20]:  # the true words or a shuffle of them, then the same rest of the sentence
        right, wrong = item["choices"][item["gold"]], item["choices"][(item["gold"] + 1) % 4]
        options = [f"{item['query']} {wrong}", f"{item['query']} {right}"]
        schema.append({"context_options": options, "continuation": " ".join(item["rest"]), "gold": 1})
    files["winogrande"] = schema
    for name, rows in files.items():
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = [tmp / f"{name}.jsonl" for name in files]
    add_targets(tmp / "root", "evals", paths, split="dev")
    heldout = tmp / "hellaswag_test.jsonl"  # benchmark hellaswag, split test, from the name
    heldout.write_text("".join(json.dumps(r) + "\n" for r in items[50:]))
    add_targets(tmp / "root", "heldout", [heldout])
    return tmp / "root"


# ---- the compute: continuation log-probabilities --------------------------------------------------
PAIRS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("The man turned on the faucet, therefore ", "water flowed from the spout."),  # space moves over
    ("", "Fellow citizens of the Senate"),  # nothing but BOS before it
    ("naïve café — ", "über alles"),  # multi-byte characters
    ("Fellow citizens of the Senate and of the House of Representatives " * 30, "among"),  # truncated
    ("Then", ", the man continues removing the snow on his car."),
]


def reference_logprobs(model, tok, context: str, continuation: str) -> np.ndarray:
    """One raw forward pass of BOS + context + continuation, no padding, no batching."""
    import torch

    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ids = [tok.bos_token_id, *tok(context + continuation, add_special_tokens=False)["input_ids"]]
    n_cont = len(ids) - 1 - len(tok(context, add_special_tokens=False)["input_ids"])
    ids = ids[-(model.config.max_position_embeddings + 1) :]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    targets = torch.tensor(ids[-n_cont:])
    return logp[torch.arange(len(ids) - 1 - n_cont, len(ids) - 1), targets].numpy()


def test_continuation_logprobs_equal_a_raw_forward_pass(random_lm):
    model, tok, device = load_causal_lm(random_lm, "cpu")
    got = continuation_logprobs(model, tok, [c for c, _ in PAIRS], [k for _, k in PAIRS], device)
    for (context, continuation), values in zip(PAIRS, got):
        ref = reference_logprobs(model, tok, context, continuation)
        assert values.dtype == np.float32 and values.shape == ref.shape and len(ref) >= 1
        np.testing.assert_allclose(values, ref, rtol=0, atol=1e-5)
        assert (values < 0).all()
    # the tokens scored are the continuation's own (whitespace moved from the context included)
    ids = tok("The man turned on the faucet, therefore water flowed from the spout.")["input_ids"]
    assert tok.decode(ids[-len(got[1]) :]) == " water flowed from the spout."
    # a continuation longer than the model's 256 positions cannot be scored
    long = continuation_logprobs(model, tok, ["Q:", "Q:"], [" yes", " word" * 300], device)
    assert long[0] is not None and long[1] is None


def test_batch_independence(random_lm):
    """A pair's log-probabilities are bit-identical alone, in a small batch or in a large one."""
    model, tok, device = load_causal_lm(random_lm, "cpu")
    contexts, continuations = [c for c, _ in PAIRS] * 2, [k for _, k in PAIRS] * 2
    together = continuation_logprobs(model, tok, contexts, continuations, device, batch_tokens=8192)
    small = continuation_logprobs(model, tok, contexts, continuations, device, batch_tokens=64)
    alone = [continuation_logprobs(model, tok, [c], [k], device)[0] for c, k in PAIRS]
    for i, values in enumerate(together):
        assert np.array_equal(values, small[i]) and np.array_equal(values, alone[i % len(PAIRS)])


def test_non_embedding_params_of_a_bigram_lm(tmp_path):
    size, _ = bigram_lm(tmp_path / "bigram", speeches()[:3], 280)
    model, _, _ = load_causal_lm(tmp_path / "bigram", "cpu")
    assert non_embedding_params(model) == size * size + size  # output head + final norm


# ---- scores on hand-built log-probabilities -------------------------------------------------------
def test_example_scores_by_hand():
    # option 0: 12 bytes at -6 (-0.5 a byte); option 1: 2 bytes at -3 (-1.5 a byte)
    logprobs = [np.array([-2.0, -4.0], np.float32), np.array([-3.0], np.float32)]
    s = example_scores(logprobs, [12, 2], gold=0)
    assert s == {"acc_raw": 0.0, "acc_norm": 1.0, "bpb": pytest.approx(6 / (12 * math.log(2)))}
    s = example_scores(logprobs, [12, 2], gold=1)
    assert s == {"acc_raw": 1.0, "acc_norm": 0.0, "bpb": pytest.approx(3 / (2 * math.log(2)))}


def hand_table(rows: list[dict]) -> pa.Table:
    base = {"split": "dev", "text": "t", "context": None, "continuation": None}
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=TARGET_FILE_SCHEMA)


def test_pairs_and_task_scores_by_hand():
    table = hand_table(
        [
            {"benchmark": "arc_easy", "example_id": "1", "context": "Q?", "choices": ["a", "bb"], "gold": 1},
            {"benchmark": "arc_easy", "example_id": "2", "context": "Q2 ", "choices": ["c", "d"], "gold": 0},
            {
                "benchmark": "openbook_qa",
                "example_id": "3",
                "context": "Q3",
                "choices": ["ee", "f"],
                "gold": 0,
            },
            {
                "benchmark": "winogrande",
                "example_id": "4",
                "choices": ["X", "Y"],
                "gold": 1,
                "continuation": "z.",
            },
            {"benchmark": "piqa", "example_id": "5", "context": "G", "choices": ["s1", "s2"], "gold": None},
            {"benchmark": "gsm8k", "example_id": "6"},
        ]
    )
    items = choice_items(table, "dev")
    assert items.prompts == ["Q?", "Q?", "Q2 ", "Q2 ", "Q3", "Q3", "X", "Y"]
    assert items.targets == [" a", " bb", "c", "d", " ee", " f", " z.", " z."]
    assert items.task == ["arc_easy", "arc_easy", "openbookqa", "winogrande"]  # no gold, no options: skipped
    lp = {2: -1.0, 3: -2.4, 1: -2.2}  # log-prob of a target by its byte count ...
    logprobs = [np.array([lp[len(t.encode())]]) for t in items.targets]
    logprobs[2], logprobs[5], logprobs[7] = np.array([-3.0]), np.array([-2.1]), np.array([-0.5, -0.2])
    got = {r["task"]: r for r in task_scores(items, logprobs)}
    # arc_easy 1: sums -1.0 / -2.4 (raw: a), per byte -0.5 / -0.8 (norm: a): gold bb loses both
    # arc_easy 2: sums -3.0 / -2.2: c (gold) loses; ARC-Easy's acc is the plain one
    assert got["arc_easy"] == {
        "task": "arc_easy",
        "examples": 2,
        "skipped": 0,
        "acc_raw": 0.0,
        "acc_norm": 0.0,
        "bpb": pytest.approx((2.4 / 3 + 3.0 / 1) / 2 / math.log(2)),
        "acc": 0.0,
    }
    # openbookqa: ee -2.4 over 3 bytes (-0.8), f -2.1 over 2 (-1.05): raw picks f, norm picks ee (gold)
    assert got["openbookqa"]["acc_raw"] == 0.0 and got["openbookqa"]["acc_norm"] == 1.0
    assert got["openbookqa"]["acc"] == 1.0  # len-normalised for the other tasks
    # winogrande: the same target after X (-2.4) and Y (-0.7): Y (gold) wins
    assert got["winogrande"]["acc"] == 1.0 and got["winogrande"]["bpb"] == pytest.approx(
        0.7 / 3 / math.log(2)
    )


def test_delimiters_and_shots():
    assert delimited("Answer:", "Paris") == " Paris" and delimited("Answer: ", "Paris") == "Paris"
    assert delimited("Then", ", the man") == ", the man" and delimited("", "x") == "x"
    rows = [
        {"benchmark": "copa", "example_id": str(i), "context": f"q{i}", "choices": ["a", "b"], "gold": i % 2}
        for i in range(5)
    ]
    items = choice_items(hand_table(rows), "dev", shots=2)
    prefixes = {p.rsplit("\n\n", 1)[0] for p in items.prompts}
    assert all(p.count("\n\n") == 2 for p in items.prompts)  # two solved examples before each
    for e, example_id in enumerate(items.example_id):  # never itself; always a solved one
        prompt = items.prompts[items.start[e]]
        shots = prompt.split("\n\n")[:2]
        assert f"q{example_id.split(':')[1]}" not in [s.split(" ")[0] for s in shots]
        assert all(s in {f"q{i} {'ab'[i % 2]}" for i in range(5)} for s in shots)
    assert len(prefixes) <= 3  # the same few shots for every example
    with pytest.raises(ValueError, match="no examples with options.*split 'test'"):
        choice_items(hand_table(rows), "test")


# ---- the run: ladder in, long table out -----------------------------------------------------------
def read_csv(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_ladder_eval_table_and_fit(ladder, root, tmp_path):
    runner = CliRunner()
    args = ["proxy", "eval", str(ladder), "--root", str(root), "--targets", "evals", "--device", "cpu"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    out = ladder / "eval_evals.csv"
    assert f"wrote {out}" in res.output and "hellaswag" in res.output
    rows = read_csv(out)
    assert list(rows[0]) == RESULT_COLUMNS
    assert [(r["run"], r["task"]) for r in rows] == [
        (run, task)
        for run in ("v300-10", "v300-40", "v500-10", "v500-40")
        for task in ("arc_easy", "hellaswag", "winogrande")
    ]
    by = {(r["run"], r["task"]): r for r in rows}
    sizes = {s["name"]: s for s in json.loads((ladder / "ladder.json").read_text())["sizes"]}
    for r in rows:
        size = sizes[r["run"]]
        assert float(r["n"]) == size["non_embedding_params"] and float(r["d"]) == size["tokens"]
        assert int(r["step"]) == size["steps"] and r["shots"] == "0"
        assert int(r["examples"]) == {"arc_easy": 10, "hellaswag": 40, "winogrande": 20}[r["task"]]
        # shuffles have the gold's bytes: per-byte and plain accuracy agree
        assert r["acc"] == r["acc_raw"] == r["acc_norm"]
    # real word order beats shuffles above chance (0.25) on held-out text, and the more text and
    # the larger the vocabulary, the lower the task loss and the higher the accuracy
    hella = {run: (float(by[run, "hellaswag"]["bpb"]), float(by[run, "hellaswag"]["acc"])) for run in sizes}
    assert min(acc for _, acc in hella.values()) > 0.35 and hella["v500-40"][1] >= 0.6
    for small, large in [
        ("v300-10", "v300-40"),
        ("v500-10", "v500-40"),
        ("v300-10", "v500-10"),
        ("v300-40", "v500-40"),
    ]:
        assert hella[large][0] < hella[small][0] and hella[large][1] > hella[small][1], hella
    averages = benchmark_average(out)
    assert list(averages) == list(sizes)
    for run, value in averages.items():
        assert value == pytest.approx(np.mean([float(r["acc"]) for r in rows if r["run"] == run]))
    # `assay fit ladder` reads the file as a long table and fits it
    fit = tmp_path / "fit.json"
    res = runner.invoke(
        main,
        [
            "fit",
            "ladder",
            "--runs",
            str(out),
            "--out",
            str(fit),
            "--no-backtest",
            "--min-tokens-per-param",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "fitted 3 tasks on 4 runs" in res.output and json.loads(fit.read_text())["kind"] == "ladder"


def test_rerun_is_identical_and_resumes_from_finished_models(ladder, root, tmp_path):
    sizes = json.loads((ladder / "ladder.json").read_text())["sizes"][1:3]
    for size in sizes:  # a ladder of two of the models, elsewhere: paths may be absolute
        size["path"] = str(ladder / size["path"])
    (tmp_path / "ladder.json").write_text(json.dumps({"sizes": sizes}))
    out = tmp_path / "a.csv"
    rows, path = evaluate(tmp_path, root, "evals", max_per_benchmark=8, device="cpu", out=out)
    assert path == out and {r["examples"] for r in rows} == {8} and rows[0]["run"] == "v300-40"
    first = out.read_bytes()
    parts = tmp_path / ".a.csv.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["v300-40.json", "v500-10.json"]
    # a finished model is not scored again: its saved scores are what the rerun writes
    saved = json.loads((parts / "v300-40.json").read_text())
    saved["tasks"][0]["acc"] = 0.123
    (parts / "v300-40.json").write_text(json.dumps(saved))
    (parts / "v500-10.json").unlink()  # as if killed before the last model finished
    rows, _ = evaluate(tmp_path, root, "evals", max_per_benchmark=8, device="cpu", out=out)
    assert rows[0]["acc"] == 0.123 and out.read_bytes() != first
    (parts / "v300-40.json").unlink()
    evaluate(tmp_path, root, "evals", max_per_benchmark=8, device="cpu", out=out)
    assert out.read_bytes() == first  # recomputed: byte-identical
    # other examples are another key: nothing stale is reused
    rows, _ = evaluate(tmp_path, root, "evals", max_per_benchmark=4, device="cpu", out=out)
    assert {r["examples"] for r in rows} == {4}


def test_a_single_model_folder_and_the_split(ladder, root, tmp_path):
    out = tmp_path / "one.csv"
    rows, _ = evaluate(ladder / "v500-40", root, "heldout", split="test", device="cpu", out=out)
    size = json.loads((ladder / "ladder.json").read_text())["sizes"][3]
    assert [(r["run"], r["task"], r["examples"]) for r in rows] == [("v500-40", "hellaswag", 10)]
    assert rows[0]["n"] == size["non_embedding_params"] and rows[0]["d"] is None and rows[0]["step"] == 0
    assert read_csv(out)[0]["d"] == ""
    with pytest.raises(ValueError, match="no examples with options.*split 'dev'.*splits: test"):
        evaluate(ladder / "v500-40", root, "heldout", device="cpu", out=out)


def test_cli_errors_are_one_line(ladder, root, tmp_path):
    bad_ladder = tmp_path / "bad"
    bad_ladder.mkdir()
    (bad_ladder / "ladder.json").write_text(json.dumps({"sizes": [{"name": "1M", "path": "1M"}]}))
    cases = [
        ([str(tmp_path), "--targets", "evals"], "neither a ladder"),
        ([str(bad_ladder), "--targets", "evals"], r"sizes\[0\]: missing \['non_embedding_params'"),
        ([str(ladder), "--targets", "nosuch"], "no targets set 'nosuch'"),
        ([str(ladder), "--targets", "evals", "--split", "val"], "no examples with options"),
        ([str(ladder), "--targets", "evals", "--device", "tpu"], "device must be one of"),
    ]
    for args, message in cases:
        res = CliRunner().invoke(
            main, ["proxy", "eval", *args, "--root", str(root), "--out", str(tmp_path / "x.csv")]
        )
        errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
        assert res.exit_code != 0 and len(errors) == 1 and re.search(message, errors[0]), res.output
    assert not (tmp_path / "x.csv").exists()


# ---- real benchmark files -------------------------------------------------------------------------
def test_real_benchmarks_as_scored_pairs(shared_data, random_lm, tmp_path):
    """ARC-Easy, PIQA (with labels), MMLU and Winogrande files become the pairs lm-eval scores."""
    bench = shared_data / "benchmarks"
    foundry = bench / "llm_foundry_local_data"
    paths = [
        foundry / "world_knowledge" / "arc_easy.jsonl",
        foundry / "language_understanding" / "winogrande.jsonl",
        bench / "piqa" / "valid.jsonl",
        bench / "mmlu" / "dev" / "astronomy_dev.csv",
    ]
    table = load_targets(paths, split="dev", choices=True)
    items = choice_items(table, "dev", max_per_benchmark=3)
    assert sorted(set(items.task)) == ["arc_easy", "mmlu", "piqa", "winogrande"]
    assert len(items.task) == 12 and len(items.prompts) == sum(items.count)
    by_task = {t: {int(c) for c, t2 in zip(items.count, items.task) if t2 == t} for t in items.task}
    assert by_task["winogrande"] == by_task["piqa"] == {2} and by_task["mmlu"] == {4}
    wino = [json.loads(line) for line in (paths[1]).read_text().splitlines()]
    e = items.task.index("winogrande")
    record = wino[int(items.example_id[e].rsplit(":", 1)[1]) - 1]  # "winogrande:winogrande:<line>"
    assert items.prompts[items.start[e] : items.start[e] + 2] == record["context_options"]
    assert items.targets[items.start[e] : items.start[e] + 2] == [" " + record["continuation"]] * 2
    assert items.gold[e] == record["gold"]
    model, tok, device = load_causal_lm(random_lm, "cpu")
    logprobs = continuation_logprobs(model, tok, items.prompts, items.targets, device)
    scores = task_scores(items, logprobs)
    assert [s["examples"] + s["skipped"] for s in scores] == [3, 3, 3, 3]
    assert all(0 <= s["acc"] <= 1 and s["bpb"] > 0 for s in scores if s["examples"])
    # a targets file written before the options were kept reads as one without them
    root = tmp_path / "root"
    (root / "targets").mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(load_targets(paths[:1], split="dev"), root / "targets" / "old.parquet")
    old = read_targets(root, "old", choices=True)
    assert old.schema.equals(TARGET_FILE_SCHEMA) and old.column("choices").null_count == old.num_rows
    with pytest.raises(ValueError, match="no examples with options"):
        choice_items(old, "dev")

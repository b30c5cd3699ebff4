"""Proxy LMs: the size rule, the recipe, the tokenizer, training, held-out loss and checkpoints.

Real text (the bundled State of the Union / inaugural pieces), real models (tiny Llamas built
from a config), real files; one thread, so CPU runs are bitwise repeatable.
"""

from __future__ import annotations

import gzip
import json
import math
import re

import numpy as np
import pytest
from conftest import REPO

from assay.scorers import proxy_lm

SPEECHES = REPO / "sample" / "speeches"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    out = []
    for path in sorted(SPEECHES.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out += [json.loads(line)["text"] for line in f]
    return out


@pytest.fixture(scope="module")
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, texts):
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    proxy_lm.save_tokenizer(proxy_lm.train_tokenizer(texts[:200], 400), folder, seq_len=64)
    return folder


@pytest.fixture(scope="module")
def stream(tokenizer_dir, texts) -> np.ndarray:
    encoder = proxy_lm.load_encoder(tokenizer_dir)
    return np.concatenate(encoder.encode(texts[:120]))


def test_parse_sizes_and_counts():
    assert proxy_lm.parse_sizes("16M, 1M,4m") == [("1M", 10**6), ("4M", 4 * 10**6), ("16M", 16 * 10**6)]
    assert proxy_lm.parse_sizes("0.05M,250K") == [("0.05M", 50_000), ("250K", 250_000)]
    assert proxy_lm.parse_count("2e6", "--tokens") == 2_000_000
    for bad, message in [
        ("1Q", "'1Q' is not a number"),
        ("1M,1M", "given twice"),
        ("5K", "outside"),
        (",", "no size"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            proxy_lm.parse_sizes(bad)


def test_size_rule_matches_its_table_and_lands_near_the_target():
    table = re.findall(r"^\s+(\d+M)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d,]+)$", proxy_lm.__doc__, re.M)
    assert [row[0] for row in table] == ["1M", "4M", "16M"]
    for name, d, layers, heads, d_ff, count in table:
        shape = proxy_lm.shape_for(proxy_lm.parse_count(name, "size"))
        assert (shape.d_model, shape.n_layers, shape.n_heads, shape.d_ff) == tuple(
            map(int, (d, layers, heads, d_ff))
        )
        assert shape.non_embedding_params == int(count.replace(",", ""))
    depth = 0
    for n in np.geomspace(5e4, 1e10, 80).astype(int):
        shape = proxy_lm.shape_for(int(n))
        assert 0.81 < shape.non_embedding_params / n < 1.23, (n, shape)
        assert shape.n_layers >= depth - 1, (n, shape)  # deeper as it grows, give or take one layer
        depth = max(depth, shape.n_layers)
        assert shape.d_model % shape.n_heads == 0 and shape.d_ff >= 8 * shape.d_model / 3


def test_exact_counts_are_those_of_the_built_model():
    for n in (50_000, 200_000, 1_000_000):
        shape = proxy_lm.shape_for(n)
        model = proxy_lm.build_model(proxy_lm.llama_config(shape, 512, 64, 0, 1), seed=0)
        total, non_embedding = proxy_lm.count_params(model)
        assert non_embedding == shape.non_embedding_params
        assert total == non_embedding + 512 * shape.d_model  # one tied embedding


def test_recipe_rules():
    one = proxy_lm.recipe_for(10**6, proxy_lm.shape_for(10**6), 20_000_000, 256)
    assert one.batch_tokens == 8192 and one.lr == pytest.approx(0.5 / 128) and one.steps == 2441
    big = proxy_lm.recipe_for(16 * 10**6, proxy_lm.shape_for(16 * 10**6), 10**9, 256)
    assert big.batch_tokens == 32_768 and big.micro_seqs == 32 and big.lr < one.lr
    short = proxy_lm.recipe_for(16 * 10**6, proxy_lm.shape_for(16 * 10**6), 100_000, 256)
    assert short.batch_seqs == 1 and short.steps == 100_000 // 256  # as many steps as one sequence allows
    factors = [proxy_lm.lr_factor(s, one) for s in range(one.steps)]
    assert factors[one.warmup_steps - 1] == 1.0 and factors[-1] == pytest.approx(0.1)
    assert factors[0] < factors[1] and all(
        a >= b for a, b in zip(factors[one.warmup_steps :], factors[one.warmup_steps + 1 :])
    )
    with pytest.raises(ValueError, match="fewer than one training step"):
        proxy_lm.recipe_for(10**6, proxy_lm.shape_for(10**6), 255, 256)


def test_tokenizer_is_deterministic_and_loads_in_transformers(tokenizer_dir, texts):
    from transformers import AutoTokenizer

    again = proxy_lm.train_tokenizer(texts[:200], 400)
    assert again.to_str() == proxy_lm.train_tokenizer(texts[:200], 400).to_str()
    assert again.to_str() != proxy_lm.train_tokenizer(texts[200:400], 400).to_str()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert tok.bos_token == tok.eos_token == proxy_lm.EOS and tok.pad_token == proxy_lm.PAD
    assert len(tok) == 400
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    encoder = proxy_lm.load_encoder(tokenizer_dir)
    text = texts[300]  # not among the tokenizer's training texts
    ids = encoder.encode([text])[0]
    assert ids[0] == tok.eos_token_id and tok(text).input_ids == ids.tolist()  # as a document trains
    assert tok.decode(ids[1:]) == text  # byte-level: lossless


def test_token_blocks_cover_each_block_once_per_epoch(stream):
    blocks = proxy_lm.TokenBlocks(stream, seq_len=32, batch_seqs=5, seed=3)
    n = blocks.n_blocks
    index = {stream[k * 32 : k * 32 + 33].astype(np.int64).tobytes(): k for k in range(n)}
    seen = [index[row.tobytes()] for s in range(2 * n // 5 + 1) for row in blocks.batch(s)]
    assert sorted(seen[:n]) == list(range(n)) and sorted(seen[n : 2 * n]) == list(range(n))
    assert seen[:n] != seen[n : 2 * n]  # a new order each epoch
    assert np.array_equal(blocks.batch(2), proxy_lm.TokenBlocks(stream, 32, 5, seed=3).batch(2))
    assert not np.array_equal(blocks.batch(0), proxy_lm.TokenBlocks(stream, 32, 5, seed=4).batch(0))
    assert np.array_equal(next(blocks.batches(7)), blocks.batch(7))
    with pytest.raises(ValueError, match="fewer than one block"):
        proxy_lm.TokenBlocks(stream[:20], 32, 1, 0)


def _train(stream, steps_tokens, seed=0, **kwargs):
    shape = proxy_lm.shape_for(50_000)
    recipe = proxy_lm.recipe_for(50_000, shape, steps_tokens, 32)
    model = proxy_lm.build_model(proxy_lm.llama_config(shape, 400, 32, 0, 1), seed)
    blocks = proxy_lm.TokenBlocks(stream, 32, recipe.batch_seqs, seed)
    losses = []
    last = proxy_lm.train(
        model, blocks.batches(0), recipe, on_step=lambda d, s, loss: losses.append(loss), **kwargs
    )
    return model, recipe, blocks, losses, last


def test_training_learns_is_bitwise_repeatable_and_loads_as_a_hf_model(
    one_thread, stream, tokenizer_dir, tmp_path
):
    import torch
    from transformers import AutoModelForCausalLM

    from assay.scorers.runtime import offline_loading

    model, recipe, _, losses, last = _train(stream, 4096)
    assert recipe.steps == len(losses) == 128 and last == losses[-1]
    assert losses[0] > math.log(400) - 0.3 and np.mean(losses[-10:]) < losses[0] - 0.8  # it learns
    again, *_ = _train(stream, 4096)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    other, *_ = _train(stream, 4096, seed=1)
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)

    proxy_lm.save_model(model, tokenizer_dir, tmp_path / "m")
    offline_loading()
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).eval()
    probe = torch.from_numpy(stream[-65:].astype(np.int64))[None]
    with torch.no_grad():
        assert torch.equal(loaded(probe).logits, model(probe).logits)
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    }


def test_checkpoint_resume_gives_the_uninterrupted_weights(one_thread, stream, tmp_path):
    import torch

    whole, recipe, *_ = _train(stream, 2048)
    shape = proxy_lm.shape_for(50_000)
    config = proxy_lm.llama_config(shape, 400, 32, 0, 1)
    first = proxy_lm.build_model(config, 0)
    opt, sched = proxy_lm.make_optimizer(first, recipe)
    blocks = proxy_lm.TokenBlocks(stream, 32, recipe.batch_seqs, 0)
    path = tmp_path / "ckpt.pt"

    class Stopped(Exception):
        pass

    def checkpoint(step):
        proxy_lm.save_checkpoint(path, first, opt, sched, step, key="k")
        if step == 24:
            raise Stopped  # the run ends here: whatever it did after the checkpoint is lost

    with pytest.raises(Stopped):
        proxy_lm.train(
            first,
            blocks.batches(0),
            recipe,
            optimizer=opt,
            scheduler=sched,
            checkpoint=checkpoint,
            checkpoint_every=8,
        )
    resumed = proxy_lm.build_model(config, 0)
    opt2, sched2 = proxy_lm.make_optimizer(resumed, recipe)
    assert proxy_lm.load_checkpoint(path, resumed, opt2, sched2, key="other run") == 0
    start = proxy_lm.load_checkpoint(path, resumed, opt2, sched2, key="k")
    assert start == 24
    proxy_lm.train(resumed, blocks.batches(start), recipe, start_step=start, optimizer=opt2, scheduler=sched2)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_heldout_loss_predicts_every_token_once(one_thread, stream):
    import torch
    import torch.nn.functional as F

    model = proxy_lm.build_model(proxy_lm.llama_config(proxy_lm.shape_for(50_000), 400, 64, 0, 1), 0).eval()
    tokens = stream[:50]
    total, count = proxy_lm.heldout_loss(model, tokens, seq_len=16, rows=2)
    assert count == 49
    # the same blocks by hand: [0:17], [16:33], [32:49], then the tail [48:50]
    ids = torch.from_numpy(tokens.astype(np.int64))
    manual = 0.0
    for a, b in [(0, 17), (16, 33), (32, 49), (48, 50)]:
        with torch.no_grad():
            logits = model(ids[None, a : b - 1]).logits[0]
        manual += float(F.cross_entropy(logits, ids[a + 1 : b], reduction="sum"))
    assert total == pytest.approx(manual, rel=1e-6)
    whole, n = proxy_lm.heldout_loss(model, tokens, seq_len=64)
    assert n == 49 and whole != pytest.approx(total, rel=1e-9)  # more context, another loss

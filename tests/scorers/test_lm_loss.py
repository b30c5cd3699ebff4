"""lm_loss: a tiny real Llama (trained tokenizer, seeded random weights) scored in sliding windows."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import REPO

from assay.corpora.catalog import run_query
from assay.pipelines.cli import main
from assay.scorers.lm_loss import LMLossScorer, TransformersBackend, VllmBackend, default_name, min_k, windows
from assay.scorers.registry import make_scorer

CONTEXT = 256  # the tiny model's max_position_embeddings: default windows (1,901 tokens) must shrink


def speeches() -> list[str]:
    with gzip.open(REPO / "sample/speeches/inaugural.jsonl.gz", "rt") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are small: on a busy 2-core machine one thread is ~10x faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A byte-level BPE (512 tokens) trained on the inaugural speeches and a 2-layer Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("lm") / "Tiny-LM.v1"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(speeches(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.2,  # far from uniform predictions, so that context changes the losses
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real speech openings of many lengths (about 10 to 450 tokens), one with non-ASCII text."""
    out = [t[: 40 + 130 * i] for i, t in enumerate(speeches()[:10])]
    return out + ["Naïve café — déjà vu, 2½ times: “quoted”."]


@pytest.fixture(scope="module")
def small(tiny_lm) -> LMLossScorer:
    return LMLossScorer(str(tiny_lm), block=64, stride=16)


def reference_log_probs(model, ids: list[int], block: int, stride: int) -> list[float]:
    """Hugging Face's perplexity recipe, one window per forward: only new targets get loss."""
    import torch

    out, prev_end = [], 0
    for begin in range(0, len(ids), stride):
        end = min(begin + block + 1, len(ids))
        trg_len = end - prev_end
        x = torch.tensor([ids[begin:end]])
        with torch.inference_mode():
            logp = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1)
        per_token = logp.gather(1, x[0, 1:, None])[:, 0].tolist()
        out += per_token[len(per_token) - trg_len + (1 if begin == 0 else 0) :]
        prev_end = end
        if end == len(ids):
            break
    return out


def test_windows_score_every_token_once_with_the_context_the_docstring_states():
    for n in (0, 1, 2, 64, 65, 66, 100, 257, 1000, 5000):
        for block, stride in ((64, 16), (64, 64), (1900, 512), (10, 1), (255, 127)):
            spans = windows(n, block, stride)
            scored = [t for b, e, f in spans for t in range(b + f, e)]
            assert scored == list(range(1, n)), (n, block, stride)
            for i, (b, e, f) in enumerate(spans):
                assert e - b <= block + 1 and f >= 1
                if i:  # later windows: every scored token sees block+1-stride .. block tokens
                    assert f == block + 1 - stride and e - 1 - b <= block
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 5)


def test_windowed_losses_equal_a_brute_force_transformers_loop(small, texts):
    model = small.load_backend().load()
    ours = small.token_log_probs(texts)
    lengths = []
    for text, lp in zip(texts, ours):
        ids = small.token_ids([text])[0].tolist()
        ref = np.array(reference_log_probs(model, ids, 64, 16))
        lengths.append(len(ids))
        assert len(lp) == len(ref) == len(ids) - 1
        assert abs(lp.sum() - ref.sum()) <= 1e-5 * abs(ref.sum())
        assert np.abs(lp - ref).max() < 1e-4
    assert min(lengths) < 65 < max(lengths) and max(lengths) > 300  # single windows and many
    # the comparison can fail: a different stride changes the context, hence the losses
    other = LMLossScorer(small.model, block=64, stride=32).token_log_probs(texts[-3:-2])[0]
    assert np.abs(other - ours[-3]).max() > 1e-2


def test_a_document_shorter_than_a_window_is_one_full_context_forward(tiny_lm, texts):
    import torch

    scorer = LMLossScorer(str(tiny_lm))  # block shrinks to the model's 255
    assert (scorer.block, scorer.stride) == (CONTEXT - 1, 127)
    text = texts[3]
    ids = scorer.token_ids([text])[0]
    assert ids[0] == scorer.tokenizer().bos_token_id and 64 < len(ids) < CONTEXT
    x = torch.from_numpy(ids)[None]
    with torch.inference_mode():
        full = torch.log_softmax(scorer.load_backend().load()(x).logits[0, :-1], -1)
    expected = full.gather(1, x[0, 1:, None])[:, 0].numpy()
    assert np.allclose(scorer.token_log_probs([text])[0], expected, rtol=0, atol=1e-5)


def test_columns_units_tokens_and_nulls(small, texts):
    batch = pa.record_batch({"id": [str(i) for i in range(len(texts) + 2)], "text": texts + ["", None]})
    out = small.score(batch).to_pydict()
    assert list(out) == [
        "lm_tiny_lm_v1_bpb",
        "lm_tiny_lm_v1_bpc",
        "lm_tiny_lm_v1_tokens",
        "lm_tiny_lm_v1_mink",
    ]
    tok = small.tokenizer()
    lps = small.token_log_probs(texts)
    for i, text in enumerate(texts):
        nats = -float(np.sum(lps[i], dtype=np.float64))
        assert out["lm_tiny_lm_v1_tokens"][i] == len(tok(text, add_special_tokens=False)["input_ids"])
        assert out["lm_tiny_lm_v1_bpb"][i] == pytest.approx(
            nats / (len(text.encode()) * math.log(2)), rel=1e-12
        )
        assert out["lm_tiny_lm_v1_bpc"][i] == pytest.approx(nats / (len(text) * math.log(2)), rel=1e-12)
        assert out["lm_tiny_lm_v1_mink"][i] == pytest.approx(min_k(lps[i], 0.2), rel=1e-12)
    last = len(texts) - 1  # the non-ASCII text: more bytes than characters
    assert out["lm_tiny_lm_v1_bpc"][last] / out["lm_tiny_lm_v1_bpb"][last] == pytest.approx(
        len(texts[last].encode()) / len(texts[last])
    )
    assert all(out[k][-2:] == [None, None] for k in out)


def test_min_k_on_hand_checkable_log_probs():
    lp = np.array([-1.0, -5.0, -2.0, -4.0, -3.0])
    assert min_k(lp, 0.2) == -5.0  # ceil(0.2 x 5) = 1: the least likely token
    assert min_k(lp, 0.5) == -4.0  # ceil(2.5) = 3: mean of -5, -4, -3
    assert min_k(lp, 1) == -3.0  # every token: the mean log-prob
    assert min_k(np.arange(-30.0, 0.0), "0.1") == -29.0  # ceil(0.1 x 30) is exactly 3: -30, -29, -28
    assert math.isnan(min_k(np.zeros(0)))


def test_a_documents_values_are_bit_identical_alone_or_in_any_batch(small, texts):
    batch = pa.record_batch({"id": [str(i) for i in range(len(texts))], "text": texts})
    together = small.score(batch)
    for i in (0, 5, len(texts) - 1):
        alone = small.score(batch.slice(i, 1))
        assert alone.equals(together.slice(i, 1))
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = small.score(batch.take(pa.array(order)))
    assert shuffled.equals(together.take(pa.array(order)))
    tight = LMLossScorer(small.model, block=64, stride=16, batch_tokens=200)  # other batch shapes
    assert tight.score(batch).equals(together)
    clone = pickle.loads(pickle.dumps(small))  # as a worker gets it: no model inside, loads its own
    assert clone._backend is None and clone.score(batch).equals(together)


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_backend_contract(tiny_lm, texts, backend):
    """One suite for every backend: log-probs of window[first:], float32, same for any grouping."""
    import torch

    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (not installable here nor on the GPU machine)")
    scorer = LMLossScorer(str(tiny_lm), block=64, stride=16, backend=backend)
    impl = scorer.load_backend()
    ids = scorer.token_ids(texts[2:6])
    parts, firsts = [], []
    for a in ids:
        for b, e, f in windows(len(a), 64, 16):
            parts.append(a[b:e])
            firsts.append(f)
    out = impl.log_probs(parts, firsts)
    assert len(out) == len(parts)
    model = TransformersBackend(tiny_lm).load()  # the reference is always a plain forward
    for w, f, lp in zip(parts, firsts, out):
        assert lp.dtype == np.float32 and len(lp) == len(w) - f and (lp <= 0).all()
        x = torch.from_numpy(w)[None]
        with torch.inference_mode():
            ref = torch.log_softmax(model(x).logits[0, :-1], -1).gather(1, x[0, 1:, None])[f - 1 :, 0]
        assert np.allclose(lp, ref.numpy(), atol=1e-4 if backend == "transformers" else 2e-2)
    again = impl.log_probs(parts[::-1], firsts[::-1])[::-1]
    if backend == "transformers":  # CPU: exact in any order
        assert all(np.array_equal(a, b) for a, b in zip(out, again))


def test_the_version_follows_the_model_files_and_the_settings(tiny_lm, tmp_path):
    base = LMLossScorer(str(tiny_lm))
    assert base.version == f"1-{base.identity.short}-b255-s127-k0.2-float32-transformers"
    assert LMLossScorer(str(tiny_lm), mink="0.1").version != base.version
    assert "-b100-s50-" in LMLossScorer(str(tiny_lm), block=100).version  # stride: half a short block
    assert "-b100-s60-" in LMLossScorer(str(tiny_lm), block=100, stride=60).version
    copy = tmp_path / "copy"
    shutil.copytree(tiny_lm, copy)
    assert LMLossScorer(str(copy)).version == base.version  # same files, same version
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.5
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    changed = LMLossScorer(str(copy))
    assert changed.version != base.version
    text = speeches()[0][:300]
    assert not np.array_equal(changed.token_log_probs([text])[0], base.token_log_probs([text])[0])


def test_default_set_names():
    assert default_name("/models/proxies/4M") == "4m"
    assert default_name("/models/Llama-2-7b-hf/") == "llama_2_7b_hf"
    assert default_name("Tiny-LM.v1") == "tiny_lm_v1"


def test_annotate_through_the_cli(tiny_lm, texts, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    root = tmp_path / "root"
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", str(docs), "--root", str(root)])
    assert res.exit_code == 0, res.output
    spec = f"lm_loss:{tiny_lm},name=tiny,block=64,stride=16"
    res = runner.invoke(main, ["annotate", "--root", str(root), "--scorer", spec, "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    rows = run_query(root, "SELECT id, lm_tiny_bpb, lm_tiny_tokens FROM annotations ORDER BY id").to_pylist()
    scorer = make_scorer(spec, root)
    expected = scorer.score(pa.record_batch({"id": ["x"] * len(texts), "text": texts})).to_pydict()
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(texts)
    for i in range(len(texts)):  # written by the CLI in batches of 4 = scored all at once, exactly
        assert by_id[f"d{i}"]["lm_tiny_bpb"] == expected["lm_tiny_bpb"][i]
        assert by_id[f"d{i}"]["lm_tiny_tokens"] == expected["lm_tiny_tokens"][i]


def test_bad_models_and_options_are_one_clear_error(tiny_lm, tmp_path):
    notok = tmp_path / "no-tokenizer"
    notok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_lm / name, notok / name)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    cases = [
        (f"lm_loss:{tmp_path}/nowhere", "never downloads"),
        (f"lm_loss:{notok}", "no usable tokenizer"),
        (f"lm_loss:{encoder}", "not a causal language model"),
        (f"lm_loss:{tmp_path}", "no config.json"),
        ("lm_loss", "needs a model folder"),
        (f"lm_loss:{tiny_lm},stride=100,block=50", "cannot exceed block"),
        (f"lm_loss:{tiny_lm},mink=0", "mink must be"),
        (f"lm_loss:{tiny_lm},mink=1.5", "mink must be"),
        (f"lm_loss:{tiny_lm},block=x", "block must be"),
        (f"lm_loss:{tiny_lm},backend=onnx", "backend must be"),
        (f"lm_loss:{tiny_lm},name=Big Model", "name 'Big Model'"),
        (f"lm_loss:{tiny_lm},colour=red", "unknown option"),
        (f"lm_loss:{tiny_lm},dtype=int8", "dtype must be"),
    ]
    if importlib.util.find_spec("vllm") is None:
        cases.append((f"lm_loss:{tiny_lm},backend=vllm", "needs the vllm package"))
    for spec, message in cases:
        with pytest.raises(ValueError, match=message):
            make_scorer(spec, tmp_path)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match="needs the vllm package"):
            VllmBackend(tiny_lm)

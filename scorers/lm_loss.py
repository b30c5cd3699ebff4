"""`lm_loss`: per-document language-model loss as bits per byte and per character, and Min-K% Prob.

    assay annotate --scorer lm_loss:/models/proxies/4M                  # set lm_4m
    assay annotate --scorer lm_loss:/models/Llama-2-7b-hf,dtype=bfloat16  # set lm_llama_2_7b_hf
    assay annotate --scorer lm_loss:/models/x,name=x1,block=1024,stride=256,mink=0.1

Options (comma-separated; a first item without ``=`` is the model folder): ``model``, ``name``
(the set is ``lm_<name>``; default the folder's basename, lowercased, every run of characters
other than a-z and 0-9 turned into ``_``, leading and trailing ``_`` dropped: ``.../4M`` ->
``lm_4m``), ``block`` (default 1900), ``stride`` (default 512, or half the block when that is
less), ``mink`` (default 0.2), ``dtype`` (``auto``: float32 on CPU, bfloat16 on CUDA),
``batch_tokens`` (padded tokens per forward pass; default 8,192 on CPU, 65,536 on CUDA),
``backend`` (``transformers``, the default, or ``vllm``).

Columns, all null for empty text: ``lm_<name>_bpb`` (float64: the summed next-token loss in nats
/ (UTF-8 bytes x ln 2)), ``lm_<name>_bpc`` (the same / characters, PreSelect's BPC, METHODS.md
§2.1), ``lm_<name>_tokens`` (int64: tokens scored) and ``lm_<name>_mink`` (Min-K% Prob, Shi et al.
2024, METHODS.md §10: the mean log-prob of the ceil(k x n) least likely of the n scored tokens,
from the same per-token log-probs; no second pass). A text whose only token cannot be scored
has tokens 0 and null losses.

The windows (PreSelect's ``data_processing/bpc``). Each document is tokenised alone, and its
tokens are never concatenated with other documents' as the reference does with a whole shard:
a document's scores then depend on it alone (the purity rule of ``assay.scorers.base``). The
tokenizer's BOS token, when it has one, is put first, so that the text's first token is scored
too (``tokens`` = the text's token count); without one, the first token has no context and is not
scored (``tokens`` = count - 1). Windows of ``block + 1`` tokens start at 0, stride, 2 x stride...
up to the one that reaches the end; window i scores only the tokens no earlier window scored
(its last ``stride`` tokens when it is full; all of the first window's). So every token is
scored exactly once; tokens of the first window see all of their prefix, and every later token
sees between ``block + 1 - stride`` and ``block`` tokens of context (1,389 to 1,900 by default).
A model whose context (``max_position_embeddings``) is shorter than ``block + 1`` gets a block
of ``max_position_embeddings - 1`` (a 2,048-position Llama keeps 1,900; GPT-2's 1,024 gives
1,023), and the stride becomes at most half that block (511), so that every token still sees at
least half a window of context. The block and stride used are in the version.

Batching: the windows of all documents of an Arrow batch are packed by
``runtime.token_batches`` (length-sorted, token budget, each row padded to a width set by its
own length), a batch holding windows of one first scored position only, so that the logits kept
(``logits_to_keep``) depend on the row alone; full windows (``block + 1`` tokens, most of a long
document's) are never padded, so they run without a mask, on the causal attention kernel. On CPU a document's values are then
bit-identical alone or in any batch (tested); on CUDA kernels may change with the batch, and
``bench/gpu_check.py`` measures how far. Log-probs are a float32 log-softmax over the
logits (cast from bfloat16 / float16 on GPU); sums per document are in float64.

Backends share one contract, ``log_probs(windows, first) -> [float32 log-probs of
window[first:]]``: the ``transformers`` backend (``AutoModelForCausalLM``, device auto) and a
thin ``vllm`` adapter (``LLM.generate`` with ``SamplingParams(max_tokens=1,
prompt_logprobs=0)`` on the same windows from the same windowing code; it reserves one
position of the context for the one generated token). The vLLM adapter is UNTESTED: vLLM
cannot be installed in the test environment or on the GPU machine, and its cases in the shared
backend test suite skip. The compute path imports only torch, transformers, numpy and pyarrow.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.scorers import runtime
from assay.scorers.embed import parse_options

BLOCK = 1900  # PreSelect data_processing/bpc: block_size 1900 (+1), stride 512 (METHODS.md §2.1)
STRIDE = 512
MIN_K = "0.2"  # Min-K% Prob default k = 20% (Shi et al., ICLR 2024)
PAD_MULTIPLE = 16
BATCH_TOKENS = {"cpu": 8192, "cuda": 65_536}
BACKENDS = ("transformers", "vllm")
_OPTIONS = ("model", "name", "block", "stride", "mink", "dtype", "batch_tokens", "backend")


def default_name(model: str | os.PathLike) -> str:
    """``.../proxies/4M`` -> ``4m``, ``Llama-2-7b-hf`` -> ``llama_2_7b_hf``."""
    path = Path(str(model)).expanduser()
    base = path.name if path.name not in ("", ".", "..") else path.resolve().name
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")


def windows(n: int, block: int = BLOCK, stride: int = STRIDE) -> list[tuple[int, int, int]]:
    """``(begin, end, first)`` of each window over ``n`` tokens: it holds tokens[begin:end] and
    scores tokens[begin + first:end], the ones no earlier window scored. Token 0 is never scored."""
    if not 1 <= stride <= block:
        raise ValueError(f"stride must be between 1 and block ({block}); got {stride}")
    out, begin, scored_to = [], 0, 1
    while scored_to < n:
        end = min(begin + block + 1, n)
        out.append((begin, end, scored_to - begin))
        scored_to, begin = end, begin + stride
    return out


def min_k(log_probs: np.ndarray, k: Fraction | float | str = MIN_K) -> float:
    """Min-K% Prob: the mean of the ceil(k x n) lowest of n token log-probs (NaN when n = 0)."""
    values = np.asarray(log_probs, dtype=np.float64)
    if not len(values):
        return math.nan
    k = Fraction(str(k))
    m = -(-k.numerator * len(values) // k.denominator)  # exact ceil: 0.1 x 30 is 3, not 4
    return float(np.partition(values, m - 1)[:m].mean())


class Backend(Protocol):
    """What turns windows of token ids into the log-probs of their tokens."""

    reserve: int  # context positions a window must leave free (vLLM generates one token)

    def log_probs(self, windows: Sequence[np.ndarray], first: Sequence[int]) -> list[np.ndarray]:
        """float32 log p(w[j] | w[:j]) for j in first..len(w)-1, one array per window."""
        ...


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never try it
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class TransformersBackend:
    """Hugging Face ``AutoModelForCausalLM``; windows batched by ``runtime.token_batches``."""

    path: Path
    device: str = "cpu"
    dtype: str = "float32"
    batch_tokens: int = BATCH_TOKENS["cpu"]
    max_rows: int | None = None
    window: int | None = None  # full windows (block + 1 tokens) run unpadded: no mask, the causal kernel
    reserve: ClassVar[int] = 0
    model: Any = field(default=None, repr=False)

    def load(self) -> Any:
        if self.model is None:
            import transformers
            from transformers.utils import logging as hf_logging

            _offline()
            major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
            key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                model, info = transformers.AutoModelForCausalLM.from_pretrained(
                    str(self.path),
                    local_files_only=True,
                    output_loading_info=True,
                    **{key: runtime.torch_dtype(self.dtype)},
                )
            except (OSError, ValueError, KeyError) as exc:
                raise ValueError(f"{self.path}: cannot load it as a causal LM ({exc})") from None
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            if info.get("missing_keys"):
                missing = sorted(info["missing_keys"])
                raise ValueError(
                    f"{self.path}: not a causal LM checkpoint: its weights lack {', '.join(missing[:3])}"
                    + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                )
            self.model = model.to(self.device).eval()
        return self.model

    def log_probs(self, windows: Sequence[np.ndarray], first: Sequence[int]) -> list[np.ndarray]:
        import inspect

        import torch

        model = self.load()
        keep_ok = "logits_to_keep" in inspect.signature(model.forward).parameters
        pad_id = getattr(model.config, "pad_token_id", None)
        pad_id = pad_id if isinstance(pad_id, int) else 0  # padding is after the row and masked
        lengths = np.array([len(w) for w in windows], dtype=np.int64)
        first = np.asarray(first, dtype=np.int64)
        full = lengths == (self.window or -1)
        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(windows)
        # batches hold one first scored position (so the kept logits match) and one kind of window
        groups = [(s, f) for s in np.unique(first) for f in (True, False)]
        for start, whole in groups:
            group = np.flatnonzero((first == start) & (full == whole))
            pad = 1 if whole else PAD_MULTIPLE
            for rows, width in runtime.token_batches(lengths[group], self.batch_tokens, self.max_rows, pad):
                rows = group[rows]
                ids = np.full((len(rows), width), pad_id, dtype=np.int64)
                for r, i in enumerate(rows):
                    ids[r, : lengths[i]] = windows[i]
                inputs = {"input_ids": torch.from_numpy(ids).to(self.device), "use_cache": False}
                if lengths[rows].min() < width:  # token_batches keeps unpadded rows in batches of their own
                    mask = np.arange(width)[None, :] < lengths[rows][:, None]
                    inputs["attention_mask"] = torch.from_numpy(mask.astype(np.int64)).to(self.device)
                offset = int(start) - 1  # logits at position j predict token j + 1
                if keep_ok and offset > 0:
                    inputs["logits_to_keep"] = width - offset
                else:
                    offset = 0
                with torch.inference_mode():
                    logits = model(**inputs).logits
                    for r, i in enumerate(rows):
                        n = int(lengths[i])
                        target = inputs["input_ids"][r, start:n]
                        row = logits[r, start - 1 - offset : n - 1 - offset].float()
                        lp = torch.log_softmax(row, dim=-1).gather(-1, target[:, None])[:, 0]
                        out[i] = lp.cpu().numpy()
        return out


@dataclass
class VllmBackend:
    """vLLM's prompt log-probs for the same windows. UNTESTED: vLLM is not installable here."""

    path: Path
    dtype: str = "bfloat16"
    reserve: ClassVar[int] = 1
    llm: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "lm_loss: backend=vllm needs the vllm package, which is not installed "
                "(pip install 'assay[gpu]' on a CUDA machine), or use backend=transformers"
            )

    def log_probs(self, windows: Sequence[np.ndarray], first: Sequence[int]) -> list[np.ndarray]:
        from vllm import LLM, SamplingParams

        if self.llm is None:
            _offline()
            self.llm = LLM(model=str(self.path), dtype=self.dtype)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
        prompts = [{"prompt_token_ids": [int(t) for t in w]} for w in windows]
        results = self.llm.generate(prompts, params, use_tqdm=False)  # vLLM schedules them itself
        out = []
        for result, w, start in zip(results, windows, first):
            lps = result.prompt_logprobs  # position j: {token id: Logprob}, None at 0
            out.append(np.array([lps[j][int(w[j])].logprob for j in range(start, len(w))], np.float32))
        return out


def _whole(value: Any, what: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"lm_loss: {what} must be a whole number >= 1 (got {value!r})")
    return int(text)


def _model_config(path: Path) -> Any:
    """The folder's transformers config, when it describes a causal LM (a clear error otherwise)."""
    _offline()
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: no config.json; lm_loss needs a Hugging Face causal LM folder")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read its config.json ({exc})") from None
    heads = [
        a
        for a in (getattr(config, "architectures", None) or [])
        if a.endswith(("ForCausalLM", "LMHeadModel"))
    ]
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (config.architectures and not heads):
        kind = ", ".join(config.architectures or [config.model_type])
        raise ValueError(f"{path}: {kind} is not a causal language model (lm_loss needs *ForCausalLM)")
    return config


@dataclass
class LMLossScorer:
    """Bits per byte / character, scored tokens and Min-K% of one causal LM, per document."""

    model: str
    label: str | None = None  # the `name=` option: the set is lm_<label>
    block: int = BLOCK
    stride: int | None = None  # None: STRIDE, at most half the block
    mink: str = MIN_K
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None
    batch_size: int | None = None  # at most this many windows a forward pass
    backend: str = "transformers"
    name: str = field(init=False)
    model_path: Path = field(init=False)
    identity: runtime.ModelIdentity = field(init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False, compare=False)
    _backend: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        label = self.label if self.label is not None else default_name(self.model)
        if not re.fullmatch(r"[a-z0-9_]+", label or ""):
            raise ValueError(
                f"lm_loss: name {label!r} must be lowercase letters, digits and _ (give one with name=)"
            )
        self.label, self.name = label, f"lm_{label}"
        if self.backend not in BACKENDS:
            raise ValueError(f"lm_loss: backend must be one of {', '.join(BACKENDS)} (got {self.backend!r})")
        self.block = _whole(self.block, "block")
        given = self.stride is not None
        self.stride = _whole(self.stride, "stride") if given else min(STRIDE, max(1, self.block // 2))
        if self.stride > self.block:
            raise ValueError(f"lm_loss: stride ({self.stride}) cannot exceed block ({self.block})")
        try:
            k = Fraction(str(self.mink).strip())
        except (ValueError, ZeroDivisionError):
            k = Fraction(0)
        if not 0 < k <= 1:
            raise ValueError(f"lm_loss: mink must be a fraction in (0, 1] (got {self.mink!r})")
        self.mink = format(float(k), "g")
        self.model_path = runtime.resolve_model(self.model)
        config = _model_config(self.model_path)
        self.identity = runtime.model_identity(self.model_path)
        self.device = runtime.resolve_device(self.device)
        self.dtype = runtime.resolve_dtype(
            self.device, "bfloat16" if self.dtype == "auto" and self.device != "cpu" else self.dtype
        )
        self.batch_tokens = _whole(
            self.batch_tokens or BATCH_TOKENS["cpu" if self.device == "cpu" else "cuda"], "batch_tokens"
        )
        reserve = VllmBackend.reserve if self.backend == "vllm" else TransformersBackend.reserve
        context = getattr(config, "max_position_embeddings", None)
        if context and self.block + 1 > context - reserve:  # the model's context decides the window
            self.block = context - reserve - 1
            self.stride = min(self.stride, max(1, self.block // 2))
        if self.block < 1:
            raise ValueError(f"{self.model_path}: a context of {context} positions is too short to score")
        if self.backend == "vllm":
            VllmBackend(self.model_path, self.dtype)  # fails now, clearly, when vllm is absent
        self.tokenizer()  # a folder without tokenizer files fails here, not in a worker

    @property
    def version(self) -> str:
        return (
            f"1-{self.identity.short}-b{self.block}-s{self.stride}-k{self.mink}-{self.dtype}-{self.backend}"
        )

    def output_schema(self) -> pa.Schema:
        p = self.name
        return pa.schema(
            [
                (f"{p}_bpb", pa.float64()),
                (f"{p}_bpc", pa.float64()),
                (f"{p}_tokens", pa.int64()),
                (f"{p}_mink", pa.float64()),
            ]
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None, "_backend": None}  # a worker loads its own

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> LMLossScorer:
        opts = parse_options(arg, _OPTIONS, "lm_loss", first="model")
        if "model" not in opts:
            raise ValueError("lm_loss needs a model folder: --scorer lm_loss:PATH[,name=...,block=...]")
        kwargs: dict[str, Any] = {
            k: settings[k] for k in ("device", "batch_size") if settings.get(k) is not None
        }
        renamed = {"name": "label"}
        kwargs.update({renamed.get(k, k): v for k, v in opts.items()})
        return cls(**kwargs)

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            _offline()
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(
                    f"{self.model_path}: no usable tokenizer (tokenizer.json or a tokenizer's own files): {first}"
                ) from None
        return self._tokenizer

    def load_backend(self) -> Backend:
        if self._backend is None:
            if self.backend == "vllm":
                self._backend = VllmBackend(self.model_path, self.dtype)
            else:
                self._backend = TransformersBackend(
                    self.model_path,
                    self.device,
                    self.dtype,
                    self.batch_tokens,
                    self.batch_size,
                    self.block + 1,
                )
        return self._backend

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's token ids, tokenised alone, with the tokenizer's BOS first when it has one."""
        tok = self.tokenizer()
        encoded = tok(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)[
            "input_ids"
        ]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return [np.array(bos + ids, dtype=np.int64) for ids in encoded]

    def token_log_probs(self, texts: list[str]) -> list[np.ndarray]:
        """float32 log p(token | context) of every scored token of each text, in text order."""
        if not texts:
            return []
        ids = self.token_ids(texts)
        spans = [windows(len(a), self.block, self.stride) for a in ids]
        parts = [a[b:e] for a, s in zip(ids, spans) for b, e, _ in s]
        firsts = [f for s in spans for _, _, f in s]
        values = self.load_backend().log_probs(parts, firsts) if parts else []
        out, i = [], 0
        for s in spans:
            out.append(np.concatenate(values[i : i + len(s)]) if s else np.zeros(0, np.float32))
            i += len(s)
        return out

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        text = batch.column(batch.schema.get_field_index("text"))
        ok = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(ok)
        chars = pc.utf8_length(text).to_numpy(zero_copy_only=False)
        nbytes = pc.binary_length(text).to_numpy(zero_copy_only=False)
        texts = text.take(pa.array(rows)).to_pylist()
        n = batch.num_rows
        bpb, bpc, mink = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        tokens = np.zeros(n, dtype=np.int64)
        for i, lp in zip(rows, self.token_log_probs(texts)):
            tokens[i] = len(lp)
            if len(lp):
                nats = -float(lp.astype(np.float64).sum())
                bpb[i] = nats / (nbytes[i] * math.log(2))
                bpc[i] = nats / (chars[i] * math.log(2))
                mink[i] = min_k(lp, self.mink)
        scored = tokens > 0
        columns = [
            pa.array(bpb, pa.float64(), mask=~scored),
            pa.array(bpc, pa.float64(), mask=~scored),
            pa.array(tokens, pa.int64(), mask=~ok),
            pa.array(mink, pa.float64(), mask=~scored),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.output_schema())

"""Log-probabilities of continuations under a causal LM: the compute of ranked classification.

``continuation_logprobs(model, tokenizer, contexts, continuations, device)`` returns, per
(context, continuation) pair, the log-probability (natural log) of each continuation token given
everything before it. How a pair becomes tokens follows lm-evaluation-harness (`_encode_pair`):

* whitespace at the end of the context moves to the front of the continuation (BPE vocabularies
  glue a space to the word after it, so " Paris" is one token while "Answer: " + "Paris" is not);
* context + continuation is encoded as one string and split after as many tokens as the context
  alone encodes to. Where BPE merges across the boundary the first continuation token may hold
  the context's last characters; at least one token is always scored;
* the tokenizer's BOS token goes in front when it has one (else its EOS, when the context is
  empty: the first token needs something to be predicted from);
* a pair longer than the model's ``max_position_embeddings`` keeps its last tokens; a pair whose
  continuation alone is longer cannot be scored and gets None.

Pairs run in token-budget batches from `scorers.runtime.token_batches`: each row is padded to a
width set by its own length, so on CPU a pair's log-probabilities are bit-identical alone or in
any batch. Logits are computed only for the last positions a batch needs (``logits_to_keep``,
where the model takes it) and normalised in float32.

Only numpy and the standard library are imported at module level; torch and transformers inside
the functions (this module runs on the GPU machine, which has neither polars nor duckdb).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from assay.scorers import runtime


def load_causal_lm(path: str | Path, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer, device) of a local Hugging Face causal-LM folder, in eval mode on the
    device (``auto``: CUDA when present) in the runtime's dtype (float16 on CUDA, float32 on CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = runtime.resolve_model(path)
    device = runtime.resolve_device(device)
    hf_logging.disable_progress_bar()  # the caller shows progress over the whole run
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{folder}: not a Hugging Face causal LM with its tokenizer ({first})") from None
    model.to(device=device, dtype=runtime.torch_dtype(runtime.resolve_dtype(device, dtype)))
    model.eval()
    return model, tokenizer, device


def non_embedding_params(model) -> int:
    """Parameters outside the input (and learned position) embeddings, as the OLMo ladder counts
    N: an untied output head counts, a tied one is the embedding itself."""
    inputs = model.get_input_embeddings()
    skip = {id(p) for p in inputs.parameters()}
    for name, module in model.named_modules():
        if name.endswith(("wpe", "embed_positions")):
            skip.update(id(p) for p in module.parameters())
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def encode_pairs(
    tokenizer, contexts: Sequence[str], continuations: Sequence[str], max_length: int | None = None
) -> list[tuple[np.ndarray, int] | None]:
    """Per pair: (token ids of prefix + context + continuation, number of continuation tokens);
    None where the continuation alone is longer than ``max_length``."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    ctxs, wholes = [], []
    for context, cont in zip(contexts, continuations):
        if not cont:
            raise ValueError(f"empty continuation after context {context[-60:]!r}")
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, cont = context[:-spaces], context[-spaces:] + cont
        ctxs.append(context)
        wholes.append(context + cont)
    ctx_ids = tokenizer(ctxs, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(wholes, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out = []
    for context, c_ids, w_ids in zip(ctxs, ctx_ids, whole_ids):
        prefix = [bos] if bos is not None else ([eos] if not context and eos is not None else [])
        n_cont = len(w_ids) - min(len(c_ids), len(w_ids) - 1)
        ids = np.asarray(prefix + list(w_ids), dtype=np.int64)
        if len(ids) - n_cont < 1:
            raise ValueError("the tokenizer has neither BOS nor EOS to predict a first token from")
        if max_length is not None and len(ids) > max_length + 1:
            if n_cont > max_length:
                out.append(None)
                continue
            ids = ids[-(max_length + 1) :]
        out.append((ids, n_cont))
    return out


def _keep_argument(model) -> str | None:
    """The forward argument that limits logits to the last positions, when the model has one."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)


def continuation_logprobs(
    model,
    tokenizer,
    contexts: Sequence[str],
    continuations: Sequence[str],
    device: str,
    batch_tokens: int = 8192,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray | None]:
    """Per pair, float32 log-probabilities of its continuation tokens (see the module docstring);
    None for a continuation longer than the model's positions.

    ``batch_tokens`` bounds rows x padded width per forward pass; ``progress`` is called with the
    number of pairs each batch finished."""
    import torch

    max_length = getattr(model.config, "max_position_embeddings", None)
    encoded = encode_pairs(tokenizer, contexts, continuations, max_length)
    scored = [i for i, pair in enumerate(encoded) if pair is not None]
    pairs = [encoded[i] for i in scored]
    lengths = np.array([len(ids) - 1 for ids, _ in pairs], dtype=np.int64)  # inputs: all but the last
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    keep_arg = _keep_argument(model)
    out: list[np.ndarray | None] = [None] * len(encoded)
    with torch.inference_mode():
        for rows, width in runtime.token_batches(lengths, batch_tokens):
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : lengths[i]] = torch.from_numpy(pairs[i][0][:-1])
                mask[r, : lengths[i]] = 1
            # input position p predicts token p + 1: a pair's continuation is predicted from
            # positions [length - n_cont, length)
            starts = [int(lengths[i]) - pairs[i][1] for i in rows]
            kwargs = {}
            if not bool(mask.all()):  # a batch without padding runs without a mask (runtime docs)
                kwargs["attention_mask"] = mask.to(device)
            offset = 0
            if keep_arg is not None:
                offset = min(starts)
                kwargs[keep_arg] = width - offset
            logits = model(input_ids=ids.to(device), **kwargs).logits
            for r, i in enumerate(rows):
                positions = slice(starts[r] - offset, int(lengths[i]) - offset)
                logp = torch.log_softmax(logits[r, positions].float(), dim=-1)
                target = torch.from_numpy(pairs[i][0][-pairs[i][1] :]).to(logp.device)
                out[scored[i]] = logp.gather(1, target[:, None])[:, 0].cpu().numpy()
            if progress is not None:
                progress(len(rows))
    if progress is not None and len(scored) < len(encoded):
        progress(len(encoded) - len(scored))
    return out

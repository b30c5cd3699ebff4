"""Rebuild the bundled sample corpus from ../shared/data (run once; the output is committed).

python sample/build_sample.py
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "corpora"
NLTK = DATA / "nltk_data" / "corpora"


def chunks(text: str, size: int = 2500) -> list[str]:
    """Paragraph-aligned pieces of about `size` characters."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out, cur = [], []
    for p in paras:
        cur.append(p)
        if sum(len(x) for x in cur) >= size:
            out.append("\n\n".join(cur))
            cur = []
    if cur:
        out.append("\n\n".join(cur))
    return out


def write_jsonl_gz(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        for r in records:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode())


def speeches(corpus: str) -> list[dict]:
    records = []
    with zipfile.ZipFile(NLTK / f"{corpus}.zip") as z:
        for name in sorted(z.namelist()):
            if name.endswith(".txt"):
                text = z.read(name).decode("latin-1")
                stem = Path(name).stem
                for i, piece in enumerate(chunks(text)):
                    records.append({"id": f"{corpus}/{stem}/{i}", "text": piece, "title": stem, "part": i})
    return records


def udhr() -> list[dict]:
    records = []
    with zipfile.ZipFile(NLTK / "udhr.zip") as z:
        for name in sorted(z.namelist()):
            if name.endswith("-UTF8"):
                # files are cut at 10,000 bytes, sometimes inside a character
                text = z.read(name).decode("utf-8", errors="ignore")
                records.append(
                    {"id": f"udhr/{Path(name).name}", "text": text, "language_name": Path(name).name[:-5]}
                )
    return records


def main() -> None:
    web = HERE / "web"
    web.mkdir(exist_ok=True)
    for f in sorted((DATA / "misc").glob("dolma_cc_en_head-*.jsonl.gz")) + [
        DATA / "misc" / "dolma_sample-0000.warc.gz"
    ]:
        shutil.copyfile(f, web / f.name)
    state_union = speeches("state_union")
    inaugural = speeches("inaugural")
    write_jsonl_gz(HERE / "speeches" / "state_union.jsonl.gz", state_union)
    write_jsonl_gz(HERE / "speeches" / "inaugural.jsonl.gz", inaugural)
    write_jsonl_gz(HERE / "udhr" / "udhr.jsonl.gz", udhr())
    # A deliberately damaged copy of a few speech pieces, to show what quarantine catches.
    good = [json.dumps(r) for r in inaugural[:6]]
    damaged = [
        good[0],
        good[1][:-20],  # cut mid-record: invalid JSON
        json.dumps({"id": "no-text", "title": "missing text field"}),
        json.dumps({"id": "blank", "text": "   \n  "}),
        good[0],  # the same id again
        good[2],
    ]
    damaged_bytes = "\n".join(damaged).encode() + b"\n" + b'{"id": "latin1", "text": "caf\xe9"}\n'
    (HERE / "damaged").mkdir(exist_ok=True)
    (HERE / "damaged" / "damaged.jsonl").write_bytes(damaged_bytes)


if __name__ == "__main__":
    main()

"""Meta-rater on real text: learned weights vs uniform, published and random selections.

    python bench/meta_rater.py                                  # 24 candidates, 0.1M proxies, 100K tokens
    python bench/meta_rater.py --candidates 32 --proxy-size 0.2M --proxy-tokens 200K --holdout 8

The shared corpora (``bench/common.py`` ``real_documents()``: the trafilatura evaluation pages and
the dolma CC heads) are ingested into a fresh root and annotated with ``stats`` and ``heuristics``;
the 11 RedPajama signals are the score columns. ``assay fit meta-rater`` learns weights from
``--candidates`` proxies. Then, on the same fixed held-out set and with the same proxy recipe
and initialisation:

* the regressor's error on ``--holdout`` fresh random weight vectors it never saw (trained and
  measured like the candidates; predicted by a regressor refitted from the saved candidates,
  which is deterministic), beside its cross-validated error and a constant baseline;
* held-out loss of proxies trained on the top ``--select-fraction`` by the learned weights, by
  uniform weights (1/11 each), by the published weights of these 11 scores (renormalised), by the
  best candidate, and on ``--random`` uniformly random selections of the same token budget (their
  spread is the noise floor of one proxy run).

Prints one JSON document (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import real_documents  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--holdout", type=int, default=6, help="fresh weight vectors to test the regressor on")
    ap.add_argument("--random", type=int, default=3, help="random selections (seeds)")
    ap.add_argument("--proxy-size", default="0.1M")
    ap.add_argument("--proxy-tokens", default="100K")
    ap.add_argument("--select-fraction", type=float, default=0.1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--norm", default="z")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from click.testing import CliRunner

    from assay.pipelines import meta_rater as fit
    from assay.pipelines.cli import main as cli
    from assay.predictors.meta_rater import WeightRegressor
    from assay.scorers import runtime
    from assay.scorers.meta_rater import PUBLISHED

    report: dict = {"settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "docs.jsonl.gz"
        docs = real_documents()
        with gzip.open(src, "wt", encoding="utf-8") as f:
            for doc_id, text in docs:
                f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
        root = tmp / "root"
        started = time.time()
        for argv in (
            ["ingest", str(src), "--root", str(root)],
            ["annotate", "--root", str(root), "--scorer", "stats", "--scorer", "heuristics"],
        ):
            res = CliRunner().invoke(cli, argv)
            if res.exit_code != 0:
                sys.exit(res.output)
        report["corpus"] = {"documents": len(docs), "chars": sum(len(t) for _, t in docs)}
        report["seconds_annotate"] = round(time.time() - started, 1)
        columns = [c for _, c in PUBLISHED.values() if c.startswith("rp_")]
        options = dict(
            norm=args.norm, select_fraction=args.select_fraction, proxy_size=args.proxy_size,
            proxy_tokens=args.proxy_tokens, seq_len=args.seq_len, vocab=args.vocab, seed=args.seed,
        )  # fmt: skip
        started = time.time()
        doc = fit.fit_meta_rater(
            root, "bench", columns, candidates=args.candidates, quiet=True, device="cpu", **options
        )
        report["seconds_fit"] = round(time.time() - started, 1)
        report["proxy"] = doc["proxy"]
        report["regressor_cv"] = doc["regressor"]
        report["learned_weights"] = {k: round(v, 4) for k, v in doc["weights"].items()}
        losses = np.array([c["heldout_loss"] for c in doc["candidates"]])
        report["candidates"] = {
            "n": len(losses),
            "loss_min": float(losses.min()),
            "loss_mean": float(losses.mean()),
            "loss_max": float(losses.max()),
        }

        started = time.time()
        setup = fit.prepare(root, columns, tmp / "bench.work", device="cpu", **options)
        with runtime.torch_threads(1):
            # the regressor on weight vectors it never saw
            x = np.array([[c["weights"][k] for k in columns] for c in doc["candidates"]])
            reg = WeightRegressor(seed=args.seed).fit(x, losses)
            fresh = [
                fit.candidate_weights(args.seed, args.candidates + j, len(columns))
                for j in range(args.holdout)
            ]
            observed = np.array([setup.train(setup.select(w))["heldout_loss"] for w in fresh])
            predicted = reg.predict(np.array(fresh))
            report["regressor_holdout"] = {
                "n": args.holdout,
                "mae": float(np.abs(predicted - observed).mean()),
                "baseline_mae": float(np.abs(losses.mean() - observed).mean()),  # predicting the mean
                "observed": observed.round(4).tolist(),
                "predicted": predicted.round(4).tolist(),
            }
            published = np.array([PUBLISHED[s][0] for s, (_, c) in PUBLISHED.items() if c in columns])
            strategies = {
                "learned": np.array([doc["weights"][c] for c in columns]),
                "uniform_weights": np.full(len(columns), 1.0 / len(columns)),
                "published_weights": published / published.sum(),
                "best_candidate": x[int(np.argmin(losses))],
            }
            compare = {name: setup.train(setup.select(w))["heldout_loss"] for name, w in strategies.items()}
            rand = [setup.train(setup.select(None, seed=s))["heldout_loss"] for s in range(args.random)]
            compare["random_selection_mean"] = float(np.mean(rand))
            compare["random_selection_std"] = float(np.std(rand))
            compare["random_selection"] = rand
        report["heldout_loss"] = compare
        report["seconds_compare"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

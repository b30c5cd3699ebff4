"""Targets sets: every benchmark format loads, names and splits follow the documented rules."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from assay.corpora.catalog import run_query
from assay.corpora.targets import (
    TARGET_FILE_SCHEMA,
    TARGET_SCHEMA,
    add_targets,
    benchmark_name,
    infer_split,
    list_targets,
    load_targets,
    parse_map,
    read_meta,
)
from assay.pipelines.cli import main

TARGETS = FIXTURES / "targets"
GSM8K = TARGETS / "gsm8k" / "test.jsonl"
MMLU = TARGETS / "mmlu"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("targets") / "root"
    res = CliRunner().invoke(main, ["ingest", str(REPO / "sample" / "speeches"), "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


def rows(table) -> list[dict]:
    return table.to_pylist()


# ---- always-running: the fixtures in tests/fixtures/targets --------------------------------------
def test_gsm8k_fixture_question_and_answer():
    table = load_targets([GSM8K])
    assert table.schema.equals(TARGET_SCHEMA)
    first = rows(table)[0]
    source = json.loads(GSM8K.read_text().splitlines()[0])
    assert first == {
        "benchmark": "gsm8k",  # the stem is only a split word: the folder names the benchmark
        "split": "test",
        "example_id": "test:1",  # no id field: <file stem>:<line>
        "text": source["question"] + " " + source["answer"],
    }
    assert table.num_rows == 5


def test_mmlu_fixture_folder():
    table = load_targets([MMLU])
    got = rows(table)
    assert {r["benchmark"] for r in got} == {"mmlu"} and {r["split"] for r in got} == {"test"}
    assert [r["example_id"] for r in got] == [f"astronomy_test:{i}" for i in range(1, 6)]
    # question + the option the answer letter names (row 3: "C")
    assert (
        got[2]["text"]
        == "Why is the sky blue? Because the atmosphere preferentially scatters short wavelengths."
    )


def test_generic_csv_with_a_column_map():
    path = TARGETS / "gsm8k" / "questions.csv"
    table = load_targets(
        [path], split="test", mapping=parse_map(["question=problem,answer=solution", "id=qid"])
    )
    got = rows(table)
    assert [r["example_id"] for r in got] == ["gsm8k-test-1", "gsm8k-test-2", "gsm8k-test-3"]
    assert got[0]["benchmark"] == "questions"
    assert got[0]["text"] == rows(load_targets([GSM8K]))[0]["text"]
    # text=COL alone
    only = load_targets([path], split="test", benchmark="gsm", mapping=parse_map(["text=problem"]))
    assert rows(only)[0]["text"].startswith("Janet’s ducks") and "####" not in rows(only)[0]["text"]
    assert {r["benchmark"] for r in rows(only)} == {"gsm"}


def test_per_benchmark_cap_is_deterministic():
    both = load_targets([GSM8K, MMLU], per_benchmark=2)
    again = load_targets([MMLU, GSM8K], per_benchmark=2)
    key = sorted((r["benchmark"], r["example_id"]) for r in rows(both))
    assert key == sorted((r["benchmark"], r["example_id"]) for r in rows(again))
    assert [b for b, _ in key].count("gsm8k") == 2 and [b for b, _ in key].count("mmlu") == 2
    # a larger cap keeps what a smaller one kept (lowest hashes first)
    three = {r["example_id"] for r in rows(load_targets([GSM8K], per_benchmark=3))}
    assert {e for b, e in key if b == "gsm8k"} <= three


@pytest.mark.parametrize(
    ("path", "benchmark", "split"),
    [
        ("mmlu/test/anatomy_test.csv", "mmlu", "test"),
        ("mmlu/val/anatomy_val.csv", "mmlu", "val"),
        ("gsm8k/train.jsonl", "gsm8k", "train"),
        ("nq_open/NQ-open.efficientqa.dev.1.1.jsonl", "nq_open_efficientqa", "dev"),
        ("nq_open/NQ-open.dev.jsonl", "nq_open", "dev"),
        ("piqa/valid.jsonl", "piqa", "val"),
        ("piqa/tests.jsonl", "piqa", "test"),
        ("world_knowledge/arc_easy.jsonl", "arc_easy", None),
        ("x/train_test.jsonl", "x", None),  # two splits named: ambiguous
    ],
)
def test_names_and_splits_from_paths(path, benchmark, split):
    assert benchmark_name(Path(path)) == benchmark
    assert infer_split(Path(path)) == split


def test_add_list_and_catalog_views(root):
    info = add_targets(root, "evals", [GSM8K, MMLU])
    assert info["examples"] == 10 and len(info["content_sha256"]) == 64
    stored = pq.read_table(root / "targets" / "evals.parquet")
    assert stored.schema.remove_metadata().equals(TARGET_FILE_SCHEMA)
    assert read_meta(root / "targets" / "evals.parquet")["content_sha256"] == info["content_sha256"]
    assert [p.name for p in (root / "targets").iterdir()] == ["evals.parquet"]  # no temporaries left
    [listed] = list_targets(root)
    assert listed["groups"] == [("gsm8k", "test", 5), ("mmlu", "test", 5)]
    counts = run_query(
        root, "SELECT target_set, benchmark, count(*) AS n FROM targets GROUP BY ALL ORDER BY 2"
    )
    assert counts.to_pylist() == [
        {"target_set": "evals", "benchmark": "gsm8k", "n": 5},
        {"target_set": "evals", "benchmark": "mmlu", "n": 5},
    ]
    assert run_query(root, "SELECT count(*) AS n FROM targets_evals").to_pylist() == [{"n": 10}]
    with pytest.raises(ValueError, match="already exists.*--replace"):
        add_targets(root, "evals", [GSM8K])
    assert add_targets(root, "evals", [GSM8K], replace=True)["examples"] == 5
    res = CliRunner().invoke(main, ["targets", "list", "--root", str(root)])
    assert res.exit_code == 0 and "evals: 5 examples, 1 benchmark(s)" in res.output, res.output


def test_cli_add_with_map(root):
    csv_path = TARGETS / "gsm8k" / "questions.csv"
    args = ["targets", "add", "mapped", str(csv_path), "--split", "test", "--map", "text=problem"]
    res = CliRunner().invoke(main, [*args, "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert "3 examples" in res.output and "contamination:mapped" in res.output


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"paths": [TARGETS / "gsm8k" / "questions.csv"], "split": "test"}, "not an MMLU-style CSV"),
        ({"paths": [GSM8K, GSM8K]}, "already in .*--benchmark"),
        ({"paths": [TARGETS / "nowhere.jsonl"]}, "no such file"),
        ({"paths": [GSM8K], "per_benchmark": 0}, "positive"),
        ({"paths": [GSM8K], "fmt": "mc"}, r"a mc record needs the fields \['query', 'choices', 'gold'\]"),
        ({"paths": [GSM8K], "mapping": {"text": "nosuch"}}, "no field 'nosuch'"),
    ],
)
def test_user_errors_are_clear(kwargs, message):
    paths = kwargs.pop("paths")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_targets(paths, **kwargs)


def test_a_split_is_required_when_the_name_has_none(tmp_path):
    path = tmp_path / "arc_easy.jsonl"
    path.write_text(json.dumps({"query": "Q?", "choices": ["a", "b"], "gold": 1}) + "\n")
    with pytest.raises(ValueError, match="cannot tell the split.*--split"):
        load_targets([path])
    assert rows(load_targets([path], split="test"))[0] == {
        "benchmark": "arc_easy",
        "split": "test",
        "example_id": "arc_easy:1",
        "text": "Q? b",
    }


@pytest.mark.parametrize("items", [["text"], ["name=col"], ["text=a,question=b"], ["id=x"], ["question="]])
def test_bad_maps(items):
    with pytest.raises(ValueError, match="--map"):
        parse_map(items)


# ---- the real benchmark files in ../shared/data/benchmarks, one test per format family ----------
FOUNDRY = "llm_foundry_local_data"


@pytest.mark.parametrize(
    ("rel", "rows_expected", "first_text"),
    [
        (  # mc: query + choices[gold]
            f"{FOUNDRY}/world_knowledge/arc_easy.jsonl",
            2376,
            "Question: Which statement best explains why photosynthesis is the foundation of most food "
            "webs? Sunlight is the source of energy for nearly all ecosystems.",
        ),
        (  # qa: context + answer
            f"{FOUNDRY}/world_knowledge/triviaqa_sm_sub.jsonl",
            3000,
            "Question: Brunswick, Lancastrian and Pearl Pickler are types of which vegetable?\nAnswer: Onion",
        ),
        (  # lm: context + continuation
            f"{FOUNDRY}/world_knowledge/bigbench_qa_wikidata.jsonl",
            20321,
            "The native language of Daniel Schneidermann is French",
        ),
        (  # schema: context_options[gold] + continuation
            f"{FOUNDRY}/language_understanding/winogrande.jsonl",
            1267,
            "Sarah was a much better surgeon than Maria so Maria always got the easier cases.",
        ),
        (  # cot: context + chain_of_thought + answer
            f"{FOUNDRY}/symbolic_problem_solving/svamp.jsonl",
            300,
            "Mary is baking a cake. The recipe calls for 6 cups of flour 8 cups of sugar and 7 cups of salt. "
            "She already put in 5 cups of flour. How many more cups of sugar than cups of salt does she need "
            "to add now? ( 8.0 - 7.0 ) 1",
        ),
    ],
)
def test_llm_foundry_formats(shared_data, rel, rows_expected, first_text):
    table = load_targets([shared_data / "benchmarks" / rel], split="test")
    assert table.num_rows == rows_expected
    assert rows(table)[0]["text"] == first_text


def test_llm_foundry_folder_and_humaneval(shared_data):
    table = load_targets([shared_data / "benchmarks" / FOUNDRY], split="test")
    got = rows(table)
    assert table.num_rows == 49445 and len({r["benchmark"] for r in got}) == 27
    human = [r for r in got if r["benchmark"] == "human_eval_small"]
    assert human[0]["example_id"] == "HumanEval/0"  # the record's own id (task_id)
    assert "def has_close_elements" in human[0]["text"] and "return False" in human[0]["text"]


def test_mmlu_csv_folders(shared_data):
    table = load_targets([shared_data / "benchmarks" / "mmlu"])
    got = rows(table)
    splits = {s: sum(r["split"] == s for r in got) for s in ("dev", "val", "test")}
    assert splits == {"dev": 285, "val": 1542, "test": 14079} and {r["benchmark"] for r in got} == {"mmlu"}
    assert got[0]["example_id"] == "abstract_algebra_dev:1"


def test_gsm8k_and_nq_open(shared_data):
    gsm = rows(load_targets([shared_data / "benchmarks" / "gsm8k"]))
    assert len(gsm) == 7473 + 1319 and gsm[0]["split"] == "test" and gsm[-1]["split"] == "train"
    assert gsm[0]["text"].endswith("#### 18")
    nq = rows(load_targets([shared_data / "benchmarks" / "nq_open" / "NQ-open.dev.jsonl"]))
    assert len(nq) == 3610
    # question + the first listed answer
    assert nq[0] == {
        "benchmark": "nq_open",
        "split": "dev",
        "example_id": "NQ-open.dev:1",
        "text": "when was the last time anyone was on the moon 14 December 1972 UTC",
    }


def test_piqa_with_and_without_labels(shared_data):
    folder = shared_data / "benchmarks" / "piqa"
    valid = rows(load_targets([folder / "valid.jsonl"]))
    labels = (folder / "valid-labels.lst").read_text().split()
    first = json.loads((folder / "valid.jsonl").read_text().splitlines()[0])
    assert len(valid) == 1838 and valid[0]["split"] == "val"
    assert valid[0]["text"] == first["goal"] + " " + first[f"sol{int(labels[0]) + 1}"]
    tests = rows(load_targets([folder / "tests.jsonl"]))  # no labels file: both solutions
    first = json.loads((folder / "tests.jsonl").read_text().splitlines()[0])
    assert tests[0]["text"] == " ".join([first["goal"], first["sol1"], first["sol2"]])


# ---- the options kept for ranked classification --------------------------------------------------
def test_options_of_the_fixtures_and_of_a_file_without_them(root, tmp_path):
    got = rows(load_targets([GSM8K, MMLU], choices=True))
    assert all(r["choices"] is None and r["gold"] is None and r["context"] is None for r in got[:5])
    sky = got[7]  # MMLU row 3: "C"
    assert sky["context"] == "Why is the sky blue?" and len(sky["choices"]) == 4 and sky["gold"] == 2
    assert sky["choices"][2] == "Because the atmosphere preferentially scatters short wavelengths."
    assert sky["continuation"] is None and sky["text"] == got[7]["context"] + " " + sky["choices"][2]
    # a set written before the options existed: null options in the catalog and from read_targets
    (tmp_path / "manifest.json").write_bytes((root / "manifest.json").read_bytes())
    root = tmp_path  # a root of its own, beside the module's
    add_targets(root, "fresh", [MMLU])
    pq.write_table(load_targets([GSM8K]), root / "targets" / "legacy.parquet")
    from assay.corpora.catalog import refresh_catalog
    from assay.corpora.targets import read_targets

    refresh_catalog(root)
    legacy = read_targets(root, "legacy", choices=True)
    assert legacy.schema.equals(TARGET_FILE_SCHEMA) and legacy.column("gold").null_count == 5
    assert read_targets(root, "legacy").schema.equals(TARGET_SCHEMA)
    counts = run_query(
        root,
        "SELECT target_set, count(choices) AS with_options, sum(len(choices)) AS options, "
        "max(gold) AS top FROM targets WHERE target_set IN ('fresh', 'legacy') GROUP BY 1 ORDER BY 1",
    )
    assert counts.to_pylist() == [
        {"target_set": "fresh", "with_options": 5, "options": 20, "top": 3},
        {"target_set": "legacy", "with_options": 0, "options": None, "top": None},
    ]


def test_options_of_the_real_benchmark_formats(shared_data):
    bench = shared_data / "benchmarks"
    foundry = bench / FOUNDRY
    arc, wino = (
        foundry / "world_knowledge" / "arc_easy.jsonl",
        foundry / "language_understanding" / "winogrande.jsonl",
    )
    piqa, mmlu = bench / "piqa" / "valid.jsonl", bench / "mmlu" / "dev" / "astronomy_dev.csv"
    gsm = foundry / "symbolic_problem_solving" / "gsm8k.jsonl"
    table = load_targets([arc, wino, piqa, mmlu, gsm], split="dev", choices=True)
    by = {}
    for r in rows(table):
        by.setdefault(r["benchmark"], []).append(r)
    first = {
        name: json.loads(path.read_text().splitlines()[0])
        for name, path in [("arc", arc), ("wino", wino), ("piqa", piqa)]
    }
    assert {k: by["arc_easy"][0][k] for k in ("context", "choices", "gold", "continuation")} == {
        "context": first["arc"]["query"],
        "choices": first["arc"]["choices"],
        "gold": first["arc"]["gold"],
        "continuation": None,
    }
    assert {k: by["winogrande"][0][k] for k in ("context", "choices", "gold", "continuation")} == {
        "context": None,  # schema: the options are contexts, the continuation is shared
        "choices": first["wino"]["context_options"],
        "gold": first["wino"]["gold"],
        "continuation": first["wino"]["continuation"],
    }
    label = int((bench / "piqa" / "valid-labels.lst").read_text().split()[0])
    assert by["piqa"][0]["context"] == first["piqa"]["goal"] and by["piqa"][0]["gold"] == label
    assert by["piqa"][0]["choices"] == [first["piqa"]["sol1"], first["piqa"]["sol2"]]
    import csv

    row = next(csv.reader(mmlu.open(encoding="utf-8")))
    assert by["mmlu"][0]["context"] == row[0] and by["mmlu"][0]["choices"] == row[1:5]
    assert by["mmlu"][0]["gold"] == "ABCD".index(row[5])
    assert all(r["choices"] is None and r["gold"] is None for r in by["gsm8k"])  # no options
    # every option set holds its gold, and the text is still question + gold answer
    assert all(
        0 <= r["gold"] < len(r["choices"])
        for name in ("arc_easy", "winogrande", "piqa", "mmlu")
        for r in by[name]
    )
    assert rows(load_targets([arc], split="dev"))[0]["text"] == by["arc_easy"][0]["text"]

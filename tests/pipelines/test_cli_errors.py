"""Every error a user can cause prints one clear line and exits non-zero — never a traceback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import REPO

from assay.pipelines.cli import COMMANDS, main

SAMPLE = REPO / "sample"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors") / "root"
    res = CliRunner().invoke(main, ["ingest", str(SAMPLE / "speeches"), "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


# verb -> arguments that are wrong in a way a user can cause; "{root}" is a real corpus root,
# "{nowhere}" a folder that is not one, "{file}" an existing file of the wrong kind.
BAD: dict[str, list[list[str]]] = {
    "ingest": [["{nowhere}/missing.jsonl", "--root", "{nowhere}/r"], ["--root", "{nowhere}/r"]],
    "annotate": [
        ["--root", "{root}", "--scorer", "nosuch"],
        ["--root", "{nowhere}", "--scorer", "stats"],
        ["--root", "{root}", "--scorer", "lm_loss:{nowhere}/no-model"],
        ["--root", "{root}", "--scorer", "dataman:{nowhere}/no-model,template=dataman"],
    ],
    "sql": [["SELECT nosuch FROM docs", "--root", "{root}"], ["SELECT 1", "--root", "{nowhere}"]],
    "status": [["--root", "{nowhere}"]],
    "train fasttext": [
        ["--root", "{nowhere}", "--positive", "true", "--negative", "false", "--out", "{nowhere}/m.bin"]
    ],
    "train betr": [
        ["nosuch", "--root", "{root}"],
        ["x", "--root", "{nowhere}"],
        ["x", "--root", "{root}", "--top", "2"],
    ],
    "train qurating": [
        ["x", "--root", "{nowhere}", "--judgments", "{file}"],
        ["x", "--root", "{root}", "--judgments", "{file}"],
        ["x", "--root", "{root}"],
    ],
    "train rater": [
        ["x", "--root", "{nowhere}", "--target", "chars"],
        ["x", "--root", "{root}", "--target", "nosuch"],
    ],
    "train preselect": [
        ["x", "--root", "{nowhere}", "--models", "lm_a,lm_b", "--capability", "1,2"],
        ["x", "--root", "{root}", "--models", "lm_a,lm_b", "--capability", "1,2"],
        ["x", "--root", "{root}", "--models", "lm_a,lm_b", "--capability", "1,two"],
        ["x", "--root", "{root}", "--models", "lm_a,lm_b"],
        ["x", "--root", "{root}", "--models", "lm_a,lm_b", "--ladder-eval", "{file}"],
    ],
    "facts add": [
        ["x", "{nowhere}/missing.json", "--root", "{root}"],
        ["x", "{trex}", "--root", "{nowhere}"],
    ],
    "facts list": [["--root", "{nowhere}"]],
    "targets add": [
        ["x", "{nowhere}/missing.jsonl", "--root", "{root}"],
        ["x", "{file}", "--root", "{root}", "--split", "test"],
        ["x", "{trex}", "--root", "{nowhere}"],
        ["x", "{trex}", "--root", "{root}", "--map", "text"],
    ],
    "targets list": [["--root", "{nowhere}"]],
    "contamination report": [
        ["nosuch", "--root", "{root}"],
        ["nosuch", "--root", "{nowhere}"],
        ["Bad Name", "--root", "{root}"],
    ],
    "select": [
        ["--recipe", "{nowhere}/missing.yaml", "--name", "m", "--root", "{root}"],
        ["--recipe", "{file}", "--name", "m", "--root", "{root}"],
    ],
    "mixtures list": [["--root", "{nowhere}"]],
    "mixtures show": [["nosuch", "--root", "{root}"]],
    "export": [["nosuch", "--format", "jsonl", "--out", "{nowhere}/out", "--root", "{root}"]],
    "fit ladder": [["--runs", "{nowhere}/*.csv", "--out", "{nowhere}/l.json"]],
    "fit boundary": [["--table", "{file}", "--x", "flops", "--y", "MMLU", "--out", "{nowhere}/b.json"]],
    "fit mixture": [
        ["--mixtures", "{file}", "--losses", "{file}", "--target", "x", "--out", "{nowhere}/m.json"]
    ],
    "fit smi": [["--model", "{nowhere}/pythia-1b.json.gz:1e9", "--out", "{nowhere}/s.json"]],
    "fit transfer": [["--runs", "{nowhere}/*.csv", "--out", "{nowhere}/t.json"]],
    "fit recipes": [
        ["--runs", "{nowhere}/*.csv", "--out", "{nowhere}/r.json"],
        ["--runs", "{file}", "--out", "{nowhere}/r.json"],
    ],
    "fit meta-rater": [
        ["x", "--root", "{nowhere}", "--columns", "a,b"],
        ["x", "--root", "{root}", "--columns", "nosuch,other"],
        ["bad name", "--root", "{root}", "--columns", "a,b"],
    ],
    "predict mixture": [["--fit", "nosuch", "--mixtures", "{file}", "--root", "{root}"]],
    "predict recipes": [["--fit", "nosuch", "--targets", "{file}", "--root", "{root}"]],
    "predict smi": [["--fit", "nosuch", "--counts", "{file}", "--model-size", "1e9", "--root", "{root}"]],
    "mix search": [["--fit", "nosuch", "--domain-tokens", "{file}", "--tokens", "1e9", "--root", "{root}"]],
    "proxy train": [
        ["--root", "{root}", "--sizes", "1Q", "--tokens", "10000", "--out", "{nowhere}/ladder"],
        ["--root", "{root}", "--sizes", "1M", "--tokens", "100", "--out", "{nowhere}/ladder"],
        ["--root", "{nowhere}", "--sizes", "1M", "--tokens", "1M", "--out", "{nowhere}/ladder"],
        ["--root", "{root}", "--mixture", "no", "--sizes", "1M", "--tokens", "1M", "--out", "{nowhere}/o"],
    ],
    "proxy eval": [
        ["{nowhere}", "--root", "{root}", "--targets", "nosuch"],
        ["{nowhere}", "--root", "{nowhere}", "--targets", "evals"],
        ["{file}", "--root", "{root}", "--targets", "Bad Name"],
    ],
    "decide": [["--fit", "nosuch", "--n", "1e9", "--d", "2e10", "--task", "core", "--root", "{root}"]],
    "forecast": [
        ["--root", "{root}", "--n", "7e9", "--d", "2e12"],
        ["--root", "{root}", "--n", "7e9", "--d", "2e12", "--map", "nomapping"],
    ],
    "forecast ladder": [["--fit", "nosuch", "--n", "7e9", "--d", "2e12", "--root", "{root}"]],
    "forecast boundary": [["--fit", "nosuch", "--flops", "1e24", "--root", "{root}"]],
    "forecast cbqa": [["--facts", "pararel", "--model-size", "7e9", "--fit", "nosuch", "--root", "{root}"]],
}


def test_every_verb_is_covered():
    leaves = {p for p in COMMANDS if COMMANDS[p][0]}
    assert leaves == set(BAD)


CASES = [(verb, i) for verb, cases in BAD.items() for i in range(len(cases))]


@pytest.mark.parametrize(("verb", "case"), CASES, ids=[f"{v.replace(' ', '-')}-{i}" for v, i in CASES])
def test_bad_arguments_give_one_clear_line(root, tmp_path, verb, case):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(json.dumps({"not": "a table"}) + "\n")
    nowhere = tmp_path / "not-a-root"
    nowhere.mkdir()
    trex = REPO / "tests" / "fixtures" / "facts" / "trex" / "P17.jsonl"
    args = [a.format(root=root, nowhere=nowhere, file=wrong, trex=trex) for a in BAD[verb][case]]
    result = CliRunner().invoke(main, [*verb.split(" "), *args])
    assert result.exit_code != 0, f"{verb} {args} succeeded:\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"{verb} {args} raised {result.exception!r}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output and len(errors[0]) < 400, result.output
    assert not list(nowhere.iterdir()), f"{verb} wrote into a folder that is not a corpus root"

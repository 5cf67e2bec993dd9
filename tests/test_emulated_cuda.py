"""CUDA semantics on the CPU (tools/emulate_cuda.py): its rules raise where CUDA raises, the record pipeline
runs under it end to end (device cuda, bf16, 1 and 2 ranks, every evaluation with DualClock, EVAL_ONLY=1),
a training step makes exactly one host sync, and device or dtype bugs planted one at a time make it fail."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg
from conftest import ROOT
from tools.emulate_cuda import DeviceMismatch, EmulatedCuda, device_index
from tools.logparse import read_log

torch.set_num_threads(1)

# The record regime on the emulated device (COMPILE=1: torch.compile is the identity there, so the compile
# warm-ups and padded shapes run), DualClock at its defaults, evaluation small enough for seconds.
EMULATED = {"DEVICE": "cuda", "MODEL_DTYPE": "bf16", "COMPILE": "1", "DC_ENABLED": "1", "ITERATIONS": "8",
            "VAL_MAX_TOKENS": "3072"}


# -- the rules ----------------------------------------------------------------------------------------------------


def test_placement_rules_raise_where_cuda_raises():
    with EmulatedCuda():
        device = torch.arange(6, device="cuda")
        host = torch.arange(6)
        assert device.device == torch.device("cuda", 0) and device.is_cuda and not host.is_cuda
        assert torch.cuda.is_available() and torch.cuda.device_count() == 8
        with pytest.raises(DeviceMismatch, match="same device"):
            device + host
        with pytest.raises(DeviceMismatch, match="indices should be either on cpu"):
            host[device]  # N1's pattern: a host table indexed by device tokens
        assert device[host].is_cuda and (device + torch.tensor(2)).is_cuda  # host indices, host 0-dim scalars: fine
        with pytest.raises(TypeError, match="can't convert cuda:0"):
            device.numpy()
        moved = host.to("cuda")
        assert moved.is_cuda and not host.is_cuda and moved.cpu().is_cuda is False
        assert torch.zeros_like(device).is_cuda and device.new_zeros(3).is_cuda and device.float().is_cuda
        parameter = torch.nn.Parameter(torch.ones(3).cuda())
        (parameter * 2).sum().backward()
        assert parameter.grad.is_cuda
        with pytest.raises(DeviceMismatch, match="assigned grad"):
            parameter.grad = torch.ones(3)
    assert not torch.cuda.is_available()  # everything patched is restored on exit


def test_host_syncs_are_counted_where_the_host_waits():
    with EmulatedCuda() as cuda:
        x = torch.randn(10, device="cuda")
        before = cuda.host_syncs
        _ = x + 1, x.sum(), x[x.new_tensor([1, 2]).long()], x.to(torch.bfloat16), torch.tensor(3.0).item()
        assert cuda.host_syncs == before  # device work, host indices, a host scalar: no wait
        x.sum().item(), x.tolist(), bool(x[0] > 0), x.cpu(), x.nonzero(), x[x > 0], torch.unique(x)
        assert cuda.host_syncs == before + 7
        torch.cuda.set_sync_debug_mode("error")
        with pytest.raises(DeviceMismatch, match="synchronizing"):
            x.sum().item()
        torch.cuda.synchronize()
        assert cuda.synchronize_calls == 1


def test_cuda_autocast_policy():
    with EmulatedCuda():
        x = torch.randn(4, 8, device="cuda", dtype=torch.bfloat16)
        weight = torch.randn(16, 8, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert F.linear(x.float(), weight).dtype == torch.bfloat16  # matmuls in bf16
            assert F.rms_norm(x, (8,)).dtype == torch.float32  # norms in fp32
            assert x.sum().dtype == torch.float32 and x.softmax(-1).dtype == torch.float32  # fp32 accumulation
            assert (x * 2).dtype == torch.bfloat16  # everything else as given
        assert F.linear(x, weight.bfloat16()).dtype == torch.bfloat16


def test_byte_tables_count_device_tokens():
    tables = tg.ByteTables(torch.tensor([0, 1, 2, 3]), torch.tensor([False, True, False, True]),
                           torch.tensor([True, False, False, False]))
    tokens = torch.tensor([0, 1, 3, 2, 1])
    expected = tables.target_bytes(tokens)
    with EmulatedCuda():
        counted = tables.target_bytes(tokens.cuda())
        assert counted.is_cuda
        assert torch.equal(counted.cpu(), expected)


# -- the pipeline under the emulation ------------------------------------------------------------------------------


def emulated_run(env: dict, nproc: int, cwd, script: str = "train_gpt.py", args=(), timeout=600):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(tg.ENV_PREFIXES)}
    full_env.update(env, OMP_NUM_THREADS="1")
    command = [sys.executable, str(ROOT / "tools" / "emulate_cuda.py"), str(Path(cwd) / script), *args]
    if nproc > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(command, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def pipeline_env(tiny_env: dict, run_id: str, **overrides) -> dict:
    return {**tiny_env, **EMULATED, "RUN_ID": run_id, **overrides}


def final_line(records):
    return [r for r in records if r.get("event") == "final"][-1]


@pytest.fixture(scope="module")
def emulated_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("emulated")
    (work / "train_gpt.py").write_bytes((ROOT / "train_gpt.py").read_bytes())
    return work


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_the_record_pipeline_runs_on_emulated_cuda(tiny_env, emulated_work, nproc):
    env = pipeline_env(tiny_env, f"emulated{nproc}", ARTIFACT_PATH=str(emulated_work / f"model{nproc}.ptz"))
    out = emulated_run(env, nproc, emulated_work)
    assert out.returncode == 0, out.stderr[-4000:]
    records = read_log(Path(env["LOG_DIR"]) / f"emulated{nproc}.txt")
    assert any(r.get("device") == "cuda" and r.get("model_dtype") == "bfloat16" for r in records)
    assert any(r.get("event") == "looping_enabled" for r in records)  # steps with looping off and on
    evaluations = {r["eval"] for r in records if "eval" in r and r.get("event") != "final"}
    assert evaluations == {"pre_quant", "quantized", "sliding", "ttt"}
    assert any(r.get("event") == "dualclock" for r in records)
    assert final_line(records)["artifact_valid"] == 1
    assert out.stderr.count("emulated_cuda host_syncs:") == nproc
    # The artifact of this run, evaluated alone (EVAL_ONLY=1), gives the same score.
    again = emulated_run(dict(env, EVAL_ONLY="1", RUN_ID=f"again{nproc}"), 1, emulated_work)
    assert again.returncode == 0, again.stderr[-4000:]
    if nproc == 1:
        rerun = final_line(read_log(Path(env["LOG_DIR"]) / f"again{nproc}.txt"))
        assert rerun["val_bpb"] == pytest.approx(final_line(records)["val_bpb"], rel=1e-6)


def test_a_training_step_makes_one_host_sync(tiny_env):
    h = tg.Hyperparameters.from_env(pipeline_env(tiny_env, "syncs", WARMUP_STEPS="0"))
    with EmulatedCuda() as cuda:
        runtime = tg.setup_runtime(h, {})
        model = tg.place_model(tg.GPT(h), runtime)
        loader = tg.TrainLoader(h.data_path, h.train_seq_len, 0, 1, h.seed)
        state = tg.build_train_state(model, h, runtime, loader)
        for looping in (False, True):
            model.looping = looping
            before = cuda.host_syncs
            for _ in range(3):
                tg.agree_on_step(tg.train_step(state, h, runtime), False, runtime)
            assert cuda.host_syncs - before == 3, cuda.sync_sites
        assert all(device_index(p) == 0 for p in model.parameters())


# -- planted bugs: each one, alone, makes the emulated pipeline fail -------------------------------------------------

PLANTED = {
    "N1: byte tables indexed by device tokens": (
        "        base, leading, boundary = (t.to(tokens.device) for t in (self.base_bytes, self.leading_space, "
        "self.is_boundary))",
        "        base, leading, boundary = self.base_bytes, self.leading_space, self.is_boundary", 1),
    "N2: one flat all-reduce promotes the bf16 gradient": (
        "        by_dtype.setdefault(p.dtype, []).append(p)", "        by_dtype.setdefault(0, []).append(p)", 2),
    "batches left on the host": (
        "    return tensor.pin_memory().to(device, non_blocking=True) if torch.device(device).type == \"cuda\" else tensor",
        "    return tensor", 1),
    "Muon's exchange buffer on the host": (
        "                               device=params[0].device)", "                               device=\"cpu\")", 1),
    "DualClock's tables on the host": (
        "        hooks = [DualClock(h, h.vocab_size, runtime.device)] * h.dc_enabled + [NgramTilt(h)] * h.dc_tilt",
        "        hooks = [DualClock(h, h.vocab_size, \"cpu\")] * h.dc_enabled + [NgramTilt(h)] * h.dc_tilt", 1),
    "window starts built on the host": (
        "            starts = host_to_device([w[0] for w in batch] + [batch[0][0]] * pads, device)",
        "            starts = torch.tensor([w[0] for w in batch] + [batch[0][0]] * pads)", 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(PLANTED))
def test_a_planted_device_or_dtype_bug_fails_the_emulated_pipeline(tiny_env, tmp_path, bug):
    original, planted, nproc = PLANTED[bug]
    source = (ROOT / "train_gpt.py").read_text()
    assert source.count(original) == 1, f"the line to plant {bug!r} in has changed"
    (tmp_path / "train_gpt.py").write_text(source.replace(original, planted))
    env = pipeline_env(tiny_env, "planted", ITERATIONS="2", WARMUP_STEPS="0", VAL_MAX_TOKENS="2048",
                       ARTIFACT_PATH=str(tmp_path / "model.ptz"), CHECKPOINT_PATH="")
    out = emulated_run(env, nproc, tmp_path)
    assert out.returncode != 0, f"planted bug not caught: {bug}"
    assert re.search(r"DeviceMismatch|same device|indices should be|assign a gradient|can't convert", out.stderr), \
        out.stderr[-3000:]


@pytest.mark.slow
def test_host_sync_bench_counts_one_per_step_and_none_per_plain_ttt_chunk():
    sys.path.insert(0, str(ROOT / "bench"))
    import host_syncs

    figures = host_syncs.main()
    assert figures["train_step"] == figures["train_step_looping"] == 1
    assert figures["ttt_chunk"] == 0  # scoring and training a chunk never wait for the device
    assert figures["ttt_chunk_dualclock"] > 0  # DualClock's syncs are counted, and reported


@pytest.mark.slow
def test_gpu_check_runs_its_cuda_code_paths_on_emulated_cuda(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(tg.ENV_PREFIXES)}
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "emulate_cuda.py"), str(ROOT / "bench" / "gpu_check.py"),
                          "--rehearse"], env=dict(env, OMP_NUM_THREADS="1"), cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    summary = [line for line in out.stdout.splitlines() if line.startswith("gpu_check ")]
    assert summary and "device:Emulated_CUDA" in summary[-1]
    assert "syncs_per_step:1.0000" in out.stdout  # its own count, through torch.cuda.set_sync_debug_mode


@pytest.mark.slow
def test_the_best_recipe_runs_on_emulated_cuda_on_two_ranks(tiny_env, emulated_work):
    """The frontier's techniques (two lanes, SmearGate, gates, document mask, AWQ-lite, LQER, document TTT)
    under CUDA's rules, with DualClock over document TTT."""
    env = pipeline_env(tiny_env, "best2", RECIPE="best", PARALLEL_START_LAYER="2", GPTQ_PASSTHROUGH_MAX_NUMEL="1024",
                       TRAIN_SEQ_SCHEDULE="16@0.1,32@0.7,64@1.0", SEQ_CHANGE_WARMUP_STEPS="3", COMPRESSOR="brotli",
                       ARTIFACT_PATH=str(emulated_work / "best.ptz"))
    out = emulated_run(env, 2, emulated_work)
    assert out.returncode == 0, out.stderr[-4000:]
    records = read_log(Path(env["LOG_DIR"]) / "best2.txt")
    assert final_line(records)["artifact_valid"] == 1
    assert any("adapter_ms" in r for r in records) and any(r.get("event") == "dualclock" for r in records)

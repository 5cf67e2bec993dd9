"""The GPU's code paths, run on the CPU: bf16 storage with fp32 masters, exact RoPE tables, compiled
graphs that compile once (static shapes) and equal eager, DDP with no_sync equal to one process, the
GPTQ clock, and runtime packages checked before any training. CUDA itself is left to
bench/gpu_check.py and the tests marked `gpu`."""
from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
import time

import pytest
import torch

import train_gpt as tg
from conftest import ROOT, TINY_ENV
from test_end_to_end import torchrun
from tools.logparse import read_log

torch.set_num_threads(1)


def tiny(**overrides) -> tg.Hyperparameters:
    return tg.Hyperparameters.from_env({**TINY_ENV, **overrides})


def perturbed_model(h: tg.Hyperparameters, runtime: tg.Runtime, seed: int = 0) -> tg.GPT:
    torch.manual_seed(seed)
    model = tg.place_model(tg.GPT(h), runtime)
    with torch.no_grad():
        for p in model.parameters():  # make every branch non-trivial (projections start at zero)
            p.add_(0.05 * torch.randn_like(p))
    return model


def flat_tables(vocab_size: int) -> tg.ByteTables:
    return tg.ByteTables(torch.full((vocab_size,), 2), torch.zeros(vocab_size, dtype=torch.bool),
                         torch.zeros(vocab_size, dtype=torch.bool))


# -- precision -------------------------------------------------------------------------------------


def test_the_cpu_path_is_unchanged_fp32_without_autocast():
    runtime = tg.setup_runtime(tiny(), {})
    assert runtime.model_dtype == torch.float32 and runtime.autocast_dtype is None


def test_bf16_storage_keeps_fp32_masters_and_a_bf16_residual_stream():
    h = tiny(MODEL_DTYPE="bf16")
    runtime = tg.setup_runtime(h, {})
    assert runtime.model_dtype == runtime.autocast_dtype == torch.bfloat16
    model = perturbed_model(h, runtime)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes.pop("tok_emb.weight") == torch.bfloat16
    assert set(dtypes.values()) == {torch.float32}  # matrices and control tensors: fp32 masters
    assert model.rotary.dtype == torch.float32
    stream = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: stream.append(out.dtype))
    tokens = torch.randint(0, h.vocab_size, (2, 65), generator=torch.Generator().manual_seed(1))
    with runtime.autocast():
        loss = model.loss(tokens[:, :-1], tokens[:, 1:])
    assert stream and set(stream) == {torch.bfloat16}
    reference = tg.GPT(h)
    reference.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    reference.looping = model.looping
    assert loss.item() == pytest.approx(reference.loss(tokens[:, :-1], tokens[:, 1:]).item(), abs=0.05)


def test_bf16_model_trains_quantizes_and_reloads(tiny_env, tmp_path):
    h = tg.Hyperparameters.from_env({**tiny_env, "MODEL_DTYPE": "bf16", "WARMUP_STEPS": "0"})
    runtime = tg.setup_runtime(h, {})
    model = perturbed_model(h, runtime)
    loader = tg.TrainLoader(h.data_path, h.train_seq_len, 0, 1, h.seed)
    state = tg.build_train_state(model, h, runtime, loader)
    before = model.tok_emb.weight.detach().clone()
    losses = [tg.train_step(state, h, runtime) for _ in range(3)]
    assert all(torch.isfinite(loss) for loss in losses) and not torch.equal(before, model.tok_emb.weight)
    assert model.tok_emb.weight.dtype == torch.bfloat16
    hessians = tg.collect_hessians(model, tg.calibration_batches(loader, h, runtime), runtime)
    quantized = tg.quantize_state_dict(model.state_dict(), hessians, h)
    (tmp_path / "model.ptz").write_bytes(tg.serialize_quantized(quantized))
    reloaded = tg.load_artifact_model(dataclasses.replace(h, artifact_path=str(tmp_path / "model.ptz")), runtime)
    assert reloaded.tok_emb.weight.dtype == torch.bfloat16
    assert torch.allclose(reloaded.tok_emb.weight.float(), model.tok_emb.weight.float(), atol=0.02)


def test_rope_tables_are_exact_fp32_where_bf16_positions_collapse():
    h = tg.Hyperparameters.from_env({})
    model = tg.GPT(h)
    cos, sin = model._rotary(h.train_seq_len)
    assert cos.dtype == torch.float32 and cos.shape == (2048, h.rope_dims // 2)
    positions = torch.arange(2048, dtype=torch.float64)
    inverse = 1.0 / h.rope_base ** (torch.arange(0, h.rope_dims, 2, dtype=torch.float64) / h.rope_dims)
    assert torch.allclose(cos.double(), torch.cos(torch.outer(positions, inverse)), atol=1e-4)
    assert torch.unique(torch.stack([cos, sin], -1).flatten(1), dim=0).shape[0] == 2048
    assert torch.arange(2048).bfloat16().unique().numel() == 641  # what the published bf16 position table holds
    long = tg.GPT(dataclasses.replace(h, eval_seq_len=4096))
    assert long._rotary(4096)[0].shape[0] == 4096 and long._rotary(100)[0].shape[0] == 100


# -- compiled paths: static shapes, one compile per graph ------------------------------------------


@pytest.fixture
def counting_compile(monkeypatch):
    """torch.compile with a backend that counts the graphs it is given and runs them as they are."""
    torch._dynamo.reset()
    graphs = []
    real_compile = torch.compile

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, **dict(kwargs, backend=backend)))
    yield graphs
    torch._dynamo.reset()


def compiling(runtime: tg.Runtime) -> tg.Runtime:
    return dataclasses.replace(runtime, compile=True)


def test_training_compiles_once_per_looping_state(counting_compile):
    """The RoPE tables exist before the first trace: a cache filled inside it cost one more compile."""
    h = tiny()
    runtime = compiling(tg.setup_runtime(h, {}))
    model = perturbed_model(h, runtime)
    step = tg.maybe_compile(model.loss, runtime)
    tokens = torch.randint(0, h.vocab_size, (2, 65))
    for looping in (False, False, False, True, True, True, False):
        model.looping = looping
        step(tokens[:, :-1], tokens[:, 1:]).backward()
    assert len(counting_compile) == 2


def run_all_evaluations(h, runtime, model, tokens) -> list[float]:
    scorer = tg.WindowScorer(model, h, runtime)
    tables = flat_tables(h.vocab_size)
    results = [tg.evaluate_windows("plain", scorer, tokens, tables, h.eval_seq_len, h, runtime),
               tg.evaluate_windows("sliding", scorer, tokens, tables, h.eval_stride, h, runtime),
               tg.evaluate_ttt(scorer, tokens, tables, h, runtime)]
    return [r.val_loss for r in results]


def test_evaluation_graphs_compile_once_whatever_the_batch(counting_compile):
    # 13 windows of 64 with stride 16 per chunk of 200 tokens, batches of 8: last batches padded.
    h = tiny(TTT_CHUNK_TOKENS="200", VAL_BATCH_SEQS="8", TTT_BATCH_SEQS="4")
    runtime = compiling(tg.setup_runtime(h, {}))
    model = perturbed_model(h, runtime)
    model.looping = True
    generator = torch.Generator().manual_seed(2)
    run_all_evaluations(h, runtime, model, torch.randint(0, h.vocab_size, (11 * 64 + 1,), generator=generator))
    # hidden (8, 64); statistics of the stride block (8, 16), of the first window's rest (1, 48) and of
    # whole windows (8, 64); the TTT loss (rows, 64).
    assert len(counting_compile) == 5
    run_all_evaluations(h, runtime, model, torch.randint(0, h.vocab_size, (11 * 64 + 1,), generator=generator))
    assert len(counting_compile) == 5  # no recompile


@pytest.mark.slow
def test_compiled_evaluation_equals_eager():
    """Inductor on the CPU: sliding, plain and score-first TTT (which trains) through the compiled
    scorer and TTT loss give the eager figures."""
    torch._dynamo.reset()
    h = tiny(TTT_CHUNK_TOKENS="256", VAL_BATCH_SEQS="8")
    runtime = tg.setup_runtime(h, {})
    tokens = torch.randint(0, h.vocab_size, (9 * 64 + 1,), generator=torch.Generator().manual_seed(3))
    figures = {}
    for name, run_time in (("eager", runtime), ("compiled", compiling(runtime))):
        model = perturbed_model(h, run_time)
        model.looping = True
        figures[name] = run_all_evaluations(h, run_time, model, tokens)
    assert figures["compiled"] == pytest.approx(figures["eager"], rel=1e-4)
    torch._dynamo.reset()


def test_compiled_newton_schulz_equals_eager():
    torch._dynamo.reset()
    runtime = compiling(tg.setup_runtime(tiny(), {}))
    compiled = tg.maybe_compile(tg.newton_schulz, runtime)
    for shape in ((64, 32), (32, 64)):
        gradient = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
        assert torch.allclose(compiled(gradient, 5), tg.newton_schulz(gradient, 5), atol=1e-4)
    torch._dynamo.reset()


# -- DDP: gradients reduced during the backward, equal to one process --------------------------------

DDP_WORKER = '''
import dataclasses, os, sys
import torch
sys.path.insert(0, {root!r})
import train_gpt as tg

h = tg.Hyperparameters.from_env()
runtime = tg.setup_runtime(h)
if os.environ["COMPILED"] == "1":  # torch.compile(DDP(model)) as on CUDA; aot_eager: AOTAutograd and DDP's graph
    real_compile = torch.compile  # splitting at its buckets, without inductor's compile time
    torch.compile = lambda fn, **kwargs: real_compile(fn, **dict(kwargs, backend="aot_eager"))
    runtime = dataclasses.replace(runtime, compile=True)
torch.manual_seed(0)
model = tg.place_model(tg.GPT(h), runtime)
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))


class FixedBatches:
    """Global step s reads micro-batches 8s..8s+7; each rank its consecutive share of them."""

    def __init__(self):
        generator = torch.Generator().manual_seed(1)
        self.batches = [torch.randint(0, h.vocab_size, (2, h.train_seq_len + 1), generator=generator)
                        for _ in range(8 * 3)]
        share = 8 // runtime.world_size
        self.mine = [b for i, b in enumerate(self.batches) if (i % 8) // share == runtime.rank]

    def next_batch(self, count, device):
        assert count == 2
        return self.mine.pop(0)

    def reset(self):
        pass


state = tg.build_train_state(model, h, runtime, FixedBatches())
assert (state.ddp is not None) == runtime.distributed
losses = [tg.agree_on_step(tg.train_step(state, h, runtime), False, runtime)[0] for _ in range(3)]
torch.save({{"state": model.state_dict(), "losses": losses}}, os.environ["OUT"] + f"_{{runtime.rank}}.pt")
runtime.barrier()
runtime.leave()  # as main() does: without it gloo aborted a rank's exit now and then (SIGABRT, seen in CI)
'''


@pytest.mark.parametrize("compiled", ["0", "1"])
def test_ddp_training_on_two_ranks_equals_one_process(tmp_path, compiled):
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER.format(root=str(ROOT)))
    results = {}
    for nproc in (1, 2):
        env = dict(TINY_ENV, WARMUP_STEPS="0", OUT=str(tmp_path / f"world{nproc}"), COMPILED=compiled)
        out = torchrun(env, nproc, tmp_path, script=worker)
        assert out.returncode == 0, out.stderr[-4000:]
        results[nproc] = [torch.load(tmp_path / f"world{nproc}_{rank}.pt") for rank in range(nproc)]
    one, (rank0, rank1) = results[1][0], results[2]
    for name, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][name]), f"ranks disagree on {name}"
        assert torch.allclose(value, one["state"][name], atol=2e-5, rtol=1e-4), name
    assert rank0["losses"] == pytest.approx(one["losses"], rel=1e-5)


# -- GPTQ clock and runtime packages ----------------------------------------------------------------


def test_gptq_clock_stops_before_serialization_and_only_rank_0_packs(tiny_env, tmp_path, monkeypatch):
    h = tg.Hyperparameters.from_env(tiny_env)
    runtime = tg.setup_runtime(h, {})
    model = perturbed_model(h, runtime)
    loader = tg.TrainLoader(h.data_path, h.train_seq_len, 0, 1, h.seed)
    real_serialize = tg.serialize_quantized
    monkeypatch.setattr(tg, "serialize_quantized", lambda quantized: (time.sleep(1.5), real_serialize(quantized))[1])
    accounting = tg.quantize_and_pack(model, loader, h, runtime, tg.Logger(h, runtime), code_bytes=1234)
    line = [r for r in read_log(tmp_path / "logs" / "test.txt") if r.get("event") == "artifact"][-1]
    assert line["serialize_time_ms"] >= 1500 > accounting["gptq_time_ms"] == line["gptq_time_ms"]
    assert accounting["hessian_time_ms"] == line["hessian_time_ms"] >= 0  # logged apart from GPTQ, both counted
    assert accounting["model_bytes"] == (tmp_path / "model.ptz").stat().st_size
    assert accounting["artifact_bytes"] == 1234 + accounting["model_bytes"]

    def never(*args, **kwargs):
        raise AssertionError("only rank 0 quantizes and serializes")

    monkeypatch.setattr(tg, "serialize_quantized", never)
    monkeypatch.setattr(tg, "quantize_state_dict", never)
    other = dataclasses.replace(runtime, rank=1)
    assert tg.quantize_and_pack(model, loader, h, other, tg.Logger(h, other), 1234)["model_bytes"] == \
        accounting["model_bytes"]


def test_a_missing_runtime_package_fails_before_training(tiny_env, tmp_path):
    """brotli is needed only once training is over: its absence must stop the run at the start."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "brotli.py").write_text('raise ImportError("No module named brotli (shadowed by the test)")\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(tg.ENV_PREFIXES)}
    env.update(tiny_env, PYTHONPATH=str(shadow), OMP_NUM_THREADS="1")
    began = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0 and "missing package(s): brotli" in out.stderr
    assert "pip install -r requirements.txt" in out.stderr
    assert not (tmp_path / "logs" / "test.txt").exists() and not (tmp_path / "model.ptz").exists()
    assert time.perf_counter() - began < 60


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_muon_exchange_is_bf16():
    assert tg.newton_schulz(torch.randn(64, 32, device="cuda"), 5).dtype == torch.bfloat16


def test_document_ttt_compiles_in_its_warm_up_and_never_again(counting_compile, monkeypatch):
    """Document TTT on the compiled path: its adapter hooks are registered once, so each (rows, chunk, window)
    shape compiles in the warm-up on zeros, and a second whole evaluation compiles nothing; eager agrees."""
    from test_eval_causality import DOCUMENT_ENV, long_documents_stream

    h = tiny(**{**DOCUMENT_ENV, "VOCAB_SIZE": "64", "TTT_PHASES": "1", "TTT_PHASE_PREFIX_DOCS": "4"})
    runtime = compiling(tg.setup_runtime(h, {}))
    tokens = long_documents_stream(h.vocab_size)
    model = perturbed_model(h, runtime)
    model.looping = True
    timed_warm_up, after_warm_up = tg.timed_warm_up, []
    monkeypatch.setattr(tg, "timed_warm_up", lambda runtime, warm_up: (
        timed_warm_up(runtime, warm_up), after_warm_up.append(len(counting_compile)))[0])
    first = tg.evaluate_documents(copy.deepcopy(model), tokens, flat_tables(h.vocab_size), h, runtime)
    graphs = len(counting_compile)
    assert graphs == after_warm_up[0] > 0 and first.extra["compile_ms"] > 0  # nothing compiled in the timed pass
    second = tg.evaluate_documents(copy.deepcopy(model), tokens, flat_tables(h.vocab_size), h, runtime)
    assert len(counting_compile) == graphs and second.val_loss == first.val_loss
    eager = tg.evaluate_documents(copy.deepcopy(model), tokens, flat_tables(h.vocab_size), h, tg.setup_runtime(h, {}))
    assert eager.val_loss == pytest.approx(first.val_loss, rel=1e-6)

"""What a record run will do, measured on one GPU in at most 8 minutes: one command, no network.

Why: a record run costs an 8xH100 pod for 20 minutes, and it is void if training does not fit 588 s or
the scored evaluation 600 s. This check runs the record code paths on one GPU, with data it builds
itself from the embedded standard-library corpus (SentencePiece 8192, real text):
  1. training: the record configuration at world size 1 (8 accumulation micro-steps of 48 x 2048
     tokens), compiled and warmed up with and without depth recurrence, then timed steps of each,
     with the host syncs per step counted (torch.cuda.set_sync_debug_mode);
  2. evaluation: the score-first TTT pass (compiled scoring and TTT training) over >= 1 M validation
     tokens with DualClock at its defaults, then DualClock replayed at DC_SHARP_ORDERS=8 on the same
     scored chunks;
  2. GPTQ on that trained model, as quantize_and_pack calls it: the Hessians over one rank's share of the
     calibration batches at world size 8 (collect_hessians), then GPTQ of every matrix (quantize_state_dict),
     each timed (hessian_s, gptq_s);
  3. one score-first TTT training step at the shape each of 8 GPUs runs (a 32,768-token chunk holds 16
     sequences of 2,048, split 8 ways: 2 rows per rank), timed (ttt_step_ms);
  4. evaluation: the score-first TTT pass (compiled scoring and TTT training) over >= 1 M validation
     tokens with DualClock at its defaults, then DualClock replayed at DC_SHARP_ORDERS=8 on the same
     scored chunks;
  5. mix_logprobs on CUDA against the CPU on that stream (max |delta log p|);
  6. a 2-process smoke of train_gpt.py's main() at tiny sizes on this one GPU (DIST_BACKEND=gloo: NCCL cannot
     put two ranks on one device; bf16, eager), through training, GPTQ, the artifact and every evaluation with
     DualClock, so that distributed device and dtype bugs show on real CUDA (smoke_2rank:ok|fail).
It prints each part's figures, the assumptions of its projections to 8xH100 (588 s of training,
40,540,160 validation tokens), then one summary line:

  gpu_check device:<name> compile_s:... step_ms:... train_tok_per_s:... projected_steps_8gpu:...
  eval_tok_per_s:... projected_eval_s_8gpu:... dc_chunk_ms:... dc_cuda_vs_cpu:... peak_mib:...
  hessian_s:... gptq_s:... ttt_step_ms:... smoke_2rank:ok

Needs PyTorch, numpy, sentencepiece and brotli (the smoke writes an artifact), not FlashAttention-3 (SDPA
when it is missing, and the import error says why). Parts past the budget are skipped (n/a). Without CUDA it
rehearses itself at tiny sizes on the CPU (about a minute), prints n/a for what needs CUDA, and exits 0 unless
a part failed; --rehearse does the same on a GPU.

    python bench/gpu_check.py                 # on the GPU machine, from the repository root
    python bench/gpu_check.py --rehearse      # tiny sizes anywhere
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402
from data.build import build_dataset  # noqa: E402
from data.corpus import stdlib_documents  # noqa: E402

VALIDATION_TOKENS = 40_540_160  # the SP8192 FineWeb validation stream
TRAIN_SECONDS = 588.0  # 600 s less the GPTQ reserve
EVALUATION_SECONDS = 600.0
GPUS = 8
LOOPING_SHARE = 0.65  # depth recurrence switches on at 35 % of the training time
SUMMARY_KEYS = ("compile_s", "step_ms", "train_tok_per_s", "projected_steps_8gpu", "eval_tok_per_s",
                "projected_eval_s_8gpu", "dc_chunk_ms", "dc_cuda_vs_cpu", "peak_mib", "hessian_s", "gptq_s",
                "ttt_step_ms", "smoke_2rank",
                "doc_ttt_us_per_token")
# The record configuration is the dataclass defaults; a rehearsal shrinks the sizes, not the code paths.
REHEARSAL = {"NUM_LAYERS": "4", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "MLP_MULT": "2",
             "ROPE_DIMS": "8", "LOOP_START": "1", "LOOP_END": "2", "NUM_LOOPS": "1", "PARALLEL_START_LAYER": "3",
             "XSA_LAST_N": "4", "TRAIN_SEQ_LEN": "128", "EVAL_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "4096",
             "EVAL_STRIDE": "32", "VAL_BATCH_SEQS": "16", "TTT_CHUNK_TOKENS": "2048", "TTT_BATCH_SEQS": "8",
             "TTT_EPOCHS": "1"}
# The 2-process smoke: every phase of main() at tiny sizes, eager (COMPILE=0: compiling twice would cost minutes),
# the precision regime of the device (bf16 on CUDA), every evaluation, DualClock on.
SMOKE = {**REHEARSAL, "MODEL_DIM": "64", "TRAIN_SEQ_LEN": "64", "EVAL_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "1024",
         "ITERATIONS": "6", "WARMUP_STEPS": "1", "MAX_WALLCLOCK_SECONDS": "0", "GPTQ_RESERVE_SECONDS": "0",
         "TRAIN_LOG_EVERY": "2", "EVAL_STRIDE": "16", "VAL_BATCH_SEQS": "8", "VAL_MAX_TOKENS": "4096",
         "TTT_CHUNK_TOKENS": "1024", "TTT_BATCH_SEQS": "4", "GPTQ_CALIBRATION_BATCHES": "2", "COMPILE": "0",
         "DIST_BACKEND": "gloo", "EVAL_DIAGNOSTICS": "1", "DC_ENABLED": "1", "RUN_ID": "smoke_2rank"}
SMOKE_NEEDS_S = 90.0  # started only if the budget has this much left


def say(line: str) -> None:
    print(line, flush=True)


class Clock:
    """Seconds since the start, and whether the 8-minute budget still has `needed` seconds left."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, needed_s: float) -> bool:
        return self.elapsed() + needed_s <= self.budget_s


def build_data(out: Path, rehearse: bool) -> dict:
    """Tokenizer and shards from the embedded corpus (with the standard library's source: ~3 M tokens),
    the first 40 % of the documents as validation (>= 1 M tokens at vocab 8192)."""
    documents = stdlib_documents(include_source=not rehearse)
    documents = documents[:400] if rehearse else documents
    vocab_size = 512 if rehearse else 8192
    return build_dataset(documents, out, vocab_size=vocab_size, val_documents=int(len(documents) * 0.4),
                         name="gpu_check", threads=max(1, min(8, os.cpu_count() or 1)), sentence_limit=300_000,
                         log=lambda line: say(f"data {line}"))


def check_config(data: dict, rehearse: bool, args) -> tg.Hyperparameters:
    env = {"DATA_PATH": str(data["dataset_dir"]), "TOKENIZER_PATH": str(data["tokenizer_path"]),
           "VOCAB_SIZE": str(data["vocab_size"]), "WARMUP_STEPS": str(args.warmup_steps),
           "LOG_DIR": str(args.out / "logs"), "RUN_ID": "gpu_check",
           "VAL_MAX_TOKENS": str(args.eval_tokens), **(REHEARSAL if rehearse else {})}
    return tg.Hyperparameters.from_env(env)


def training_step(state: tg.TrainState, ema: tg.EMA, h, runtime) -> None:
    """One step as train() runs it: the step, the EMA, the one agreed host sync."""
    loss = tg.train_step(state, h, runtime)
    ema.update(state.model)
    mean_loss, non_finite, _ = tg.agree_on_step(loss, False, runtime)
    if non_finite:
        raise FloatingPointError(f"non-finite loss {mean_loss}")


def timed_steps(state: tg.TrainState, ema: tg.EMA, h, runtime, steps: int) -> float:
    """Milliseconds per training step."""
    runtime.synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        training_step(state, ema, h, runtime)
    runtime.synchronize()
    return 1000.0 * (time.perf_counter() - began) / steps


def host_syncs(function, runtime) -> int | None:
    """How many synchronizing CUDA calls `function` makes (torch.cuda.set_sync_debug_mode); None on CPU."""
    if not runtime.is_cuda:
        function()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def check_training(h, runtime, train_steps: int) -> tuple[dict, tg.GPT]:
    model = tg.place_model(tg.GPT(h), runtime)
    loader = tg.TrainLoader(h.data_path, h.train_seq_len, runtime.rank, runtime.world_size, h.seed)
    state = tg.build_train_state(model, h, runtime, loader)
    say(f"train model_params:{tg.count_parameters(model)} micro_steps:{8 // runtime.world_size} "
        f"sequences_per_micro_step:{tg.sequences_per_micro_step(h, runtime)[1]} attn_impl:{runtime.attn_impl} "
        f"compile:{int(runtime.compile)} model_dtype:{str(runtime.model_dtype).replace('torch.', '')}")
    began = time.perf_counter()
    tg.warm_up_and_restore(state, h, runtime, tg.Logger(h, runtime))
    runtime.synchronize()
    figures = {"train_compile_s": time.perf_counter() - began}
    ema = tg.EMA(model, h.ema_decay)
    for looping in (False, True):
        model.looping = looping
        figures[f"step_ms_looping_{int(looping)}"] = timed_steps(state, ema, h, runtime, train_steps)
    figures["syncs_per_step"] = host_syncs(lambda: [training_step(state, ema, h, runtime) for _ in range(2)], runtime)
    if figures["syncs_per_step"] is not None:
        figures["syncs_per_step"] /= 2
    figures["step_ms"] = ((1 - LOOPING_SHARE) * figures["step_ms_looping_0"]
                          + LOOPING_SHARE * figures["step_ms_looping_1"])
    figures["train_tok_per_s"] = h.train_batch_tokens / figures["step_ms"] * 1000
    say("train " + " ".join(f"{k}:{format_value(v)}" for k, v in figures.items()))
    model.looping = h.num_loops > 0
    return figures, model


class KeepChunks:
    """A hook that keeps every scored chunk, for replaying DualClock on it."""

    def __init__(self):
        self.chunks: list[tg.ChunkScores] = []

    def on_chunk(self, chunk: tg.ChunkScores) -> None:
        self.chunks.append(chunk)


def check_evaluation(h, runtime, model, clock: Clock) -> tuple[dict, list]:
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size))
    tokens = tg.load_validation_tokens(h.data_path, h.eval_seq_len, h.val_max_tokens)
    dualclock, kept = tg.DualClock(h, h.vocab_size, runtime.device), KeepChunks()
    scorer = tg.WindowScorer(model, h, runtime)
    result = tg.evaluate_ttt(scorer, tokens, tables, h, runtime, hooks=[dualclock, kept])
    compile_ms = result.extra["compile_ms"]
    dc_ms = result.dualclock["dc_time_ms"]
    network_s = (result.eval_time_ms - compile_ms - dc_ms) / 1000
    figures = {"eval_tokens": result.tokens, "chunks": len(kept.chunks), "eval_compile_s": compile_ms / 1000,
               "eval_network_s": network_s, "eval_tok_per_s": result.tokens / network_s,
               "dc_chunk_ms": dc_ms / len(kept.chunks), "neural_bpb": result.dualclock["neural_bpb"],
               "mixed_bpb": result.dualclock["mixed_bpb"]}
    # Host syncs of a 3-chunk pass without DualClock: a few at its end, none per chunk (read nothing back).
    short = tokens[:3 * h.ttt_chunk_tokens + h.eval_seq_len + 1]
    figures["syncs_per_3_chunk_pass"] = host_syncs(lambda: tg.evaluate_ttt(scorer, short, tables, h, runtime), runtime)
    if clock.allows(3 * dc_ms / 1000 + 30):  # the same chunks, the sharp experts at orders 8
        replay = tg.DualClock(dataclasses.replace(h, dc_sharp_orders=8), h.vocab_size, runtime.device)
        for chunk in kept.chunks:
            replay.on_chunk(chunk)
        figures["dc_chunk_ms_orders_8"] = 1000 * replay.seconds / len(kept.chunks)
        figures["mixed_bpb_orders_8"] = replay.log_fields()["mixed_bpb"]
    else:
        figures["dc_chunk_ms_orders_8"] = None
    say("eval " + " ".join(f"{k}:{format_value(v)}" for k, v in figures.items()))
    return figures, kept.chunks


def check_document_ttt(h, runtime, model, clock: Clock) -> float | None:
    """Document TTT (TTT_MODE=document at #1874's LoRA settings, no phases) on the same model and stream: microseconds
    per scored target of its adapter scoring, compile excluded. A projection of its share of the 600 s on 8 GPUs
    (cost per target x the validation targets / 8) assumes the stream's document lengths are FineWeb's; the phases'
    SGD runs at the stream TTT's training speed and DualClock at dc_chunk_ms per chunk."""
    if not clock.allows(120):
        return None
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size))
    tokens = tg.load_validation_tokens(h.data_path, h.eval_seq_len, h.val_max_tokens)
    result = tg.evaluate_documents(model, tokens, tables, dataclasses.replace(h, ttt_mode="document", ttt_phases=0),
                                   runtime)
    per_token = 1000 * result.extra["adapter_ms"] / result.tokens
    say(f"document_ttt tokens:{result.tokens} adapter_ms:{result.extra['adapter_ms']} compile_ms:"
        f"{result.extra['compile_ms']} bpb:{result.val_bpb:.4f} projected_adapter_s_8gpu:"
        f"{per_token * VALIDATION_TOKENS / GPUS / 1e6:.0f}")
    return per_token


def check_mixture(h, chunks: list, runtime) -> float | None:
    """max |log p_cuda - log p_cpu| of mix_logprobs over the scored stream (defaults)."""
    if not runtime.is_cuda:
        return None
    start, end = chunks[0].target_start, chunks[-1].target_end
    tokens = chunks[0].tokens[start:end + 1]
    network = {key: torch.cat([getattr(c, key) for c in chunks]) for key in ("nll", "entropy", "top_prob")}
    mixed = {}
    for device in ("cuda", "cpu"):
        stats = {k: network[k].to(device) for k in ("entropy", "top_prob")}
        began = time.perf_counter()
        mixed[device] = tg.mix_logprobs(tokens.to(device), network["nll"].to(device), h, h.ttt_chunk_tokens, stats)[0]
        say(f"mixture device:{device} tokens:{tokens.numel() - 1} seconds:{time.perf_counter() - began:.2f}")
    return float((mixed["cuda"].cpu() - mixed["cpu"]).abs().max())


def check_gptq(h, runtime, model: tg.GPT, loader: tg.TrainLoader, rehearse: bool) -> dict:
    """quantize_and_pack's two calls, timed apart on the trained model: collect_hessians over the calibration
    batches one rank reads at world size 8 (ceil(64 / 8) micro-batches; the all-reduce is not modelled), then
    quantize_state_dict of every tensor (rank 0's whole job today). At rehearsal sizes every matrix is below the
    fp16 threshold (65,536 elements), so the rehearsal lowers it to put its matrices through GPTQ."""
    one_rank_of_8 = dataclasses.replace(runtime, world_size=GPUS)
    if rehearse:
        h = dataclasses.replace(h, gptq_passthrough_max_numel=1024)
    runtime.synchronize()
    began = time.perf_counter()
    hessians = tg.collect_hessians(model, tg.calibration_batches(loader, h, one_rank_of_8), runtime)
    runtime.synchronize()
    figures = {"hessian_s": time.perf_counter() - began, "hessians": len(hessians),
               "calibration_batches": math.ceil(h.gptq_calibration_batches / GPUS)}
    began = time.perf_counter()
    quantized = tg.quantize_state_dict(model.state_dict(), hessians, h)
    runtime.synchronize()
    figures["gptq_s"] = time.perf_counter() - began
    figures["int_matrices"] = sum(entry["kind"] == "int" for entry in quantized.values())
    say("gptq " + " ".join(f"{k}:{format_value(v)}" for k, v in figures.items()))
    return figures


def ttt_rows_per_rank(h, world_size: int = GPUS) -> int:
    """The rows of each rank's TTT step at `world_size`, as evaluate_stream sizes its ChunkTrainer: a chunk's
    whole sequences (at most TTT_BATCH_SEQS per step) split across the ranks."""
    return max(1, math.ceil(min(h.ttt_chunk_tokens // h.eval_seq_len, h.ttt_batch_seqs) / world_size))


def check_ttt_step(h, runtime, model: tg.GPT, steps: int, project: bool) -> dict:
    """One TTT training step (forward, backward, gradient sum, clip, SGD) at the per-rank shape of 8 GPUs, run
    here at world size 1 by ChunkTrainer.train_on_chunk on a chunk of exactly that many sequences, one epoch.
    The weights are put back afterwards."""
    rows = ttt_rows_per_rank(h)
    trainer = tg.ChunkTrainer(model, dataclasses.replace(h, ttt_epochs=1), runtime, rows=rows)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(h.vocab_size, (rows * h.eval_seq_len + 1,), generator=generator).to(runtime.device)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    began = time.perf_counter()
    trainer.warm_up(trainer.starts(0, rows * h.eval_seq_len))
    trainer.train_on_chunk(tokens, 0, rows * h.eval_seq_len, h.ttt_lr)  # the optimizer's state, untimed
    runtime.synchronize()
    figures = {"ttt_rows_per_rank": rows, "ttt_warmup_s": time.perf_counter() - began}
    figures["ttt_step_ms"] = timed(lambda: trainer.train_on_chunk(tokens, 0, rows * h.eval_seq_len, h.ttt_lr),
                                   runtime, steps)
    if project:  # every chunk but the last trains, TTT_EPOCHS times; the gradient all-reduce is not modelled
        chunks = math.ceil(VALIDATION_TOKENS / h.ttt_chunk_tokens)
        figures["ttt_steps_8gpu"] = (chunks - 1) * h.ttt_epochs * math.ceil(
            h.ttt_chunk_tokens // h.eval_seq_len / h.ttt_batch_seqs)
        figures["ttt_train_s_8gpu"] = figures["ttt_steps_8gpu"] * figures["ttt_step_ms"] / 1000
    model.load_state_dict(saved)
    model.zero_grad(set_to_none=True)
    say("ttt " + " ".join(f"{k}:{format_value(v)}" for k, v in figures.items()))
    return figures


def timed(function, runtime, repeats: int) -> float:
    """Milliseconds per call."""
    runtime.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        function()
    runtime.synchronize()
    return 1000.0 * (time.perf_counter() - began) / repeats


def check_smoke(data: dict, runtime, out: Path, timeout_s: float) -> str:
    """train_gpt.py's main() on 2 processes of this device (torch.distributed.run, gloo), tiny sizes: 'ok' if
    both ranks exit 0 and the log ends with the final line, else 'fail' (and the output's tail is printed)."""
    work = out / "smoke_2rank"
    work.mkdir(parents=True, exist_ok=True)
    fields = {f.name.upper() for f in dataclasses.fields(tg.Hyperparameters)}
    env = {k: v for k, v in os.environ.items() if k not in fields and not k.startswith(tg.ENV_PREFIXES)}
    env.update(SMOKE, DATA_PATH=str(data["dataset_dir"]), TOKENIZER_PATH=str(data["tokenizer_path"]),
               VOCAB_SIZE=str(data["vocab_size"]), DEVICE=runtime.device.type, LOG_DIR=str(work / "logs"),
               ARTIFACT_PATH=str(work / "model.ptz"), CHECKPOINT_PATH=str(work / "model.pt"), OMP_NUM_THREADS="1")
    # Under tools/emulate_cuda.py (which sets EMULATED_CUDA=1) the ranks run on the same emulated device.
    emulated = [str(ROOT / "tools" / "emulate_cuda.py")] if os.environ.get("EMULATED_CUDA") == "1" else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *emulated,
               str(ROOT / "train_gpt.py")]
    began = time.perf_counter()
    try:
        result = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=timeout_s)
        output, returncode = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as expired:
        output, returncode = f"{expired.stdout or ''}{expired.stderr or ''}\ntimed out after {timeout_s:.0f} s", -1
    log = work / "logs" / f"{SMOKE['RUN_ID']}.txt"
    final = [line for line in log.read_text().splitlines() if line.startswith("final ")] if log.exists() else []
    status = "ok" if returncode == 0 and final else "fail"
    say(f"smoke_2rank status:{status} returncode:{returncode} seconds:{time.perf_counter() - began:.1f} "
        f"device:{runtime.device.type} backend:gloo " + (final[-1] if final else ""))
    if status == "fail":
        say("smoke_2rank output (tail):\n" + output[-4000:])
    return status


def projections(train: dict, evaluation: dict, runtime) -> tuple[dict, list[str]]:
    """8xH100 figures from the one-GPU measurements, and the assumptions they rest on."""
    steps = TRAIN_SECONDS / (train["step_ms"] / GPUS / 1000)
    chunks_full = math.ceil(VALIDATION_TOKENS / max(1, evaluation["eval_tokens"] / evaluation["chunks"]))
    network_s = VALIDATION_TOKENS / evaluation["eval_tok_per_s"] / GPUS
    dc_s = evaluation["dc_chunk_ms"] * chunks_full / 1000
    eval_s = evaluation["eval_compile_s"] + network_s + dc_s
    assumptions = [
        f"training: {GPUS} GPUs each run one of the 8 micro-steps, so a step takes step_ms/{GPUS}; the gradient "
        "all-reduce (DDP, overlapped with the backward) and the Muon exchange are not modelled: an upper bound",
        f"training: {TRAIN_SECONDS:.0f} s, {1 - LOOPING_SHARE:.0%} of it without depth recurrence "
        f"({train['step_ms_looping_0']:.1f} ms/step here), {LOOPING_SHARE:.0%} with ({train['step_ms_looping_1']:.1f})",
        f"evaluation: the scored path of a record run (EVAL_DIAGNOSTICS=0): compile "
        f"({evaluation['eval_compile_s']:.1f} s, as measured here), the network's scoring and TTT over "
        f"{VALIDATION_TOKENS:,} tokens split {GPUS} ways ({network_s:.1f} s), DualClock on every rank for each of "
        f"{chunks_full:,} chunks ({dc_s:.1f} s, not split)",
        f"device: measured on {device_name(runtime)}; an H100 SXM is taken as equally fast (an H200's faster "
        "memory may flatter memory-bound phases)",
    ]
    if runtime.attn_impl != "fa3":
        assumptions.append("attention: FlashAttention-3 was not importable here, SDPA measured; a pod with FA3 "
                           "is faster")
    return {"projected_steps_8gpu": steps, "projected_eval_s_8gpu": eval_s}, assumptions


def device_name(runtime) -> str:
    return torch.cuda.get_device_name(runtime.device).replace(" ", "_") if runtime.is_cuda else "cpu"


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        for bound, form in ((1, ".6g"), (100, ".4f"), (1e5, ".1f")):
            if abs(value) < bound:
                return f"{value:{form}}"
        return f"{value:.0f}"
    return str(value)


def summary_line(runtime, values: dict) -> str:
    return "gpu_check device:" + device_name(runtime) + "".join(
        f" {key}:{format_value(values.get(key))}" for key in SUMMARY_KEYS)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny sizes, even on a GPU")
    parser.add_argument("--out", type=Path, help="folder for the built data and logs (default: a temporary one)")
    parser.add_argument("--train-steps", type=int, help="timed steps per looping state (default 10; 3 rehearsing)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="compile and warm-up steps per looping state")
    parser.add_argument("--eval-tokens", type=int, help="validation tokens scored (default 1,048,576; 16,384)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip optional parts past this (default 480)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    clock = Clock(args.budget_s)
    rehearse = args.rehearse or not torch.cuda.is_available()
    args.train_steps = args.train_steps or (3 if rehearse else 10)
    args.eval_tokens = args.eval_tokens or (16_384 if rehearse else 1_048_576)
    with tempfile.TemporaryDirectory() as scratch:
        args.out = args.out or Path(scratch)
        torch.set_num_threads(1 if rehearse else torch.get_num_threads())
        data = build_data(args.out, rehearse)
        h = check_config(data, rehearse, args)
        runtime = tg.setup_runtime(h, {})
        say(f"device {device_name(runtime)} torch:{torch.__version__} rehearsal:{int(rehearse)} "
            f"fa3:{int(tg.HAS_FA3)} elapsed_s:{clock.elapsed():.1f}"
            + (f" fa3_unavailable:{json.dumps(tg.FA3_ERROR)}" if tg.FA3_ERROR else ""))
        train, model = check_training(h, runtime, args.train_steps)
        loader = tg.TrainLoader(h.data_path, h.train_seq_len, runtime.rank, runtime.world_size, h.seed + 1)
        gptq = check_gptq(h, runtime, model, loader, rehearse)
        ttt = check_ttt_step(h, runtime, model, args.train_steps, project=runtime.is_cuda and not rehearse)
        evaluation, difference, document_us, failed = {}, None, None, []
        try:
            evaluation, chunks = check_evaluation(h, runtime, model, clock)
            difference = check_mixture(h, chunks, runtime) if clock.allows(60) else None
            document_us = check_document_ttt(h, runtime, model, clock)
        except Exception:  # a crash here is a finding: report it, run the smoke, fail at the end
            say("eval failed:\n" + traceback.format_exc())
            failed.append("eval")
        del model
        if runtime.is_cuda:
            torch.cuda.empty_cache()
        smoke = (check_smoke(data, runtime, args.out, timeout_s=max(60.0, args.budget_s - clock.elapsed() + 60))
                 if clock.allows(SMOKE_NEEDS_S) else None)
        if smoke == "fail":
            failed.append("smoke_2rank")
    values = {**train, **evaluation, **gptq, **ttt, "dc_cuda_vs_cpu": difference, "smoke_2rank": smoke,
              "doc_ttt_us_per_token": document_us}
    if runtime.is_cuda:  # compile and memory figures mean something on CUDA only (the CPU runs eager)
        values["compile_s"] = train["train_compile_s"] + evaluation.get("eval_compile_s", 0.0)
        values["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if runtime.is_cuda and not rehearse and "eval" not in failed:
        projected, assumptions = projections(train, evaluation, runtime)
        values.update(projected)
        for line in assumptions:
            say(f"assumption: {line}")
        say(f"verdict training_steps_8gpu:{projected['projected_steps_8gpu']:.0f} (published: ~4,550) "
            f"eval_s_8gpu:{projected['projected_eval_s_8gpu']:.0f} of {EVALUATION_SECONDS:.0f}")
    elif rehearse:
        say(f"assumption: a rehearsal runs the code paths at tiny sizes on {device_name(runtime)}; its timings "
            "are of those sizes, and nothing is projected to 8xH100 (n/a)")
    else:
        say("assumption: the evaluation failed (above), so nothing is projected to 8xH100 (n/a)")
    say(f"elapsed_s:{clock.elapsed():.1f}" + (f" failed:{','.join(failed)}" if failed else ""))
    say(summary_line(runtime, values))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

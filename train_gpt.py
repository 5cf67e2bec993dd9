"""Parameter Golf: train, quantize, pack and evaluate a 16 MB language model in one file.

Launch: `torchrun --standalone --nproc_per_node=8 train_gpt.py` (every knob an environment
variable; the defaults reproduce the record stack of SPEC.md). Hard cap: 2,500 lines.

Contents (the order a run executes them; `grep -n '^# [A-Z]' train_gpt.py`):
  HYPERPARAMETERS  the frozen config dataclass, parsed from the environment
  DEVICE           device, dtype, backend and distributed set-up in one helper
  DATA             shard format, the shuffled training loader, the validation stream
  MODEL            11 layers, depth recurrence, parallel residuals, XSA, U-Net skips
  OPTIMIZER        MuonEq-R for matrices, AdamW for the embedding and control tensors
  TRAINING         wall-clock schedule, warm-up and restore, EMA
  GPTQ             Hessians, GPTQ with SDClip, int6/int8
  ARTIFACT         byte-shuffle + brotli, atomic writes, code bytes of the packed copy
  EVALUATION       BPB tables, plain / sliding / score-first TTT evaluation
  DUALCLOCK        causal PPM experts mixed with the network at evaluation time
  MAIN             the orchestrator
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import glob
import io
import json
import lzma
import math
import os
import platform
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

try:  # FlashAttention-3 (Hopper); the SDPA path is the reference and the CPU path.
    from flash_attn_interface import flash_attn_func as flash_attn_3_func

    HAS_FA3 = True
except ImportError:
    flash_attn_3_func = None
    HAS_FA3 = False

# -----------------------------------------------------------------------------
# HYPERPARAMETERS
# Every knob is a field; its environment variable is the field name in upper case.
# Published knobs keep their published names; defaults are the record run's, so a bare
# `torchrun` reproduces it. Unknown variables with one of our prefixes are an error.
# -----------------------------------------------------------------------------

# A variable starting with one of these and naming no field is a typo: fail loudly.
ENV_PREFIXES = (
    "TRAIN_", "VAL_", "EVAL_", "MUON_", "ADAM_", "EMBED_", "TIED_", "MATRIX_", "SCALAR_",
    "GPTQ_", "TTT_", "DC_", "PPM_", "EMA_", "QK_", "ROPE_", "LOOP_", "MODEL_", "ATTN_",
    "MLP_", "WARMUP_", "WARMDOWN_", "ARTIFACT_", "LOGIT_", "XSA_", "PARALLEL_",
)


@dataclass(frozen=True)
class Hyperparameters:
    # Paths and run identity.
    data_path: str = "./data/datasets/fineweb10B_sp8192"
    tokenizer_path: str = "./data/tokenizers/fineweb_8192_bpe.model"
    run_id: str = ""
    seed: int = 1337
    log_dir: str = "logs"
    artifact_path: str = "final_model.int6.ptz"
    # Device: auto picks CUDA when present; ATTN_IMPL and COMPILE select the fast kernels.
    device: str = "auto"
    attn_impl: str = "auto"
    compile: bool = True
    # Model (SPEC §3).
    vocab_size: int = 8192
    num_layers: int = 11
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: int = 4
    rope_base: float = 10000.0
    rope_dims: int = 16
    qk_gain_init: float = 5.25
    logit_softcap: float = 30.0
    tied_embed_init_std: float = 0.005
    parallel_start_layer: int = 7
    xsa_last_n: int = 11
    loop_start: int = 3
    loop_end: int = 5
    num_loops: int = 2
    enable_looping_at: float = 0.35
    # Training (SPEC §4).
    iterations: int = 20000
    train_batch_tokens: int = 786432
    train_seq_len: int = 2048
    max_wallclock_seconds: float = 600.0
    gptq_reserve_seconds: float = 12.0
    warmdown_frac: float = 0.72
    min_lr: float = 0.0
    warmup_steps: int = 20
    train_log_every: int = 100
    val_loss_every: int = 0
    matrix_lr: float = 0.022
    tied_embed_lr: float = 0.03
    scalar_lr: float = 0.02
    muon_momentum: float = 0.99
    muon_momentum_warmup_start: float = 0.92
    muon_momentum_warmup_steps: int = 1500
    muon_backend_steps: int = 5
    muon_wd: float = 0.095
    embed_wd: float = 0.085
    adam_wd: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.3
    ema_decay: float = 0.9965
    # GPTQ and artifact (SPEC §5).
    gptq_calibration_batches: int = 64
    gptq_block_size: int = 128
    gptq_damp: float = 0.01
    matrix_bits: int = 6
    embed_bits: int = 8
    matrix_clip_sigmas: float = 12.85
    embed_clip_sigmas: float = 20.0
    artifact_limit_bytes: int = 16_000_000
    # Evaluation (SPEC §6).
    eval_seq_len: int = 2048
    eval_stride: int = 64
    val_batch_seqs: int = 32
    val_max_tokens: int = 0
    sliding_window_enabled: bool = True
    ttt_enabled: bool = True
    ttt_lr: float = 0.005
    ttt_epochs: int = 3
    ttt_chunk_tokens: int = 32768
    ttt_momentum: float = 0.9
    ttt_batch_seqs: int = 32
    ttt_grad_clip: float = 1.0
    # DualClock (SPEC §7): PPM experts mixed with the network during score-first TTT.
    dc_enabled: bool = False
    dc_order_g: int = 6
    dc_order_l: int = 8
    dc_buckets_g: int = 2048
    dc_buckets_l: int = 2048
    dc_alpha_g: float = 1.0
    dc_alpha_l: float = 0.5
    dc_eps_uni: float = 0.25
    dc_share: float = 0.005
    dc_prior: tuple = (0.90, 0.07, 0.03)
    dc_doc_reset: bool = True
    dc_hash: str = "legacy"
    dc_local_reset: str = "chunk"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Hyperparameters":
        """Build the config from `env` (default os.environ); reject unknown prefixed names."""
        env = os.environ if env is None else env
        names = {f.name.upper(): f for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIXES) and k not in names)
        if unknown:
            raise ValueError(f"unknown environment variable(s) {unknown}: not a field of Hyperparameters "
                             f"(typo? the variable is the field name in upper case)")
        values = {}
        for upper, f in names.items():
            if upper in env:
                values[f.name] = _parse_field(f, env[upper])
        h = cls(**values)
        h.validate()
        return h

    def validate(self) -> None:
        """Reject settings that would fail later, far from their cause."""
        checks = [
            (self.model_dim % self.num_heads == 0, "MODEL_DIM must be divisible by NUM_HEADS"),
            (self.num_heads % self.num_kv_heads == 0, "NUM_HEADS must be divisible by NUM_KV_HEADS"),
            (self.rope_dims % 2 == 0 and self.rope_dims <= self.model_dim // self.num_heads,
             "ROPE_DIMS must be even and at most the head dimension"),
            (0 <= self.loop_start <= self.loop_end < self.num_layers, "need 0 <= LOOP_START <= LOOP_END < NUM_LAYERS"),
            (self.eval_stride >= 1 and self.eval_stride <= self.eval_seq_len, "need 1 <= EVAL_STRIDE <= EVAL_SEQ_LEN"),
            (self.device in ("auto", "cuda", "cpu"), "DEVICE must be auto, cuda or cpu"),
            (self.attn_impl in ("auto", "fa3", "sdpa"), "ATTN_IMPL must be auto, fa3 or sdpa"),
            (self.dc_hash in ("legacy", "mixed"), "DC_HASH must be legacy or mixed"),
            (self.dc_local_reset in ("chunk", "doc", "none"), "DC_LOCAL_RESET must be chunk, doc or none"),
            (len(self.dc_prior) == 3 and abs(sum(self.dc_prior) - 1) < 1e-6, "DC_PRIOR must be 3 weights summing to 1"),
            (2 <= self.matrix_bits <= 8 and 2 <= self.embed_bits <= 8, "MATRIX_BITS and EMBED_BITS must be in 2..8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_log(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _parse_field(f: dataclasses.Field, text: str):
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            if text not in ("0", "1"):
                raise ValueError("booleans are 0 or 1")
            return text == "1"
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "tuple":
            return tuple(float(x) for x in text.split(","))
        return text
    except ValueError as e:
        raise ValueError(f"{f.name.upper()}={text!r}: cannot parse as {kind} ({e})") from None


# -----------------------------------------------------------------------------
# DEVICE
# One helper settles device, dtype, backend and distributed set-up; everything else
# reads the Runtime it returns. CPU: gloo, fp32, SDPA, eager. CUDA: NCCL, bf16 autocast.
# -----------------------------------------------------------------------------


@dataclass
class Runtime:
    device: torch.device
    rank: int
    local_rank: int
    world_size: int
    distributed: bool
    autocast_dtype: torch.dtype | None  # None: run in fp32 without autocast (CPU)
    attn_impl: str  # "fa3" or "sdpa", resolved
    compile: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(h: Hyperparameters, env: Mapping[str, str] | None = None) -> Runtime:
    env = os.environ if env is None else env
    distributed = "RANK" in env and "WORLD_SIZE" in env
    rank = int(env.get("RANK", 0))
    local_rank = int(env.get("LOCAL_RANK", 0))
    world_size = int(env.get("WORLD_SIZE", 1))
    if 8 % world_size != 0:
        raise ValueError(f"WORLD_SIZE={world_size} must divide 8 (gradient accumulation is 8 // WORLD_SIZE)")
    want_cuda = h.device == "cuda" or (h.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but torch.cuda.is_available() is False")
    if want_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo", device_id=device if want_cuda else None)
    attn_impl = h.attn_impl
    if attn_impl == "auto":
        attn_impl = "fa3" if (want_cuda and HAS_FA3) else "sdpa"
    if attn_impl == "fa3" and not (want_cuda and HAS_FA3):
        raise RuntimeError("ATTN_IMPL=fa3 needs CUDA and the flash_attn_interface package")
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world_size,
                   distributed=distributed, autocast_dtype=torch.bfloat16 if want_cuda else None,
                   attn_impl=attn_impl, compile=h.compile and want_cuda)


def maybe_compile(fn, runtime: Runtime, **kwargs):
    """The one dispatch point for torch.compile: eager unless COMPILE=1 on CUDA."""
    return torch.compile(fn, **kwargs) if runtime.compile else fn


def all_reduce(t: Tensor, runtime: Runtime, op=None) -> Tensor:
    if runtime.distributed:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


# -----------------------------------------------------------------------------
# DATA
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# MODEL
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# OPTIMIZER
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# TRAINING
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# GPTQ
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# ARTIFACT
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# EVALUATION
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# DUALCLOCK
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# MAIN
# -----------------------------------------------------------------------------


if __name__ == "__main__":
    main()

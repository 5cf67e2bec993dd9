"""Throughput and table memory of the DualClock PPM pass alone, at the published
sizes (V=8192, global orders 1-6 and local orders 1-8, 2048 buckets each), in the published
mode (legacy hash, local reset per chunk) and the corrected one (mixed hash, reset at BOS).

    python bench/bench_ppm.py                       # 2,097,152 synthetic tokens, one thread
    python bench/bench_ppm.py --tokens 500000 --shard data/datasets/fineweb10B_sp8192/fineweb_val_000000.bin

Every rank runs the whole PPM pass on every chunk, so the time for the 40,540,160-token
validation stream (validation_stream_s, projected from the steady rate) does not shrink with
more GPUs. The stream needs at least two chunks.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402

VALIDATION_TOKENS = 40_540_160
MODES = {
    "published": {"DC_EXPERTS": "hashed", "DC_HASH": "legacy", "DC_LOCAL_RESET": "chunk"},
    "corrected": {"DC_EXPERTS": "hashed", "DC_HASH": "mixed", "DC_LOCAL_RESET": "doc"},
}


def synthetic_stream(num_tokens: int, vocab_size: int, seed: int) -> np.ndarray:
    """Documents of about 800 tokens (BOS first) drawn from a Zipf-like unigram, with a fifth
    of each document copied from earlier in it, so that contexts recur as in web text."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(2, vocab_size)
    weights = 1.0 / (ranks - 1.0 + 2.7) ** 1.1
    tokens = rng.choice(ranks, size=num_tokens, p=weights / weights.sum())
    starts = np.cumsum(rng.geometric(1 / 800, size=num_tokens // 100 + 2))
    starts = np.concatenate([[0], starts[starts < num_tokens]])
    tokens[starts] = tg.BOS_ID
    for start in rng.choice(num_tokens - 64, size=num_tokens // 160, replace=False):
        back = rng.integers(16, 400)  # repeat a 32-token span from a little earlier
        if start >= back:
            tokens[start:start + 32] = tokens[start - back:start - back + 32]
    return tokens


def shard_stream(path: str, num_tokens: int) -> np.ndarray:
    header = np.fromfile(path, dtype="<i4", count=256)
    if header[0] != 20240520:
        raise ValueError(f"{path}: not a token shard (magic {header[0]})")
    tokens = np.fromfile(path, dtype="<u2", count=int(header[2]), offset=1024).astype(np.int64)
    if tokens.size < num_tokens:
        raise ValueError(f"{path} holds {tokens.size} tokens, fewer than --tokens {num_tokens}")
    return tokens[:num_tokens]


def run_mode(tokens: torch.Tensor, settings: dict, chunk_tokens: int) -> tuple[list[float], float]:
    """Seconds of each chunk and the largest table MiB seen after a chunk."""
    h = tg.Hyperparameters.from_env(settings)
    bank = tg.ExpertBank(h, h.vocab_size, tokens.device)
    seconds, table_mib = [], 0.0
    for start, end in tg.chunk_bounds(tokens.numel() - 1, chunk_tokens):
        began = time.perf_counter()
        bank.score_and_update(tokens, start, end)
        if tokens.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
        table_mib = max(table_mib, bank.table_bytes() / 2**20)
    return seconds, table_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2_097_152, help="stream length (default 2M)")
    parser.add_argument("--chunk-tokens", type=int, default=32768, help="TTT chunk (published 32768)")
    parser.add_argument("--shard", default="", help="read tokens from this shard instead of synthesizing")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="published,corrected")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab_size = tg.Hyperparameters().vocab_size
    if args.shard:
        stream = shard_stream(args.shard, args.tokens)
    else:
        stream = synthetic_stream(args.tokens, vocab_size, args.seed)
    tokens = torch.from_numpy(stream).to(args.device)
    print(f"stream:{'shard' if args.shard else 'synthetic'} tokens:{tokens.numel()} "
          f"documents:{int((tokens == tg.BOS_ID).sum())} chunk_tokens:{args.chunk_tokens} "
          f"device:{args.device} threads:{torch.get_num_threads()}")
    for mode in args.modes.split(","):
        seconds, table_mib = run_mode(tokens, MODES[mode], args.chunk_tokens)
        # The first chunk also allocates and first touches the dense tables, once per run.
        steady_rate = (tokens.numel() - 1 - args.chunk_tokens) / sum(seconds[1:])
        projected = seconds[0] + (VALIDATION_TOKENS - args.chunk_tokens) / steady_rate
        print(f"mode:{mode} tokens_per_s:{(tokens.numel() - 1) / sum(seconds):.0f} "
              f"steady_tokens_per_s:{steady_rate:.0f} first_chunk_ms:{seconds[0] * 1000:.0f} "
              f"seconds:{sum(seconds):.2f} peak_table_mib:{table_mib:.1f} validation_stream_s:{projected:.1f}")
    print(f"peak_rss_mib:{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()

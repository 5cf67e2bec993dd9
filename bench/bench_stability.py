"""How far one float32 ulp on one network NLL moves the DualClock mixture, now and at a baseline commit.

Why: a score that depends on float rounding is not reproducible across GPUs, rank counts or bf16/fp32
passes. This moves the network NLL of one target (position --position) up by one float32 ulp and prints,
per chunk size, the relative change of the total mixed NLL and the largest change of any other target's
(nats), for the current train_gpt.py and for the one at --baseline (the Adam-trained gate), on a prefix
of a stored network pass (tests/test_dualclock_learning.py checks the same on synthetic streams).

    python bench/bench_stability.py --pass bench/out/network_pass.pt
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import train_gpt as tg  # noqa: E402
from bench_mixture import baseline_module  # noqa: E402

CASES = [(1, 3000), (64, 59_000), (4096, 0)]  # (chunk tokens, targets: a prefix of the pass; 0: all of it)


def moved_by_one_ulp(module, network: dict, chunk_tokens: int, targets: int, position: int) -> tuple[float, float]:
    h = module.Hyperparameters.from_env({})
    tokens, nll = network["tokens"][:targets + 1], network["nll"][:targets].float()
    stats = {k: network[k][:targets] for k in ("entropy", "top_prob")}
    mixed, _ = module.mix_logprobs(tokens, nll, h, chunk_tokens, stats)
    moved = nll.clone()
    moved[position] = torch.nextafter(moved[position], torch.tensor(math.inf))
    changed, _ = module.mix_logprobs(tokens, moved, h, chunk_tokens, stats)
    difference = (changed - mixed).abs()
    difference[position] = 0
    return abs(changed.sum().item() - mixed.sum().item()) / abs(mixed.sum().item()), difference.max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="network_pass", type=Path, default=ROOT / "bench/out/network_pass.pt")
    parser.add_argument("--baseline", default="1f6ca59")
    parser.add_argument("--position", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    network = torch.load(args.network_pass)
    modules = [("current", tg), (args.baseline, baseline_module(args.baseline))]
    print(f"One float32 ulp up on the network NLL of target {args.position} of `{args.network_pass.name}`.\n")
    print("| code | chunk tokens | targets | total moved (relative) | largest other target moved (nats) | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for chunk_tokens, targets in CASES:
        targets = targets or network["nll"].numel()
        for name, module in modules:
            began = time.perf_counter()
            total, largest = moved_by_one_ulp(module, network, chunk_tokens, targets, args.position)
            print(f"| {name} | {chunk_tokens} | {targets:,} | {total:.1e} | {largest:.1e} | {time.perf_counter() - began:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()

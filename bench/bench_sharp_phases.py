"""Where one chunk of the sharp DualClock experts spends its time, phase by phase.

Why: the sharp pass is slower than the published one; this says which part to attack next.
The experts first run over --warm-chunks chunks of the stream (tables at a realistic size),
then the next chunk is scored --repeats times from a copy of that state, with timers around
the phases (a phase's time includes the phases it calls: `find` is inside `chunk keys`).

    python bench/bench_sharp_phases.py --pass bench/out/network_pass.pt
    python bench/bench_sharp_phases.py --tokens 1000000          # synthetic stream (bench_ppm's)
    python bench/bench_sharp_phases.py --pass ... --env DC_SHARP_ORDERS=4

One CPU thread; prints one markdown table, milliseconds per chunk.
"""
from __future__ import annotations

import argparse
import collections
import copy
import sys
import time
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401  (Adam imports it on first use: keep that out of the timings)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402
from bench.bench_ppm import synthetic_stream  # noqa: E402

PHASES = [  # (row name, owner, attribute)
    ("chunk pairs: per-order sort, find, runs", tg.ChunkPairs, "__init__"),
    ("  table find-or-insert (one call per row)", tg.PairTable, "find"),
    ("  per-order sort", tg.Runs, "sort"),
    ("  table growth (when it happens)", tg.PairTable, "_grow"),
    ("statistics (both experts)", tg.ChunkPairs, "statistics"),
    ("  document runs (split)", tg.Runs, "split"),
    ("  run sums (continuations)", tg.Runs, "sums"),
    ("  document counts", tg.PairTable, "document_counts"),
    ("table update", tg.ChunkPairs, "update"),
    ("escape chain (scoring and learning)", tg.SharpExperts, "logprobs"),
    ("escape learning (learn steps)", tg, "learn"),
    ("match expert", tg.MatchExpert, "score"),
    ("gate features", tg, "expert_features"),
]


def timed(owner, name: str, seconds: dict) -> None:
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name, owner] += time.perf_counter() - began

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="network_pass", type=Path, help="a stored network pass (its tokens)")
    parser.add_argument("--tokens", type=int, default=1_000_000, help="synthetic stream length without --pass")
    parser.add_argument("--chunk-tokens", type=int, default=32768)
    parser.add_argument("--warm-chunks", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE DualClock settings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    h = tg.Hyperparameters.from_env(dict(item.split("=", 1) for item in args.env))
    if args.network_pass:
        tokens = torch.load(args.network_pass)["tokens"]
    else:
        tokens = torch.from_numpy(synthetic_stream(args.tokens, h.vocab_size, seed=0))
    start = args.warm_chunks * args.chunk_tokens
    if start + args.chunk_tokens >= tokens.numel():
        raise SystemExit(f"the stream holds {tokens.numel()} tokens: too few for {args.warm_chunks} warm chunks + 1")
    experts = tg.SharpExperts(h, h.vocab_size, torch.device("cpu"))
    for chunk_start, chunk_end in tg.chunk_bounds(start, args.chunk_tokens):
        experts.score_and_update(tokens, chunk_start, chunk_end)
    seconds = collections.defaultdict(float)
    for _, owner, name in PHASES:
        timed(owner, name, seconds)
    total = 0.0
    for _ in range(args.repeats):
        state = copy.deepcopy(experts)
        began = time.perf_counter()
        state.score_and_update(tokens, start, start + args.chunk_tokens)
        total += time.perf_counter() - began
    table = experts.table
    print(f"chunk {args.warm_chunks} of {args.chunk_tokens} targets after {start:,} tokens; table "
          f"{table.size:,} entries in {table.keys.numel():,} slots; settings: {' '.join(args.env) or 'defaults'}\n")
    print("| phase | ms per chunk |\n|---|---:|")
    for row, owner, name in PHASES:
        print(f"| {row} | {seconds[name, owner] * 1000 / args.repeats:.1f} |")
    print(f"| **whole chunk** | **{total * 1000 / args.repeats:.1f}** |")


if __name__ == "__main__":
    main()

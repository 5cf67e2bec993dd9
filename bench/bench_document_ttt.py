"""Stream TTT against document TTT, each alone, with DualClock and with the n-gram tilt, on one artifact.

Why: the frontier's evaluation (document LoRA TTT with phased global SGD) changes what a mixer sees; the table
puts the network, DualClock and the records' tilt side by side on the same pass of each evaluation. Each mode is
one `EVAL_ONLY=1` run of train_gpt.py with DualClock and the tilt as hooks beside each other (the network's
figure, DualClock's and the tilt's come from the same pass) and EVAL_DUMP_PATH, so that bench_mixture.py can
replay any mixer offline on either pass.

    python bench/bench_document_ttt.py --preset demo --artifact /tmp/demo.ptz        # the CPU demo's model
    python bench/bench_document_ttt.py --preset holdout                              # bench/out/network_pass_holdout.ptz
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tools.logparse import read_log  # noqa: E402

# The CPU demo's model (run.sh's demo_env) and its evaluation.
DEMO_ENV = {
    "DATA_PATH": "./data/datasets/stdlib_sp1024", "TOKENIZER_PATH": "./data/tokenizers/stdlib_1024_bpe.model",
    "VOCAB_SIZE": "1024", "NUM_LAYERS": "6", "MODEL_DIM": "128", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "MLP_MULT": "3",
    "ROPE_DIMS": "16", "LOOP_START": "2", "LOOP_END": "3", "NUM_LOOPS": "1", "PARALLEL_START_LAYER": "4",
    "XSA_LAST_N": "6", "TRAIN_SEQ_LEN": "256", "EVAL_SEQ_LEN": "256", "EVAL_STRIDE": "64", "VAL_BATCH_SEQS": "16",
    "VAL_MAX_TOKENS": "32768", "TTT_CHUNK_TOKENS": "4096", "TTT_BATCH_SEQS": "8", "TTT_EPOCHS": "1",
}


def preset_env(preset: str) -> dict[str, str]:
    if preset == "demo":
        return dict(DEMO_ENV)
    import network_pass

    dataset, tokenizer = network_pass.build_corpus(ROOT / "bench" / "out" / "data", holdout=True)  # network_pass.py's
    return dict(network_pass.BENCH_ENV, DATA_PATH=str(dataset), TOKENIZER_PATH=str(tokenizer), VAL_MAX_TOKENS="32768",
                TTT_EPOCHS="1", TTT_CHUNK_TOKENS="4096", TTT_BATCH_SEQS="8", EVAL_STRIDE="64")


def run_mode(env: dict, mode: str, out: Path) -> dict:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("TTT_", "DC_", "EVAL_"))}
    run_env.update(env, TTT_MODE=mode, EVAL_ONLY="1", DC_ENABLED="1", DC_TILT="1", EVAL_DIAGNOSTICS="0",
                   SLIDING_WINDOW_ENABLED="0", DEVICE="cpu", COMPILE="0", OMP_NUM_THREADS="1", RUN_ID=f"{mode}",
                   LOG_DIR=str(out / "logs"), EVAL_DUMP_PATH=str(out / f"pass_{mode}.pt"), CHECKPOINT_PATH="")
    done = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], env=run_env, cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    records = read_log(out / "logs" / f"{mode}.txt")
    line = [r for r in records if r.get("event") == "dualclock"][-1]
    ttt = [r for r in records if r.get("eval") == "ttt" and r.get("event") != "final"][-1]
    return dict(line, **{k: ttt[k] for k in ttt if k.endswith("_ms") or k == "tokens"})


def replay(dump: Path, env: dict, chunk_tokens: int) -> float:
    """DualClock replayed offline on a dumped pass (its evaluation stream), the stream cut into chunks of
    chunk_tokens targets instead of the pass's own chunks (a batch per chunk for document TTT)."""
    import torch
    import train_gpt as tg

    saved = torch.load(dump)
    h = tg.Hyperparameters.from_env({"VOCAB_SIZE": env["VOCAB_SIZE"]})
    mixed, _ = tg.mix_logprobs(saved["tokens"], saved["nll"], h, chunk_tokens,
                               {k: saved[k] for k in ("entropy", "top_prob")})
    return float(-mixed.sum() / math.log(2) / saved["target_bytes"].sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["demo", "holdout"], default="demo")
    parser.add_argument("--artifact", type=Path, default=ROOT / "bench" / "out" / "network_pass_holdout.ptz")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "document_ttt")
    parser.add_argument("--phase-prefix-docs", type=int, default=0, help="0: half the validation documents")
    parser.add_argument("--replay-chunk-tokens", type=int, default=4096, help="the offline replay's chunks")
    args = parser.parse_args(argv)
    env = dict(preset_env(args.preset), ARTIFACT_PATH=str(args.artifact.resolve()))
    if not args.phase_prefix_docs:  # the records' 2,000 of ~50,000 documents would be none of a short stream
        import torch
        import train_gpt as tg

        h = tg.Hyperparameters.from_env({k: v for k, v in env.items() if k in ("EVAL_SEQ_LEN", "VAL_MAX_TOKENS")})
        tokens = tg.load_validation_tokens(str(ROOT / env["DATA_PATH"]), h.eval_seq_len, h.val_max_tokens)
        args.phase_prefix_docs = max(3, int((tokens == tg.BOS_ID).sum()) // 2)
        del torch
    env["TTT_PHASE_PREFIX_DOCS"] = str(args.phase_prefix_docs)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {mode: run_mode(env, mode, args.out) for mode in ("stream", "document")}
    print(f"preset {args.preset}, {rows['stream']['tokens']:,} targets, phases over {args.phase_prefix_docs} documents")
    print("| evaluation | network | + DualClock | + tilt | DualClock gain | tilt gain | DualClock s per 1 M tokens | "
          "evaluation s |\n|---|---|---|---|---|---|---|---|")
    for mode, r in rows.items():
        per_million = r["dc_time_ms"] / 1000 / r["tokens"] * 1e6
        print(f"| {mode} TTT | {r['neural_bpb']:.4f} | {r['mixed_bpb']:.4f} | {r['tilt_bpb']:.4f} | "
              f"{r['neural_bpb'] - r['mixed_bpb']:+.4f} | {r['neural_bpb'] - r['tilt_bpb']:+.4f} | {per_million:.1f} | "
              f"{r['eval_time_ms'] / 1000:.0f} |")
    print(f"\nDualClock replayed offline on each dumped pass, learning every {args.replay_chunk_tokens:,} targets of "
          "its stream (`EVAL_DUMP_PATH`; `replay` above):")
    for mode in rows:
        print(f"- {mode} TTT: {replay(args.out / f'pass_{mode}.pt', env, args.replay_chunk_tokens):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

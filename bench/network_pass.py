"""Produce the stored network pass that the mixture benchmarks replay.

Why: comparing evaluation-time mixers (neural-only, published DualClock, the corrected and
sharper experts, the per-token gate) is only fair on one and the same network pass. This
script builds the benchmark corpus (the standard library's docstrings, help topics and
source, SentencePiece 8192), trains a small model on the CPU with train_gpt.py under
torchrun, and lets the score-first evaluation save every target's network NLL, entropy,
top probability and byte count (EVAL_DUMP_PATH). On a GPU pod, the same file can be made
from the real FineWeb run: `EVAL_ONLY=1 EVAL_DUMP_PATH=pass.pt torchrun ... train_gpt.py`.

Usage: python bench/network_pass.py [--out bench/out/network_pass.pt] [--train-seconds 420]

`--holdout` builds a second pass for checks that must not be tuned on: the validation split is
the next 250 documents of the same shuffled corpus (the default split's 250 go to training), with
its own tokenizer and model: bench/out/network_pass_holdout.pt.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A model that learns something in minutes on 2 CPU cores; every other knob at its default.
BENCH_ENV = {
    "VOCAB_SIZE": "8192", "NUM_LAYERS": "4", "MODEL_DIM": "128", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
    "MLP_MULT": "3", "LOOP_START": "1", "LOOP_END": "2", "NUM_LOOPS": "1", "PARALLEL_START_LAYER": "3",
    "XSA_LAST_N": "4", "TRAIN_SEQ_LEN": "512", "EVAL_SEQ_LEN": "512", "TRAIN_BATCH_TOKENS": "16384",
    "WARMUP_STEPS": "0", "GPTQ_RESERVE_SECONDS": "0", "TRAIN_LOG_EVERY": "10", "MUON_MOMENTUM_WARMUP_STEPS": "100",
    "EVAL_STRIDE": "512", "SLIDING_WINDOW_ENABLED": "0", "EVAL_DIAGNOSTICS": "0", "TTT_EPOCHS": "0", "GPTQ_CALIBRATION_BATCHES": "8",
    "DEVICE": "cpu", "COMPILE": "0",
    # ~70 steps: the record's EMA (0.9965) would still weigh the random init at 0.8.
    "EMA_DECAY": "0.95",
}


VAL_DOCUMENTS = 250


def build_corpus(out_dir: Path, holdout: bool = False) -> tuple[Path, Path]:
    from data.build import build_dataset, output_paths
    from data.corpus import stdlib_documents

    name = "stdlib_src_holdout" if holdout else "stdlib_src"
    paths = output_paths(out_dir, name, 8192)
    if not paths["tokenizer_path"].exists():
        documents = stdlib_documents(include_source=True)
        if holdout:  # validation: documents 250..499, which the default pass trains on
            documents = documents[VAL_DOCUMENTS:] + documents[:VAL_DOCUMENTS]
        build_dataset(documents, out_dir, vocab_size=8192, val_documents=VAL_DOCUMENTS, name=name)
    return paths["dataset_dir"], paths["tokenizer_path"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/network_pass[_holdout].pt")
    parser.add_argument("--holdout", action="store_true", help="validate on documents 250..499 instead")
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "out" / "data")
    parser.add_argument("--train-seconds", type=float, default=420.0)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args(argv)
    args.out = args.out or ROOT / "bench" / "out" / f"network_pass{'_holdout' if args.holdout else ''}.pt"
    dataset_dir, tokenizer_path = build_corpus(args.data, args.holdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()}
    env.update(BENCH_ENV, DATA_PATH=str(dataset_dir), TOKENIZER_PATH=str(tokenizer_path),
               MAX_WALLCLOCK_SECONDS=str(args.train_seconds), ITERATIONS="100000", OMP_NUM_THREADS="1",
               EVAL_DUMP_PATH=str(args.out), RUN_ID=args.out.stem, LOG_DIR=str(args.out.parent / "logs"),
               ARTIFACT_PATH=str(args.out.with_suffix(".ptz")), CHECKPOINT_PATH="")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               str(ROOT / "train_gpt.py")]
    return subprocess.call(command, env=env, cwd=args.out.parent)


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: the repository on sys.path, one torch thread per test process (2 cores
shared by everything), and a tiny real-text dataset built once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

# The tiny model every CPU test trains or evaluates: same code paths, minutes -> seconds.
TINY_ENV = {
    "VOCAB_SIZE": "512", "NUM_LAYERS": "4", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
    "MLP_MULT": "2", "ROPE_DIMS": "8", "LOOP_START": "1", "LOOP_END": "2", "NUM_LOOPS": "1",
    "PARALLEL_START_LAYER": "3", "XSA_LAST_N": "4", "TRAIN_SEQ_LEN": "64", "EVAL_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "1024", "ITERATIONS": "12", "WARMUP_STEPS": "2", "MAX_WALLCLOCK_SECONDS": "0",
    "TRAIN_LOG_EVERY": "4", "MUON_MOMENTUM_WARMUP_STEPS": "5", "EVAL_STRIDE": "16", "VAL_BATCH_SEQS": "8",
    "VAL_MAX_TOKENS": "4096", "TTT_CHUNK_TOKENS": "1024", "TTT_BATCH_SEQS": "4", "TTT_EPOCHS": "1",
    "GPTQ_CALIBRATION_BATCHES": "4", "DEVICE": "cpu", "COMPILE": "0",
}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict:
    """A 512-token SentencePiece model and shards built from standard-library docstrings."""
    from data.build import build_dataset
    from data.corpus import stdlib_documents

    out = tmp_path_factory.mktemp("data")
    documents = stdlib_documents()[:400]
    return build_dataset(documents, out, vocab_size=512, val_documents=40, name="stdlib",
                         log=lambda *_: None)


@pytest.fixture
def tiny_env(tiny_dataset, tmp_path) -> dict:
    env = dict(TINY_ENV)
    env.update(DATA_PATH=str(tiny_dataset["dataset_dir"]), TOKENIZER_PATH=str(tiny_dataset["tokenizer_path"]),
               LOG_DIR=str(tmp_path / "logs"), ARTIFACT_PATH=str(tmp_path / "model.ptz"),
               CHECKPOINT_PATH=str(tmp_path / "model.pt"), RUN_ID="test")
    return env

"""Host syncs per training step and per score-first TTT chunk, counted on the emulated CUDA device.

Why: a host sync (item, tolist, a boolean test, a device-to-host copy, nonzero...) makes the CPU wait for
the GPU's queue to drain, so the next kernels launch late; on 8xH100 a few per step cost steps, a few dozen
per TTT chunk cost evaluation seconds. tools/emulate_cuda.py counts each one where the code asks for it, on
a CPU, at tiny sizes (the count depends on the code path, not on the sizes). Prints one line per phase
with the sites that sync most, then:

  host_syncs train_step:<n> train_step_looping:<n> ttt_chunk:<n> ttt_chunk_dualclock:<n> dualclock_share:<n>

    python bench/host_syncs.py          # about 20 s on one CPU thread
"""
from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402
from data.build import build_dataset  # noqa: E402
from data.corpus import stdlib_documents  # noqa: E402
from tools.emulate_cuda import EmulatedCuda  # noqa: E402

TINY = {"VOCAB_SIZE": "512", "NUM_LAYERS": "4", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
        "MLP_MULT": "2", "ROPE_DIMS": "8", "LOOP_START": "1", "LOOP_END": "2", "NUM_LOOPS": "1",
        "PARALLEL_START_LAYER": "3", "XSA_LAST_N": "4", "TRAIN_SEQ_LEN": "64", "EVAL_SEQ_LEN": "64",
        "TRAIN_BATCH_TOKENS": "1024", "WARMUP_STEPS": "0", "EVAL_STRIDE": "16", "VAL_BATCH_SEQS": "8",
        "VAL_MAX_TOKENS": "8192", "TTT_CHUNK_TOKENS": "1024", "TTT_BATCH_SEQS": "4", "TTT_EPOCHS": "1",
        "DEVICE": "cuda", "MODEL_DTYPE": "bf16", "COMPILE": "0"}


class ChunkCounter:
    """A hook that reads the sync count at each chunk: the differences are the syncs of one chunk's cycle
    (score, the hooks after it, train on it)."""

    def __init__(self, cuda: EmulatedCuda):
        self.cuda, self.counts = cuda, []

    def on_chunk(self, chunk) -> None:
        self.counts.append(self.cuda.host_syncs)


def per_chunk(cuda: EmulatedCuda, h: tg.Hyperparameters, runtime, model, tokens, tables, dualclock: bool):
    counter = ChunkCounter(cuda)
    hooks = ([tg.DualClock(h, h.vocab_size, runtime.device)] if dualclock else []) + [counter]
    cuda.sync_sites.clear()
    tg.evaluate_ttt(tg.WindowScorer(model, h, runtime), tokens, tables, h, runtime, hooks)
    steps = [b - a for a, b in zip(counter.counts, counter.counts[1:])]
    return max(steps), collections.Counter(dict(cuda.sync_sites))


def main() -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        data = build_dataset(stdlib_documents()[:400], Path(folder), vocab_size=512, val_documents=60, name="stdlib",
                             log=lambda *_: None)
        h = tg.Hyperparameters.from_env({**TINY, "DATA_PATH": str(data["dataset_dir"]),
                                         "TOKENIZER_PATH": str(data["tokenizer_path"])})
        with EmulatedCuda() as cuda:
            runtime = tg.setup_runtime(h, {})
            model = tg.place_model(tg.GPT(h), runtime)
            state = tg.build_train_state(model, h, runtime, tg.TrainLoader(h.data_path, h.train_seq_len, 0, 1, h.seed))
            figures = {}
            for looping in (False, True):
                model.looping = looping
                before = cuda.host_syncs
                for _ in range(3):
                    tg.agree_on_step(tg.train_step(state, h, runtime), False, runtime)
                figures["train_step_looping" if looping else "train_step"] = (cuda.host_syncs - before) // 3
            print(f"train_step syncs:{figures['train_step']} sites:{dict(cuda.sync_sites)}")
            tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size))
            tokens = tg.load_validation_tokens(h.data_path, h.eval_seq_len, h.val_max_tokens)
            figures["ttt_chunk"], plain = per_chunk(cuda, h, runtime, model, tokens, tables, False)
            figures["ttt_chunk_dualclock"], mixed = per_chunk(cuda, h, runtime, model, tokens, tables, True)
            print(f"ttt_chunk syncs:{figures['ttt_chunk']} sites:{dict(plain.most_common(6))}")
            print(f"ttt_chunk_dualclock syncs:{figures['ttt_chunk_dualclock']} sites:{dict((mixed - plain).most_common(8))}")
    figures["dualclock_share"] = figures["ttt_chunk_dualclock"] - figures["ttt_chunk"]
    print("host_syncs " + " ".join(f"{k}:{v}" for k, v in figures.items()))
    return figures


if __name__ == "__main__":
    main()

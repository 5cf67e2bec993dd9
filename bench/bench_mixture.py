"""Quality, speed and memory of every DualClock mixture on one stored network pass.

Why: a mixer is only worth its evaluation seconds if it beats the network alone on the same
targets. This replays one network pass (bench/network_pass.py, or EVAL_DUMP_PATH from a real
run) through each configuration by the code evaluation runs (DualClock.on_chunk, ppm_logprobs)
and prints ONE markdown table: BPB and its change against the network alone, each expert's
own BPB, the PPM pass's throughput (the experts alone, as ppm_logprobs runs them, side by side
with the published pass), the whole hook's time, the table memory per token of stream and its
projection to the 40,540,160-token FineWeb validation stream, and a byte-level PPMd order-16
anchor (7-Zip) on the same validation text.

    python bench/bench_mixture.py --pass bench/out/network_pass.pt

One thread (the CPU is shared); timings are wall-clock on this machine and noisy: the PPM passes are
timed in PPM_ROUNDS rounds over all configurations in turn, and each one's best round counts.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401  (Adam imports it on first use: keep that second out of the timings)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402

VALIDATION_TOKENS = 40_540_160
CHUNK_TOKENS = 32768  # TTT_CHUNK_TOKENS: the hook sees the stream chunk by chunk
PUBLISHED = {"DC_EXPERTS": "hashed", "DC_MIXER": "fixed_share", "DC_HASH": "legacy", "DC_LOCAL_RESET": "chunk"}
CORRECTED = {"DC_EXPERTS": "hashed", "DC_MIXER": "fixed_share", "DC_HASH": "mixed", "DC_LOCAL_RESET": "doc"}
CONFIGURATIONS = [  # (row name, environment); the defaults are the last group's first row
    ("published DualClock (SPEC §7)", PUBLISHED),
    ("corrected hashed experts", CORRECTED),
    ("sharp experts alone, fixed-share mixer", {"DC_EXPERTS": "sharp", "DC_MIXER": "fixed_share"}),
    ("per-token gate alone, corrected hashed experts", {**CORRECTED, "DC_MIXER": "gate"}),
    ("sharp experts + gate (defaults)", {}),
    ("sharp experts + gate, document expert orders 0..2", {"DC_DOCUMENT_ORDERS": "2"}),
    ("sharp experts + gate, DC_SHARP_ORDERS=4", {"DC_SHARP_ORDERS": "4"}),
    ("sharp experts + gate, DC_SHARP_ORDERS=6", {"DC_SHARP_ORDERS": "6"}),
    ("sharp experts + gate, DC_SHARP_ORDERS=8", {"DC_SHARP_ORDERS": "8"}),
    ("sharp experts + gate, escapes fixed", {"DC_ESCAPE_STEPS": "0"}),
    ("sharp experts + gate, 3 escape steps", {"DC_ESCAPE_STEPS": "3"}),
    ("sharp experts + gate, DC_GATE_STEPS=3", {"DC_GATE_STEPS": "3"}),
]
PPM_ROUNDS = 5  # the PPM pass's throughput: the best of this many rounds over all configurations in turn


def bits_per_byte(nats: float, total_bytes: float) -> float:
    return nats / math.log(2) / total_bytes


def projected_bytes(bank) -> float:
    """Table bytes for the FineWeb validation stream. Sharp: the table SharpExperts sizes for that stream
    before its first chunk, or the one the entries per token measured here need if larger (power-of-two
    capacity at most TABLE_MAX_LOAD full, SLOT_BYTES a slot), plus the open document as measured; the
    hashed tables have a fixed size."""
    if not isinstance(bank, tg.SharpExperts):
        return bank.table_bytes()
    table = bank.table
    entries = max(bank.stream_entries(VALIDATION_TOKENS), table.size / (bank.next_start + 1) * VALIDATION_TOKENS)
    document = table.nbytes() - table.keys.numel() * tg.SLOT_BYTES
    return 2 ** math.ceil(math.log2(entries / tg.TABLE_MAX_LOAD)) * tg.SLOT_BYTES + document


def ppm_speeds(tokens: torch.Tensor) -> list[float]:
    """Tokens per second of each configuration's PPM pass, side by side: PPM_ROUNDS rounds that each
    run every configuration once, the best round of each counting (this machine has slow spells)."""
    settings = [tg.Hyperparameters.from_env(env) for _, env in CONFIGURATIONS]
    seconds = [math.inf] * len(settings)
    for _ in range(PPM_ROUNDS):
        for index, h in enumerate(settings):
            began = time.perf_counter()
            tg.ppm_logprobs(tokens, h, CHUNK_TOKENS)
            seconds[index] = min(seconds[index], time.perf_counter() - began)
    return [tokens.numel() / s for s in seconds]


def run_configuration(env: dict, network: dict, ppm_tokens_per_s: float) -> dict:
    h = tg.Hyperparameters.from_env(env)
    tokens = network["tokens"]
    clock = tg.DualClock(h, h.vocab_size, "cpu")
    began = time.perf_counter()
    for start, end in tg.chunk_bounds(tokens.numel() - 1, CHUNK_TOKENS):
        clock.on_chunk(tg.ChunkScores(tokens, start, end, *(network[k][start:end] for k in
                                                            ("nll", "entropy", "top_prob", "target_bytes"))))
    fields = clock.log_fields()
    sharp = isinstance(clock.bank, tg.SharpExperts)
    return dict(fields, ppm_tokens_per_s=ppm_tokens_per_s, hook_seconds=time.perf_counter() - began,
                entries_per_token=clock.bank.table.size / tokens.numel() if sharp else None,
                bytes_per_token=clock.peak_table_bytes / tokens.numel(), projected_gib=projected_bytes(clock.bank) / 2**30)


def ppmd_bits_per_byte(tokens: torch.Tensor, tokenizer_path: Path) -> tuple[float | None, str]:
    """7-Zip's PPMd, order 16, on the decoded validation text (documents concatenated)."""
    if shutil.which("7z") is None:
        return None, "7z not found (apt-get install p7zip-full): row skipped"
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    ids = tokens.tolist()
    starts = [i for i, t in enumerate(ids) if t == tg.BOS_ID] + [len(ids)]
    text = "".join(processor.decode(ids[a + 1:b]) for a, b in zip(starts, starts[1:])).encode("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        source, archive = Path(folder) / "text.txt", Path(folder) / "out.7z"
        source.write_bytes(text)
        subprocess.run(["7z", "a", "-m0=PPMd:o=16:mem=1g", str(archive), str(source)], check=True,
                       stdout=subprocess.DEVNULL)
        return 8 * archive.stat().st_size / len(text), f"{len(text):,} bytes of text"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="network_pass", type=Path, default=ROOT / "bench/out/network_pass.pt")
    parser.add_argument("--tokenizer", type=Path, default=ROOT / "bench/out/data/tokenizers/stdlib_src_8192_bpe.model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    network = torch.load(args.network_pass)
    total_bytes = network["target_bytes"].sum().item()
    neural = bits_per_byte(network["nll"].double().sum().item(), total_bytes)
    speeds = ppm_speeds(network["tokens"])
    results = [(name, env, run_configuration(env, network, speed)) for (name, env), speed in zip(CONFIGURATIONS, speeds)]
    ppmd, ppmd_note = ppmd_bits_per_byte(network["tokens"], args.tokenizer)

    print(f"Network pass `{args.network_pass.name}`: {network['tokens'].numel():,} tokens, {total_bytes:,.0f} "
          f"bytes, chunks of {CHUNK_TOKENS}; one CPU thread; projection to {VALIDATION_TOKENS:,} tokens.\n")
    published_speed = results[0][2]["ppm_tokens_per_s"]
    print("| configuration | BPB | Δ BPB | Δ % | global alone | local alone | PPM pass tok/s | × published | hook s "
          "| entries/token | table B/token | 40.5 M projection GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| neural only | {neural:.4f} | 0 | 0 | | | | | | | | |")
    for name, env, r in results:
        delta = r["mixed_bpb"] - neural
        settings = " ".join(f"{k}={v}" for k, v in env.items()) or "defaults"
        print(f"| {name} (`{settings}`) | {r['mixed_bpb']:.4f} | {delta:+.4f} | {100 * delta / neural:+.1f} "
              f"| {r['global_bpb']:.4f} | {r['local_bpb']:.4f} | {r['ppm_tokens_per_s']:,.0f} "
              f"| {r['ppm_tokens_per_s'] / published_speed:.2f} | {r['hook_seconds']:.1f} "
              f"| {'' if r['entries_per_token'] is None else format(r['entries_per_token'], '.2f')} "
              f"| {r['bytes_per_token']:.0f} | {r['projected_gib']:.2f} |")
    if ppmd is None:
        print(f"| byte-level PPMd order 16 (7-Zip) | {ppmd_note} | | | | | | | | | | |")
    else:
        print(f"| byte-level PPMd order 16 (7-Zip; {ppmd_note}) | {ppmd:.4f} | {ppmd - neural:+.4f} "
              f"| {100 * (ppmd - neural) / neural:+.1f} | | | | | | | | |")


if __name__ == "__main__":
    main()

"""Quality, speed and memory of every DualClock mixture on one stored network pass, and where the gain is.

Why: a mixer is only worth its evaluation seconds if it beats the network alone on the same
targets, and on FineWeb only the part of its gain that a 2,048-token network cannot get itself
will survive. This replays one network pass (bench/network_pass.py, or EVAL_DUMP_PATH from a real
run) through each configuration by the code evaluation runs (DualClock.on_chunk, ppm_logprobs)
and prints two markdown tables:
- per configuration: BPB and its change against the network alone, each expert's own BPB (the match
  expert's included), the PPM pass's throughput (the experts alone, as ppm_logprobs runs them, side by
  side with the published pass), the whole hook's time, the table memory per token of stream and its
  projection to the 40,540,160-token FineWeb validation stream, and a byte-level PPMd order-16 anchor
  (7-Zip) on the same validation text;
- the gain (bits saved against the network alone) split by how far back each target's context (its
  last --context-tokens tokens) last occurred: at most 2,048 tokens, further, or never; and by the kind
  of text of its document: technical (at least 4 % of its characters are code symbols) or prose.
The row "defaults at BASELINE" runs train_gpt.py as it was at the git commit --baseline (the defaults
before the match expert and the bounded learner), side by side.

    python bench/bench_mixture.py --pass bench/out/network_pass.pt
    python bench/bench_mixture.py --pass bench/out/network_pass_holdout.pt \
        --tokenizer bench/out/data/tokenizers/stdlib_src_holdout_8192_bpe.model

One thread (the CPU is shared); timings are wall-clock on this machine and noisy: the PPM passes are
timed in PPM_ROUNDS rounds over all configurations in turn, and each one's best round counts.
"""
from __future__ import annotations

import argparse
import importlib.util
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
BASELINE = "baseline"  # an environment holding this key runs the --baseline commit's train_gpt.py
CONFIGURATIONS = [  # (row name, environment)
    ("published DualClock", PUBLISHED),
    ("corrected hashed experts", CORRECTED),
    ("sharp experts alone, fixed-share mixer", {"DC_EXPERTS": "sharp", "DC_MIXER": "fixed_share"}),
    ("defaults at BASELINE (sharp orders 0..3, Adam gate, no match expert)", {BASELINE: "1"}),
    ("bounded learner, no match expert", {"DC_MATCH_TOKENS": "0", "DC_SHARP_ORDERS": "3", "DC_DOCUMENT_ORDERS": "3"}),
    ("defaults: match 4,16, sharp orders 0..2", {}),
    ("match 4,8", {"DC_MATCH_TOKENS": "4,8"}),
    ("match 4,8,16", {"DC_MATCH_TOKENS": "4,8,16"}),
    ("match 8,16,32", {"DC_MATCH_TOKENS": "8,16,32"}),
    ("match 4", {"DC_MATCH_TOKENS": "4"}),
    ("no match expert", {"DC_MATCH_TOKENS": "0"}),
    ("match 4,16, sharp orders 0..3, document 0..2", {"DC_SHARP_ORDERS": "3"}),
    ("match 4,16, sharp orders 0..3", {"DC_SHARP_ORDERS": "3", "DC_DOCUMENT_ORDERS": "3"}),
    ("match 4,8,16, sharp orders 0..3", {"DC_MATCH_TOKENS": "4,8,16", "DC_SHARP_ORDERS": "3", "DC_DOCUMENT_ORDERS": "3"}),
    ("match 8,16,32, sharp orders 0..3", {"DC_MATCH_TOKENS": "8,16,32", "DC_SHARP_ORDERS": "3", "DC_DOCUMENT_ORDERS": "3"}),
    ("defaults, escapes fixed", {"DC_ESCAPE_STEPS": "0"}),
    ("defaults, gate floor 1e-3", {"DC_GATE_FLOOR": "0.001"}),
    ("defaults, 5 gate steps", {"DC_GATE_STEPS": "5"}),
]
SPLIT_ROWS = ["published DualClock", "defaults at BASELINE (sharp orders 0..3, Adam gate, no match expert)",
              "bounded learner, no match expert", "defaults: match 4,16, sharp orders 0..2", "match 4,8,16",
              "no match expert", "match 8,16,32, sharp orders 0..3"]  # the gain split is printed for these
NETWORK_WINDOW = 2048  # the record network's context: repeats further back are beyond its reach
TECHNICAL_SYMBOLS, TECHNICAL_SHARE = set("{}[]()<>=_#;*/\\|&^%$@~`+"), 0.04
PPM_ROUNDS = 5  # the PPM pass's throughput: the best of this many rounds over all configurations in turn


def baseline_module(commit: str):
    """train_gpt.py as it was at `commit`, imported under another name (its own DualClock and ppm_logprobs)."""
    source = subprocess.run(["git", "show", f"{commit}:train_gpt.py"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    path = Path(tempfile.mkdtemp()) / "train_gpt_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("train_gpt_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def code_for(env: dict, modules: dict):
    """(train_gpt module, its Hyperparameters) for a configuration."""
    module = modules[BASELINE] if BASELINE in env else tg
    return module, module.Hyperparameters.from_env({k: v for k, v in env.items() if k != BASELINE})


def bits_per_byte(nats: float, total_bytes: float) -> float:
    return nats / math.log(2) / total_bytes


def projected_bytes(bank, module=tg) -> float:
    """Table bytes for the FineWeb validation stream. Sharp: the table SharpExperts sizes for that stream
    before its first chunk, or the one the entries per token measured here need if larger (power-of-two
    capacity at most TABLE_MAX_LOAD full, SLOT_BYTES a slot), plus the open document as measured; the
    hashed tables have a fixed size."""
    if not isinstance(bank, module.SharpExperts):
        return bank.table_bytes()
    table = bank.table
    entries = max(bank.stream_entries(VALIDATION_TOKENS), table.size / (bank.next_start + 1) * VALIDATION_TOKENS)
    document = table.nbytes() - table.keys.numel() * module.SLOT_BYTES
    match = getattr(bank, "match", None)  # its tables: one slot per level and token (at least), 8 bytes each
    match_bytes = 0 if match is None else (len(match.lengths) * 8 * 2 ** VALIDATION_TOKENS.bit_length()
                                           + 4 * VALIDATION_TOKENS)
    return 2 ** math.ceil(math.log2(entries / module.TABLE_MAX_LOAD)) * module.SLOT_BYTES + document + match_bytes


def ppm_speeds(tokens: torch.Tensor, modules: dict) -> list[float]:
    """Tokens per second of each configuration's PPM pass, side by side: PPM_ROUNDS rounds that each
    run every configuration once, the best round of each counting (this machine has slow spells)."""
    settings = [code_for(env, modules) for _, env in CONFIGURATIONS]
    seconds = [math.inf] * len(settings)
    for _ in range(PPM_ROUNDS):
        for index, (module, h) in enumerate(settings):
            began = time.perf_counter()
            module.ppm_logprobs(tokens, h, CHUNK_TOKENS)
            seconds[index] = min(seconds[index], time.perf_counter() - began)
    return [tokens.numel() / s for s in seconds]


def run_configuration(env: dict, network: dict, ppm_tokens_per_s: float, modules: dict) -> dict:
    """The hook over the whole pass; with each target's mixed NLL (nats) for the split."""
    module, h = code_for(env, modules)
    tokens = network["tokens"]
    clock = module.DualClock(h, h.vocab_size, "cpu")
    mixed_nll, bank_update = [], clock.mix_chunk

    def recording_mix_chunk(*args, **kwargs):  # keep each target's mixed log-prob as the hook computes it
        components, mixed = bank_update(*args, **kwargs)
        mixed_nll.append(-mixed)
        return components, mixed

    clock.mix_chunk = recording_mix_chunk
    began = time.perf_counter()
    for start, end in module.chunk_bounds(tokens.numel() - 1, CHUNK_TOKENS):
        clock.on_chunk(module.ChunkScores(tokens, start, end, *(network[k][start:end] for k in
                                                                ("nll", "entropy", "top_prob", "target_bytes"))))
    fields = clock.log_fields()
    sharp = isinstance(clock.bank, module.SharpExperts)
    return dict(fields, ppm_tokens_per_s=ppm_tokens_per_s, hook_seconds=time.perf_counter() - began,
                entries_per_token=clock.bank.table.size / tokens.numel() if sharp else None,
                bytes_per_token=clock.peak_table_bytes / tokens.numel(), mixed_nll=torch.cat(mixed_nll).double(),
                projected_gib=projected_bytes(clock.bank, module) / 2**30)


def distance_classes(tokens: torch.Tensor, context_tokens: int) -> torch.Tensor:
    """(n,) per target i: 0 if its context (tokens[i-k+1..i], k = context_tokens) last occurred at most
    NETWORK_WINDOW tokens before, 1 if further back, 2 if never (or the context starts before the stream)."""
    ids, last, classes = tokens.tolist(), {}, []
    for i in range(len(ids) - 1):
        context = tuple(ids[i - context_tokens + 1:i + 1]) if i >= context_tokens - 1 else None
        previous = last.get(context)
        classes.append(2 if previous is None else int(i - previous > NETWORK_WINDOW))
        if context is not None:
            last[context] = i
    return torch.tensor(classes)


def text_kinds(tokens: torch.Tensor, tokenizer_path: Path) -> torch.Tensor | None:
    """(n,) per target: 1 if the document of the token it predicts (BOS to BOS; a BOS opens its own)
    is technical text (at least TECHNICAL_SHARE of its characters are code symbols), else 0."""
    if not tokenizer_path.exists():
        return None
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    ids = tokens.tolist()
    starts = [i for i, t in enumerate(ids) if t == tg.BOS_ID] + [len(ids)]
    kinds = torch.zeros(len(ids) - 1, dtype=torch.long)
    if starts[0] > 0:
        starts.insert(0, 0)
    for a, b in zip(starts, starts[1:]):
        text = processor.decode(ids[a + 1:b] if ids[a] == tg.BOS_ID else ids[a:b])
        technical = sum(c in TECHNICAL_SYMBOLS for c in text) >= TECHNICAL_SHARE * max(len(text), 1)
        kinds[max(a - 1, 0):b - 1] = int(technical)  # targets a-1 .. b-2 predict tokens a .. b-1
    return kinds


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


def print_split(results: list, network: dict, classes: torch.Tensor, kinds: torch.Tensor | None,
                context_tokens: int) -> None:
    """Bits saved against the network alone per class of target, as bits per byte of the whole stream (the
    classes add up to the total gain) and per byte of the class."""
    nll, target_bytes = network["nll"].double(), network["target_bytes"].double()
    total_bytes = target_bytes.sum().item()
    groups = [(f"context seen at most {NETWORK_WINDOW} tokens back", classes == 0),
              (f"context seen more than {NETWORK_WINDOW} tokens back", classes == 1), ("context never seen", classes == 2)]
    if kinds is not None:
        groups += [("prose", kinds == 0), ("technical", kinds == 1)]
    print(f"\nGain against the network alone by class of target (context: the last {context_tokens} tokens; kind: "
          f"technical if >= {TECHNICAL_SHARE:.0%} of the document's characters are code symbols). Each cell: bits "
          "saved per byte of the whole stream (the classes of a split add up to the total) / per byte of the class.\n")
    print("| configuration | " + " | ".join(f"{name} ({100 * target_bytes[mask].sum().item() / total_bytes:.1f} % of bytes)"
                                          for name, mask in groups) + " | total |")
    print("|---" * (len(groups) + 2) + "|")
    for name, _, r in results:
        if name not in SPLIT_ROWS:
            continue
        saved = (nll - r["mixed_nll"]) / math.log(2)
        cells = [f"{saved[mask].sum().item() / total_bytes:+.4f} / {saved[mask].sum().item() / max(target_bytes[mask].sum().item(), 1):+.4f}"
                 for _, mask in groups]
        print(f"| {name} | " + " | ".join(cells) + f" | {saved.sum().item() / total_bytes:+.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="network_pass", type=Path, default=ROOT / "bench/out/network_pass.pt")
    parser.add_argument("--tokenizer", type=Path, default=ROOT / "bench/out/data/tokenizers/stdlib_src_8192_bpe.model")
    parser.add_argument("--baseline", default="1f6ca59", help="git commit whose defaults the BASELINE row runs")
    parser.add_argument("--context-tokens", type=int, default=8, help="the context whose last occurrence splits the gain")
    args = parser.parse_args()
    torch.set_num_threads(1)
    network = torch.load(args.network_pass)
    modules = {BASELINE: baseline_module(args.baseline)}
    total_bytes = network["target_bytes"].sum().item()
    neural = bits_per_byte(network["nll"].double().sum().item(), total_bytes)
    speeds = ppm_speeds(network["tokens"], modules)
    results = [(name.replace("BASELINE", args.baseline), env, run_configuration(env, network, speed, modules))
               for (name, env), speed in zip(CONFIGURATIONS, speeds)]
    ppmd, ppmd_note = ppmd_bits_per_byte(network["tokens"], args.tokenizer)

    print(f"Network pass `{args.network_pass.name}`: {network['tokens'].numel():,} tokens, {total_bytes:,.0f} "
          f"bytes, chunks of {CHUNK_TOKENS}; one CPU thread; projection to {VALIDATION_TOKENS:,} tokens.\n")
    published_speed = results[0][2]["ppm_tokens_per_s"]
    print("| configuration | BPB | Δ BPB | Δ % | global alone | local alone | match alone | PPM pass tok/s | × published "
          "| hook s | entries/token | table B/token | 40.5 M projection GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| neural only | {neural:.4f} | 0 | 0 | | | | | | | | | |")
    for name, env, r in results:
        delta = r["mixed_bpb"] - neural
        settings = " ".join(f"{k}={v}" for k, v in env.items() if k != BASELINE) or "defaults"
        match = format(r["match_bpb"], ".4f") if "match_bpb" in r else ""
        print(f"| {name} (`{settings}`) | {r['mixed_bpb']:.4f} | {delta:+.4f} | {100 * delta / neural:+.1f} "
              f"| {r['global_bpb']:.4f} | {r['local_bpb']:.4f} | {match} | {r['ppm_tokens_per_s']:,.0f} "
              f"| {r['ppm_tokens_per_s'] / published_speed:.2f} | {r['hook_seconds']:.1f} "
              f"| {'' if r['entries_per_token'] is None else format(r['entries_per_token'], '.2f')} "
              f"| {r['bytes_per_token']:.0f} | {r['projected_gib']:.2f} |")
    if ppmd is None:
        print(f"| byte-level PPMd order 16 (7-Zip) | {ppmd_note} | | | | | | | | | | | |")
    else:
        print(f"| byte-level PPMd order 16 (7-Zip; {ppmd_note}) | {ppmd:.4f} | {ppmd - neural:+.4f} "
              f"| {100 * (ppmd - neural) / neural:+.1f} | | | | | | | | | |")
    SPLIT_ROWS[:] = [row.replace("BASELINE", args.baseline) for row in SPLIT_ROWS]
    print_split(results, network, distance_classes(network["tokens"], args.context_tokens),
                text_kinds(network["tokens"], args.tokenizer), args.context_tokens)


if __name__ == "__main__":
    main()

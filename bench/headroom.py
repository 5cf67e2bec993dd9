"""How many bytes a record of the published stack would leave under the 16,000,000-byte cap with our script.

Why: the artifact is code bytes + model bytes. The published record (1.0810, 2026-04-09) logged its model bytes
with its own container (torch.save of the quantized dict, byte-shuffled, brotli 11) and its code bytes with its
own packed script. Our script ships a different container (a binary prefix, a JSON header and raw little-endian
arrays, byte-shuffled, brotli 11) and a larger packed script. The same weights therefore cost a different number
of bytes here. An earlier estimate swapped only the code bytes; this one measures the container difference too.

Method:
  1. A quantized model with the published record's shapes (our GPT at its defaults: 113 tensors, 35,944,536
     parameters, 66 int6 matrices with 128-column GPTQ groups, the int8 tied embedding, 46 fp16 control tensors)
     is filled with synthetic values: each int matrix's integers are a rounded Gaussian clipped to +-(2^(b-1)-1)
     with standard deviation c * (2^(b-1)-1) / k (SDClip with k = 12.85 for int6, 20 for int8 makes every row's
     integers have standard deviation (2^(b-1)-1) / k; c absorbs what GPTQ's error feedback and the real weights'
     shape change); per-row fp16 scales k * std / r with row stds drawn log-normally around 0.02; control tensors
     at their initial values plus small noise, in fp16.
  2. c is calibrated (secant steps on log c) until the published container's size of this model equals the
     published record's mean model bytes: the synthetic model then compresses like the real one.
  3. The same quantized model is serialized with our container (train_gpt.serialize_quantized) and with a
     re-implementation of the published container (described in docs/quantization.md, Headroom): a
     torch.save zip of {"w": {name.q: int8, name.scale: fp16, passthrough name: fp16}, "m": {name: kind}} with the
     published tensor names, then the 4-byte marker BSHF, a stride byte 2, the bytes at even offsets then the
     bytes at odd offsets, then brotli at quality 11. The difference of the two sizes is the container difference.
  4. headroom = 16,000,000 - (published model bytes - container difference + our packed code bytes), for each
     published seed.

    python bench/headroom.py            # the full-size measurement (several minutes of brotli 11 on one core)
    python bench/headroom.py --quick    # a few layers at brotli quality 5: the code path, in seconds
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402

LIMIT_BYTES = 16_000_000
# The published record's logs (records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT,
# train_seed{42,314,999}.log): "Serialized model quantized+brotli" and "Code size" for each seed.
PUBLISHED_MODEL_BYTES = {42: 15_975_300, 314: 15_976_325, 999: 15_976_638}
PUBLISHED_CODE_BYTES = {42: 16_630, 314: 16_594, 999: 16_594}
PUBLISHED_NAMES = {".attn.q.weight": ".attn.c_q.weight", ".attn.k.weight": ".attn.c_k.weight",
                   ".attn.v.weight": ".attn.c_v.weight"}
SHUFFLE_MARKER = b"BSHF"


def published_name(name: str) -> str:
    for ours, theirs in PUBLISHED_NAMES.items():
        if name.endswith(ours):
            return name[: -len(ours)] + theirs
    return name


def synthetic_quantized(h: tg.Hyperparameters, spread: float, seed: int = 0, layers: int | None = None) -> dict:
    """Our quantized dict (name -> entry, state_dict order) with the shapes of GPT(h) and synthetic values."""
    generator = torch.Generator().manual_seed(seed)
    state = tg.GPT(h).state_dict()
    quantized = {}
    for name, tensor in state.items():
        if layers is not None and name.startswith("blocks.") and int(name.split(".")[1]) >= layers:
            continue
        if tensor.numel() <= tg.SMALL_TENSOR_MAX_NUMEL:
            noisy = tensor.float() + 0.05 * torch.randn(tensor.shape, generator=generator)
            quantized[name] = {"kind": "fp16", "data": noisy.to(torch.float16)}
            continue
        embedding = name == tg.EMBEDDING_KEY
        bits, clip = (h.embed_bits, h.embed_clip_sigmas) if embedding else (h.matrix_bits, h.matrix_clip_sigmas)
        top = 2 ** (bits - 1) - 1
        ints = torch.randn(tensor.shape, generator=generator).mul_(spread * top / clip).round_().clamp_(-top, top)
        row_std = torch.exp(math.log(0.02) + 0.3 * torch.randn(tensor.shape[0], generator=generator))
        quantized[name] = {"kind": "int", "q": ints.to(torch.int8), "scale": (clip * row_std / top).to(torch.float16)}
    return quantized


def published_payload(quantized: dict, bits: dict[str, int]) -> bytes:
    """The bytes the published script compresses: torch.save of {"w": tensors, "m": kinds}, published names."""
    tensors, kinds = {}, {}
    for name, entry in quantized.items():
        theirs = published_name(name)
        if entry["kind"] == "int":
            tensors[theirs + ".q"], tensors[theirs + ".scale"] = entry["q"], entry["scale"]
            kinds[theirs] = f"gptq (int{bits[name]})"
        else:
            tensors[theirs] = entry["data"]
            kinds[theirs] = "passthrough (float16)"
    buffer = io.BytesIO()
    torch.save({"w": tensors, "m": kinds}, buffer)
    return buffer.getvalue()


def published_shuffle(data: bytes) -> bytes:
    array = np.frombuffer(data, dtype=np.uint8)
    return SHUFFLE_MARKER + bytes([2]) + array[0::2].tobytes() + array[1::2].tobytes()


def published_unshuffle(data: bytes) -> bytes:
    if data[:4] != SHUFFLE_MARKER or data[4] != 2:
        raise ValueError("not a stride-2 BSHF payload")
    payload = np.frombuffer(data, dtype=np.uint8, offset=5)
    evens = (len(payload) + 1) // 2
    out = np.empty_like(payload)
    out[0::2], out[1::2] = payload[:evens], payload[evens:]
    return out.tobytes()


def published_container(quantized: dict, bits: dict[str, int], quality: int = 11) -> bytes:
    import brotli

    return brotli.compress(published_shuffle(published_payload(quantized, bits)), quality=quality)


def our_container(quantized: dict, quality: int = 11) -> bytes:
    """train_gpt.serialize_quantized's bytes, its brotli step run at `quality` (it calls brotli at 11)."""
    import brotli

    shuffled, real = [], brotli.compress
    brotli.compress = lambda data, **_: shuffled.append(data) or b""
    try:
        tg.serialize_quantized(quantized)
    finally:
        brotli.compress = real
    return brotli.compress(shuffled[0], quality=quality)


def int_bits(h: tg.Hyperparameters, quantized: dict) -> dict[str, int]:
    return {name: h.embed_bits if name == tg.EMBEDDING_KEY else h.matrix_bits
            for name, entry in quantized.items() if entry["kind"] == "int"}


def calibrate(h, target: float, quality: int, layers: int | None, log) -> tuple[float, dict, int]:
    """The spread c at which the published container of the synthetic model is `target` bytes (secant on log c)."""
    def size(spread: float) -> tuple[int, dict]:
        quantized = synthetic_quantized(h, spread, layers=layers)
        began = time.perf_counter()
        n = len(published_container(quantized, int_bits(h, quantized), quality))
        log(f"calibrate spread:{spread:.5f} published_container_bytes:{n} seconds:{time.perf_counter() - began:.0f}")
        return n, quantized

    points = []
    spread = 1.0
    for _ in range(6):
        n, quantized = size(spread)
        points.append((math.log(spread), n))
        if abs(n - target) <= 0.0002 * target:
            break
        if len(points) == 1:  # +-3 % in the spread moves the size by roughly 0.5-1 %: a second point
            spread *= 1.03 if n < target else 1 / 1.03
            continue
        (x0, y0), (x1, y1) = points[-2], points[-1]
        spread = math.exp(x1 + (target - y1) * (x1 - x0) / (y1 - y0))
    return spread, quantized, n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, brotli quality 5, no calibration")
    args = parser.parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731
    h = tg.Hyperparameters.from_env({})
    published_mean = sum(PUBLISHED_MODEL_BYTES.values()) / len(PUBLISHED_MODEL_BYTES)
    code_bytes = tg.code_bytes_of(ROOT / "train_gpt.py")
    log("method: a quantized model of the published shapes, synthetic integers (rounded Gaussians at the SDClip "
        "standard deviation times c), c calibrated so that the published container of it has the published model "
        "bytes; then the same model in our container and in the published one; headroom = 16,000,000 - (published "
        "model bytes - container difference + our packed code bytes)")
    if args.quick:
        quality, layers = 5, 2
        spread = 1.0
        quantized = synthetic_quantized(h, spread, layers=layers)
        published = len(published_container(quantized, int_bits(h, quantized), quality))
    else:
        quality, layers = 11, None
        spread, quantized, published = calibrate(h, published_mean, quality, layers, log)
    began = time.perf_counter()
    ours = len(our_container(quantized, quality))
    log(f"ours seconds:{time.perf_counter() - began:.0f}")
    difference = published - ours
    log(f"headroom spread:{spread:.5f} quality:{quality} layers:{layers or h.num_layers} published_container_bytes:"
        f"{published} our_container_bytes:{ours} container_difference_bytes:{difference} our_code_bytes:{code_bytes}")
    for seed, model_bytes in PUBLISHED_MODEL_BYTES.items():
        ours_total = model_bytes - difference + code_bytes
        log(f"seed:{seed} published_model_bytes:{model_bytes} published_code_bytes:{PUBLISHED_CODE_BYTES[seed]} "
            f"published_headroom_bytes:{LIMIT_BYTES - model_bytes - PUBLISHED_CODE_BYTES[seed]} "
            f"our_artifact_bytes:{ours_total} our_headroom_bytes:{LIMIT_BYTES - ours_total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

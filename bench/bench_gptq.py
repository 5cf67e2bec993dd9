"""GPTQ on the record-size model's matrices: the per-matrix yardstick against the shape-batched path.

Why: GPTQ counts toward the 600 s of training (train_time_ms, against GPTQ_RESERVE_SECONDS), and its
per-column loop is bound by operator launches on a GPU. This builds the matrices of the model the
dataclass defaults describe (11 layers, dim 512, MLP 4x, the 8192 x 512 tied embedding: 67 matrices
in 5 shapes), with random weights and SPD Hessians H = XᵀX/n of correlated inputs whose column energies
span two orders of magnitude (each matrix its own, so each its own column order; two dead inputs in
the embedding's), then times `gptq_quantize` matrix by matrix (the yardstick the tests compare with)
and `quantize_state_dict` (same-shape matrices batched; what a run calls), checks that both give the
same ints and scales, and counts the operator calls each makes (a TorchDispatchMode counts every ATen
call, views included). Figures are `key:value` lines; this is a bench, not a timed test. The machine's
load moves the times, not the counts.

    OMP_NUM_THREADS=1 python bench/bench_gptq.py                 # the record's shapes
    python bench/bench_gptq.py --num-layers 1 --model-dim 256 --vocab-size 512   # tiny (tests)
    python bench/bench_gptq.py --device cuda --no-count            # on a GPU (launch-bound there)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402


class OperatorCount(TorchDispatchMode):
    """Counts every ATen operator call made inside it (what a GPU would launch, views included)."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def record_matrices(h: tg.Hyperparameters, seed: int) -> tuple[dict, dict]:
    """state_dict (the GPT's tensors, random) and Hessians for its quantized matrices."""
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in tg.GPT(h).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state_dict, hessians = {}, {}
    for name, shape in shapes.items():
        state_dict[name] = torch.randn(shape, generator=generator) * 0.02
        if len(shape) == 2 and state_dict[name].numel() > tg.SMALL_TENSOR_MAX_NUMEL:
            cols = shape[1]
            mixing = torch.randn(cols, cols, generator=generator) / cols ** 0.5
            X = torch.randn(cols, cols, generator=generator) @ mixing  # (samples, cols), correlated
            X *= torch.logspace(-1, 1, cols)[torch.randperm(cols, generator=generator)]
            if name == tg.EMBEDDING_KEY:
                X[:, :2] = 0.0  # dead inputs: the zero-diagonal path
            hessians[name] = X.T @ X / X.shape[0]
    return state_dict, hessians


def reference(state_dict: dict, hessians: dict, h: tg.Hyperparameters) -> dict:
    """The per-matrix yardstick with quantize_state_dict's rules: name -> (ints, scale)."""
    results = {}
    for name, H in hessians.items():
        is_embedding = name == tg.EMBEDDING_KEY
        results[name] = tg.gptq_quantize(state_dict[name], H, h.embed_bits if is_embedding else h.matrix_bits,
                                         h.embed_clip_sigmas if is_embedding else h.matrix_clip_sigmas,
                                         block_size=h.gptq_block_size, damp=h.gptq_damp)
    return results


def timed(fn, device: torch.device):
    """(fn(), ms), the device's queue drained on both sides."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    began = time.perf_counter()
    result = fn()
    synchronize()
    return result, 1000.0 * (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-layers", type=int, default=tg.Hyperparameters.num_layers)
    parser.add_argument("--model-dim", type=int, default=tg.Hyperparameters.model_dim)
    parser.add_argument("--vocab-size", type=int, default=tg.Hyperparameters.vocab_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the weights and Hessians live (cpu, cuda)")
    parser.add_argument("--no-count", action="store_true", help="skip the operator counts (a slow pass)")
    args = parser.parse_args(argv)
    h = dataclasses.replace(tg.Hyperparameters(), num_layers=args.num_layers, model_dim=args.model_dim,
                            vocab_size=args.vocab_size)
    device = torch.device(args.device)
    state_dict, hessians = record_matrices(h, args.seed)
    state_dict = {name: tensor.to(device) for name, tensor in state_dict.items()}
    hessians = {name: H.to(device) for name, H in hessians.items()}
    shapes = Counter(tuple(state_dict[name].shape) for name in hessians)
    figures = {"device": device.type, "threads": torch.get_num_threads(), "matrices": len(hessians),
               "shape_groups": len(shapes),
               "column_steps_reference": sum(shape[1] * n for shape, n in shapes.items()),
               "column_steps_fast": sum(shape[1] for shape in shapes)}
    expected, figures["reference_ms"] = timed(lambda: reference(state_dict, hessians, h), device)
    fast, figures["fast_ms"] = timed(lambda: tg.quantize_state_dict(state_dict, hessians, h), device)
    figures["speedup"] = figures["reference_ms"] / figures["fast_ms"]
    same = [torch.equal(fast[name]["q"], ints.cpu()) and torch.equal(fast[name]["scale"], scale.cpu())
            for name, (ints, scale) in expected.items()]
    figures["identical"] = int(all(same))
    if not args.no_count:
        for key, fn in (("reference_ops", lambda: reference(state_dict, hessians, h)),
                        ("fast_ops", lambda: tg.quantize_state_dict(state_dict, hessians, h))):
            with OperatorCount() as count:
                fn()
            figures[key] = sum(count.calls.values())
        figures["ops_ratio"] = figures["reference_ops"] / figures["fast_ops"]
    for key, value in figures.items():
        print(f"{key}:{value:.1f}" if isinstance(value, float) else f"{key}:{value}")
    return figures


if __name__ == "__main__":
    main()

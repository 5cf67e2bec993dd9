"""GPTQ section: Hessian collection, GPTQ against round-to-nearest, and the int6 / int8 / fp16
rules of quantize_state_dict (docs/quantization.md). Tiny matrices, one thread."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import train_gpt as tg

torch.set_num_threads(1)


def correlated_inputs(samples: int, width: int, seed: int) -> torch.Tensor:
    """X = Z @ A (samples, width): strongly correlated features, where GPTQ's error feedback
    has something to exploit, with column energies spread over two orders of magnitude."""
    generator = torch.Generator().manual_seed(seed)
    Z = torch.randn(samples, width, generator=generator)
    A = torch.randn(width, width, generator=generator) / width ** 0.5
    A += 0.9 * torch.randn(width, 1, generator=generator) @ torch.randn(1, width, generator=generator)
    return Z @ A * torch.logspace(-1, 1, width)[torch.randperm(width, generator=generator)]


def hessian_of(X: torch.Tensor) -> torch.Tensor:
    return X.T @ X / X.shape[0]


def output_error(weight: torch.Tensor, dequantized: torch.Tensor, X: torch.Tensor) -> float:
    return torch.linalg.norm((weight - dequantized) @ X.T).item()


def dequantize(ints: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return ints.float() * scale.float()[:, None]


@pytest.mark.parametrize("bits,clip_sigmas,block_size", [(6, 12.85, 128), (4, 4.0, 32), (8, 20.0, 64)])
def test_gptq_beats_round_to_nearest(bits, clip_sigmas, block_size):
    X = correlated_inputs(1024, 256, seed=0)
    weight = torch.randn(48, 256, generator=torch.Generator().manual_seed(1)) * 0.02
    ints, scale = tg.gptq_quantize(weight, hessian_of(X), bits, clip_sigmas, block_size=block_size)
    nearest = tg.round_to_nearest(weight, scale, bits)
    gptq_error = output_error(weight, dequantize(ints, scale), X)
    nearest_error = output_error(weight, dequantize(nearest, scale), X)
    assert gptq_error < 0.8 * nearest_error, (gptq_error, nearest_error)


def test_ints_in_range_and_scale_is_sdclip_fp16():
    bits, clip_sigmas, max_int = 6, 2.5, 31  # a tight clip, so that many values saturate
    X = correlated_inputs(512, 128, seed=2)
    weight = torch.randn(16, 128, generator=torch.Generator().manual_seed(3))
    weight[0, 5] = 20.0  # far beyond the clip: must saturate at +r, not wrap around in int8
    ints, scale = tg.gptq_quantize(weight, hessian_of(X), bits, clip_sigmas)
    assert ints.dtype == torch.int8 and ints.shape == weight.shape
    assert scale.dtype == torch.float16 and scale.shape == (16,)
    assert ints.abs().max().item() == max_int and ints[0, 5].item() == max_int
    expected = (clip_sigmas * weight.std(dim=1) / max_int).to(torch.float16)
    assert torch.equal(scale, expected)


def test_zero_row_quantizes_to_zero():
    weight = torch.randn(4, 64, generator=torch.Generator().manual_seed(4))
    weight[2] = 0.0
    ints, scale = tg.gptq_quantize(weight, hessian_of(correlated_inputs(256, 64, seed=5)), 6, 12.85)
    assert torch.all(ints[2] == 0) and scale[2].item() > 0


def test_dead_columns_are_zero_and_the_rest_still_beats_nearest():
    X = correlated_inputs(1024, 128, seed=6)
    dead = [3, 40, 127]
    X[:, dead] = 0.0
    weight = torch.randn(32, 128, generator=torch.Generator().manual_seed(7))
    H = hessian_of(X)
    assert torch.all(torch.diagonal(H)[dead] == 0)
    ints, scale = tg.gptq_quantize(weight, H, 6, 12.85)
    assert torch.all(ints[:, dead] == 0)
    assert torch.isfinite(scale.float()).all()
    nearest = tg.round_to_nearest(weight, scale, 6)
    assert output_error(weight, dequantize(ints, scale), X) < output_error(weight, dequantize(nearest, scale), X)


def test_diagonal_hessian_equals_round_to_nearest_in_original_column_order():
    """With a diagonal H there is no error feedback, so GPTQ is plain rounding; distinct
    diagonal values force a real permutation, which must be undone exactly."""
    cols = 96
    diagonal = torch.randperm(cols, generator=torch.Generator().manual_seed(8)).float() + 1.0
    weight = torch.randn(24, cols, generator=torch.Generator().manual_seed(9))
    ints, scale = tg.gptq_quantize(weight, torch.diag(diagonal), 6, 12.85, block_size=32)
    assert torch.equal(ints, tg.round_to_nearest(weight, scale, 6))


def test_permuting_the_input_columns_permutes_the_result():
    X = correlated_inputs(512, 64, seed=10)
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(11))
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(12))
    ints, _ = tg.gptq_quantize(weight, hessian_of(X), 6, 12.85, block_size=16)
    permuted, _ = tg.gptq_quantize(weight[:, permutation], hessian_of(X[:, permutation]), 6, 12.85, block_size=16)
    # Same columns in the same (sorted) processing order; only float sums may differ in the last bit.
    assert (permuted != ints[:, permutation]).sum().item() <= 2


class RecurrentToy(nn.Module):
    """Embedding -> one MLP block applied twice (like depth recurrence) -> final_norm -> tied head."""

    def __init__(self, vocab: int = 32, width: int = 8):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, width)
        self.fc = nn.Linear(width, 2 * width, bias=False)
        self.proj = nn.Linear(2 * width, width, bias=False)
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False)

    def loss(self, input_ids, target_ids):
        x = self.tok_emb(input_ids)
        for _ in range(2):
            x = x + self.proj(torch.relu(self.fc(x)))
        logits = self.final_norm(x) @ self.tok_emb.weight.T
        return nn.functional.cross_entropy(logits.flatten(0, 1), target_ids.flatten())

    def expected_hessians(self, batches) -> dict[str, torch.Tensor]:
        fc_in, proj_in, head_in = [], [], []
        with torch.no_grad():
            for batch in batches:
                x = self.tok_emb(batch[:, :-1]).reshape(-1, self.fc.in_features)
                for _ in range(2):
                    fc_in.append(x)
                    proj_in.append(torch.relu(self.fc(x)))
                    x = x + self.proj(proj_in[-1])
                head_in.append(self.final_norm(x))
        return {name: hessian_of(torch.cat(parts)) for name, parts in
                [("fc.weight", fc_in), ("proj.weight", proj_in), ("tok_emb.weight", head_in)]}


def test_collect_hessians_matches_direct_computation_and_removes_hooks():
    torch.manual_seed(13)
    model = RecurrentToy()
    batches = [torch.randint(0, 32, (3, 9)) for _ in range(2)]
    runtime = tg.setup_runtime(tg.Hyperparameters(device="cpu", compile=False), env={})
    hessians = tg.collect_hessians(model, iter(batches), runtime)
    expected = model.expected_hessians(batches)
    assert sorted(hessians) == sorted(expected)
    for name, H in hessians.items():
        assert H.dtype == torch.float32
        torch.testing.assert_close(H, expected[name], rtol=1e-5, atol=1e-6)
    assert all(not module._forward_hooks for module in model.modules())


def test_quantize_state_dict_kinds_and_exact_small_tensors():
    h = tg.Hyperparameters()
    generator = torch.Generator().manual_seed(14)
    state_dict = {
        "tok_emb.weight": torch.randn(320, 256, generator=generator) * 0.005,  # 81,920 > 65,536
        "blocks.0.mlp.fc.weight": torch.randn(288, 256, generator=generator) * 0.02,
        "blocks.0.attn_scale": torch.randn(256, generator=generator),
        "skip_weights": torch.randn(4, 64, generator=generator),  # a small matrix stays fp16
        "step_count": torch.tensor([7, 8], dtype=torch.int64),
    }
    H = hessian_of(correlated_inputs(512, 256, seed=15))
    hessians = {"tok_emb.weight": H, "blocks.0.mlp.fc.weight": H}
    quantized = tg.quantize_state_dict(state_dict, hessians, h)
    assert list(quantized) == list(state_dict)
    kinds = {name: entry["kind"] for name, entry in quantized.items()}
    assert kinds == {"tok_emb.weight": "int", "blocks.0.mlp.fc.weight": "int", "blocks.0.attn_scale": "fp16",
                     "skip_weights": "fp16", "step_count": "raw"}
    # int8 for the embedding, int6 for the matrix: the SDClip scale tells the bits apart.
    embedding, matrix = quantized["tok_emb.weight"], quantized["blocks.0.mlp.fc.weight"]
    assert torch.equal(embedding["scale"], tg.sdclip_scale(state_dict["tok_emb.weight"], 8, h.embed_clip_sigmas))
    assert torch.equal(matrix["scale"], tg.sdclip_scale(state_dict["blocks.0.mlp.fc.weight"], 6, h.matrix_clip_sigmas))
    assert matrix["q"].abs().max().item() <= 31 and embedding["q"].abs().max().item() <= 127
    restored = tg.dequantize_state_dict(quantized)
    for name, tensor in state_dict.items():
        assert restored[name].shape == tensor.shape
    assert restored["tok_emb.weight"].dtype == torch.float32
    assert torch.equal(restored["tok_emb.weight"], dequantize(embedding["q"], embedding["scale"]))
    for name in ("blocks.0.attn_scale", "skip_weights"):
        assert restored[name].dtype == torch.float32
        assert torch.equal(restored[name], state_dict[name].half().float())
    assert torch.equal(restored["step_count"], state_dict["step_count"])


def test_matrix_without_hessian_is_a_clear_error():
    state_dict = {"blocks.3.attn.q.weight": torch.randn(512, 256)}
    with pytest.raises(ValueError, match=r"blocks\.3\.attn\.q\.weight.*no Hessian"):
        tg.quantize_state_dict(state_dict, {}, tg.Hyperparameters())


# -- the batched path against the per-matrix yardstick (bit-exact) ---------------------------------


def quantized_exactly_as_reference(results, weights, hessians, bits, clip_sigmas, block_size, damp=0.01):
    for (ints, scale), weight, H, b, k in zip(results, weights, hessians, bits, clip_sigmas):
        expected_ints, expected_scale = tg.gptq_quantize(weight, H, b, k, block_size=block_size, damp=damp)
        assert ints.dtype == torch.int8 and scale.dtype == torch.float16
        assert torch.equal(ints, expected_ints) and torch.equal(scale, expected_scale)


@pytest.mark.parametrize("block_size", [128, 24])  # one block; blocks that do not divide the columns
def test_stack_is_bit_identical_to_per_matrix_gptq(block_size):
    """Each matrix its own H (so its own column order), bits and clip; dead inputs in two of them, a zero
    row in one; 4-bit at a tight clip so that many values saturate."""
    generator = torch.Generator().manual_seed(20)
    weights = [torch.randn(20, 72, generator=generator) * 0.02 for _ in range(4)]
    weights[1][3] = 0.0
    inputs = [correlated_inputs(256, 72, seed=21 + m) for m in range(4)]
    inputs[0][:, [0, 17, 71]] = 0.0
    inputs[2][:, 5:9] = 0.0
    hessians = [hessian_of(X) for X in inputs]
    bits, clip_sigmas = (6, 8, 4, 6), (12.85, 20.0, 2.5, 3.0)
    results = tg.gptq_quantize_stack(weights, hessians, bits, clip_sigmas, block_size, damp=0.02)
    quantized_exactly_as_reference(results, weights, hessians, bits, clip_sigmas, block_size, damp=0.02)
    assert torch.all(results[0][0][:, [0, 17, 71]] == 0) and torch.all(results[2][0][:, 5:9] == 0)


def test_quantize_state_dict_is_bit_identical_to_per_matrix_gptq():
    """Shape groups of one, two and three matrices, the embedding at EMBED_BITS in the same group as
    matrices at MATRIX_BITS (bits 7 and 5 here: the rule, not a constant, picks them)."""
    h = tg.Hyperparameters(embed_bits=7, matrix_bits=5, gptq_block_size=64)
    generator = torch.Generator().manual_seed(30)
    shapes = {"tok_emb.weight": (512, 160), "blocks.0.attn.q.weight": (512, 160), "blocks.0.mlp.fc.weight": (640, 160),
              "blocks.0.mlp.proj.weight": (512, 160), "blocks.1.mlp.fc.weight": (640, 160), "blocks.1.attn.o.weight": (480, 192)}
    state_dict = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}
    state_dict["blocks.0.attn_scale"] = torch.randn(160, generator=generator)
    inputs = {name: correlated_inputs(384, shape[1], seed=31 + i) for i, (name, shape) in enumerate(shapes.items())}
    inputs["tok_emb.weight"][:, :3] = 0.0  # dead inputs in a batched group
    hessians = {name: hessian_of(X) for name, X in inputs.items()}
    quantized = tg.quantize_state_dict(state_dict, hessians, h)
    assert list(quantized) == list(state_dict) and quantized["blocks.0.attn_scale"]["kind"] == "fp16"
    for name in shapes:
        bits, clip = (7, h.embed_clip_sigmas) if name == "tok_emb.weight" else (5, h.matrix_clip_sigmas)
        quantized_exactly_as_reference([(quantized[name]["q"], quantized[name]["scale"])], [state_dict[name]],
                                       [hessians[name]], [bits], [clip], h.gptq_block_size)
    assert torch.all(quantized["tok_emb.weight"]["q"][:, :3] == 0)


def test_bench_gptq_runs_at_tiny_sizes(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_gptq

    figures = bench_gptq.main(["--num-layers", "1", "--model-dim", "256", "--vocab-size", "512", "--no-count"])
    assert figures["identical"] == 1 and figures["matrices"] == 3
    assert "fast_ms:" in capsys.readouterr().out

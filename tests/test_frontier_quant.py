"""The frontier's quantization (docs/quantization.md): per-group SDClip sigmas, the int7 embedding, the
int8 quant-gate, AWQ-lite's protected group, LQER's low-rank correction, the per-group lrzip codec and the
artifact-fit guard. Tiny matrices; each test fails when its technique is off or misplaced."""
import shutil

import pytest
import torch

import train_gpt as tg

torch.set_num_threads(1)


def hparams(**env):
    return tg.Hyperparameters.from_env({"RECIPE": "best", "COMPRESSOR": "brotli", **env})


def correlated_hessian(width, seed, hot=None):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(2048, width, generator=generator) @ (torch.eye(width) + 0.3 * torch.randn(width, width, generator=generator) / width ** 0.5)
    if hot is not None:
        X[:, hot] *= 30.0  # a group of inputs with large activations
    return X.T @ X / X.shape[0]


def small_model_state(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "tok_emb.weight": torch.randn(320, 256, generator=generator) * 0.02,
        "blocks.0.attn.q.weight": torch.randn(288, 256, generator=generator) * 0.02,
        "blocks.0.mlp.fc.weight": torch.randn(512, 256, generator=generator) * 0.02,
        "blocks.0.mlp.proj.weight": torch.randn(256, 512, generator=generator) * 0.02,
        "blocks.0.attn.attn_gate_w": torch.randn(8, 12, generator=generator),
        "blocks.0.attn_scale": torch.randn(256, generator=generator),
    }


def hessians_for(state, hot=None):
    return {name: correlated_hessian(t.shape[1], i, hot if name == "blocks.0.mlp.fc.weight" else None)
            for i, (name, t) in enumerate(state.items()) if t.ndim == 2 and t.numel() > 65_536}


def test_per_group_sigmas_and_int7_embedding():
    h = hparams(LQER_ENABLED="0", AWQ_LITE_ENABLED="0")
    assert tg.quantization_plan("tok_emb.weight", h) == (7, 14.0)
    assert tg.quantization_plan("blocks.3.mlp.fc.weight", h) == (6, 11.5)
    assert tg.quantization_plan("blocks.3.attn.proj.weight", h) == (6, 13.0)
    base = tg.Hyperparameters.from_env({})
    assert tg.quantization_plan("blocks.3.mlp.fc.weight", base) == (6, 12.85)  # 0: MATRIX_CLIP_SIGMAS
    state = small_model_state()
    quantized = tg.quantize_state_dict(state, hessians_for(state), h)
    for name, (bits, k) in (("tok_emb.weight", (7, 14.0)), ("blocks.0.mlp.fc.weight", (6, 11.5)),
                            ("blocks.0.attn.q.weight", (6, 13.0))):
        assert torch.equal(quantized[name]["scale"], tg.sdclip_scale(state[name], bits, k)), name
    assert quantized["tok_emb.weight"]["q"].abs().max() <= 63


def test_quant_gate_stores_attention_gates_as_int8_rows():
    state = small_model_state()
    on = tg.quantize_state_dict(state, hessians_for(state), hparams(LQER_ENABLED="0"))["blocks.0.attn.attn_gate_w"]
    gate = state["blocks.0.attn.attn_gate_w"]
    assert on["kind"] == "int" and on["q"].dtype == torch.int8 and on["q"].abs().max() == 127
    assert torch.equal(on["scale"], (gate.abs().amax(1) / 127).half())
    assert (tg.dequantize_int(on) - gate).abs().max() <= on["scale"].float().max() / 2 + 1e-6
    off = tg.quantize_state_dict(state, hessians_for(state), hparams(GATED_ATTN_QUANT_GATE="0"))
    assert off["blocks.0.attn.attn_gate_w"]["kind"] == "fp16"


def test_awq_lite_protects_the_highest_scoring_group():
    h = hparams(LQER_ENABLED="0")
    state = small_model_state()
    hessians = hessians_for(state, hot=slice(128, 192))
    chosen = tg.awq_lite_select(state, hessians, h)
    assert chosen == {"blocks.0.mlp.fc.weight": 128}  # one group in the whole model, where the inputs are large
    quantized = tg.quantize_state_dict(state, hessians, h, chosen)
    entry = quantized["blocks.0.mlp.fc.weight"]
    high = tg.sdclip_scale(state["blocks.0.mlp.fc.weight"], 8, 11.5)
    assert torch.equal(entry["awq_scale"], high) and entry["awq_start"].tolist() == [128]
    assert entry["q"][:, 128:192].abs().max() > 31 and entry["q"][:, :128].abs().max() <= 31
    restored = tg.dequantize_int(entry)
    assert torch.equal(restored[:, 128:192], entry["q"][:, 128:192].float() * high.float()[:, None])
    plain = tg.quantize_state_dict(state, hessians, h)["blocks.0.mlp.fc.weight"]
    weight = state["blocks.0.mlp.fc.weight"]
    group_error = lambda w: (w - weight)[:, 128:192].square().sum()  # noqa: E731
    assert group_error(restored) < 0.1 * group_error(tg.dequantize_int(plain))
    # The output error, weighted by H, drops: the protected inputs carry most of the energy.
    H = hessians["blocks.0.mlp.fc.weight"]
    output_error = lambda w: torch.trace((w - weight) @ H @ (w - weight).T)  # noqa: E731
    assert output_error(restored) < output_error(tg.dequantize_int(plain))


def test_lqer_corrects_the_worst_matrices_with_int2_and_int4_factors():
    h = hparams(AWQ_LITE_ENABLED="0", LQER_TOP_K="2")
    state = small_model_state()
    hessians = hessians_for(state)
    quantized = tg.quantize_state_dict(state, hessians, h)
    before = {n: float((tg.dequantize_int(quantized[n]) - state[n]).norm()) for n in hessians}
    chosen = tg.lqer_correct(quantized, state, hessians, h)
    assert chosen == sorted(before, key=before.get, reverse=True)[:2]
    for name in hessians:
        entry = quantized[name]
        if name not in chosen:
            assert "lqer_a" not in entry
            continue
        rows, cols = entry["q"].shape
        assert entry["lqer_a"].shape == (rows, 4) and entry["lqer_b"].shape == (4, cols)
        assert entry["lqer_a"].min() >= -2 and entry["lqer_a"].max() <= 1
        assert entry["lqer_b"].min() >= -8 and entry["lqer_b"].max() <= 7
        assert entry["lqer_b_scale"].shape == (4 * cols // 64,) and entry["lqer_a_scale"].dtype == torch.float16
        after = float((tg.dequantize_int(entry) - state[name]).norm())
        assert after < before[name]


def test_lqer_pack_reconstructs_a_low_rank_error():
    torch.manual_seed(0)
    error = torch.randn(64, 4) @ torch.randn(4, 128)
    packed = tg.lqer_pack(error, 4, 64)
    a = packed["lqer_a"].float() * packed["lqer_a_scale"].float()
    b = (packed["lqer_b"].float().view(-1, 64) * packed["lqer_b_scale"].float()[:, None]).view(4, 128)
    assert (a @ b - error).norm() < 0.8 * error.norm()  # int2 A is coarse; the error still shrinks


def test_quantize_model_runs_the_recipe_and_serializes():
    h = hparams()
    state = small_model_state()
    quantized, chosen = tg.quantize_model(state, hessians_for(state, hot=slice(0, 64)), h)
    assert chosen["awq_groups"] == "blocks.0.mlp.fc.weight@0" and chosen["lqer_tensors"].count(",") == 2
    again = tg.deserialize_artifact(tg.serialize_quantized(quantized))
    for name, entry in quantized.items():
        for field, tensor in entry.items():
            if field != "kind":
                assert torch.equal(again[name][field], tensor), (name, field)
    restored = tg.dequantize_state_dict(again)
    assert all(restored[n].shape == t.shape for n, t in state.items())


@pytest.mark.slow
def test_fit_guard_fits_a_small_limit_deterministically_and_logs_its_cost():
    h = hparams()
    state = small_model_state()
    hessians = hessians_for(state)
    quantized, _ = tg.quantize_model(state, hessians, h)
    size = len(tg.serialize_quantized(quantized))
    budget = size - 4000
    blob, fit = tg.fit_to_limit(quantized, state, hessians, budget, tg.serialize_quantized)
    assert len(blob) <= budget and fit["fit_changes"] > 0
    assert fit["fit_output_error_after"] > fit["fit_output_error_before"] > 0 and fit["fit_error_increase_pct"] > 0
    assert fit["fit_output_error_after"] == pytest.approx(
        sum(tg.output_error(quantized[n], state[n], hessians[n]) for n in hessians))
    again, _ = tg.quantize_model(state, hessians, h)
    blob2, fit2 = tg.fit_to_limit(again, state, hessians, budget, tg.serialize_quantized)
    assert blob2 == blob and fit2 == fit
    untouched, nothing = tg.fit_to_limit(again, state, hessians, 10 ** 9, tg.serialize_quantized)
    assert nothing == {} and untouched == blob
    with pytest.raises(ValueError, match="cannot fit"):
        tg.fit_to_limit(again, state, hessians, 100, tg.serialize_quantized)


def test_fit_guard_picks_the_cheapest_changes_first():
    """Against moving codes at random, the chosen changes cost less output error for the same count."""
    h = hparams(LQER_ENABLED="0", AWQ_LITE_ENABLED="0")
    state = small_model_state()
    hessians = hessians_for(state)
    quantized, _ = tg.quantize_model(state, hessians, h)
    budget = len(tg.serialize_quantized(quantized)) - 2000
    before = {n: quantized[n]["q"].clone() for n in hessians}
    _, fit = tg.fit_to_limit(quantized, state, hessians, budget, tg.serialize_quantized)
    generator = torch.Generator().manual_seed(0)
    random_error = 0.0
    for name in hessians:
        q = before[name]
        moved = int((quantized[name]["q"] != q).sum())
        pick = torch.zeros(q.numel(), dtype=torch.bool)
        pick[torch.randperm(q.numel(), generator=generator)[:moved]] = True
        entry = dict(quantized[name], q=(q - torch.sign(q) * pick.view_as(q)).to(torch.int8))
        random_error += tg.output_error(entry, state[name], hessians[name])
    assert fit["fit_output_error_after"] < random_error


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lrzip") is None, reason="needs the lrzip program")
def test_pergroup_codec_roundtrips_exactly():
    h = hparams()
    state = small_model_state()
    quantized, _ = tg.quantize_model(state, hessians_for(state), h)
    blob = tg.serialize_pergroup(quantized)
    assert blob[:4] == b"PGRP"
    again = tg.deserialize_artifact(blob)
    assert list(again) == list(quantized)
    for name, entry in quantized.items():
        assert set(again[name]) == set(entry), name
        for field, tensor in entry.items():
            if field != "kind":
                assert torch.equal(again[name][field], tensor), (name, field)


def test_similarity_order_chains_nearest_rows():
    rows = torch.tensor([[0, 0], [9, 9], [1, 0], [8, 9], [2, 1]], dtype=torch.int8)
    assert tg.similarity_order(rows).tolist() == [0, 2, 4, 3, 1]


def test_pergroup_without_lrzip_fails_at_once(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="lrzip"):
        tg.check_compressor(tg.Hyperparameters.from_env({"RECIPE": "pr1855"}))
    tg.check_compressor(tg.Hyperparameters.from_env({"RECIPE": "pr1874"}))  # brotli: nothing needed


def test_the_stacked_gptq_protects_awq_columns_exactly_as_the_yardstick():
    """gptq_quantize_stack (what a run calls) with AWQ-lite groups in some matrices of a stack equals
    gptq_quantize (the one-matrix yardstick) bit for bit, protected or not."""
    generator = torch.Generator().manual_seed(5)
    weights = tuple(torch.randn(48, 128, generator=generator) * 0.02 for _ in range(3))
    hessians = tuple(correlated_hessian(128, seed) for seed in range(3))
    guards = (None, (64, 64, 8, tg.sdclip_scale(weights[1], 8, 11.5)), (0, 64, 8, tg.sdclip_scale(weights[2], 8, 13.0)))
    stacked = tg.gptq_quantize_stack(weights, hessians, (6, 6, 7), (12.85, 11.5, 13.0), 32, 0.01, guards)
    for weight, hessian, bits, k, guard, (ints, scale) in zip(weights, hessians, (6, 6, 7), (12.85, 11.5, 13.0),
                                                               guards, stacked):
        alone = tg.gptq_quantize(weight, hessian, bits, k, block_size=32, damp=0.01, protected=guard)
        assert torch.equal(ints, alone[0]) and torch.equal(scale, alone[1])
    assert stacked[1][0][:, 64:].abs().max() > 31 and stacked[1][0][:, :64].abs().max() <= 31

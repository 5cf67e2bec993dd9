"""The frontier recipes (docs/architecture.md): presets as data, their parameter counts against the records'
logs, and an independent fp32 reference of each published architecture, written from the specification
(equations only; it shares no code with train_gpt.py's model), that the model's logits must equal with
identical weights. Each technique also has a test of its defining invariant that fails when it is
switched off or applied in the wrong place."""
import math

import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg
from conftest import TINY_ENV

# Logged model_params of each record. #2014 logs 35,945,673 with its two AsymLogit scalars (softcap_pos,
# softcap_neg), which never train (SPEC_FRONTIER §5): `best` leaves them out. #1855 and #1874 as logged.
RECORD_PARAMETERS = {"pr1493": 35_944_536, "pr1855": 35_945_671, "best": 35_945_673 - 2, "pr1874": 35_946_727}

# Tiny shapes that keep every mechanism in play: two-lane blocks from layer 2 (the decoder holds 1, 2, 3 with
# looping), a span schedule within the 64-token rows.
TINY_RECIPE = {"PARALLEL_START_LAYER": "2", "TRAIN_SEQ_LEN": "64", "EVAL_SEQ_LEN": "64", "COMPRESSOR": "brotli"}


def recipe_hparams(recipe, **overrides):
    extra = {"TRAIN_SEQ_SCHEDULE": "16@0.1,32@0.7,64@1.0"} if recipe == "best" else {}
    return tg.Hyperparameters.from_env({**TINY_ENV, **TINY_RECIPE, **extra, "RECIPE": recipe, **overrides})


@pytest.mark.parametrize("recipe", sorted(RECORD_PARAMETERS))
def test_parameter_count_equals_the_records(recipe):
    h = tg.Hyperparameters.from_env({"RECIPE": recipe})
    assert tg.count_parameters(tg.GPT(h)) == RECORD_PARAMETERS[recipe]


def test_presets_are_data_over_fields_and_the_environment_overrides_them():
    names = {f.name for f in tg.fields(tg.Hyperparameters)}
    for recipe, values in tg.RECIPES.items():
        assert set(values) <= names, recipe
        h = tg.Hyperparameters.from_env({"RECIPE": recipe})
        assert all(getattr(h, k) == v for k, v in values.items())
    assert tg.RECIPES["pr1493"] == {}
    assert tg.Hyperparameters.from_env({"RECIPE": "pr1493"}) == tg.Hyperparameters.from_env({})
    h = tg.Hyperparameters.from_env({"RECIPE": "best", "MIN_LR": "0.2", "COMPRESSOR": "brotli"})
    assert h.min_lr == 0.2 and h.compressor == "brotli" and h.awq_lite_enabled
    assert '"recipe": "best"' in h.to_log() and '"min_lr": 0.2' in h.to_log()
    with pytest.raises(ValueError, match="RECIPE"):
        tg.Hyperparameters.from_env({"RECIPE": "pr9999"})


def test_recipe_values_from_the_records():
    best = tg.Hyperparameters.from_env({"RECIPE": "best"})
    assert (best.parallel_lanes, best.parallel_start_layer, best.qk_gain_init) == (2, 8, 5.25)
    assert best.smear_gate_enabled and best.smear_gate_bos_fix and best.sparse_attn_gate_enabled
    assert (best.sparse_attn_gate_scale, best.gate_window, best.gated_attn_quant_gate) == (0.5, 12, True)
    assert (best.muon_momentum, best.muon_ns_coefficients, best.matrix_lr, best.min_lr) == (0.97, "polar_express",
                                                                                            0.026, 0.10)
    assert (best.warmdown_frac, best.beta2, best.gptq_reserve_seconds, best.gptq_calibration_batches) == (0.85, 0.99,
                                                                                                         4.0, 16)
    assert (best.mlp_clip_sigmas, best.attn_clip_sigmas, best.embed_clip_sigmas, best.embed_bits) == (11.5, 13.0,
                                                                                                     14.0, 7)
    assert best.lqer_enabled and (best.lqer_rank, best.lqer_top_k, best.lqer_asym_group) == (4, 3, 64)
    assert best.awq_lite_enabled and (best.awq_lite_bits, best.awq_lite_group_top_k, best.awq_lite_group_size) == (
        8, 1, 64)
    assert tg.seq_schedule(best) == [(1024, 0.1), (2048, 0.7), (3072, 1.0)] and best.seq_change_warmup_steps == 32
    pr1874 = tg.Hyperparameters.from_env({"RECIPE": "pr1874"})
    assert pr1874.attn_out_gate_enabled and pr1874.attn_out_gate_width == 24 and not pr1874.smear_gate_bos_fix
    assert (pr1874.warmdown_frac, pr1874.beta2, pr1874.embed_clip_sigmas) == (0.75, 0.95, 15.0)
    pr1855 = tg.Hyperparameters.from_env({"RECIPE": "pr1855"})
    assert (pr1855.qk_gain_init, pr1855.gptq_reserve_seconds, pr1855.compressor) == (5.0, 0.5, "pergroup")


# ---------------------------------------------------------------------------------------------------------
# The independent reference: SPEC.md §3 and SPEC_FRONTIER §1.1, §3, §6.1 as equations, fp32, loops over layers.
# ---------------------------------------------------------------------------------------------------------

def ref_rms(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def ref_rope(x, rope_dims, base):
    """Partial RoPE on the first rope_dims of each head: pairs (i, i + rope_dims/2), angle t·base^(-2i/rope_dims)."""
    T, half = x.size(1), rope_dims // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64) * 2 / rope_dims)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freq[None]
    cos, sin = angle.cos().float()[None, :, None], angle.sin().float()[None, :, None]
    a, b = x[..., :half], x[..., half:rope_dims]
    return torch.cat((a * cos - b * sin, a * sin + b * cos, x[..., rope_dims:]), -1)


def ref_segments(ids, span):
    """Segment id per position: new at t = 0, at a BOS, and every `span` tokens into a document."""
    out = torch.zeros_like(ids)
    counter = 0
    for b in range(ids.size(0)):
        start = 0
        for t in range(ids.size(1)):
            if t == 0 or ids[b, t] == tg.BOS_ID:
                start = t
            if t == start or (span and (t - start) % span == 0):
                counter += 1
            out[b, t] = counter
    return out


def ref_attention(P, prefix, u, h, segments):
    B, T, _ = u.shape
    H, Hkv = h.num_heads, h.num_kv_heads
    D = h.model_dim // H
    q = (u @ P[prefix + "q.weight"].T).view(B, T, H, D)
    k = (u @ P[prefix + "k.weight"].T).view(B, T, Hkv, D)
    v = (u @ P[prefix + "v.weight"].T).view(B, T, Hkv, D)
    q, k = ref_rope(ref_rms(q), h.rope_dims, h.rope_base), ref_rope(ref_rms(k), h.rope_dims, h.rope_base)
    q = q * P[prefix + "q_gain"][None, None, :, None]
    y = torch.zeros(B, T, H, D)
    for head in range(H):
        g = head // (H // Hkv)  # GQA: query head -> its KV group
        scores = q[:, :, head] @ k[:, :, g].transpose(1, 2) / math.sqrt(D)
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None]
        if segments is not None:
            allowed = allowed & (segments[:, :, None] == segments[:, None, :])
        y[:, :, head] = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v[:, :, g]
        unit = F.normalize(v[:, :, g], dim=-1)  # XSA on every layer (XSA_LAST_N = NUM_LAYERS)
        y[:, :, head] = y[:, :, head] - (y[:, :, head] * unit).sum(-1, keepdim=True) * unit
    if h.attn_out_gate_enabled:  # 2·sigmoid(W u[:width]) per head
        y = y * (2 * torch.sigmoid(u[..., :h.attn_out_gate_width] @ P[prefix + "attn_gate_w"].T))[..., None]
    if h.sparse_attn_gate_enabled:  # sigmoid(κ·W u[:window]) per head
        y = y * torch.sigmoid(h.sparse_attn_gate_scale * (u[..., :h.gate_window] @ P[prefix + "attn_gate_w"].T))[..., None]
    return y.reshape(B, T, H * D) @ P[prefix + "proj.weight"].T


def ref_branches(P, layer, h, lane_attn, lane_mlp, x0, segments):
    """(attention branch of lane_attn with resid_mix, MLP branch of lane_mlp), each scaled."""
    p = f"blocks.{layer}."
    s = 1 / math.sqrt(layer + 1)
    x_in = P[p + "resid_mix"][0] * lane_attn + P[p + "resid_mix"][1] * x0
    a = P[p + "attn_scale"] * ref_attention(P, p + "attn.", ref_rms(x_in) * s, h, segments)
    return x_in, a


def ref_mlp(P, layer, x):
    p = f"blocks.{layer}."
    u = ref_rms(x) / math.sqrt(layer + 1)
    return P[p + "mlp_scale"] * (F.leaky_relu(u @ P[p + "mlp.fc.weight"].T, 0.5).square() @ P[p + "mlp.proj.weight"].T)


def ref_logits(P, h, ids, looping, span=0):
    e = P["tok_emb.weight"][ids]
    if h.smear_gate_enabled:
        g = P["smear_lambda"] * torch.sigmoid(e[:, 1:, :h.gate_window] @ P["smear_gate"].T)
        if h.smear_gate_bos_fix:
            g = g * (ids[:, 1:] != tg.BOS_ID)[..., None].float()
        e = torch.cat((e[:, :1], e[:, 1:] + g * e[:, :-1]), 1)
    x = x0 = ref_rms(e)
    segments = ref_segments(ids, span) if h.attn_doc_mask else None
    order = list(range(h.num_layers))
    if looping:
        loop = list(range(h.loop_start, h.loop_end + 1))
        order = order[:h.loop_start] + loop * (h.num_loops + 1) + order[h.loop_end + 1:]
    encoder, decoder = order[:len(order) // 2], order[len(order) // 2:]
    skips, lanes = [], None
    for slot, layer in enumerate(encoder + decoder):
        decoding = slot >= len(encoder)
        two_lane = decoding and h.parallel_lanes == 2 and layer >= h.parallel_start_layer
        if two_lane and lanes is None:
            lanes = [x, x]
        i = slot - len(encoder)
        if decoding and skips and i < P["skip_weights"].size(0):
            skip = P["skip_weights"][i] * skips.pop()
            gate = torch.sigmoid(P["skip_gates"][i])
            if lanes is None:
                x = skip + gate * (x - skip)
            else:
                lanes[0] = skip + gate * (lanes[0] - skip)
        if lanes is not None:  # two lanes: attention on lane 0 (+x0 mix), MLP on lane 1
            post, rho = P["parallel_post_lambdas"][layer], P["parallel_resid_lambdas"][layer]
            _, a = ref_branches(P, layer, h, lanes[0], None, x0, segments)
            m = ref_mlp(P, layer, lanes[1])
            lanes = [rho[0] * lanes[0] + post[0, 0] * a + post[1, 0] * m,
                     rho[1] * lanes[1] + post[0, 1] * a + post[1, 1] * m]
            continue
        x_in, a = ref_branches(P, layer, h, x, None, x0, segments)
        if layer >= h.parallel_start_layer:  # one stream, GPT-J parallel
            x = x_in + a + ref_mlp(P, layer, x_in)
        else:
            x = x_in + a
            x = x + ref_mlp(P, layer, x)
        if not decoding:
            skips.append(x)
    if lanes is not None:
        x = (lanes[0] + lanes[1]) / 2
    z = ref_rms(x) @ P["tok_emb.weight"].T
    return h.logit_softcap * torch.tanh(z / h.logit_softcap)


def perturbed_model(h, seed=0):
    torch.manual_seed(seed)
    model = tg.GPT(h)
    with torch.no_grad():
        for p in model.parameters():  # every gate, lambda and zero-initialized branch non-trivial
            p.add_(0.05 * torch.randn_like(p))
    return model


def tokens_with_documents(h, seed=1, rows=2, length=40):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, h.vocab_size, (rows, length), generator=generator)
    ids[0, [0, 9, 23]] = tg.BOS_ID
    ids[1, [14, 15, 31]] = tg.BOS_ID
    return ids


@pytest.mark.parametrize("recipe", ["pr1493", "pr1874", "pr1855", "best"])
@pytest.mark.parametrize("looping", [False, True])
def test_logits_equal_the_independent_reference(recipe, looping):
    h = recipe_hparams(recipe)
    model = perturbed_model(h)
    model.looping = looping
    ids = tokens_with_documents(h)
    P = {k: v.detach().float() for k, v in model.named_parameters()}
    with torch.no_grad():
        ours = model.logits(model.hidden(ids))
        span = 16 if recipe == "best" else 0
        model.span = span
        ours_capped = model.logits(model.hidden(ids))
    assert torch.allclose(ours, ref_logits(P, h, ids, looping), atol=2e-4), recipe
    assert torch.allclose(ours_capped, ref_logits(P, h, ids, looping, span=span), atol=2e-4), recipe


@pytest.mark.parametrize("recipe, change", [
    ("best", {"SMEAR_GATE_ENABLED": "0"}), ("best", {"SMEAR_GATE_BOS_FIX": "0"}),
    ("best", {"SPARSE_ATTN_GATE_ENABLED": "0"}), ("best", {"SPARSE_ATTN_GATE_SCALE": "1.0"}),
    ("best", {"PARALLEL_LANES": "1"}), ("best", {"PARALLEL_START_LAYER": "3"}),
    ("best", {"ATTN_DOC_MASK": "0", "TRAIN_SEQ_SCHEDULE": ""}), ("best", {"GATE_WINDOW": "8"}),
    ("pr1874", {"ATTN_OUT_GATE_ENABLED": "0"}), ("pr1874", {"ATTN_OUT_GATE_WIDTH": "12"}),
    ("pr1874", {"SMEAR_GATE_BOS_FIX": "1"}),
])
def test_the_reference_tells_each_technique_off_or_misplaced(recipe, change):
    """The reference of a recipe against a model built with one technique off or moved: the logits differ
    (weights copied by name where both have them), so the equality above is a test of every technique."""
    h = recipe_hparams(recipe)
    wrong = perturbed_model(recipe_hparams(recipe, **change))
    P = {k: v.detach().float() for k, v in perturbed_model(h).named_parameters()}
    with torch.no_grad():
        for name, p in wrong.named_parameters():
            if name in P and P[name].shape == p.shape:
                p.copy_(P[name])
        ids = tokens_with_documents(h)
        ours = wrong.logits(wrong.hidden(ids))
    assert not torch.allclose(ours, ref_logits(P, h, ids, True), atol=1e-3)


def test_smear_gate_is_transparent_at_init_and_never_crosses_a_bos():
    h = recipe_hparams("best")
    model = tg.GPT(h)
    e = torch.randn(2, 10, h.model_dim)
    ids = torch.randint(2, h.vocab_size, (2, 10))
    ids[:, 4] = tg.BOS_ID
    assert torch.equal(model.smear(e, ids), e)  # λ = 0, w = 0
    with torch.no_grad():
        model.smear_lambda.fill_(1.0)
    out = model.smear(e, ids)
    assert torch.equal(out[:, 4], e[:, 4]) and torch.equal(out[:, 0], e[:, 0])  # BOS and position 0 untouched
    assert torch.allclose(out[:, 5], e[:, 5] + 0.5 * e[:, 4])  # sigmoid(0) = 0.5, from the un-smeared e_4
    leaky = tg.GPT(recipe_hparams("best", SMEAR_GATE_BOS_FIX="0"))
    with torch.no_grad():
        leaky.smear_lambda.fill_(1.0)
    assert not torch.equal(leaky.smear(e, ids)[:, 4], e[:, 4])


@pytest.mark.parametrize("evaluate", ["loss", "hidden", "statistics"])
def test_no_path_lets_a_document_read_the_one_before(evaluate):
    """The BOS fix and the document mask in every forward path: changing a document changes nothing after the
    next BOS, through the training loss, the evaluation hidden states and the scored statistics."""
    h = recipe_hparams("best")
    model = perturbed_model(h)
    model.looping = True
    ids = tokens_with_documents(h)[:1]  # BOS at 0, 9, 23
    changed = ids.clone()
    changed[0, 10:23] = (changed[0, 10:23] + 5) % h.vocab_size
    with torch.no_grad():
        if evaluate == "loss":  # per-position losses of the last document
            def run(x):
                logits = model.logits(model.hidden(x[:, :-1]))
                return F.cross_entropy(logits[0], x[0, 1:], reduction="none")[23:]
        elif evaluate == "hidden":
            def run(x):
                return model.hidden(x)[:, 23:]
        else:
            def run(x):
                return model.statistics(model.hidden(x[:, :-1]), x[:, 1:])[:, :, 23:]
        assert torch.allclose(run(ids), run(changed), atol=1e-6)
    assert not torch.allclose(model.hidden(ids)[:, 10:23], model.hidden(changed)[:, 10:23])


def test_masked_sdpa_equals_attention_run_per_segment():
    torch.manual_seed(0)
    ids = torch.randint(2, 100, (2, 37))
    ids[0, [5, 20]] = tg.BOS_ID
    ids[1, 30] = tg.BOS_ID
    segments = tg.document_segments(ids, span=8)
    q = torch.randn(2, 37, 4, 16)
    k, v = torch.randn(2, 37, 2, 16), torch.randn(2, 37, 2, 16)
    out = tg.causal_attention(q, k, v, "sdpa", segments)
    for b in range(2):
        for segment in segments[b].unique():
            where = (segments[b] == segment).nonzero().flatten()
            a, z = int(where[0]), int(where[-1]) + 1
            alone = tg.reference_attention(q[b:b + 1, a:z], k[b:b + 1, a:z], v[b:b + 1, a:z])
            assert torch.allclose(out[b:b + 1, a:z], alone, atol=1e-5)
    assert torch.equal(segments, ref_segments(ids, 8))
    assert int((segments[0, 1:] != segments[0, :-1]).sum()) == 5  # BOS 5, 20; cuts at 8 (row), 13, 28


def test_attention_gates_at_init():
    """Output gate: 2·sigmoid(0) = 1, the block is unchanged; sparse gate: sigmoid(0) = 0.5, the output halves."""
    torch.manual_seed(0)
    plain_h = recipe_hparams("pr1493")
    x = torch.randn(2, 12, plain_h.model_dim)
    cos, sin = tg.rotary_tables(12, plain_h.rope_dims, plain_h.rope_base, 64, "cpu")
    plain = tg.Attention(plain_h, use_xsa=True)
    for recipe, factor in (("pr1874", 1.0), ("best", 0.5)):
        gated = tg.Attention(recipe_hparams(recipe, QK_GAIN_INIT="5.25"), use_xsa=True)
        gated.load_state_dict({**plain.state_dict(), "attn_gate_w": gated.attn_gate_w}, strict=True)
        torch.nn.init.normal_(gated.proj.weight)
        plain.proj.weight.data.copy_(gated.proj.weight)
        assert torch.allclose(gated(x, cos, sin), factor * plain(x, cos, sin), atol=1e-5), recipe


def test_two_lane_block_lanes_and_what_they_read():
    """Lane 0's attention reads resid_mix(lane0, x0); lane 1's MLP reads lane 1 alone; at init (P = 1,
    ρ = 1.1) both lanes take both branches."""
    torch.manual_seed(0)
    h = recipe_hparams("best")
    block = tg.Block(h, 3)
    torch.nn.init.normal_(block.attn.proj.weight, std=0.1)
    torch.nn.init.normal_(block.mlp.proj.weight, std=0.1)
    lane0, lane1, x0 = (torch.randn(1, 8, h.model_dim) for _ in range(3))
    cos, sin = tg.rotary_tables(8, h.rope_dims, h.rope_base, 64, "cpu")
    model = tg.GPT(h)
    post, rho = model.parallel_post_lambdas[3], model.parallel_resid_lambdas[3]
    assert torch.equal(post, torch.ones(2, 2)) and torch.allclose(rho, torch.full((2,), 1.1))
    out0, out1 = block.two_lanes(lane0, lane1, x0, cos, sin, None, post, rho)
    a = block.attend(block.mixed(lane0, x0), cos, sin, None)
    m = block.feed(lane1)
    assert torch.allclose(out0, 1.1 * lane0 + a + m, atol=1e-6) and torch.allclose(out1, 1.1 * lane1 + a + m, atol=1e-6)
    with torch.no_grad():
        block.resid_mix[1].fill_(0.7)  # x0 enters the attention lane only: out1 - out0 changes by ρ·(lane) terms only
    again0, again1 = block.two_lanes(lane0, lane1, x0, cos, sin, None, post, rho)
    assert torch.allclose(again1 - 1.1 * lane1, again0 - 1.1 * lane0, atol=1e-5)
    assert not torch.allclose(again0, out0)


def test_polar_express_uses_each_tuple_once_in_order():
    torch.manual_seed(0)
    gradient = torch.randn(48, 96)
    x = gradient / (gradient.norm() + 1e-7)
    for a, b, c in tg.NEWTON_SCHULZ_COEFFICIENTS["polar_express"]:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    assert torch.allclose(tg.newton_schulz(gradient, 5, "polar_express"), x, atol=1e-5)
    assert torch.allclose(tg.newton_schulz(gradient, 9, "polar_express"), x, atol=1e-5)  # no more than 5
    assert not torch.allclose(tg.newton_schulz(gradient, 5, "jordan"), x, atol=1e-3)
    tall = tg.newton_schulz(gradient.T, 5, "polar_express")  # the tall orientation runs transposed
    assert torch.allclose(tall, x.T, atol=1e-5)
    singular = torch.linalg.svdvals(x)
    assert singular.min() > 0.8 and singular.max() < 1.2  # closer to orthogonal than jordan's [0.7, 1.2]


def test_optimizer_levers_reach_the_optimizers_and_the_schedule():
    h = recipe_hparams("best")
    optimizers = tg.build_optimizers(tg.GPT(h), h, tg.setup_runtime(h, {}))
    assert optimizers.adam.defaults["betas"] == (0.9, 0.99)
    assert optimizers.muon.param_groups[0]["ns_coefficients"] == "polar_express"
    assert optimizers.muon.param_groups[0]["lr"] == 0.026
    assert tg.muon_momentum_at(10_000, h) == 0.97 and tg.muon_momentum_at(0, h) == 0.92
    # Warm-down 0.85 from progress 0.15, floor 0.10 from 1 - 0.10·0.85 = 0.915 on.
    assert tg.lr_scale(0.15, h) == 1.0 and tg.lr_scale(0.5, h) == pytest.approx(0.5 / 0.85)
    assert tg.lr_scale(0.915, h) == pytest.approx(0.1) and tg.lr_scale(0.99, h) == 0.1 and tg.lr_scale(1.0, h) == 0.1
    base = tg.Hyperparameters.from_env({})
    assert tg.lr_scale(1.0, base) == 0.0 and tg.lr_scale(0.64, base) == pytest.approx(0.5)


@pytest.mark.slow
def test_compiled_best_training_and_eval_graphs_match_eager():
    """torch.compile of the plain form (no speed-only kernels): the best recipe's loss and gradients (the one
    forward every path runs), document mask and span cap included, equal eager."""
    torch._dynamo.reset()
    h = recipe_hparams("best")
    model = perturbed_model(h)
    model.looping, model.span = True, 16
    ids = tokens_with_documents(h, length=33)
    eager = model.loss(ids[:, :-1], ids[:, 1:])
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model.loss, fullgraph=True, backend="inductor")(ids[:, :-1], ids[:, 1:])
    compiled.backward()
    assert torch.allclose(eager, compiled, atol=1e-5)
    for a, p in zip(grads, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and tg.HAS_FA3), reason="needs CUDA and FlashAttention-3")
def test_flash_attention_3_varlen_equals_the_masked_reference():
    torch.manual_seed(0)
    ids = torch.randint(2, 100, (3, 256), device="cuda")
    ids[0, [17, 100]] = tg.BOS_ID
    ids[2, 200] = tg.BOS_ID
    segments = tg.document_segments(ids, span=64)
    q = torch.randn(3, 256, 8, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(3, 256, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    fast = tg.causal_attention(q, k, v, "fa3", segments)
    masked = tg.causal_attention(q.float(), k.float(), v.float(), "sdpa", segments)
    assert torch.allclose(fast.float(), masked, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_best_recipe_compiled_on_cuda_matches_eager_fp32():
    """The GPU path of the best recipe (bf16 autocast, FA3 varlen where present, torch.compile) against
    the fp32 eager model with the same weights."""
    h = recipe_hparams("best")
    model = perturbed_model(h).cuda()
    model.looping, model.span = True, 16
    if tg.HAS_FA3:
        model.set_attention_impl("fa3")
    ids = tokens_with_documents(h, length=65).cuda()
    with torch.no_grad():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = torch.compile(model.loss)(ids[:, :-1], ids[:, 1:])
        model.set_attention_impl("sdpa")
        reference = model.loss(ids[:, :-1], ids[:, 1:])
    assert abs(fast.item() - reference.item()) < 3e-2


def test_progressive_context_stages_and_rewarm():
    h = tg.Hyperparameters.from_env({"RECIPE": "best"})
    assert [tg.span_at(p, h) for p in (0.0, 0.1, 0.1001, 0.7, 0.71, 1.0, 1.2)] == [1024, 1024, 2048, 2048, 3072,
                                                                                   3072, 3072]
    assert tg.span_at(0.5, tg.Hyperparameters.from_env({})) == 0  # no schedule: no cap beyond the row
    assert tg.rewarm_scale(646, 646, h) == 1 / 32 and tg.rewarm_scale(677, 646, h) == 1.0
    assert tg.rewarm_scale(5, 0, h) == 1.0  # the first stage starts at step 0: no re-warm
    with pytest.raises(ValueError, match="ATTN_DOC_MASK"):
        tg.Hyperparameters.from_env({"RECIPE": "best", "ATTN_DOC_MASK": "0"})
    with pytest.raises(ValueError, match="at most TRAIN_SEQ_LEN"):
        tg.Hyperparameters.from_env({"RECIPE": "best", "TRAIN_SEQ_LEN": "2048"})


def test_the_span_cap_reaches_the_attention():
    """With a span of 16, a token 16 or more positions into its document no longer sees the document's start."""
    h = recipe_hparams("best")
    model = perturbed_model(h)
    ids = tokens_with_documents(h)[:1]  # documents start at 0, 9, 23
    changed = ids.clone()
    changed[0, 24:30] = (changed[0, 24:30] + 3) % h.vocab_size
    with torch.no_grad():
        model.span = 16
        capped = model.hidden(ids), model.hidden(changed)
        model.span = 0
        free = model.hidden(ids), model.hidden(changed)
    assert torch.allclose(capped[0][:, 39:], capped[1][:, 39:], atol=1e-6)  # 23 + 16 = 39 starts a new piece
    assert not torch.allclose(free[0][:, 39:], free[1][:, 39:])


def test_every_evaluation_and_ttt_path_runs_the_smear_gate_and_the_document_mask(monkeypatch):
    """Scoring (plain, sliding, TTT's no-grad pass) and TTT's training steps all run SmearGate with the BOS
    fix and the document mask: they go through the one forward, never a copy of the block."""
    h = recipe_hparams("best", TTT_CHUNK_TOKENS="256", EVAL_STRIDE="32", VAL_BATCH_SEQS="4")
    model = perturbed_model(h)
    model.looping = True
    calls = []
    real_smear, real_segments = tg.GPT.smear, tg.document_segments

    def smear(self, e, ids):
        calls.append(("smear", torch.is_grad_enabled()))
        return real_smear(self, e, ids)

    def segments(ids, span=0):
        calls.append(("mask", torch.is_grad_enabled()))
        return real_segments(ids, span)

    monkeypatch.setattr(tg.GPT, "smear", smear)
    monkeypatch.setattr(tg, "document_segments", segments)
    tokens = torch.randint(2, h.vocab_size, (8 * h.eval_seq_len + 1,))
    tokens[::50] = tg.BOS_ID
    runtime = tg.setup_runtime(h, {})
    tables = tg.ByteTables(torch.full((h.vocab_size,), 2), torch.zeros(h.vocab_size, dtype=torch.bool),
                           torch.zeros(h.vocab_size, dtype=torch.bool))
    scorer = tg.WindowScorer(model, h, runtime)
    for stride in (h.eval_seq_len, h.eval_stride):
        calls.clear()
        tg.evaluate_windows("check", scorer, tokens, tables, stride, h, runtime)
        assert {("smear", False), ("mask", False)} == set(calls)
    calls.clear()
    tg.evaluate_ttt(scorer, tokens, tables, h, runtime, hooks=[])
    assert {("smear", False), ("mask", False), ("smear", True), ("mask", True)} == set(calls)


def test_muon_bf16_momentum_as_the_banks_keep_it():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(32, 64))
    start = weight.detach().clone()
    muon = tg.Muon([weight], lr=0.1, momentum=0.97, weight_decay=0.0, backend_steps=5, bf16_momentum=True)
    grads = [torch.randn(32, 64) for _ in range(2)]
    buffer = torch.zeros(32, 64, dtype=torch.bfloat16)
    expected = start.clone()
    for g in grads:
        weight.grad = g
        muon.step()
        g16 = g.bfloat16()
        buffer = buffer * 0.97 + g16
        direction = g16.add(buffer, alpha=0.97).float()
        unit = (direction / (direction.norm(dim=1, keepdim=True) + 1e-7)).bfloat16()
        expected -= 0.1 * tg.newton_schulz(unit, 5).float()
    assert muon.state[weight]["momentum_buffer"].dtype == torch.bfloat16
    assert torch.equal(muon.state[weight]["momentum_buffer"], buffer)
    assert torch.allclose(weight.detach(), expected, atol=1e-6)
    assert tg.Hyperparameters.from_env({"RECIPE": "best"}).muon_bf16_momentum
    assert not tg.Hyperparameters.from_env({}).muon_bf16_momentum

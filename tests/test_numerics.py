"""MODEL_PUBLISHED_NUMERICS: in the bf16 regime the published run rounds three things that ours keeps in
fp32 (the RoPE table, the soft-cap, the skip gate's sigmoid). An independent replica of the forward pass,
written from docs/architecture.md with each of the three as a switch, must give bit-identical logits: all
three published with the knob on, none with it off, and any single switch flipped must not."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg
from conftest import TINY_ENV

torch.set_num_threads(1)


def replica_logits(state: dict, h: tg.Hyperparameters, ids: torch.Tensor, looping: bool,
                   rope_bf16: bool, softcap_bf16: bool, gate_after_cast: bool) -> torch.Tensor:
    """(B, T) ids -> (B, T, V) fp32 logits, bf16 embedding and stream, fp32 masters under bf16 autocast."""
    d, heads, kv_heads = h.model_dim, h.num_heads, h.num_kv_heads
    head_dim, T = d // heads, ids.size(1)
    inv_freq = 1.0 / h.rope_base ** (torch.arange(0, h.rope_dims, 2, dtype=torch.float32) / h.rope_dims)
    if rope_bf16:  # the buffer after the model's .bfloat16(); positions made in its dtype
        inv_freq = inv_freq.bfloat16()
    angles = torch.outer(torch.arange(T, dtype=inv_freq.dtype), inv_freq)
    cos, sin = angles.cos(), angles.sin()

    def rotate(x):  # (B, T, H, D): the first rope_dims dims, as two halves
        half = cos.size(-1)
        c, s = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:2 * half]
        return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c, x[..., 2 * half:]), dim=-1)

    def norm(x):
        return F.rms_norm(x, (x.size(-1),))

    def block(i, x, x0):
        p = lambda name: state[f"blocks.{i}.{name}"]
        mix = p("resid_mix").to(x.dtype)
        x_in = mix[0] * x + mix[1] * x0
        scale = 1.0 / (i + 1) ** 0.5
        a = norm(x_in) * scale
        B = a.size(0)
        q = F.linear(a, p("attn.q.weight")).view(B, T, heads, head_dim)
        k = F.linear(a, p("attn.k.weight")).view(B, T, kv_heads, head_dim)
        v = F.linear(a, p("attn.v.weight")).view(B, T, kv_heads, head_dim)
        q, k = rotate(norm(q)), rotate(norm(k))
        q = q * p("attn.q_gain").to(q.dtype)[None, None, :, None]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=True).transpose(1, 2)
        if i >= h.num_layers - h.xsa_last_n:
            unit = F.normalize(v, dim=-1).unsqueeze(3)
            y = y.view(B, T, kv_heads, heads // kv_heads, head_dim)
            y = y - (y * unit).sum(-1, keepdim=True) * unit
        attn = F.linear(y.reshape(B, T, d), p("attn.proj.weight"))
        mlp = lambda z: F.linear(F.leaky_relu(F.linear(z, p("mlp.fc.weight")), 0.5).square(), p("mlp.proj.weight"))
        if i >= h.parallel_start_layer:
            return x_in + p("attn_scale").to(x.dtype) * attn + p("mlp_scale").to(x.dtype) * mlp(norm(x_in) * scale)
        x = x_in + p("attn_scale").to(x.dtype) * attn
        return x + p("mlp_scale").to(x.dtype) * mlp(norm(x) * scale)

    embedding = state["tok_emb.weight"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = x0 = norm(F.embedding(ids, embedding)).to(embedding.dtype)
        order = list(range(h.num_layers))
        if looping:
            loop = list(range(h.loop_start, h.loop_end + 1))
            order = order[:h.loop_start] + loop * (h.num_loops + 1) + order[h.loop_end + 1:]
        encoder, decoder = order[:len(order) // 2], order[len(order) // 2:]
        skips = []
        for i in encoder:
            x = block(i, x, x0)
            skips.append(x)
        for j, i in enumerate(decoder):
            if j < state["skip_weights"].size(0) and skips:
                g = state["skip_gates"][j]
                gate = torch.sigmoid(g.to(x.dtype)) if gate_after_cast else torch.sigmoid(g).to(x.dtype)
                x = torch.lerp(state["skip_weights"][j].to(x.dtype) * skips.pop(), x, gate)
            x = block(i, x, x0)
        z = F.linear(norm(x), embedding.to(x.dtype))
        z = z if softcap_bf16 else z.float()
        return (h.logit_softcap * torch.tanh(z / h.logit_softcap)).float()


def model_logits(published: bool, looping: bool):
    h = tg.Hyperparameters.from_env({**TINY_ENV, "MODEL_DTYPE": "bf16", "MODEL_PUBLISHED_NUMERICS": str(int(published))})
    runtime = tg.setup_runtime(h, {})
    torch.manual_seed(0)
    model = tg.place_model(tg.GPT(h), runtime)
    with torch.no_grad():
        for p in model.parameters():  # every branch non-trivial, gates away from 0
            p.add_(0.3 * torch.randn_like(p))
    model.looping = looping
    ids = torch.randint(0, h.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), runtime.autocast():
        logits = model.logits(model.hidden(ids))
    return h, {k: v.detach().clone() for k, v in model.state_dict().items()}, ids, logits


@pytest.mark.parametrize("looping", [False, True])
@pytest.mark.parametrize("published", [False, True])
def test_logits_are_bit_identical_to_the_replica_and_each_switch_matters(published, looping):
    h, state, ids, logits = model_logits(published, looping)
    assert logits.dtype == torch.float32
    for switches in itertools.product([False, True], repeat=3):
        replica = replica_logits(state, h, ids, looping, *switches)
        if switches == (published,) * 3:
            assert torch.equal(replica, logits), (published, looping)
        else:  # one switch away or more: the rounding of that place shows in the logits
            assert not torch.equal(replica, logits), (published, looping, switches)


def test_the_published_table_collapses_positions_and_ours_does_not():
    h = tg.Hyperparameters.from_env({"MODEL_PUBLISHED_NUMERICS": "1"})
    published = tg.GPT(h).rotary
    assert published.dtype == torch.bfloat16
    assert torch.arange(2048, dtype=torch.bfloat16).unique().numel() == 641
    # The fastest frequency is 1: its angles are the positions, so its cos column holds one value per position.
    assert published[0, :, 0].float().unique().numel() < 700
    assert tg.GPT(tg.Hyperparameters.from_env({})).rotary[0, :, 0].unique().numel() > 2000
    # Past the training length the published code forms its table in fp32, as ours always does.
    cos, _ = tg.rotary_tables(4096, 16, 10000.0, 2048, "cpu", published=True)
    assert cos.dtype == torch.float32

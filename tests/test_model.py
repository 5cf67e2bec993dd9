"""Model invariants: the published parameter count, attention paths agree, Muon's
orthogonalization, and the compiled training/eval graphs equal eager (the GPU speed path)."""
import pytest
import torch

import train_gpt
from conftest import TINY_ENV


def tiny_hparams(**overrides):
    return train_gpt.Hyperparameters.from_env({**TINY_ENV, **overrides})


def test_default_parameter_count():
    model = train_gpt.GPT(train_gpt.Hyperparameters.from_env({}))
    assert train_gpt.count_parameters(model) == 35_944_536


def test_layer_schedule_with_and_without_looping():
    h = train_gpt.Hyperparameters.from_env({})
    assert train_gpt.layer_schedule(h, looping=False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    assert train_gpt.layer_schedule(h, looping=True) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])


def test_initialization():
    model = train_gpt.GPT(train_gpt.Hyperparameters.from_env({}))
    block = model.blocks[0]
    assert block.attn.proj.weight.abs().max() == 0 and block.mlp.proj.weight.abs().max() == 0
    q = block.attn.q.weight
    assert torch.allclose(q @ q.T, torch.eye(q.size(0)), atol=1e-4)  # orthogonal
    assert abs(model.tok_emb.weight.std().item() - 0.005) < 2e-4
    assert model.blocks[6].parallel is False and model.blocks[7].parallel is True


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_sdpa_equals_reference_attention(kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, 37, 4, 16)
    k, v = torch.randn(2, 37, kv_heads, 16), torch.randn(2, 37, kv_heads, 16)
    fast = train_gpt.causal_attention(q, k, v, "sdpa")
    assert torch.allclose(fast, train_gpt.reference_attention(q, k, v), atol=1e-5)


def test_attention_is_causal():
    torch.manual_seed(0)
    h = tiny_hparams()
    model = train_gpt.GPT(h)
    for p in model.parameters():  # make every branch non-trivial
        p.data.add_(0.02 * torch.randn_like(p))
    model.looping = True
    tokens = torch.randint(0, h.vocab_size, (1, 40))
    changed = tokens.clone()
    changed[0, 25:] = (changed[0, 25:] + 7) % h.vocab_size
    with torch.no_grad():
        a, b = model.hidden(tokens), model.hidden(changed)
    assert torch.allclose(a[:, :25], b[:, :25], atol=1e-6)
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_xsa_removes_the_self_value_component():
    torch.manual_seed(0)
    h = tiny_hparams()
    attention = train_gpt.Attention(h, use_xsa=True)
    captured = {}
    attention.proj.register_forward_hook(lambda m, inputs, out: captured.setdefault("y", inputs[0]))
    x = torch.randn(2, 10, h.model_dim)
    cos, sin = train_gpt.rotary_tables(10, h.rope_dims, h.rope_base, h.train_seq_len, "cpu")
    attention(x, cos, sin)
    v = attention.v(x).view(2, 10, h.num_kv_heads, -1)
    y = captured["y"].view(2, 10, h.num_kv_heads, h.num_heads // h.num_kv_heads, -1)
    dots = (y * torch.nn.functional.normalize(v, dim=-1).unsqueeze(3)).sum(-1)
    assert dots.abs().max() < 1e-5


def test_rope_base_grows_past_the_training_length():
    cos_train, _ = train_gpt.rotary_tables(64, 16, 10000.0, 64, "cpu")
    cos_long, _ = train_gpt.rotary_tables(128, 16, 10000.0, 64, "cpu")
    assert torch.allclose(cos_train[:, 0], cos_long[:64, 0])  # the fastest frequency is unchanged
    assert not torch.allclose(cos_train[:, -1], cos_long[:64, -1])


def test_newton_schulz_is_near_orthogonal():
    torch.manual_seed(0)
    for shape in [(64, 64), (64, 256), (256, 64)]:
        gradient = torch.randn(*shape)
        out = train_gpt.newton_schulz(gradient, steps=5)
        # Five quintic steps map every singular value not tiny relative to the largest into
        # roughly [0.7, 1.2] (the iteration trades exactness for speed), keeping the vectors.
        u, s_in, vh = torch.linalg.svd(gradient, full_matrices=False)
        projected = torch.diagonal(u.T @ out @ vh.T)
        significant = s_in / s_in.max() > 0.05
        assert projected[significant].min() > 0.6 and projected.max() < 1.25, (shape, projected)
        assert torch.linalg.svdvals(out).max() < 1.25


def test_muon_row_equilibration_and_weight_decay():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(64, 32))
    before = weight.detach().clone()
    muon = train_gpt.Muon([weight], lr=0.1, momentum=0.0, weight_decay=0.5, backend_steps=5)
    weight.grad = torch.randn(64, 32) * torch.logspace(-3, 3, 64)[:, None]  # wildly unequal rows
    muon.step()
    update = (before * (1 - 0.05) - weight.detach()) / 0.1 / (64 / 32) ** 0.5
    row_norms = update.norm(dim=1)
    assert row_norms.max() / row_norms.min() < 3  # no row dominates after equilibration


def test_compiled_training_and_eval_graphs_match_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    h = tiny_hparams()
    model = train_gpt.GPT(h)
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    model.looping = True
    tokens = torch.randint(0, h.vocab_size, (2, 33))
    eager_loss = model.loss(tokens[:, :-1], tokens[:, 1:])
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled_loss_fn = torch.compile(model.loss, fullgraph=True, backend="inductor")
    compiled_loss = compiled_loss_fn(tokens[:, :-1], tokens[:, 1:])
    compiled_loss.backward()
    assert torch.allclose(eager_loss, compiled_loss, atol=1e-5)
    for a, p in zip(eager_grads, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)
    compiled_hidden = torch.compile(model.hidden, fullgraph=True, backend="inductor")
    with torch.no_grad():
        assert torch.allclose(compiled_hidden(tokens[:, :-1]), model.hidden(tokens[:, :-1]), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and train_gpt.HAS_FA3), reason="needs CUDA and FlashAttention-3")
def test_flash_attention_3_equals_reference_attention():
    torch.manual_seed(0)
    q = torch.randn(2, 128, 8, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(2, 128, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    fast = train_gpt.causal_attention(q, k, v, "fa3")
    assert torch.allclose(fast.float(), train_gpt.reference_attention(q, k, v).float(), atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_forward_matches_fp32():
    torch.manual_seed(0)
    h = tiny_hparams()
    model = train_gpt.GPT(h).cuda()
    tokens = torch.randint(0, h.vocab_size, (2, 33), device="cuda")
    with torch.no_grad():
        reference = model.loss(tokens[:, :-1], tokens[:, 1:])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model.loss(tokens[:, :-1], tokens[:, 1:])
    assert abs(fast.item() - reference.item()) < 2e-2

"""bench/headroom.py: the re-implemented published container decodes back to its tensors under the published
names, our container is serialize_quantized's bytes, and the headroom arithmetic (its --quick path)."""
from __future__ import annotations

import io
import sys

import brotli
import torch

import train_gpt as tg
from conftest import ROOT, TINY_ENV

sys.path.insert(0, str(ROOT / "bench"))
import headroom  # noqa: E402


def tiny_quantized() -> tuple[tg.Hyperparameters, dict]:
    h = tg.Hyperparameters.from_env({**TINY_ENV, "MODEL_DIM": "192", "MLP_MULT": "4"})  # some tensors > 65,536
    return h, headroom.synthetic_quantized(h, spread=1.0)


def test_the_published_container_decodes_to_its_tensors_under_the_published_names():
    h, quantized = tiny_quantized()
    bits = headroom.int_bits(h, quantized)
    assert set(bits.values()) == {6, 8}  # int6 matrices and the int8 embedding
    raw = brotli.decompress(headroom.published_container(quantized, bits, quality=5))
    assert raw[:5] == b"BSHF\x02"
    loaded = torch.load(io.BytesIO(headroom.published_unshuffle(raw)), map_location="cpu")
    assert loaded["m"]["blocks.0.mlp.fc.weight"] == "gptq (int6)" and loaded["m"]["tok_emb.weight"] == "gptq (int8)"
    assert "blocks.0.attn.c_q.weight" in loaded["m"] and "blocks.0.attn.q.weight" not in loaded["m"]
    for name, entry in quantized.items():
        theirs = headroom.published_name(name)
        if entry["kind"] == "int":
            assert torch.equal(loaded["w"][theirs + ".q"], entry["q"]) and torch.equal(loaded["w"][theirs + ".scale"],
                                                                                       entry["scale"])
        else:
            assert loaded["m"][theirs] == "passthrough (float16)" and torch.equal(loaded["w"][theirs], entry["data"])


def test_our_container_is_serialize_quantized():
    _, quantized = tiny_quantized()
    assert headroom.our_container(quantized, quality=11) == tg.serialize_quantized(quantized)


def test_quick_run_prints_the_method_and_the_arithmetic(capsys):
    assert headroom.main(["--quick"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("method:")
    figures = dict(field.split(":", 1) for field in next(l for l in lines if l.startswith("headroom ")).split()[1:])
    difference, code = int(figures["container_difference_bytes"]), int(figures["our_code_bytes"])
    assert difference == int(figures["published_container_bytes"]) - int(figures["our_container_bytes"])
    seeds = [dict(field.split(":", 1) for field in line.split()) for line in lines if line.startswith("seed:")]
    assert [int(s["seed"]) for s in seeds] == [42, 314, 999]
    for seed in seeds:
        model = int(seed["published_model_bytes"])
        assert int(seed["our_headroom_bytes"]) == 16_000_000 - (model - difference + code)
        assert int(seed["published_headroom_bytes"]) == 16_000_000 - model - int(seed["published_code_bytes"])

"""A record run cannot lose what it trained: checkpoint and artifact are on disk before any evaluation
runs, whatever the knobs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train_gpt as tg
from tools.logparse import read_log

torch.set_num_threads(1)


@pytest.mark.parametrize("diagnostics", ["1", "0"])
def test_a_failing_evaluation_leaves_checkpoint_and_artifact_on_disk(tiny_env, tmp_path, monkeypatch, diagnostics):
    h = tg.Hyperparameters.from_env(dict(tiny_env, ITERATIONS="4", EVAL_DIAGNOSTICS=diagnostics))
    runtime = tg.setup_runtime(h, {})
    evaluated = []

    def failing(name, *args, **kwargs):
        evaluated.append(name)
        raise RuntimeError("indices should be either on cpu or on the same device (planted)")

    monkeypatch.setattr(tg, "evaluate_stream", failing)
    with pytest.raises(RuntimeError, match="planted"):
        tg.run(h, runtime, tg.Logger(h, runtime))
    assert evaluated == ["pre_quant" if diagnostics == "1" else "ttt"]  # the first evaluation, whichever it is
    checkpoint, artifact = Path(h.checkpoint_path), Path(h.artifact_path)
    assert set(torch.load(checkpoint, map_location="cpu")) == set(tg.GPT(h).state_dict())
    quantized = tg.deserialize_quantized(artifact.read_bytes())
    assert tg.GPT(h).load_state_dict(tg.dequantize_state_dict(quantized)) is not None
    records = read_log(tmp_path / "logs" / "test.txt")
    assert [r for r in records if r.get("event") == "artifact"][-1]["model_bytes"] == artifact.stat().st_size

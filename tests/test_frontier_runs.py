"""Each recipe through the whole pipeline at tiny size, under torchrun on the CPU: train, quantize (GPTQ
with the recipe's AWQ-lite, LQER, quant-gate and codec), write, reload, evaluate. `best` also on two
ranks (DDP, gloo) under a forced small ARTIFACT_LIMIT_BYTES, where the fit guard must make it fit, and
its reloaded artifact scores the same on one rank."""
import shutil

import pytest

from conftest import TINY_ENV
from test_end_to_end import eval_figures, torchrun
from tools.logparse import last, read_log

pytestmark = pytest.mark.slow

# Tiny shapes: two-lane blocks from layer 2, a span schedule within the 64-token rows, every matrix GPTQ'd.
RECIPE_ENV = {"PARALLEL_START_LAYER": "2", "TRAIN_SEQ_LEN": "64", "EVAL_SEQ_LEN": "64",
              "GPTQ_PASSTHROUGH_MAX_NUMEL": "1024", "ITERATIONS": "8", "TTT_EPOCHS": "1"}


def recipe_env(tiny_env, recipe, tmp_path, **extra):
    env = dict(tiny_env, **RECIPE_ENV, RECIPE=recipe, RUN_ID=recipe, ARTIFACT_PATH=str(tmp_path / f"{recipe}.ptz"))
    if recipe == "best":
        env.update(TRAIN_SEQ_SCHEDULE="16@0.1,32@0.7,64@1.0", SEQ_CHANGE_WARMUP_STEPS="3")
    if recipe == "pr1855" or shutil.which("lrzip") is None:  # the lrzip codec once (best), where present
        env["COMPRESSOR"] = "brotli"
    return dict(env, **extra)


@pytest.mark.parametrize("recipe", ["pr1874", "pr1855", "best"])
def test_recipe_trains_quantizes_reloads_and_scores(recipe, tiny_env, tmp_path):
    env = recipe_env(tiny_env, recipe, tmp_path)
    out = torchrun(env, 1, tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    records = read_log(tmp_path / "logs" / f"{recipe}.txt")
    config = next(r["config"] for r in records if "config" in r)
    assert config["recipe"] == recipe and config["parallel_lanes"] == 2 and config["lqer_enabled"] is True
    quantization = [r for r in records if r.get("event") == "quantization"][-1]
    assert quantization["lqer_tensors"].count(",") == 2
    assert (quantization["awq_groups"] != "none") == (recipe == "best")
    assert set(eval_figures(records)) == {"pre_quant", "quantized", "sliding", "ttt"}
    assert last(records, "artifact_valid", {"event": "final"}) == 1
    if recipe == "best":
        assert [r["span"] for r in records if r.get("event") == "span_changed"] == [32, 64]
    if env.get("COMPRESSOR", "pergroup") == "pergroup" and recipe == "best":
        assert (tmp_path / f"{recipe}.ptz").read_bytes()[:4] == b"PGRP"
    # The quantized model scores close to the trained one: the artifact holds what training made.
    figures = eval_figures(records)
    assert abs(figures["quantized"][0] - figures["pre_quant"][0]) < 0.05


def test_best_on_two_ranks_fits_a_forced_limit(tiny_env, tmp_path):
    env = recipe_env(tiny_env, "best", tmp_path, COMPRESSOR="brotli", RUN_ID="free")
    out = torchrun(env, 2, tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    free = read_log(tmp_path / "logs" / "free.txt")
    limit = last(free, "artifact_bytes") - 3000
    env = dict(env, RUN_ID="fit", ARTIFACT_LIMIT_BYTES=str(limit))
    out = torchrun(env, 2, tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    records = read_log(tmp_path / "logs" / "fit.txt")
    fit = [r for r in records if r.get("event") == "artifact_fit"][-1]
    assert fit["fit_changes"] > 0 and fit["fit_error_increase_pct"] > 0
    assert last(records, "artifact_bytes") <= limit and last(records, "artifact_valid", {"event": "final"}) == 1
    one = torchrun(dict(env, EVAL_ONLY="1", RUN_ID="fit_one"), 1, tmp_path)
    assert one.returncode == 0, one.stderr[-4000:]
    again = eval_figures(read_log(tmp_path / "logs" / "fit_one.txt"))
    for name in ("quantized", "sliding", "ttt"):
        assert again[name] == pytest.approx(eval_figures(records)[name], rel=2e-5), name

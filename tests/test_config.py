"""The config is built from an explicit mapping; typos and bad values fail with a clear message."""
import os
import subprocess
import sys

import pytest

import train_gpt
from conftest import ROOT


def test_defaults_are_the_record_run():
    h = train_gpt.Hyperparameters.from_env({})
    assert (h.vocab_size, h.num_layers, h.model_dim, h.num_heads, h.num_kv_heads) == (8192, 11, 512, 8, 4)
    assert h.qk_gain_init == 5.25 and h.ttt_enabled and h.train_batch_tokens == 786432
    assert h.dc_prior == (0.90, 0.07, 0.03)


def test_every_field_parses_from_its_upper_case_name():
    h = train_gpt.Hyperparameters.from_env({"TTT_ENABLED": "0", "QK_GAIN_INIT": "4.0", "SEED": "7",
                                             "DC_PRIOR": "0.8,0.1,0.1", "ATTN_IMPL": "sdpa"})
    assert h.ttt_enabled is False and h.qk_gain_init == 4.0 and h.seed == 7
    assert h.dc_prior == (0.8, 0.1, 0.1) and h.attn_impl == "sdpa"


@pytest.mark.parametrize("env, message", [
    ({"TTT_LRR": "0.1"}, "unknown environment variable"),
    ({"TTT_ENABLED": "yes"}, "TTT_ENABLED"),
    ({"SEED": "1.5"}, "SEED"),
    ({"NUM_HEADS": "5"}, "divisible"),
    ({"DC_PRIOR": "0.5,0.5,0.5"}, "DC_PRIOR"),
    ({"DEVICE": "tpu"}, "DEVICE"),
    ({"DIST_BACKEND": "nccl"}, "DIST_BACKEND"),
    ({"DC_BUCKETS_G": "3000"}, "powers of two"),
    ({"DC_SHARP_ORDERS": "0"}, "DC_SHARP_ORDERS"),
    ({"DC_DOCUMENT_ORDERS": "7"}, "DC_DOCUMENT_ORDERS <= DC_SHARP_ORDERS"),
    ({"DC_ESCAPE_SAMPLE_TOKENS": "0"}, "DC_ESCAPE_SAMPLE_TOKENS"),
    ({"VOCAB_SIZE": "70000"}, "VOCAB_SIZE must be in 2..65536"),
])
def test_bad_settings_are_rejected(env, message):
    with pytest.raises(ValueError, match=message):
        train_gpt.Hyperparameters.from_env(env)


def test_foreign_variables_are_ignored():
    train_gpt.Hyperparameters.from_env({"CUDA_VISIBLE_DEVICES": "", "NCCL_DEBUG": "INFO", "PATH": "/bin"})


def test_world_size_must_divide_eight():
    h = train_gpt.Hyperparameters.from_env({"DEVICE": "cpu"})
    with pytest.raises(ValueError, match="WORLD_SIZE=3 must divide 8"):
        train_gpt.setup_runtime(h, {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"})


def test_import_has_no_side_effects(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CUDA_VISIBLE_DEVICES="", TTT_TYPO="1", PYTHONPATH=str(ROOT))
    code = "import train_gpt, torch.distributed as d; assert not d.is_initialized(); print('clean')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"  # importing read no env (the typo would raise) and wrote nothing
    assert list(tmp_path.iterdir()) == []

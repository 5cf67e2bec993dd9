"""Tests of tools/: packer, the t distribution behind significance.py, sweep and envdoc, and
every command line's --help. The record tools on every log dialect are in test_records.py.
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import train_gpt  # noqa: E402
from tools import envdoc, pack, significance, sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOY_SOURCE = '"""A toy script."""\n# a comment\nprint("toy ran")\n'
HAS_PACKER = hasattr(train_gpt, "pack_source") and hasattr(train_gpt, "code_bytes_of")
needs_packer = pytest.mark.skipif(not HAS_PACKER, reason="train_gpt.py has no pack_source/code_bytes_of yet")


# -----------------------------------------------------------------------------
# Packer
# -----------------------------------------------------------------------------


@needs_packer
def test_pack_cli_writes_a_runnable_counted_copy(tmp_path, capsys):
    source = tmp_path / "toy.py"
    source.write_text(TOY_SOURCE, encoding="utf-8")
    output = tmp_path / "packed.py"
    assert pack.main([str(source), "-o", str(output)]) == 0
    printed = capsys.readouterr().out
    packed_bytes = output.stat().st_size
    assert f"packed_bytes:{packed_bytes}" in printed and f"source_bytes:{len(TOY_SOURCE)}" in printed
    assert train_gpt.code_bytes_of(output) == packed_bytes == train_gpt.code_bytes_of(source)
    run = subprocess.run([sys.executable, str(output)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "toy ran\n"
    (tmp_path / "bad.py").write_text("def broken(:\n", encoding="utf-8")
    assert pack.main([str(tmp_path / "bad.py"), "-o", str(tmp_path / "x.py")]) == 1
    with pytest.raises(SystemExit):
        pack.main([str(source), "-o", str(source)])


# -----------------------------------------------------------------------------
# Significance
# -----------------------------------------------------------------------------


@pytest.mark.parametrize("t, df, probability", [
    (12.706, 1, 0.975), (6.965, 2, 0.99), (4.541, 3, 0.99), (3.747, 4, 0.99), (1.812, 10, 0.95),
    (2.750, 30, 0.995), (1.645, 100000, 0.95), (0.0, 3, 0.5), (-6.965, 2, 0.01), (1.0, 1, 0.75),
])
def test_student_t_cdf_matches_tables(t, df, probability):
    assert significance.student_t_cdf(t, df) == pytest.approx(probability, abs=2e-4)


def test_student_t_cdf_against_closed_forms_and_scipy():
    for t in (-3.0, -0.5, 0.25, 2.0, 40.0):  # df=1 is Cauchy, df=2 has a closed form
        assert significance.student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert significance.student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert significance.regularized_beta(2, 3, 0.0) == 0.0 and significance.regularized_beta(2, 3, 1.0) == 1.0
    with pytest.raises(ValueError):
        significance.regularized_beta(1, 1, 1.5)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 17, 300):
        for t in (-8.0, -1.3, 0.7, 3.3, 25.0):
            assert significance.student_t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-10)


def test_improvement_test_by_hand():
    result = significance.improvement_test([2.770, 2.772, 2.768], record_nats=2.790)
    # improvements 0.020, 0.018, 0.022: mean 0.020, std 0.002, t = 0.015 / (0.002 / sqrt 3) = 12.99, df 2
    assert result["improvement_mean"] == pytest.approx(0.020) and result["improvement_std"] == pytest.approx(0.002)
    assert result["t"] == pytest.approx(0.015 / (0.002 / math.sqrt(3)))
    assert result["p_value"] == pytest.approx(1 - significance.student_t_cdf(result["t"], 2))
    assert 0.001 < result["p_value"] < 0.01 and result["significant"]
    small = significance.improvement_test([2.786, 2.784, 2.785], record_nats=2.790)
    assert not small["significant"] and small["p_value"] > 0.01
    assert significance.improvement_test([2.7, 2.7], 2.8)["p_value"] == 0.0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        significance.improvement_test([2.7], 2.8)


# -----------------------------------------------------------------------------
# Sweep
# -----------------------------------------------------------------------------

# A stand-in for train_gpt.py: reads the sweep's variables, writes a short log in the CONTRACTS
# format (no torch import, so each launch takes a fraction of a second), fails for SEED=3.
FAKE_RUN = """
import json, os, sys
seed, lr = int(os.environ["SEED"]), float(os.environ["TTT_LR"])
if seed == 3:
    sys.exit(3)
bpb, loss = 1 + lr + seed / 1000, 2.5 + lr
lines = [
    "code_sha256:" + "ab" * 32 + " source:train_gpt.py",
    "config:" + json.dumps({"seed": seed, "ttt_lr": lr}),
    "model_params:35944536 val_tokens:40540160",
    "step:1/20 train_loss:9.0000 train_time_ms:100 step_avg_ms:100.0 tok_per_s:1000 lr_scale:1.0",
    "train_done steps:20 train_time_ms:588000 peak_memory_mib:0",
    "artifact code_bytes:20000 model_bytes:15900000 artifact_bytes:15920000 artifact_limit_bytes:16000000 artifact_valid:1",
    f"eval:ttt val_loss:{loss:.6f} val_bpb:{bpb:.6f} eval_time_ms:450000 tokens:1000",
    f"final eval:ttt val_loss:{loss:.6f} val_bpb:{bpb:.6f} train_time_ms:588000 total_eval_time_ms:450000 "
    "artifact_bytes:15920000 artifact_valid:1",
]
with open(os.path.join(os.environ["LOG_DIR"], os.environ["RUN_ID"] + ".txt"), "w") as handle:
    handle.write("\\n".join(lines) + "\\n")
print("fake run done")
"""


def test_sweep_runs_the_grid_and_tabulates(tmp_path, capsys):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN, encoding="utf-8")
    out = tmp_path / "sweep"
    code = sweep.main(["--grid", "TTT_LR=0.005,0.01", "--grid", "SEED=1,2,3", "--name", "lr", "--out", str(out),
                       "--", sys.executable, str(script)])
    assert code == 1  # the SEED=3 runs fail on purpose
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("run_id,TTT_LR,SEED,status,val_bpb,val_loss,final_eval")
    assert len(rows) == 7 and rows[1].startswith("lr_000,0.005,1,ok,1.006,2.505,ttt,588.0,450.0,")
    assert rows[3].startswith("lr_002,0.005,3,exit 3,,")
    markdown = (out / "results.md").read_text()
    assert "| lr_004 | 0.01 | 2 | ok | 1.012000 |" in markdown and markdown in capsys.readouterr().out
    assert (out / "logs" / "lr_000.out").read_text() == "fake run done\n"


def test_sweep_dry_run_and_errors(capsys):
    assert sweep.main(["--grid", "TTT_LR=0.005,0.01", "--grid", "SEED=1,2", "--dry-run", "--nproc", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[1] == ("TTT_LR=0.005 SEED=2 RUN_ID=sweep_001 LOG_DIR=sweeps/sweep/logs "
                        "torchrun --standalone --nproc_per_node=4 train_gpt.py")
    for bad, message in ((["--grid", "TTT_LRR=1"], "not a Hyperparameters field"),
                         (["--grid", "TTT_LR=fast"], "cannot parse"),
                         (["--grid", "SEED"], "NAME=value1"),
                         (["--grid", "SEED=1", "--grid", "SEED=2"], "twice"),
                         (["--grid", "RUN_ID=a"], "sets it")):
        with pytest.raises(SystemExit) as exit_info:
            sweep.main([*bad, "--dry-run"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert sweep.settings([("A", ["1", "2"]), ("B", ["x"])]) == [{"A": "1", "B": "x"}, {"A": "2", "B": "x"}]


# -----------------------------------------------------------------------------
# envdoc
# -----------------------------------------------------------------------------


def test_envdoc_table_covers_every_field():
    table = envdoc.env_table()
    rows = [line for line in table.splitlines()[2:]]
    fields = dataclasses.fields(train_gpt.Hyperparameters)
    assert len(rows) == len(fields)
    assert "| `VOCAB_SIZE` | int | `8192` | Model |" in table and "SPEC" not in table
    assert "| `TTT_ENABLED` | 0/1 | `1` |" in table
    assert "| `DC_PRIOR` | floats, comma-separated | `0.9,0.07,0.03` |" in table
    assert "| `RUN_ID` | str | `\"\"` |" in table


def test_envdoc_check_and_write(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{envdoc.BEGIN_MARKER}\nold table\n{envdoc.END_MARKER}\n\nAfter.\n", encoding="utf-8")
    assert envdoc.main(["--check", str(readme)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert envdoc.main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\nAfter.\n") and "`VOCAB_SIZE`" in text
    assert envdoc.main(["--check", str(readme)]) == 0
    readme.write_text("# No markers\n", encoding="utf-8")
    assert envdoc.main(["--check", str(readme)]) == 1
    assert "no <!-- envdoc:begin -->" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        envdoc.main(["--check", str(tmp_path / "missing.md")])


def test_readme_env_table_is_current():
    readme = ROOT / "README.md"
    if not readme.is_file() or envdoc.BEGIN_MARKER not in readme.read_text(encoding="utf-8"):
        pytest.skip("README.md has no envdoc block yet (add the markers, then python tools/envdoc.py --write README.md)")
    assert envdoc.is_current(readme.read_text(encoding="utf-8"), envdoc.env_table()), \
        "README's variable table is stale: python tools/envdoc.py --write README.md"


# -----------------------------------------------------------------------------
# Every command line answers --help
# -----------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["tools/pack.py", "tools/make_record.py", "tools/check_record.py",
                                    "tools/significance.py", "tools/plot_logs.py", "tools/sweep.py",
                                    "tools/envdoc.py", "tools/summary.py", "data/build.py", "data/download.py", "data/corpus.py"])
def test_cli_help(script):
    run = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.startswith("usage:") and len(run.stdout) > 200

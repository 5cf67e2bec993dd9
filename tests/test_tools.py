"""Tests of tools/: log curves, packer, record maker and checker, significance, plotter,
sweep and envdoc. Logs are fake but written line for line in the format of
docs/CONTRACTS.md; no training runs here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import train_gpt  # noqa: E402
from tools import check_record, envdoc, logparse, make_record, pack, plot_logs, significance, summary, sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOY_SOURCE = '"""A toy script."""\n# a comment\nprint("toy ran")\n'
HAS_PACKER = hasattr(train_gpt, "pack_source") and hasattr(train_gpt, "code_bytes_of")
needs_packer = pytest.mark.skipif(not HAS_PACKER, reason="train_gpt.py has no pack_source/code_bytes_of yet")


def fake_log(seed: int = 42, val_bpb: float = 1.08, val_loss: float = 2.79, model_bytes: int = 15_900_000,
             code_bytes: int = 20_000, train_ms: int = 588_000, eval_ms: int = 450_000,
             sha: str = "ab" * 32, finished: bool = True, overrides: dict | None = None) -> str:
    """A complete run log in the format of docs/CONTRACTS.md."""
    config = dataclasses.replace(train_gpt.Hyperparameters(), seed=seed, run_id=f"seed{seed}", **(overrides or {}))
    ratio = val_loss / val_bpb
    lines = [
        f"code_sha256:{sha} source:train_gpt.py",
        "config:" + config.to_log(),
        "versions: python:3.11.7 torch:2.13.0 numpy:2.4.6 sentencepiece:0.2.3 brotli:1.2.1",
        "device:cuda gpu:NVIDIA_H100_80GB_HBM3 world_size:8 attn_impl:fa3 compile:1 autocast:bfloat16",
        "model_params:35944536 val_tokens:40540160",
        "step:1/20000 train_loss:9.0100 train_time_ms:150 step_avg_ms:150.0 tok_per_s:5242880 lr_scale:1.0",
        "step:100/20000 train_loss:4.2000 train_time_ms:12000 step_avg_ms:120.0 tok_per_s:6553600 lr_scale:1.0",
        "looping_enabled step:1500 train_time_ms:205800",
        "step:2000/20000 train_loss:3.1000 train_time_ms:260000 step_avg_ms:130.0 tok_per_s:6048000 lr_scale:0.8",
        f"step:4550/20000 train_loss:2.8500 train_time_ms:{train_ms} step_avg_ms:129.2 tok_per_s:6085000 lr_scale:0.0",
        f"train_done steps:4550 train_time_ms:{train_ms} peak_memory_mib:40123",
        f"eval:pre_quant val_loss:{val_loss - 0.02:.6f} val_bpb:{(val_loss - 0.02) / ratio:.6f} eval_time_ms:8000 tokens:40540160",
        f"artifact code_bytes:{code_bytes} model_bytes:{model_bytes} artifact_bytes:{code_bytes + model_bytes} "
        f"artifact_limit_bytes:16000000 artifact_valid:{int(code_bytes + model_bytes <= 16_000_000)} gptq_time_ms:11000",
        f"eval:quantized val_loss:{val_loss + 0.03:.6f} val_bpb:{(val_loss + 0.03) / ratio:.6f} eval_time_ms:9000 tokens:40540160",
        f"eval:sliding val_loss:{val_loss + 0.01:.6f} val_bpb:{(val_loss + 0.01) / ratio:.6f} eval_time_ms:90000 tokens:40540160",
        f"eval:ttt val_loss:{val_loss:.6f} val_bpb:{val_bpb:.6f} eval_time_ms:{eval_ms - 99000} tokens:40540160",
    ]
    if finished:
        lines.append(f"final eval:ttt val_loss:{val_loss:.6f} val_bpb:{val_bpb:.6f} train_time_ms:{train_ms} "
                     f"total_eval_time_ms:{eval_ms} artifact_bytes:{code_bytes + model_bytes} artifact_valid:1")
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# logparse additions
# -----------------------------------------------------------------------------


def test_logparse_curves_and_summary(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text(fake_log(seed=7, val_bpb=1.081, val_loss=2.791), encoding="utf-8")
    records = logparse.read_log(path)
    assert logparse.step_number("100/20000") == 100 and logparse.step_number(5) == 5
    assert logparse.step_number("x") is None
    train = logparse.train_points(records)
    assert [p["step"] for p in train] == [1, 100, 2000, 4550] and train[-1]["time_s"] == 588.0
    val = logparse.val_points(records)
    assert [p["name"] for p in val] == ["pre_quant", "quantized", "sliding", "ttt"]
    assert [p["time_s"] for p in val] == [596.0, 616.0, 706.0, 1057.0]
    assert val[-1]["val_bpb"] == 1.081
    summary = logparse.read_summary(path)
    assert summary["finished"] and summary["seed"] == 7 and summary["val_loss"] == 2.791
    assert summary["model_bytes"] == 15_900_000 and summary["code_sha256"] == "ab" * 32
    path.write_text(fake_log(finished=False), encoding="utf-8")
    assert not logparse.read_summary(path)["finished"]


def test_summary_table(tmp_path, capsys):
    text = fake_log(seed=7, val_bpb=1.081, val_loss=2.791).splitlines()
    text.insert(-1, "dualclock neural_bpb:1.0815 global_bpb:2.9 local_bpb:3.1 mixed_bpb:1.0810 "
                    "mixer_weights:0.9,0.07,0.03 dc_time_ms:1200 dc_share:0.01 dc_table_mib:896")
    path = tmp_path / "run.txt"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    assert summary.main([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "| ttt | 1.081000 | 2.791000 | 351.0 |" in printed and "| pre_quant |" in printed
    assert "DualClock: neural_bpb=1.0815, global_bpb=2.9" in printed
    assert "artifact: 15,920,000 bytes" in printed and "final (ttt): val_bpb 1.081000, evaluation 450.0 s" in printed
    path.write_text(fake_log(finished=False), encoding="utf-8")
    assert "did not finish" in summary.summarize(path)
    with pytest.raises(SystemExit):
        summary.main([str(tmp_path / "missing.txt")])


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
# Records: make_record and check_record
# -----------------------------------------------------------------------------


@pytest.fixture
def seed_logs(tmp_path):
    """Three finished seed logs that ran TOY_SOURCE, with a non-default TTT_LR."""
    source = tmp_path / "train_gpt.py"
    source.write_text(TOY_SOURCE, encoding="utf-8")
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    code_bytes = len(train_gpt.pack_source(TOY_SOURCE)) if HAS_PACKER else 0
    values = {42: (1.0801, 2.7901, 15_950_000), 314: (1.0811, 2.7921, 15_960_000), 999: (1.0797, 2.7895, 15_940_000)}
    paths = []
    for seed, (bpb, loss, model_bytes) in values.items():
        path = tmp_path / "logs" / f"run_seed{seed}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(fake_log(seed, bpb, loss, model_bytes, code_bytes, sha=sha, overrides={"ttt_lr": 0.01}),
                        encoding="utf-8")
        paths.append(path)
    return {"source": source, "sha": sha, "paths": paths, "code_bytes": code_bytes, "values": values,
            "records_dir": tmp_path / "records"}


def record_args(seed_logs, *extra) -> list[str]:
    return [*map(str, seed_logs["paths"]), "--name", "DualClock PPM: tuned", "--author", "Ada Lovelace",
            "--github-id", "ada", "--date", "2026-01-02", "--source", str(seed_logs["source"]),
            "--records-dir", str(seed_logs["records_dir"]), *extra]


@needs_packer
def test_make_record_builds_a_complete_folder(seed_logs, capsys):
    assert make_record.main(record_args(seed_logs, "--blurb", "Per-token mixer.")) == 0
    folder = seed_logs["records_dir"] / "2026-01-02_DualClock_PPM_tuned"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "submission.json", "train_gpt.py", "train_seed314.log", "train_seed42.log", "train_seed999.log"]
    assert (folder / "train_gpt.py").read_bytes() == train_gpt.pack_source(TOY_SOURCE)
    record = json.loads((folder / "submission.json").read_text())
    bpbs = [v[0] for v in seed_logs["values"].values()]
    assert record["val_bpb"] == pytest.approx(sum(bpbs) / 3, abs=1e-8)
    assert record["seeds"] == [42, 314, 999] and record["github_id"] == "ada" and record["blurb"] == "Per-token mixer."
    assert record["code_bytes"] == seed_logs["code_bytes"]
    assert record["artifact_bytes"] == 15_960_000 + seed_logs["code_bytes"]
    assert [s["val_bpb"] for s in record["per_seed"]] == bpbs
    readme = (folder / "README.md").read_text()
    assert f"| 314 | 1.081100 | 2.792100 | {15_960_000 + seed_logs['code_bytes']:,} | 588.0 | 450.0 |" in readme
    assert "SEED=$SEED TTT_LR=0.01 torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    assert "for SEED in 42 314 999" in readme and "Per-token mixer." in readme
    assert check_record.main([str(folder)]) == 0
    assert "record OK" in capsys.readouterr().out
    assert make_record.main(record_args(seed_logs)) == 1  # exists
    assert "--force" in capsys.readouterr().err
    assert make_record.main(record_args(seed_logs, "--force")) == 0


@needs_packer
def test_make_record_rejects_bad_inputs(seed_logs, tmp_path, capsys):
    other = tmp_path / "other.py"
    other.write_text("print('other')\n", encoding="utf-8")
    assert make_record.main(record_args(seed_logs, "--source", str(other))) == 1
    assert "is not the code that ran" in capsys.readouterr().err
    paths = seed_logs["paths"]
    paths[1].write_text(fake_log(42, sha=seed_logs["sha"]), encoding="utf-8")
    assert make_record.main(record_args(seed_logs)) == 1
    assert "seeds repeat" in capsys.readouterr().err
    paths[1].write_text(fake_log(5, sha=seed_logs["sha"], finished=False), encoding="utf-8")
    assert make_record.main(record_args(seed_logs)) == 1
    assert "did not finish" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_record.main(record_args(seed_logs, "--date", "2026-13-01"))
    with pytest.raises(SystemExit):
        make_record.main(record_args(seed_logs, "--slug", "bad slug"))


@pytest.fixture
def record_folder(seed_logs):
    if not HAS_PACKER:
        pytest.skip("train_gpt.py has no pack_source/code_bytes_of yet")
    assert make_record.main(record_args(seed_logs)) == 0
    return seed_logs["records_dir"] / "2026-01-02_DualClock_PPM_tuned"


def failures(folder) -> dict[str, list[str]]:
    return {name: problems for name, problems in check_record.check_record(folder).items() if problems}


def test_check_record_flags_each_rule(record_folder, capsys):
    (record_folder / "requirements.txt").write_text("torch\n")  # not a log
    (record_folder / "extra_seed.txt").write_text(fake_log(seed=5, finished=False))  # a log, unfinished
    found = failures(record_folder)
    assert list(found) == ["finished"] and "extra_seed.txt: no `final` line" in found["finished"][0]
    (record_folder / "extra_seed.txt").unlink()
    assert failures(record_folder) == {}
    log = record_folder / "train_seed42.log"
    original = log.read_text()
    submission_path = record_folder / "submission.json"
    submission = json.loads(submission_path.read_text())

    log.write_text(original.replace("train_time_ms:588000 total_eval_time_ms:450000",
                                    "train_time_ms:600001 total_eval_time_ms:612000"))
    found = failures(record_folder)
    assert list(found) == ["time"] and len(found["time"]) == 2 and "600.0 s, over 600 s" in found["time"][0]

    log.write_text(original.replace("model_bytes:15950000", "model_bytes:15999990"))
    found = failures(record_folder)
    assert list(found) == ["artifact"] and "exceeds 16,000,000" in found["artifact"][0]
    assert "submission.json artifact_bytes" in found["artifact"][1]

    log.write_text(original.replace("code_sha256:", "code_sha256:00"))
    assert list(failures(record_folder)) == ["code"]
    log.write_text(original)

    submission_path.write_text(json.dumps({**submission, "val_bpb": submission["val_bpb"] + 1e-5}))
    found = failures(record_folder)
    assert list(found) == ["score"] and "mean of the logs" in found["score"][0]
    submission_path.write_text(json.dumps({**submission, "seeds": [1, 2, 3], "artifact_bytes": 1}))
    assert sorted(failures(record_folder)) == ["artifact", "seeds"]
    submission_path.write_text(json.dumps(submission))

    (record_folder / "train_gpt.py").write_text("# parameter-golf packed\n" + "x" * 10)
    assert sorted(failures(record_folder)) == ["artifact", "code"]  # code_bytes, then the claimed artifact size
    (record_folder / "README.md").unlink()
    (record_folder / "extra.log").write_text(fake_log(finished=False))
    assert check_record.main([str(record_folder)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL files" in printed and "missing README.md" in printed and "extra.log: no `final` line" in printed


def test_check_record_cli_errors(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        check_record.main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "submission.json").write_text("{not json")
    found = failures(empty)
    assert "no training log (*.log or *.txt)" in found["files"] and "not valid JSON" in found["submission"][0]


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


def test_significance_cli(tmp_path, capsys):
    paths = []
    for seed, loss in ((1, 2.770), (2, 2.772), (3, 2.768)):
        path = tmp_path / f"s{seed}.txt"
        path.write_text(fake_log(seed, val_bpb=loss / 2.58, val_loss=loss), encoding="utf-8")
        paths.append(str(path))
    # The record as BPB is converted with the logs' val_loss / val_bpb ratio (2.58 nats per BPB).
    assert significance.main(["--logs", *paths, "--record-bpb", str(2.790 / 2.58), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "record_val_loss:2.790000" in printed and "p < 0.01: YES" in printed and "df:2" in printed
    assert significance.main(["--values", "2.786", "2.784", "2.785", "--record-nats", "2.79", "--check"]) == 1
    assert "p < 0.01: NO" in capsys.readouterr().out
    assert significance.main(["--values", "2.786", "2.784", "--record-logs", *paths[:2]]) == 0
    assert significance.main(["--values", "2.7", "2.8", "--record-bpb", "1.08"]) == 2
    assert "--bytes-per-token" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished.txt"
    unfinished.write_text(fake_log(finished=False), encoding="utf-8")
    assert significance.main(["--logs", str(unfinished), paths[0], "--record-nats", "2.8"]) == 2
    with pytest.raises(SystemExit):
        significance.main(["--values", "1", "2"])  # no record


# -----------------------------------------------------------------------------
# Plotter
# -----------------------------------------------------------------------------


def test_plot_logs_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    logs = []
    for seed, bpb in ((1, 1.081), (2, 1.079)):
        path = tmp_path / f"seed{seed}.txt"
        path.write_text(fake_log(seed, val_bpb=bpb), encoding="utf-8")
        logs.append(str(path))
    output = tmp_path / "plots" / "curves.png"
    assert plot_logs.main([*logs, "-o", str(output), "--labels", "one,two", "--title", "Seeds"]) == 0
    data = output.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert plot_logs.main([*logs, "-o", str(output), "--labels", "only-one"]) == 1
    assert "2 logs" in capsys.readouterr().err


def test_plot_logs_errors(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("code_sha256:00 source:x\n", encoding="utf-8")
    with pytest.raises(plot_logs.PlotError, match="nothing|no training loss"):
        plot_logs.load_curves([empty])
    with pytest.raises(SystemExit):
        plot_logs.main([str(tmp_path / "missing.txt")])
    with pytest.raises(SystemExit):
        plot_logs.main([str(empty), "-o", str(tmp_path / "x.jpg")])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(plot_logs.PlotError, match="pip install matplotlib"):
        plot_logs.pyplot()


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
    assert "| `VOCAB_SIZE` | int | `8192` | Model (SPEC §3) |" in table
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

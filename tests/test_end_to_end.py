"""The whole pipeline under torchrun on real text: train on 2 CPU ranks (gloo), quantize,
write the artifact, reload, evaluate; then a 1-rank evaluation of the same artifact must
give the same figures. Also: bad input fails before any output, non-finite loss stops."""
import os
import subprocess
import sys

import pytest

import train_gpt
from conftest import ROOT
from tools.logparse import read_log, last


def torchrun(env, nproc, cwd, timeout=600, script=ROOT / "train_gpt.py"):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(train_gpt.ENV_PREFIXES)}
    full_env.update(env, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(script)]
    return subprocess.run(command, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def eval_figures(records):
    return {r["eval"]: (r["val_loss"], r["val_bpb"]) for r in records if "eval" in r and "val_bpb" in r
            and r.get("event") != "final"}


@pytest.fixture(scope="module")
def two_rank_run(tiny_dataset, tmp_path_factory):
    from conftest import TINY_ENV

    work = tmp_path_factory.mktemp("e2e")
    env = dict(TINY_ENV, DATA_PATH=str(tiny_dataset["dataset_dir"]), TOKENIZER_PATH=str(tiny_dataset["tokenizer_path"]),
               LOG_DIR=str(work / "logs"), ARTIFACT_PATH=str(work / "model.ptz"),
               CHECKPOINT_PATH=str(work / "model.pt"), RUN_ID="two_ranks")
    out = torchrun(env, 2, work)
    assert out.returncode == 0, out.stderr[-4000:]
    return env, work, read_log(work / "logs" / "two_ranks.txt")


def test_two_rank_run_logs_every_phase(two_rank_run):
    env, work, records = two_rank_run
    config = next(r["config"] for r in records if "config" in r)
    assert config["vocab_size"] == 512 and config["ttt_enabled"] is True
    assert last(records, "world_size") == 2 and last(records, "attn_impl") == "sdpa"
    steps = [r for r in records if "train_loss" in r]
    assert steps and all("train_time_ms" in r and "tok_per_s" in r for r in steps)
    assert steps[-1]["step"] == "12/12"
    assert set(eval_figures(records)) == {"pre_quant", "quantized", "sliding", "ttt"}
    final = [r for r in records if r.get("event") == "final"][-1]
    assert final["val_bpb"] == eval_figures(records)["ttt"][1]
    # Artifact accounting: code bytes are the packed copy, model bytes the file on disk.
    assert last(records, "code_bytes") == train_gpt.code_bytes_of(ROOT / "train_gpt.py")
    assert last(records, "model_bytes") == (work / "model.ptz").stat().st_size
    assert last(records, "artifact_bytes") == last(records, "code_bytes") + last(records, "model_bytes")
    assert final["artifact_valid"] == 1
    assert not [p for p in work.iterdir() if ".tmp" in p.name]


def test_one_rank_evaluation_of_the_same_artifact_matches(two_rank_run):
    env, work, records = two_rank_run
    env = dict(env, EVAL_ONLY="1", RUN_ID="one_rank")
    out = torchrun(env, 1, work)
    assert out.returncode == 0, out.stderr[-4000:]
    one = eval_figures(read_log(work / "logs" / "one_rank.txt"))
    two = eval_figures(records)
    for name in ("quantized", "sliding", "ttt"):
        assert one[name] == pytest.approx(two[name], rel=2e-5), name


def test_over_the_cap_is_reported_not_hidden(two_rank_run):
    env, work, _ = two_rank_run
    env = dict(env, EVAL_ONLY="1", RUN_ID="over", ARTIFACT_LIMIT_BYTES="1000", TTT_ENABLED="0",
               SLIDING_WINDOW_ENABLED="0")
    out = torchrun(env, 1, work)
    assert out.returncode == 0, out.stderr[-4000:]
    records = read_log(work / "logs" / "over.txt")
    assert any(r.get("event") == "artifact_over_limit" for r in records)
    assert last(records, "artifact_valid", {"event": "final"}) == 0


@pytest.mark.parametrize("change, message", [
    ({"VOCAB_SIZE": "1024"}, "VOCAB_SIZE=1024"),
    ({"DATA_PATH": "/nonexistent"}, "no val shards"),
    ({"TTT_LRR": "0.1"}, "unknown environment variable"),
    ({"MATRIX_LR": "1e6", "TIED_EMBED_LR": "1e6", "SCALAR_LR": "1e6", "GRAD_CLIP_NORM": "0"}, "non-finite training loss"),
])
def test_bad_input_fails_clearly_without_output(tiny_env, tmp_path, change, message):
    env = dict(tiny_env, **change)
    out = torchrun(env, 1, tmp_path)
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "model.ptz").exists()


def test_world_size_that_does_not_divide_eight(tiny_env, tmp_path):
    out = torchrun(tiny_env, 3, tmp_path)
    assert out.returncode != 0 and "must divide 8" in out.stderr


def test_packed_copy_trains_and_scores_exactly_like_the_source(tiny_env, tmp_path):
    """The record ships the packed copy: same run, same numbers, and its own size as code bytes; under
    torchrun (runpy reads the file's bytes and honours its latin-1 declaration) as under plain python."""
    packed = tmp_path / "packed" / "train_gpt.py"
    packed.parent.mkdir()
    packed.write_bytes(train_gpt.pack_source((ROOT / "train_gpt.py").read_text()))
    env = dict(tiny_env, ITERATIONS="6", SLIDING_WINDOW_ENABLED="0", TTT_EPOCHS="1")
    figures = {}
    for name, script, launcher in (("source", ROOT / "train_gpt.py", "torchrun"), ("packed", packed, "torchrun"),
                                   ("packed_python", packed, "python")):
        run_env = dict(env, RUN_ID=name, ARTIFACT_PATH=str(tmp_path / f"{name}.ptz"))
        if launcher == "torchrun":
            out = torchrun(run_env, 1, tmp_path, script=script)
        else:
            full_env = {k: v for k, v in os.environ.items() if not k.startswith(train_gpt.ENV_PREFIXES)}
            out = subprocess.run([sys.executable, str(script)], env=dict(full_env, **run_env, OMP_NUM_THREADS="1"),
                                 cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
        records = read_log(tmp_path / "logs" / f"{name}.txt")
        figures[name] = (eval_figures(records), last(records, "code_bytes"), last(records, "model_bytes"))
    assert figures["packed"][0] == figures["source"][0] == figures["packed_python"][0]
    assert figures["packed"][2] == figures["source"][2]
    assert figures["packed"][1] == figures["source"][1] == packed.stat().st_size


@pytest.mark.parametrize("mode", [{}, {"DC_EXPERTS": "hashed", "DC_MIXER": "fixed_share", "DC_HASH": "legacy",
                                       "DC_LOCAL_RESET": "chunk"}])
def test_dualclock_on_two_ranks_equals_one_rank(two_rank_run, mode):
    env, work, _ = two_rank_run
    figures = {}
    for nproc in (2, 1):
        run_env = dict(env, **mode, EVAL_ONLY="1", DC_ENABLED="1", SLIDING_WINDOW_ENABLED="0",
                       RUN_ID=f"dc_{nproc}_{len(mode)}")
        out = torchrun(run_env, nproc, work)
        assert out.returncode == 0, out.stderr[-4000:]
        records = read_log(work / "logs" / f"dc_{nproc}_{len(mode)}.txt")
        line = [r for r in records if r.get("event") == "dualclock"][-1]
        figures[nproc] = (line["neural_bpb"], line["global_bpb"], line["local_bpb"], line["mixed_bpb"])
        assert last(records, "val_bpb", {"event": "final"}) == line["mixed_bpb"]
    assert figures[2] == pytest.approx(figures[1], rel=2e-5)


def test_eval_budget_line_and_a_record_run_without_diagnostics(two_rank_run):
    env, work, records = two_rank_run
    budget = [r for r in records if r.get("event") == "eval_budget"][-1]
    phases = {k: budget[k] for k in ("pre_quant_ms", "load_ms", "quantized_ms", "sliding_ms", "ttt_ms")}
    assert budget["scored_eval_ms"] == pytest.approx(phases["load_ms"] + phases["ttt_ms"], abs=1)
    assert budget["total_eval_ms"] == pytest.approx(sum(phases.values()), abs=3)
    assert budget["scored_limit_ms"] == 600_000 and budget["scored_within_limit"] == 1
    final = [r for r in records if r.get("event") == "final"][-1]
    assert final["scored_eval_time_ms"] == budget["scored_eval_ms"] and final["total_eval_time_ms"] == budget["total_eval_ms"]
    assert all(r["compile_ms"] == 0 for r in records if "eval" in r and "compile_ms" in r)  # eager on the CPU
    # A record run: the unscored diagnostics off, the scored figure unchanged.
    out = torchrun(dict(env, EVAL_ONLY="1", EVAL_DIAGNOSTICS="0", RUN_ID="record"), 2, work)
    assert out.returncode == 0, out.stderr[-4000:]
    record = read_log(work / "logs" / "record.txt")
    assert set(eval_figures(record)) == {"ttt"}
    assert eval_figures(record)["ttt"] == pytest.approx(eval_figures(records)["ttt"], rel=2e-5)
    budget = [r for r in record if r.get("event") == "eval_budget"][-1]
    assert {k for k in budget if k.endswith("_ms")} == {"load_ms", "ttt_ms", "scored_eval_ms", "total_eval_ms",
                                                        "scored_limit_ms"}


DOCUMENT_TTT = {"TTT_MODE": "document", "TTT_LORA_RANK": "8", "TTT_DOC_BATCH": "1", "TTT_DOC_CHUNK_TOKENS": "16",
                "TTT_SHORT_CHUNKS": "64:8", "TTT_PHASES": "2", "TTT_PHASE_PREFIX_DOCS": "2", "TTT_CHUNK_TOKENS": "64",
                "DC_ENABLED": "1", "DC_TILT": "1", "SLIDING_WINDOW_ENABLED": "0", "EVAL_INCLUDE_TAIL": "1"}


def test_document_ttt_gives_the_same_score_twice_on_two_ranks(two_rank_run):
    """Deterministic document TTT: ranks take batches by a fixed plan and adapters are drawn from seeds, so the
    same artifact and seed give the same figures on a given world size (the records raced on a file lock)."""
    env, work, _ = two_rank_run
    lines = []
    for run in ("a", "b"):
        out = torchrun(dict(env, **DOCUMENT_TTT, EVAL_ONLY="1", RUN_ID=f"doc_{run}"), 2, work)
        assert out.returncode == 0, out.stderr[-4000:]
        records = read_log(work / "logs" / f"doc_{run}.txt")
        lines.append([r for r in records if r.get("event") == "dualclock"][-1])
        budget = [r for r in records if r.get("event") == "eval_budget"][-1]
        assert {"ttt_adapter_ms", "ttt_sgd_ms", "ttt_mixer_ms"} <= set(budget) and budget["ttt_sgd_ms"] > 0
        assert last(records, "val_bpb", {"event": "final"}) == lines[-1]["mixed_bpb"]
        assert last(records, "tokens", {"eval": "ttt"}) == last(records, "tokens", {"eval": "quantized"})
    assert {k: v for k, v in lines[0].items() if "time" not in k and "share" not in k} == \
        {k: v for k, v in lines[1].items() if "time" not in k and "share" not in k}
    assert lines[0]["tilt_fired"] > 0 and lines[0]["neural_bpb"] != lines[0]["mixed_bpb"]

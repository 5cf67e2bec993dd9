"""run.sh, the one launcher, driven with stand-ins on the PATH: an `nvidia-smi` that lists eight
H100s, a Python wrapper (PYTHON) that answers PyTorch's GPU count, pip and the data tools as told,
records `-m torch.distributed.run`'s command and environment instead of training, and runs
everything else for real, and a `torchrun` that must never be called (it may belong to another
Python than PYTHON). Each test is a first-run defect that killed or misled a pod run."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NVIDIA_SMI = """#!/usr/bin/env bash
for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done
"""
TORCHRUN = """#!/usr/bin/env bash
echo "a torchrun on the PATH was called: $*" >&2
exit 97
"""
# PyTorch's GPU count honours CUDA_VISIBLE_DEVICES, as the real one does: the visible ones that exist.
PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$STANDIN/python.calls"
case "$*" in
  *device_count*)
    if [ -z "${FAKE_TORCH_GPUS:-}" ]; then exec "$REAL_PYTHON" "$@"; fi
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
      n=0; for d in ${CUDA_VISIBLE_DEVICES//,/ }; do [ "$d" -lt "$FAKE_TORCH_GPUS" ] && n=$((n + 1)); done; echo $n
    else echo "$FAKE_TORCH_GPUS"; fi ;;
  "-c import torch") exit "${FAKE_TORCH_IMPORT:-0}" ;;
  "-c import sentencepiece, brotli, python_minifier") exit "${FAKE_PACKAGES:-0}" ;;
  "-m pip"*) exit 0 ;;
  "-m torch.distributed.run "*)
    shift 2; echo "$@" > "$STANDIN/torchrun.args"; env > "$STANDIN/torchrun.env" ;;
  *data/download.py*--check*) exit "${FAKE_DATA_CHECK:-0}" ;;
  *data/download.py*|*data/build.py*|*tools/summary.py*) exit 0 ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def launch(tmp_path):
    """run(args, **env) -> (completed process, recorded calls); stand-ins first on the PATH."""
    standin = tmp_path / "standin"
    standin.mkdir()
    write_script(standin / "nvidia-smi", NVIDIA_SMI)
    write_script(standin / "torchrun", TORCHRUN)
    write_script(standin / "python-standin", PYTHON)

    def run(*args, **env):
        """env: variables for run.sh; PYTHON=None leaves it unset, PREPEND_PATH goes before the stand-ins."""
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("TRAIN_", "DATA_", "DEVICE", "CUDA_", "EVAL_")) and k != "PYTHON"}
        path = f"{standin}:{os.environ['PATH']}"
        if env.get("PREPEND_PATH"):
            path = f"{env.pop('PREPEND_PATH')}:{path}"
        full = {**base, "PATH": path, "STANDIN": str(standin), "REAL_PYTHON": sys.executable,
                "PYTHON": str(standin / "python-standin"), "OMP_NUM_THREADS": "1", **env}
        full = {k: v for k, v in full.items() if v is not None}
        out = subprocess.run(["bash", str(ROOT / "run.sh"), *args], env=full, capture_output=True, text=True,
                             timeout=300)
        recorded = {name: (standin / name).read_text() if (standin / name).exists() else None
                    for name in ("torchrun.args", "torchrun.env", "python.calls")}
        return out, recorded

    return run


def environment(recorded: dict) -> dict:
    return dict(line.split("=", 1) for line in recorded["torchrun.env"].splitlines() if "=" in line)


def test_gpu_count_is_what_pytorch_sees_not_what_nvidia_smi_lists(launch):
    # nvidia-smi lists 8 GPUs but this PyTorch (the real CPU build) sees none: the CPU demo, not 8 ranks.
    out, recorded = launch()
    assert out.returncode == 0, out.stderr
    assert "--nproc_per_node=2" in recorded["torchrun.args"] and environment(recorded)["DEVICE"] == "cpu"
    # PyTorch sees 8, CUDA_VISIBLE_DEVICES shows 2 of them: two ranks, each with a GPU.
    out, recorded = launch(FAKE_TORCH_GPUS="8", CUDA_VISIBLE_DEVICES="0,1")
    assert out.returncode == 0, out.stderr
    assert "--nproc_per_node=2 train_gpt.py" in recorded["torchrun.args"]
    assert environment(recorded)["DEVICE"] == "cuda"


def test_launcher_variables_do_not_reach_train_gpt(launch):
    out, recorded = launch(FAKE_TORCH_GPUS="8", TRAIN_SHARDS="80", NPROC="4")
    assert out.returncode == 0, out.stderr
    env = environment(recorded)
    assert "TRAIN_SHARDS" not in env and "NPROC" not in env  # train_gpt.py rejects unknown TRAIN_* variables
    assert "--nproc_per_node=4 train_gpt.py" in recorded["torchrun.args"]
    check = [c for c in recorded["python.calls"].splitlines() if "download.py" in c]
    assert check == ["data/download.py --check --data-path ./data/datasets/fineweb10B_sp8192 "
                     "--tokenizer-path ./data/tokenizers/fineweb_8192_bpe.model --train-shards 80"]


def test_a_record_run_demands_cuda(launch):
    out, recorded = launch(FAKE_TORCH_GPUS="8")
    assert out.returncode == 0, out.stderr
    assert environment(recorded)["DEVICE"] == "cuda"
    # And train_gpt.py refuses DEVICE=cuda where PyTorch has no GPU, before any output.
    result = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, DEVICE="cuda", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""))
    assert result.returncode != 0 and "DEVICE=cuda but torch.cuda.is_available() is False" in result.stderr


def test_data_elsewhere_is_checked_where_it_is_and_never_downloaded_over(launch, tmp_path):
    out, recorded = launch(FAKE_TORCH_GPUS="1", FAKE_DATA_CHECK="1", DATA_PATH=str(tmp_path / "mine"))
    assert out.returncode != 0 and recorded["torchrun.args"] is None
    assert f"DATA_PATH={tmp_path / 'mine'} is incomplete" in out.stderr
    assert not [c for c in recorded["python.calls"].splitlines() if "download.py" in c and "--check" not in c]
    out, recorded = launch(FAKE_TORCH_GPUS="1", FAKE_DATA_CHECK="1")  # the default place: download, then run
    assert [c for c in recorded["python.calls"].splitlines() if c.startswith("data/download.py")][-1] == "data/download.py"
    assert recorded["torchrun.args"] is not None


def test_pod_installs_never_touch_its_pytorch(launch):
    requirements = (ROOT / "requirements.txt").read_text()
    assert not [line for line in requirements.splitlines() if line.split("#")[0].strip().lower().startswith("torch")]
    for args, env in ((("test", "--co", "-q"), {}), ((), {"FAKE_TORCH_GPUS": "8", "FAKE_PACKAGES": "1"})):
        out, recorded = launch(*args, **env)
        pip = [c for c in recorded["python.calls"].splitlines() if c.startswith("-m pip")]
        assert pip and not [c for c in pip if "torch" in c], pip  # torch is present: left alone
    out, recorded = launch("test", "--co", "-q", FAKE_TORCH_IMPORT="1")  # a fresh CPU machine: the pinned build
    assert "-m pip install -q torch==2.13.0" in recorded["python.calls"].splitlines()


def test_the_recipe_is_chosen_and_said(launch):
    out, recorded = launch(FAKE_TORCH_GPUS="8")  # SP8192 data only: the best recipe on it
    assert out.returncode == 0, out.stderr
    assert environment(recorded)["RECIPE"] == "pr1874" and "RECIPE=pr1874: the best recipe on SP8192" in out.stdout
    out, recorded = launch(FAKE_TORCH_GPUS="8", RECIPE="pr1493")  # the caller's choice stands
    assert environment(recorded)["RECIPE"] == "pr1493" and "set by the caller" in out.stdout
    out, recorded = launch()  # the CPU demo shows the best recipe's mechanisms
    env = environment(recorded)
    assert env["RECIPE"] == "best" and env["TRAIN_SEQ_SCHEDULE"] == "64@0.1,128@0.7,256@1.0"


def test_a_record_run_skips_the_unscored_diagnostics_unless_asked(launch):
    out, recorded = launch(FAKE_TORCH_GPUS="8")
    assert out.returncode == 0, out.stderr
    assert environment(recorded)["EVAL_DIAGNOSTICS"] == "0"
    assert recorded["torchrun.args"].startswith("--standalone --nproc_per_node=8 train_gpt.py")
    out, recorded = launch(FAKE_TORCH_GPUS="8", EVAL_DIAGNOSTICS="1")
    assert out.returncode == 0, out.stderr
    assert environment(recorded)["EVAL_DIAGNOSTICS"] == "1"


def interpreters(folder: Path, python3: str, python: str) -> None:
    """`python3` and `python` stand-ins: each answers `import torch` with the given exit status, names
    itself in python.calls, and otherwise behaves as the Python stand-in (a recording torchrun)."""
    for name, torch_status in (("python3", python3), ("python", python)):
        write_script(folder / name, f"""#!/usr/bin/env bash
echo "{name} $*" >> "$STANDIN/python.calls"
if [ "$*" = "-c import torch" ]; then exit {torch_status}; fi
exec "$STANDIN/python-standin" "$@"
""")


@pytest.mark.parametrize("python3, python, chosen", [("0", "0", "python3"), ("1", "0", "python"),
                                                    ("1", "1", "python3")])
def test_python_defaults_to_the_first_interpreter_that_imports_torch(launch, tmp_path, python3, python, chosen):
    folder = tmp_path / "interpreters"
    folder.mkdir()
    interpreters(folder, python3, python)
    out, recorded = launch(FAKE_TORCH_GPUS="8", PYTHON=None, PREPEND_PATH=str(folder))
    assert out.returncode == 0, out.stderr
    assert recorded["torchrun.args"] is not None  # launched by `$PYTHON -m torch.distributed.run`
    launcher = [c for c in recorded["python.calls"].splitlines()
                if "torch.distributed.run" in c and c.split()[0] in ("python3", "python")]
    assert launcher and launcher[-1].split()[0] == chosen, recorded["python.calls"]
    assert ("imports torch; using python3" in out.stderr) == (python3 == python == "1")

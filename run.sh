#!/usr/bin/env bash
# run.sh: the one launcher.
#
#   bash run.sh          the main job:
#                          CUDA GPUs + data   -> the record configuration on all GPUs (torchrun)
#                          CUDA GPUs, no data -> download the SP8192 export first, then the same
#                          no GPU             -> CPU demo of the whole pipeline on the embedded
#                                                standard-library corpus, then a summary table
#   bash run.sh test     install the requirements and run the test suite
#
# Extra environment variables pass through to train_gpt.py: `SEED=314 bash run.sh`.
# The launcher's own: NPROC overrides the GPU count; TRAIN_SHARDS, how many training shards
# the data must have (downloaded if missing); PYTHON, the interpreter (default: the first of
# python3, python that imports torch); CASEOPS=1, the CPU demo on CaseOps-transformed data (its own
# tokenizer, scored by the byte sidecar). They stop here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# The interpreter that runs everything, torchrun included (`$PYTHON -m torch.distributed.run`: a
# `torchrun` on the PATH may belong to another Python). Default: the first of python3, python that
# imports torch; if none does, the first that exists, into which PyTorch's CPU build is installed.
pick_python() {
  local candidate first=""
  for candidate in python3 python; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    first="${first:-$candidate}"
    if "$candidate" -c 'import torch' 2>/dev/null; then echo "$candidate"; return; fi
  done
  if [ -z "$first" ]; then
    echo "run.sh: neither python3 nor python is on the PATH; set PYTHON=/path/to/python" >&2
    exit 1
  fi
  echo "run.sh: no python3 or python on the PATH imports torch; using $first (set PYTHON to choose)" >&2
  echo "$first"
}
PYTHON="${PYTHON:-$(pick_python)}"
CPU_TORCH="torch==2.13.0"  # the CPU build CI and the tests pin; pods keep the PyTorch they bring

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

# The GPUs PyTorch can use (CUDA_VISIBLE_DEVICES respected), not what nvidia-smi lists: a rank
# without a visible GPU dies with "invalid device ordinal".
gpu_count() {
  "$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0
}

# Gradient accumulation is 8 // world_size, so the world size must divide 8.
nproc_for() {
  local gpus="$1"
  for n in 8 4 2 1; do
    if [ "$gpus" -ge "$n" ]; then echo "$n"; return; fi
  done
  echo 1
}

# requirements.txt never names PyTorch: installing it on a pod would replace the pod's CUDA build.
install_requirements() {
  "$PYTHON" -c 'import torch' 2>/dev/null || "$PYTHON" -m pip install -q "$CPU_TORCH"
  "$PYTHON" -m pip install -q -r requirements.txt
}

run_tests() {
  install_requirements
  "$PYTHON" -m pytest -q "$@"
}

# ----------------------------------------------------------------------------------------
# The record configuration. The dataclass defaults are the published record stack, so only
# paths, the seed and the evaluation-time mixture are spelled out; every value can be
# overridden from the caller's environment. A record run demands CUDA (DEVICE=cuda): if
# PyTorch lost the GPUs, it fails instead of training on CPUs. It runs no unscored diagnostic
# (EVAL_DIAGNOSTICS=0): only the scored path, which must fit 600 s. DualClock stays off until its
# GPU time has been measured inside the 600 s evaluation budget: DC_ENABLED=1 bash run.sh.
# ----------------------------------------------------------------------------------------
DEFAULT_DATA_PATH=./data/datasets/fineweb10B_sp8192
CASEOPS_DATA_PATH=./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved

# The recipe (train_gpt.py's RECIPES): the caller's RECIPE, else the best one whose data is here. `best`
# (the #2014 stack) trains on the CaseOps export; on the SP8192 export the best recipe is pr1874.
choose_recipe() {
  if [ -n "${RECIPE:-}" ]; then
    echo "run.sh: RECIPE=$RECIPE (set by the caller)"
  elif compgen -G "$CASEOPS_DATA_PATH/fineweb_val_*.bin" >/dev/null; then
    export RECIPE=best DATA_PATH="${DATA_PATH:-$CASEOPS_DATA_PATH}"
    export TOKENIZER_PATH="${TOKENIZER_PATH:-./data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model}"
    echo "run.sh: RECIPE=best: the CaseOps export is at $CASEOPS_DATA_PATH"
  else
    export RECIPE=pr1874
    echo "run.sh: RECIPE=pr1874: the best recipe on SP8192 data (best needs the CaseOps export at $CASEOPS_DATA_PATH:" \
         "python data/download.py --variant caseops)"
  fi
}

# COMPRESSOR=pergroup (pr1855, best) runs the lrzip program: install it with the system's package manager
# where it can; where it cannot, fall back to brotli (about 280 KB larger) and say so.
ensure_lrzip() {
  local wanted
  wanted="$("$PYTHON" -c 'import train_gpt as t; print(t.Hyperparameters.from_env().compressor)' 2>/dev/null || echo brotli)"
  if [ "$wanted" != pergroup ] || command -v lrzip >/dev/null; then return; fi
  if command -v apt-get >/dev/null && { apt-get install -y -q lrzip >/dev/null 2>&1 ||
       sudo -n apt-get install -y -q lrzip >/dev/null 2>&1; }; then
    echo "run.sh: installed lrzip for COMPRESSOR=pergroup"
  else
    export COMPRESSOR=brotli
    echo "run.sh: lrzip is not installed and cannot be: COMPRESSOR=brotli instead of pergroup"
  fi
}

record_env() {
  export DATA_PATH="${DATA_PATH:-$DEFAULT_DATA_PATH}"
  export TOKENIZER_PATH="${TOKENIZER_PATH:-./data/tokenizers/fineweb_8192_bpe.model}"
  export SEED="${SEED:-1337}"
  export DEVICE="${DEVICE:-cuda}"
  export EVAL_DIAGNOSTICS="${EVAL_DIAGNOSTICS:-0}"
  export DC_ENABLED="${DC_ENABLED:-0}"
}

# The data train_gpt.py will read (DATA_PATH, TOKENIZER_PATH), checked by the same rule the
# downloader uses; missing data at the default place is downloaded, elsewhere it is an error.
ensure_data() {
  local shards=()
  if [ -n "${TRAIN_SHARDS:-}" ]; then shards=(--train-shards "$TRAIN_SHARDS"); fi
  local check=("$PYTHON" data/download.py --check --data-path "$DATA_PATH" --tokenizer-path "$TOKENIZER_PATH")
  if "${check[@]}" "${shards[@]}"; then return; fi
  if [ "$DATA_PATH" != "$DEFAULT_DATA_PATH" ]; then
    echo "run.sh: DATA_PATH=$DATA_PATH is incomplete (above); fix it, or unset DATA_PATH to download the export" >&2
    exit 1
  fi
  echo "run.sh: downloading the SP8192 export (resumable; re-run if interrupted)"
  "$PYTHON" -c 'import huggingface_hub' 2>/dev/null || "$PYTHON" -m pip install -q huggingface_hub
  "$PYTHON" data/download.py "${shards[@]}"
}

run_gpu() {
  local gpus="$1"
  local nproc="${NPROC:-$(nproc_for "$gpus")}"
  "$PYTHON" -c 'import sentencepiece, brotli, python_minifier' 2>/dev/null || "$PYTHON" -m pip install -q -r requirements.txt
  choose_recipe
  record_env
  ensure_data
  ensure_lrzip
  echo "run.sh: $gpus GPU(s): $PYTHON -m torch.distributed.run --standalone --nproc_per_node=$nproc train_gpt.py"
  env -u TRAIN_SHARDS -u NPROC -u CASEOPS "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$nproc" train_gpt.py
}

# ----------------------------------------------------------------------------------------
# CPU demo: the best recipe's mechanisms (two lanes, SmearGate, sparse gate, document mask, the
# context schedule, Polar Express, AWQ-lite, LQER, the quant-gate and, with lrzip, the per-group
# codec) on a ~1M-parameter model and the embedded corpus, two gloo ranks of one thread each
# (2 cores), 5 minutes of training, then the full evaluation on a 32k-token slice of the
# validation documents.
# ----------------------------------------------------------------------------------------
demo_env() {
  export RECIPE="${RECIPE:-best}"
  export DATA_PATH="${DATA_PATH:-./data/datasets/stdlib_sp1024}"
  export TOKENIZER_PATH="${TOKENIZER_PATH:-./data/tokenizers/stdlib_1024_bpe.model}"
  export RUN_ID="${RUN_ID:-cpu_demo_$(date +%Y%m%d_%H%M%S)}"
  export DEVICE=cpu COMPILE=0
  export VOCAB_SIZE=1024 NUM_LAYERS=6 MODEL_DIM=128 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=3 ROPE_DIMS=16
  export LOOP_START=2 LOOP_END=3 NUM_LOOPS=1 PARALLEL_START_LAYER=4 XSA_LAST_N=6
  export TRAIN_SEQ_LEN=256 EVAL_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192 ITERATIONS=100000 WARMUP_STEPS=2
  export MAX_WALLCLOCK_SECONDS="${MAX_WALLCLOCK_SECONDS:-300}" GPTQ_RESERVE_SECONDS=0
  export TRAIN_LOG_EVERY=10 MUON_MOMENTUM_WARMUP_STEPS=50 EMA_DECAY=0.98  # ~200 steps, not ~4,500
  export EVAL_STRIDE=64 VAL_BATCH_SEQS=16 VAL_MAX_TOKENS="${VAL_MAX_TOKENS:-32768}"
  export TTT_CHUNK_TOKENS=4096 TTT_BATCH_SEQS=8 TTT_EPOCHS=1 GPTQ_CALIBRATION_BATCHES=8
  export DC_ENABLED="${DC_ENABLED:-1}"
  export TRAIN_SEQ_SCHEDULE="64@0.1,128@0.7,256@1.0" SEQ_CHANGE_WARMUP_STEPS=4  # best's 1k/2k/3k, scaled
  export GPTQ_PASSTHROUGH_MAX_NUMEL=8192  # the demo's matrices are small: GPTQ them all, as at full size
  command -v lrzip >/dev/null || export COMPRESSOR="${COMPRESSOR:-brotli}"
  export OMP_NUM_THREADS=1
}

run_cpu_demo() {
  echo "run.sh: no CUDA GPU visible to PyTorch: CPU demo of the ${RECIPE:-best} recipe on the embedded standard-library corpus"
  install_requirements
  if [ "${CASEOPS:-0}" = 1 ]; then
    # A CaseOps build writes only into an empty folder: the demo's own output is rebuilt each time.
    rm -rf data/datasets/stdlib_caseops_sp1024
    "$PYTHON" data/build.py --caseops --vocab-size 1024 --out data --name stdlib_caseops
    export DATA_PATH="${DATA_PATH:-./data/datasets/stdlib_caseops_sp1024}"
    export TOKENIZER_PATH="${TOKENIZER_PATH:-./data/tokenizers/stdlib_caseops_1024_bpe.model}"
  else
    "$PYTHON" data/build.py --vocab-size 1024 --out data --name stdlib
  fi
  demo_env
  env -u TRAIN_SHARDS -u NPROC -u CASEOPS "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 train_gpt.py
  echo
  "$PYTHON" tools/summary.py "${LOG_DIR:-logs}/$RUN_ID.txt"
}

main() {
  case "${1:-}" in
    test) shift; run_tests "$@" ;;
    -h|--help|help) usage ;;
    "")
      local gpus
      gpus="$(gpu_count)"
      if [ "$gpus" -gt 0 ]; then run_gpu "$gpus"; else run_cpu_demo; fi
      ;;
    *) echo "run.sh: unknown command '$1' (try: bash run.sh --help)" >&2; exit 2 ;;
  esac
}

main "$@"

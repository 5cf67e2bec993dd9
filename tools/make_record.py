"""Create a record folder `records/track_10min_16mb/YYYY-MM-DD_Name/` from run logs.

Why: a submission is a folder a maintainer merges as it is: the shipped script, one log per
seed, submission.json in the challenge's schema, a README that explains the run and how to
reproduce it, and the requirements. Assembled by hand it collects mistakes: a figure copied
from the wrong log, a script that is not the one that ran, a mean over the wrong seeds, a
README with placeholders. This tool reads every figure from the logs (tools/logparse.py),
ships the packed copy of the exact code that ran (its sha256 must match the logs'
`code_sha256`; packing goes through tools/pack.py), writes every README section from the logs
and your --blurb (it refuses rather than leave a TODO), then runs tools/check_record.py on the
result and prints its verdict: a record from a CPU or truncated run is written but refused.

Figures: val_bpb and val_loss are each log's `final` line; the record's val_bpb is their mean;
bytes_total is the largest code + model bytes of the logs; bytes_code is the shipped file's size.

What the May 2026 reviews ask, written to submission.json and the README: `data` (the variant, sp8192 or
caseops, and its fingerprint: tokenizer, train_shards, scored targets, the byte sidecar and the BPB
denominator it gave), `configuration` (the settings the seeds share: the logs' config lines must agree
except for the seed, or the record is refused here), and with --against FOLDER (the record it claims to
beat) `significance`: the one-sided Welch p of the 0.005-nat rule and of #1902's p < 0.25 progression
test against that record's seed logs.

Usage:
  python tools/make_record.py logs/seed42.txt logs/seed314.txt logs/seed999.txt \\
      --name "DualClock PPM mixture" --author "Ada Lovelace" --github-id ada \\
      --blurb "One paragraph: what this record changes and why it helps." \\
      --against path/to/the/record/it/beats
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import check_record, logparse  # noqa: E402

RECORDS_DIR = Path("records/track_10min_16mb")
ARTIFACT_LIMIT_BYTES = 16_000_000
# Config fields that describe the machine or the run, not the method: left out of the command.
MACHINE_FIELDS = {"seed", "run_id", "data_path", "tokenizer_path", "log_dir", "artifact_path", "checkpoint_path",
                  "eval_dump_path"}
# The challenge repository's own data tool fetches the SP8192 export into ./data (facts of that repository).
OFFICIAL_SP8192_FETCH = "MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf python3 data/cached_challenge_fineweb.py --variant sp8192"
SP8192_TOKENIZER = "fineweb_8192_bpe.model"


class RecordError(ValueError):
    """Input that cannot make a valid record; the message says which file and why."""


# -----------------------------------------------------------------------------
# Reading the runs
# -----------------------------------------------------------------------------


def load_runs(log_paths: list[Path]) -> list[dict]:
    """One unified run per log (logparse.read_run); each must be a finished run of our script."""
    if not log_paths:
        raise RecordError("no logs given")
    runs = []
    for path in log_paths:
        if not Path(path).is_file():
            raise RecordError(f"{path}: no such log")
        run = logparse.read_run(path)
        run["records"] = logparse.read_log(path)
        problem = run_problem(run)
        if problem:
            raise RecordError(f"{path}: {problem}")
        runs.append(run)
    return runs


def run_problem(run: dict) -> str | None:
    """Why a log cannot go into a record made by this tool (None when it can)."""
    if run["dialect"] != "ours":
        return ("not a log of this project's train_gpt.py (no code_sha256 line): make_record ships the packed copy "
                "of the code that ran, which only our logs identify; check other records with check_record.py")
    if not run["finished"]:
        return f"{run['unfinished_reason']}: the run did not finish"
    if run["config"].get("eval_only"):
        return "an EVAL_ONLY run: it trained nothing, so it cannot be a record's training log"
    missing = [key for key in ("val_bpb", "val_loss", "model_bytes", "train_time_ms", "total_eval_time_ms")
               if not logparse.is_number(run.get(key))]
    return f"no {', '.join(missing)} in the log" if missing else None


def check_runs_agree(runs: list[dict]) -> None:
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise RecordError(f"seeds repeat across logs ({seeds}): each log must be a different seed")
    hashes = {run["code_sha256"] for run in runs}
    if len(hashes) != 1:
        raise RecordError(f"the logs ran different code (code_sha256 {sorted(map(str, hashes))})")
    mixed = check_record.check_config(check_record.Record(Path("."), {}, [], [dict(r, name=Path(r["path"]).name)
                                                                              for r in runs], [], None, {}))
    if mixed.status == check_record.FAIL:
        raise RecordError("the seeds must share one configuration (reviewers refuse mixed ones): "
                          + "; ".join(mixed.details))


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# -----------------------------------------------------------------------------
# The shipped script
# -----------------------------------------------------------------------------


def shipped_script(source_path: Path, runs: list[dict]) -> bytes:
    """The bytes to ship as train_gpt.py: the packed copy of `source_path`, which must be the
    code that ran (or that packed copy itself, shipped unchanged)."""
    import train_gpt
    from tools import pack

    data = source_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != runs[0]["code_sha256"]:
        raise RecordError(f"{source_path} (sha256 {digest[:12]}…) is not the code that ran "
                          f"(logs: {str(runs[0]['code_sha256'])[:12]}…); pass --source with that exact file")
    if data.startswith(train_gpt.PACKED_MARKER.encode()):
        return data
    with tempfile.TemporaryDirectory() as scratch:
        packed = Path(scratch) / "train_gpt.py"
        pack.pack_file(source_path, packed)  # text or bytes, whatever the packer writes
        return packed.read_bytes()


# -----------------------------------------------------------------------------
# submission.json (the challenge's schema)
# -----------------------------------------------------------------------------


def hardware_of(run: dict) -> str:
    """'8xH100 80GB HBM3' from the log's GPU name and world size; '2xCPU' for a CPU run."""
    if run["device"] != "cuda" or not run["gpu_name"]:
        return f"{run['world_size'] or 1}x{(run['device'] or 'unknown').upper()}"
    name = run["gpu_name"].replace("_", " ").removeprefix("NVIDIA ")
    return f"{run['world_size']}x{name}"


def eval_seconds(run: dict) -> float:
    """The evaluation time the challenge's limit applies to: the scored path when logged."""
    milliseconds = run["scored_eval_time_ms"] if logparse.is_number(run["scored_eval_time_ms"]) else run["total_eval_time_ms"]
    return round(milliseconds / 1000, 1)


def seed_results(runs: list[dict], code_bytes: int) -> dict[str, dict]:
    return {str(run["seed"]): {"val_bpb": run["val_bpb"], "val_loss": run["val_loss"],
                               "artifact_bytes": run["model_bytes"] + code_bytes,
                               "train_wallclock_ms": round(run["train_time_ms"]), "eval_time_s": eval_seconds(run),
                               "step_avg_ms": run["step_avg_ms"], "val_tokens": run["val_tokens"],
                               "log": log_name(run)}
            for run in runs}


def log_name(run: dict) -> str:
    return f"train_seed{run['seed']}.log"


def data_fingerprint(runs: list[dict]) -> dict:
    """The data the runs trained and were scored on, as the logs state it."""
    run = runs[0]
    tokenizer = run["tokenizer"] or ""
    variant = "caseops" if "caseops" in tokenizer else "sp8192" if tokenizer == SP8192_TOKENIZER else f"local:{tokenizer}"
    return {"variant": variant, "tokenizer": tokenizer, "train_shards": run["train_shards"],
            "val_tokens": run["val_tokens"], "byte_sidecar": run["sidecar"], "val_bytes": run["val_bytes"]}


def significance_against(runs: list[dict], folder: Path) -> dict:
    """The Welch tests against the seed logs of the record this one claims to beat."""
    from tools import significance

    try:
        losses, bpbs = significance.log_values(significance.record_folder_logs(folder))
        new = [run["val_loss"] for run in runs]
        # Another tokenizer on the record's side: its BPB in our nats (significance.py does the same).
        record_losses = significance.comparable_losses(losses, bpbs, significance.nats_per_bpb(
            new, [run["val_bpb"] for run in runs]))
        rule = significance.welch_test(new, record_losses)
        progression = significance.progression_test(new, record_losses)
    except ValueError as error:
        raise RecordError(f"--against {folder}: {error}") from None
    return {"against": folder.name, "record_val_loss": round(rule["record"], 8),
            "improvement_nats": round(rule["improvement_mean"], 8),
            "welch_p_value": rule["p_value"], "beats_by_0.005_nats_at_p_0.01": rule["significant"],
            "progression_p_value": progression["p_value"], "progression_p_below_0.25": progression["significant"]}


def submission(runs: list[dict], code_bytes: int, args) -> dict:
    bpb_mean, bpb_std = mean_and_std([run["val_bpb"] for run in runs])
    loss_mean, loss_std = mean_and_std([run["val_loss"] for run in runs])
    per_seed = seed_results(runs, code_bytes)
    return {
        "author": args.author, "github_id": args.github_id, "name": args.name, "blurb": args.blurb,
        "date": args.date, "track": "10min_16mb",
        "val_bpb": round(bpb_mean, 8), "val_bpb_std": round(bpb_std, 8),
        "val_loss": round(loss_mean, 8), "val_loss_std": round(loss_std, 8),
        "seeds": [run["seed"] for run in runs], "seed_results": per_seed,
        "bytes_total": max(item["artifact_bytes"] for item in per_seed.values()), "bytes_code": code_bytes,
        "hardware": hardware_of(runs[0]), "pytorch_version": runs[0]["torch_version"],
        "code_sha256": runs[0]["code_sha256"],
        "data": data_fingerprint(runs), "configuration": non_default_settings(runs[0]["config"]),
        **({"significance": significance_against(runs, args.against)} if getattr(args, "against", None) else {}),
    }


# -----------------------------------------------------------------------------
# README.md: every section from the logs and the blurb
# -----------------------------------------------------------------------------


def non_default_settings(config: dict) -> dict[str, str]:
    """Environment variables that differ from Hyperparameters' defaults, as VAR -> value."""
    import train_gpt

    defaults = json.loads(train_gpt.Hyperparameters().to_log())
    settings = {}
    for field in dataclasses.fields(train_gpt.Hyperparameters):
        name = field.name
        if name in MACHINE_FIELDS or name not in config or config[name] == defaults.get(name):
            continue
        settings[name.upper()] = env_text(config[name])
    return settings


def env_text(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def results_table(record: dict, runs: list[dict]) -> str:
    rows = [f"| {seed} | {item['val_bpb']:.8f} | {item['val_loss']:.8f} | {item['artifact_bytes']:,} | "
            f"{item['train_wallclock_ms'] / 1000:.1f} | {item['eval_time_s']:.1f} | {run['steps']} |"
            for (seed, item), run in zip(record["seed_results"].items(), runs)]
    return "\n".join([
        "| Seed | val_bpb | val_loss (nats/token) | Artifact bytes | Train (s) | Eval (s) | Steps |",
        "|---:|---:|---:|---:|---:|---:|---:|", *rows,
        f"| **Mean** | **{record['val_bpb']:.8f}** | {record['val_loss']:.8f} | max {record['bytes_total']:,} | | | |",
    ])


def settings_section(runs: list[dict]) -> str:
    settings = non_default_settings(runs[0]["config"])
    shared = f"The {len(runs)} seeds ran one configuration: their config lines agree except for the seed."
    if not settings:
        return f"{shared} Every knob of `train_gpt.py` at its default (the defaults are the record configuration)."
    rows = "\n".join(f"| `{name}` | `{value}` |" for name, value in sorted(settings.items()))
    return f"{shared} Knobs that differ from `train_gpt.py`'s defaults (read from the logs' config line):\n\n" \
           f"| Variable | Value |\n|---|---|\n{rows}"


def data_section(record: dict) -> str:
    data = record["data"]
    shards = data["train_shards"]
    lines = [f"Variant **{data['variant']}** (tokenizer `{data['tokenizer']}`), {data['val_tokens']:,} scored "
             f"validation tokens." if data["val_tokens"] else f"Variant **{data['variant']}**."]
    if shards is not None:
        lines.append(f"Fingerprint: `train_shards: {shards}`" + (" (the published export's 80 shards)." if shards == 80
                     else " (not the published export's 80 shards: a local build)."))
    if data["val_bytes"]:
        source = "the byte sidecar" if data["byte_sidecar"] else "the tokenizer's byte tables"
        lines.append(f"BPB denominator: {data['val_bytes']:,} bytes of original text, from {source}.")
    return " ".join(lines)


def significance_section(record: dict) -> str:
    test = record.get("significance")
    if not test:
        return "No earlier record was given to compare with (make_record's --against)."
    return (f"Against `{test['against']}` (its seed logs, mean val_loss {test['record_val_loss']:.8f}): improvement "
            f"{test['improvement_nats']:.6f} nats. One-sided Welch test of a 0.005-nat improvement: p = "
            f"{test['welch_p_value']:.4g} ({'passes' if test['beats_by_0.005_nats_at_p_0.01'] else 'fails'} p < 0.01). "
            f"#1902's progression test (one-sided Welch, no margin): p = {test['progression_p_value']:.4g} "
            f"({'passes' if test['progression_p_below_0.25'] else 'fails'} p < 0.25).")


def evaluation_section(run: dict) -> str:
    """What ran at evaluation time and why each component meets the four conditions."""
    config, lines = run["config"], []
    lines.append("The scored evaluation reloads the artifact (dequantized weights) and scores the validation "
                 f"stream; the score is the `{run['final_eval']}` evaluation of the log's `final` line.")
    if config.get("ttt_enabled"):
        lines.append(f"- **Score-first TTT** (chunks of {config.get('ttt_chunk_tokens')} tokens, "
                     f"{config.get('ttt_epochs')} epoch(s), lr {config.get('ttt_lr')}): every chunk is scored under "
                     "`no_grad` before the model trains on it; the last chunk is never trained on.")
    if config.get("dc_enabled"):
        lines.append(dualclock_line(run))
    lines += ["", "Conditions, for every component above:",
              "1. causal: the distribution for token t depends only on the artifact and tokens before t;",
              "2. normalized: a full distribution over the vocabulary at every position, fixed before token t is read;",
              "3. score before update: nothing (weights, counts, mixer) is updated with a token before it is scored;",
              "4. single pass: every token is scored once, left to right.",
              "The repository's tests check each of them (score-first order with a recording model, normalization "
              "of every expert and of the mixture, invariance to later tokens)."]
    return "\n".join(lines)


def dualclock_line(run: dict) -> str:
    config, figures = run["config"], run["dualclock"] or {}
    measured = ""
    if figures:
        measured = (f" In seed {run['seed']}'s log: network alone {figures.get('neural_bpb')}, mixed "
                    f"{figures.get('mixed_bpb')} BPB on the same tokens, PPM time {figures.get('dc_time_ms')} ms.")
    return (f"- **DualClock** (experts `{config.get('dc_experts')}`, mixer `{config.get('dc_mixer')}`): causal PPM "
            "experts mixed with the network per chunk after it is scored; each expert is an exact distribution over "
            "all token ids, the mixer's weights depend on the context only, and the count tables absorb a chunk only "
            "after all its targets are scored." + measured)


def reproduce_section(record: dict, runs: list[dict], folder_name: str) -> str:
    settings = non_default_settings(runs[0]["config"])
    knobs = " ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    nproc = runs[0]["world_size"] or 8
    seeds = " ".join(str(s) for s in record["seeds"])
    tokenizer = runs[0]["tokenizer"]
    if tokenizer == SP8192_TOKENIZER:
        data = (f"# From the root of a checkout of the challenge repository (openai/parameter-golf):\n"
                f"pip install -r records/track_10min_16mb/{folder_name}/requirements.txt\n{OFFICIAL_SP8192_FETCH}\n")
        paths = "DATA_PATH=../../../data/datasets/fineweb10B_sp8192 TOKENIZER_PATH=../../../data/tokenizers/fineweb_8192_bpe.model"
    else:
        data = (f"# The logs used the tokenizer {tokenizer} and the data at {runs[0]['config'].get('data_path')};\n"
                f"# the challenge repository does not provide them, so DATA_PATH and TOKENIZER_PATH must point to a copy.\n"
                f"pip install -r records/track_10min_16mb/{folder_name}/requirements.txt\n")
        paths = f"DATA_PATH={runs[0]['config'].get('data_path')} TOKENIZER_PATH={runs[0]['config'].get('tokenizer_path')}"
    return (f"```bash\n{data}cd records/track_10min_16mb/{folder_name}\nfor SEED in {seeds}; do\n"
            f"  SEED=$SEED {paths} \\\n  {knobs + ' ' if knobs else ''}torchrun --standalone --nproc_per_node={nproc} "
            f"train_gpt.py\ndone\n```\n\nEach run writes `logs/<run id>.txt`; its `final` line carries the score.")


def readme(record: dict, runs: list[dict], folder_name: str) -> str:
    logs = ", ".join(f"`{log_name(run)}`" for run in runs)
    return f"""# {record['name']}

**val_bpb {record['val_bpb']:.8f}** (mean of {len(runs)} seed{'s' if len(runs) > 1 else ''}, std {record['val_bpb_std']:.8f}) ·
artifact at most {record['bytes_total']:,} bytes (limit {ARTIFACT_LIMIT_BYTES:,}) · {record['hardware']} ·
by {record['author']} (@{record['github_id']}), {record['date']}

{record['blurb']}

## Results

{results_table(record, runs)}

Artifact bytes = the shipped `train_gpt.py` ({record['bytes_code']:,} bytes) + that seed's compressed model.
Train time is the training loop plus GPTQ; eval time the scored evaluation (limits 600 s each). All figures
are read from the logs.

## Data

{data_section(record)}

## Configuration

{settings_section(runs)}

## Significance

{significance_section(record)}

## Evaluation and its legality

{evaluation_section(runs[0])}

## Reproduce

{reproduce_section(record, runs, folder_name)}

## Files

- `train_gpt.py`: the packed, self-extracting copy of the code that ran (sha256 of the readable source
  `{record['code_sha256']}`, as logged); it runs as it is.
- {logs}: the training logs, one per seed.
- `submission.json`: the figures above, machine-readable.
- `requirements.txt`: the Python packages of the runs, at the logged versions.
"""


def requirements(run: dict) -> str:
    """Pinned to the logged versions (local build tags such as +cu128 dropped: pip cannot fetch them)."""
    versions = next((r for r in run["records"] if "torch" in r and "numpy" in r), {})
    lines = ["# The versions the runs logged. brotli is needed by train_gpt.py and is not in the challenge's list."]
    for package in ("torch", "numpy", "sentencepiece", "brotli"):
        version = str(versions.get(package, "")).split("+", 1)[0]
        lines.append(f"{package}=={version}" if re.fullmatch(r"[\w.]+", version) else package)
    if logparse.last(run["records"], "attn_impl") == "fa3":
        lines.append("# The runs used FlashAttention-3 (module flash_attn_interface), installed separately for the "
                     "CUDA/PyTorch build; without it train_gpt.py falls back to PyTorch SDPA, correct but slower.")
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# The folder
# -----------------------------------------------------------------------------


def make_record(args) -> Path:
    if not (args.blurb or "").strip():
        raise RecordError("--blurb is required: the README opens with one paragraph on what the record changes and "
                          "why it helps; make_record writes no placeholder")
    runs = load_runs(args.logs)
    check_runs_agree(runs)
    folder = args.records_dir / f"{args.date}_{args.slug or slug_of(args.name)}"
    if folder.exists() and not args.force:
        raise RecordError(f"{folder} exists; pass --force to replace it")
    script = shipped_script(args.source, runs)
    for run in runs:
        if run["code_bytes"] not in (None, len(script)):
            raise RecordError(f"{run['path']}: logged code_bytes {run['code_bytes']} but the packed script has "
                              f"{len(script)} bytes (packed with another Python or packer version?)")
    record = submission(runs, len(script), args)
    write_folder(folder, script, runs, record)
    return folder


def write_folder(folder: Path, script: bytes, runs: list[dict], record: dict) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_bytes(script)
    for run in runs:
        shutil.copyfile(run["path"], folder / log_name(run))
    (folder / "submission.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(record, runs, folder.name), encoding="utf-8")
    (folder / "requirements.txt").write_text(requirements(runs[0]), encoding="utf-8")


def slug_of(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not slug:
        raise RecordError(f"name {name!r} gives an empty folder name; pass --slug")
    return slug


def iso_date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="run logs (logs/<run_id>.txt), one per seed")
    parser.add_argument("--name", required=True, help="the record's title")
    parser.add_argument("--author", required=True, help="author's name")
    parser.add_argument("--github-id", required=True, help="author's GitHub user name")
    parser.add_argument("--blurb", help="one paragraph on what the record changes and why (required)")
    parser.add_argument("--date", type=iso_date, default=datetime.date.today().isoformat(),
                        help="YYYY-MM-DD (default: today)")
    parser.add_argument("--slug", help="folder name after the date (default: from --name)")
    parser.add_argument("--source", type=Path, default=ROOT / "train_gpt.py",
                        help="the script that ran (default: train_gpt.py); it is packed for shipping")
    parser.add_argument("--records-dir", type=Path, default=RECORDS_DIR, help=f"default {RECORDS_DIR}")
    parser.add_argument("--force", action="store_true", help="replace an existing record folder")
    parser.add_argument("--against", type=Path, metavar="FOLDER",
                        help="the record folder this one claims to beat: its seed logs give the Welch p values")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.slug is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.slug):
        parser.error(f"--slug {args.slug!r}: use letters, digits, '_' and '-' only")
    if not re.fullmatch(r"[A-Za-z0-9-]+", args.github_id):
        parser.error(f"--github-id {args.github_id!r} is not a GitHub user name")
    try:
        folder = make_record(args)
    except (RecordError, OSError, RuntimeError, SyntaxError) as error:
        print(f"make_record.py: error: {error}", file=sys.stderr)
        return 1
    record = json.loads((folder / "submission.json").read_text(encoding="utf-8"))
    print(f"wrote:{folder} val_bpb:{record['val_bpb']:.8f} seeds:{','.join(map(str, record['seeds']))} "
          f"bytes_total:{record['bytes_total']} bytes_code:{record['bytes_code']}")
    print(check_record.report(check_record.check_record(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Check a record folder the way a maintainer reviews one, before submitting it.

Why: a record that breaks a rule is rejected on review, and a tool that says `ok` for a check
it could not make is worse than none. Every figure is recomputed from the folder itself: the
training logs (any dialect, read by tools/logparse.py), submission.json (the challenge's
schema: val_bpb, val_loss, seeds, seed_results, bytes_total, bytes_code, hardware, ...) and the
shipped train_gpt.py. Each check ends in one of:

  ok           checked and passed (the line says what was checked)
  FAIL         breaks a rule; the record is refused
  WARN         allowed, but a reviewer will ask about it
  not checked  nothing to check it with (the line says why); never counted as ok

Checks: files (exact names, at least one training log anywhere in the folder), submission
(valid JSON with github_id, a name and a numeric val_bpb), logs (each counted log reached its
scored result), seeds (the claimed seeds are the logs' seeds), score (the claim is the mean of
the logs' scored val_bpb within the rounding of the claim's own decimals; a claim equal to the
best seed is named as such), artifact (16,000,000 bytes by the logs' own totals and by the
shipped script + model; a total that counts compressed code is a warning, a failure with
--strict), code (the shipped script is the code that ran, and is not a stub that runs another
file), training (600 s as the official loop measures it: it stops after the step that crosses
600 s, so 600 s plus one step passes; where a log states hessian_time_ms, the end of GPTQ's Hessian
collection is reported and a warning given past 600 s), evaluation (600 s). For the 10-minute track also:
device (no CPU run), world_size (8), hardware (8xH100 where a log or submission.json names it),
validation (the whole validation set: no VAL_MAX_TOKENS, and the token count of a known
tokenizer) and readme (no TODO left).

May 2026 rules (as the reviewers applied them): helpers (every file train_gpt.py loads at run time,
modules it imports and sources it compiles, counted in the code bytes the logs state), config (the
seeds' configuration lines agree except for the seed), data (train_shards: 80 = the export, 1499 = a
local rebuild, the #2127 fingerprint; CaseOps scored through its byte sidecar), validation by the
exact target counts of accepted records and 50,000 documents, and the Hessian collection time next to
the training time (a warning: the community reads it as training time, the maintainers merged #1855
without it). The training limit allows two steps past 600 s: the official loop stops after the step
that crosses 600 s, and with the stop flag agreed across ranks one step later still; the maintainers
accepted 600.128 s at 83.4 ms a step (2026-03-23_LeakyReLU_LegalTTT_ParallelMuon).

Exit status 0 when the record is accepted (no FAIL), 1 otherwise; the last line is
`record:accepted` or `record:refused failed:<checks>`.
Usage: python tools/check_record.py records/track_10min_16mb/2026-01-01_Name [--strict]
"""
from __future__ import annotations

import argparse
import ast
import base64
import decimal
import json
import lzma
import re
import statistics
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402

ARTIFACT_LIMIT_BYTES = 16_000_000
TIME_LIMIT_MS = 600_000
REQUIRED_FILES = ("README.md", "submission.json", "train_gpt.py")
LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = re.compile(r"^(readme|requirements|license|notice|license_.*|notes?)(\..*)?$", re.IGNORECASE)
# Scored targets of the whole FineWeb validation split (its first 50,000 documents), per known tokenizer:
# the counts of accepted records. CaseOps: cut to a multiple of 2048 or 2560 windows,
# of 3072, or kept whole with its tail (#2014). Any other count for these tokenizers is a cut set.
KNOWN_TARGET_TOKENS = {
    "fineweb_8192_bpe.model": (40_540_160,),
    "fineweb_1024_bpe.model": (62_021_632,),
    "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model": (47_851_520, 47_852_544, 47_853_343),
}
VALIDATION_DOCUMENTS = 50_000
CANONICAL_TRAIN_SHARDS = 80  # the published exports (SP8192 and CaseOps): 80 shards of 100M tokens
REBUILD_TRAIN_SHARDS = 1499  # a local CaseOps rebuild in 10M-token shards: the #2127 leak's fingerprint
# Files a script may load at run time besides Python modules (compiled helpers, kernels).
HELPER_SUFFIXES = (".py", ".c", ".cc", ".cpp", ".cu", ".h", ".hpp", ".so")
# Config entries that name one run, not its configuration (they differ between seeds by design).
PER_RUN_CONFIG = {"seed", "run_id", "logfile", "log_file", "log_dir", "artifact_path", "artifact_dir",
                  "checkpoint_path", "eval_dump_path", "output_dir", "out_dir"}
OK, FAIL, WARN, NOT_CHECKED = "ok", "FAIL", "WARN", "not checked"


@dataclass
class Check:
    """One check's verdict and the lines that explain it."""
    name: str
    status: str
    details: list[str] = field(default_factory=list)


def grouped(problems: list[tuple[str, str]]) -> list[str]:
    """'a.log, b.log: message' once for logs that share a message, in first-seen order."""
    names: dict[str, list[str]] = {}
    for log, message in problems:
        names.setdefault(message, []).append(log)
    return [f"{', '.join(logs)}: {message}" for message, logs in names.items()]


def verdict(name: str, failures: list[str], warnings: list[str], passed: str) -> Check:
    """FAIL with the failures, else WARN with the warnings, else ok with what passed."""
    if failures:
        return Check(name, FAIL, failures + warnings)
    if warnings:
        return Check(name, WARN, warnings)
    return Check(name, OK, [passed])


# -----------------------------------------------------------------------------
# Reading the folder
# -----------------------------------------------------------------------------


@dataclass
class Record:
    folder: Path
    submission: dict
    submission_problems: list[str]
    runs: list[dict]            # the logs that count (their seeds are claimed, or nothing is claimed)
    ignored_runs: list[dict]    # training logs left out, with a reason in run['left_out']
    script: bytes | None
    decimals: dict              # submission key -> number of decimals written in the JSON


def candidate_logs(folder: Path) -> list[Path]:
    """Every *.log and *.txt under the folder (logs/ included), READMEs and requirements excepted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in LOG_SUFFIXES
                  and not NOT_LOGS.match(p.name) and ".ipynb_checkpoints" not in p.parts)


def is_training_log(run: dict) -> bool:
    """A log of a run: it has training steps, evaluations or a score (prose files have none)."""
    return bool(run["train"] or run["evaluations"] or run["finished"] or run["train_time_ms"])


def trained(run: dict) -> bool:
    """A log of training: step lines, a training time or a step count (an evaluation-only log has none)."""
    return bool(run["train"] or run["train_time_ms"] or run["steps"])


def read_training_logs(folder: Path) -> tuple[list[dict], list[dict]]:
    """(training logs, evaluation-only logs left out); an evaluation-only log of a seed whose
    training log has no score of its own (the score was taken in a separate evaluation run)
    completes that training log."""
    training, evaluation_only = [], []
    for path in candidate_logs(folder):
        run = logparse.read_run(path)
        if is_training_log(run):
            run["name"] = str(path.relative_to(folder))
            (training if trained(run) else evaluation_only).append(run)
    left_out = []
    for evaluation in evaluation_only:
        partners = [r for r in training if r["seed"] == evaluation["seed"] and not r["finished"]]
        if evaluation["finished"] and evaluation["seed"] is not None and len(partners) == 1:
            merge_evaluation(partners[0], evaluation)
        else:
            left_out.append(dict(evaluation, left_out="an evaluation-only log (no training lines), not a seed's run"))
    return training, left_out


def merge_evaluation(run: dict, evaluation: dict) -> None:
    """The training log's run, scored by its separate evaluation log."""
    for key in ("finished", "unfinished_reason", "val_bpb", "val_loss", "final_eval", "eval_time_ms",
                "scored_eval_time_ms", "total_eval_time_ms", "evaluations"):
        run[key] = evaluation[key]
    for key in ("val_tokens", "tokenizer", "gpu_name", "gpu_count", "device", "world_size"):
        run[key] = run[key] if run[key] is not None else evaluation[key]
    run["name"] = f"{run['name']} + {evaluation['name']}"


def read_submission(folder: Path) -> tuple[dict, dict, list[str]]:
    """(submission, decimals written per numeric key, problems)."""
    path = folder / "submission.json"
    if not path.is_file():
        return {}, {}, []
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text, parse_float=decimal.Decimal)
    except json.JSONDecodeError as error:
        return {}, {}, [f"submission.json is not valid JSON: {error}"]
    if not isinstance(data, dict):
        return {}, {}, ["submission.json is not a JSON object"]
    decimals = {key: -value.as_tuple().exponent for key, value in data.items() if isinstance(value, decimal.Decimal)}
    return as_floats(data), decimals, []


def as_floats(value):
    """Decimals (kept while parsing to count the digits) back to floats, recursively."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_floats(v) for v in value]
    return value


def claimed_seed_results(submission: dict) -> dict[str, dict]:
    """seed -> its claimed figures, from `seed_results` (a dict or a list) or an older `per_seed` list."""
    results = submission.get("seed_results", submission.get("per_seed"))
    if isinstance(results, dict):
        return {str(k): v for k, v in results.items() if isinstance(v, dict)}
    if isinstance(results, list):
        return {str(item["seed"]): item for item in results if isinstance(item, dict) and "seed" in item}
    return {}


def claimed_seeds(submission: dict) -> list[str] | None:
    seeds = submission.get("seeds")
    if isinstance(seeds, list):
        return [str(s) for s in seeds]
    results = claimed_seed_results(submission)
    return list(results) if results else None


def select_runs(runs: list[dict], submission: dict) -> tuple[list[dict], list[dict]]:
    """The logs that count: those of the claimed seeds (all logs when no seed is claimed);
    a second copy of a run (same seed and score) is left out once."""
    claimed = claimed_seeds(submission)
    counted, ignored, seen = [], [], {}
    for run in runs:
        seed = None if run["seed"] is None else str(run["seed"])
        if claimed is not None and seed not in claimed:
            ignored.append(dict(run, left_out=f"seed {seed} is not among submission.json's seeds"))
            continue
        twin = seen.get(seed)
        if seed is not None and twin is not None and twin["val_bpb"] == run["val_bpb"]:
            ignored.append(dict(run, left_out=f"a copy of {twin['name']} (same seed and score)"))
            continue
        seen.setdefault(seed, run)
        counted.append(run)
    return counted, ignored


def read_record(folder: Path) -> Record:
    submission, decimals, problems = read_submission(folder)
    training, evaluation_only = read_training_logs(folder)
    runs, ignored = select_runs(training, submission)
    ignored += evaluation_only
    script_path = folder / "train_gpt.py"
    script = script_path.read_bytes() if script_path.is_file() else None  # packed copies are not UTF-8
    return Record(folder, submission, problems, runs, ignored, script, decimals)


# -----------------------------------------------------------------------------
# Files, submission, logs, seeds, score
# -----------------------------------------------------------------------------


def near_names(folder: Path, wanted: str) -> list[str]:
    """Files a human may have meant for `wanted`: other case, other extension, a suffix."""
    stem = Path(wanted).stem.lower()
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != wanted
                  and (p.name.lower() == wanted.lower() or p.stem.lower() == stem or p.stem.lower().startswith(stem)))


def check_files(record: Record) -> Check:
    failures = []
    for name in REQUIRED_FILES:
        if not (record.folder / name).is_file():
            near = near_names(record.folder, name)
            hint = f" (found {', '.join(near)}: the name must be exactly {name})" if near else ""
            failures.append(f"missing {name}{hint}")
    if not record.runs and not record.ignored_runs:
        failures.append("no training log (*.log or *.txt with training or evaluation lines) anywhere in the folder")
    logs = len(record.runs) + len(record.ignored_runs)
    return verdict("files", failures, [], f"{', '.join(REQUIRED_FILES)} and {logs} training log(s)")


def check_submission(record: Record) -> Check:
    if not (record.folder / "submission.json").is_file():
        return Check("submission", NOT_CHECKED, ["no submission.json (see files)"])
    if record.submission_problems:
        return Check("submission", FAIL, record.submission_problems)
    data, failures, warnings = record.submission, [], []
    if not isinstance(data.get("val_bpb"), (int, float)):
        failures.append(f"submission.json has no numeric val_bpb (found {data.get('val_bpb')!r}): "
                        "the score the leaderboard shows")
    if not data.get("github_id"):
        failures.append("submission.json has no github_id")
    if not (data.get("name") or data.get("author")):
        failures.append("submission.json has neither name nor author")
    for key in ("author", "name", "date", "val_loss", "bytes_total"):
        if data.get(key) is None and not (key == "bytes_total" and data.get("artifact_bytes") is not None):
            warnings.append(f"submission.json has no {key}")
    return verdict("submission", failures, warnings, "valid JSON with github_id, name and val_bpb")


def check_logs(record: Record) -> Check:
    if not record.runs:
        left = [f"{r['name']}: left out: {r['left_out']}" for r in record.ignored_runs]
        return Check("logs", FAIL if left else NOT_CHECKED, left or ["no training log to read (see files)"])
    failures = [f"{run['name']}: {run['unfinished_reason']} (the run did not reach its scored result)"
                for run in record.runs if not run["finished"]]
    warnings = [f"{r['name']}: left out: {r['left_out']}" for r in record.ignored_runs]
    names = ", ".join(f"{r['name']} ({r['final_eval']})" for r in record.runs if r["finished"])
    return verdict("logs", failures, warnings, f"scored results in {names}")


def check_seeds(record: Record) -> Check:
    runs = record.runs
    if not runs:
        return Check("seeds", NOT_CHECKED, ["no training log"])
    seeds = [None if r["seed"] is None else str(r["seed"]) for r in runs]
    failures = [f"seed {s} has two logs with different scores" for s in sorted({s for s in seeds if s and seeds.count(s) > 1})]
    failures += [f"{r['name']}: no seed in the log" for r in runs if r["seed"] is None and len(runs) > 1]
    claimed = claimed_seeds(record.submission)
    warnings = []
    if claimed is not None and sorted(claimed) != sorted(s for s in seeds if s):
        failures.append(f"submission.json claims seeds {claimed} but the logs ran {sorted(s for s in seeds if s)}")
    if len(runs) < 3:
        warnings.append(f"{len(runs)} seed(s): a new record must show p < 0.01 over its runs, usually 3 seeds")
    return verdict("seeds", failures, warnings, f"seeds {', '.join(s or '?' for s in seeds)}, one log each")


def tolerance(decimals: int | None) -> float:
    """Half a unit of the claim's last written decimal (exact for an unrounded claim)."""
    return 0.5 * 10.0 ** -(decimals if decimals is not None else 8) + 1e-12


def check_score(record: Record) -> Check:
    claimed = record.submission.get("val_bpb")
    scores = [r["val_bpb"] for r in record.runs if r["finished"]]
    if not scores:
        return Check("score", NOT_CHECKED, ["no log reached a scored val_bpb"])
    if not isinstance(claimed, (int, float)):
        return Check("score", NOT_CHECKED, ["submission.json has no numeric val_bpb to compare (see submission)"])
    mean = statistics.fmean(scores)
    slack = tolerance(record.decimals.get("val_bpb"))
    failures = seed_result_problems(record)
    # The claim may be the mean of the logs, or of the seeds as submission.json writes them
    # (each then checked against its log), rounded to the claim's decimals.
    means = [mean] + [m for m in [written_seed_mean(record)] if m is not None]
    if all(abs(claimed - m) > slack for m in means):
        failures.insert(0, claim_problem(record, claimed, mean, slack))
    return verdict("score", failures, [], f"val_bpb {claimed} = mean of {len(scores)} log(s) {mean:.8f} (to {slack:.1g})")


def written_seed_mean(record: Record) -> float | None:
    """The mean of seed_results' val_bpb as written, when it covers exactly the counted seeds."""
    results = claimed_seed_results(record.submission)
    seeds = {str(r["seed"]) for r in record.runs if r["finished"]}
    values = [results[s].get("val_bpb") for s in seeds if s in results]
    if not seeds or len(values) != len(seeds) or not all(isinstance(v, (int, float)) for v in values):
        return None
    return statistics.fmean(values)


def claim_problem(record: Record, claimed: float, mean: float, slack: float) -> str:
    """Why the claim is not the mean; a claim equal to the best seed is named as such."""
    finished = [r for r in record.runs if r["finished"]]
    best = min(finished, key=lambda r: r["val_bpb"])
    if len(finished) > 1 and abs(claimed - best["val_bpb"]) <= slack:
        return (f"submission.json val_bpb {claimed} is the best seed's score (seed {best['seed']}, "
                f"{best['val_bpb']:.8f}), not the mean of the {len(finished)} seeds ({mean:.8f})")
    return (f"submission.json val_bpb {claimed} != mean of the logs' scored val_bpb {mean:.8f} "
            f"(allowed difference {slack:.1g} at the claim's decimals)")


def seed_result_problems(record: Record) -> list[str]:
    """Each seed's claimed val_bpb in seed_results against that seed's log."""
    problems, results = [], claimed_seed_results(record.submission)
    by_seed = {str(r["seed"]): r for r in record.runs if r["finished"]}
    for seed, claim in results.items():
        run = by_seed.get(seed)
        value = claim.get("val_bpb")
        if run is None or not isinstance(value, (int, float)):
            continue
        if abs(value - run["val_bpb"]) > tolerance(decimals_of(value)):
            problems.append(f"seed_results[{seed}].val_bpb {value} != its log's {run['val_bpb']:.8f}")
    return problems


def decimals_of(value: float) -> int:
    text = repr(value)
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 8


# -----------------------------------------------------------------------------
# Artifact size and code
# -----------------------------------------------------------------------------


def check_artifact(record: Record, limit: int, strict: bool) -> Check:
    script_bytes = None if record.script is None else len(record.script)
    failures, warnings, sizes = [], [], []
    for run in record.runs:
        size_problems(run, script_bytes, limit, strict, failures, warnings, sizes)
    if not sizes:
        return Check("artifact", NOT_CHECKED, ["no log reports the artifact's or the model's size"])
    claimed = record.submission.get("bytes_total", record.submission.get("artifact_bytes"))
    if isinstance(claimed, (int, float)) and int(claimed) != max(sizes):
        warnings.append(f"submission.json bytes_total {int(claimed):,} != the largest logged total {max(sizes):,}")
    return verdict("artifact", failures, warnings, f"at most {max(sizes):,} bytes (limit {limit:,})")


def size_problems(run: dict, script_bytes: int | None, limit: int, strict: bool, failures: list, warnings: list,
                  sizes: list) -> None:
    """The log's own total, and the shipped script + the log's model bytes."""
    name, total, model = run["name"], run["artifact_bytes"], run["model_bytes"]
    if isinstance(total, (int, float)):
        sizes.append(int(total))
        if total > limit:
            failures.append(f"{name}: the log's own total is {int(total):,} bytes, over {limit:,}")
    if script_bytes is None or not isinstance(model, (int, float)):
        return
    shipped_total = script_bytes + int(model)
    sizes.append(shipped_total)
    compressed = run["code_bytes_compressed"]
    if shipped_total <= limit:
        return
    if isinstance(compressed, (int, float)) and not strict:
        warnings.append(f"{name}: the log counts code as its compressed size ({int(compressed):,} bytes); the shipped "
                        f"train_gpt.py is {script_bytes:,} bytes, so shipped script + model = {shipped_total:,}, over "
                        f"{limit:,} (ship the compressed self-extracting script; --strict fails this)")
    else:
        failures.append(f"{name}: shipped train_gpt.py ({script_bytes:,}) + model ({int(model):,}) = "
                        f"{shipped_total:,} bytes, over {limit:,}")


def runtime_helpers(record: Record) -> dict[str, int]:
    """Files of the folder train_gpt.py loads at run time, and their bytes: modules it imports and files it
    names (a C source it compiles, a kernel), followed through the Python helpers they lead to."""
    if record.script is None:
        return {}
    folder_files = {p.name: p for p in record.folder.iterdir() if p.is_file() and p.suffix in HELPER_SUFFIXES
                    and p.name != "train_gpt.py"}
    found: dict[str, int] = {}
    pending = [script_text(record.script)]
    while pending:
        try:
            tree = ast.parse(pending.pop())
        except SyntaxError:
            continue
        for tree in [tree] + embedded_sources(tree):
            for name in referenced_files(tree, folder_files):
                if name not in found:
                    found[name] = folder_files[name].stat().st_size
                    if name.endswith(".py"):
                        pending.append(folder_files[name].read_text(encoding="utf-8", errors="replace"))
    return found


def referenced_files(tree: ast.AST, folder_files: dict[str, Path]) -> set[str]:
    """Folder files a source imports (`import x`, `from x import`) or names in a string (`"x.c"`)."""
    names = set()
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        names |= {f"{m.split('.')[0]}.py" for m in modules} & set(folder_files)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 300:
            names |= {name for name in folder_files if re.search(rf"(^|[/\\]){re.escape(name)}$", node.value)}
    return names


def check_helpers(record: Record) -> Check:
    """Every helper train_gpt.py loads at run time must be in the code bytes the logs count (the challenge
    counts all code the submission runs); a record that leaves one out is refused."""
    helpers = runtime_helpers(record)
    if record.script is None:
        return Check("helpers", NOT_CHECKED, ["no train_gpt.py (see files)"])
    if not helpers:
        return Check("helpers", OK, ["train_gpt.py loads no other file of the folder"])
    needed = len(record.script) + sum(helpers.values())
    listed = ", ".join(f"{name} ({size:,} bytes)" for name, size in sorted(helpers.items()))
    counts = [(r["name"], r["code_bytes"]) for r in record.runs if isinstance(r["code_bytes"], (int, float))]
    claimed = record.submission.get("bytes_code")
    if isinstance(claimed, (int, float)):
        counts.append(("submission.json bytes_code", claimed))
    if not counts:
        return Check("helpers", NOT_CHECKED, [f"train_gpt.py loads {listed}; no log states its code bytes to see "
                                              f"whether they are counted"])
    failures = [f"{where}: counts {int(count):,} code bytes, but train_gpt.py ({len(record.script):,}) and the "
                f"helpers it loads at run time come to {needed:,}: {listed} not counted in the artifact"
                for where, count in counts if count < needed]
    return verdict("helpers", failures, [], f"train_gpt.py + {listed} = {needed:,} bytes, counted by "
                                            f"{len(counts)} source(s)")


def check_code(record: Record) -> Check:
    if record.script is None:
        return Check("code", NOT_CHECKED, ["no train_gpt.py (see files)"])
    helpers = runtime_helpers(record)
    failures, warnings = stub_problems(record, set(helpers)), []
    if unreadable_payload(record):
        warnings.append("train_gpt.py carries a packed payload this tool cannot unpack: what it runs was not inspected")
    hashes = {r["code_sha256"] for r in record.runs if r["code_sha256"]}
    if len(hashes) > 1:
        failures.append(f"the logs ran different code: code_sha256 {', '.join(sorted(h[:12] for h in hashes))}")
    for run in record.runs:
        logged = run["code_bytes"]
        if not isinstance(logged, (int, float)) or int(logged) in (len(record.script),
                                                                    len(record.script) + sum(helpers.values())):
            continue
        message = (f"{run['name']}: the log's code is {int(logged):,} bytes but the shipped train_gpt.py has "
                   f"{len(record.script):,}")
        # Our logs name the packed copy's size exactly: a mismatch means another file ships.
        (failures if run["dialect"] == "ours" else warnings).append(message)
    checked = [r for r in record.runs if isinstance(r["code_bytes"], (int, float))]
    passed = (f"train_gpt.py ({len(record.script):,} bytes) runs on its own; its size matches "
              f"{len(checked)} log(s)" if checked else f"train_gpt.py ({len(record.script):,} bytes) runs on its own "
              "(no log states the code's size to compare)")
    return verdict("code", failures, warnings, passed)


def script_text(data: bytes) -> str:
    """A script's text: UTF-8, or latin-1 for packed copies that carry raw compressed bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def embedded_sources(tree: ast.AST, depth: int = 0) -> list[ast.AST]:
    """Sources packed inside a self-extracting script (compressed, maybe base85/64-encoded)."""
    found = []
    for node in ast.walk(tree):
        value = getattr(node, "value", None) if isinstance(node, ast.Constant) else None
        if not isinstance(value, (str, bytes)) or len(value) < 16:
            continue
        inner = decode_payload(value.encode("latin-1", "ignore") if isinstance(value, str) else value)
        if inner is not None:
            found.append(inner)
            if depth < 2:
                found += embedded_sources(inner, depth + 1)
    return found


def decode_payload(data: bytes) -> ast.AST | None:
    """Python source from a payload, trying the encodings and compressors packers use."""
    for decode in (lambda d: d, base64.b85decode, base64.b64decode):
        try:
            raw = decode(data)
        except ValueError:
            continue
        for decompress in decompressors():
            try:
                tree = ast.parse(decompress(raw).decode("utf-8"))
            except Exception:  # noqa: BLE001 - any failure means "not this encoding"
                continue
            if tree.body:  # an empty result (raw LZMA2 reads a leading zero byte as the end) is no source
                return tree
    return None


def decompress_raw_lzma2(data: bytes) -> bytes:
    """Headerless LZMA2, the format most upstream record wrappers use."""
    return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])


def decompressors() -> list:
    result = [lzma.decompress, decompress_raw_lzma2, zlib.decompress]
    try:
        import brotli

        result.append(brotli.decompress)
    except ImportError:
        pass
    return result


RUNNERS = {"exec", "open", "run_path", "run_module", "run", "Popen", "call", "check_call", "check_output", "system",
           "execv", "execvp", "execl", "import_module", "spec_from_file_location", "__import__"}


def stub_problems(record: Record, helpers: set[str] = frozenset()) -> list[str]:
    """train_gpt.py must hold the code it runs: flag one that runs or imports another file (the helpers
    judged by check_helpers aside: importing them is allowed when their bytes are counted)."""
    try:
        outer = ast.parse(script_text(record.script))
    except SyntaxError as error:
        return [f"train_gpt.py is not valid Python: {error}"]
    trees = [outer] + embedded_sources(outer)
    local = {p.stem for p in record.folder.glob("*.py") if p.name != "train_gpt.py" and p.name not in helpers}
    problems = [f"train_gpt.py {what}: code that is not counted in train_gpt.py's bytes"
                for tree in trees for what in foreign_code(tree, local)]
    defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for tree in trees for n in ast.walk(tree))
    if not defines and not has_payload(outer):
        problems.append("train_gpt.py defines no function or class: a stub that runs code from elsewhere?")
    return sorted(set(problems))


def looks_packed(value) -> bool:
    """Packed code, not prose: long bytes, or a long string with almost no whitespace (base85/64)
    or with control characters (raw compressed bytes); docstrings are neither."""
    if isinstance(value, bytes):
        return len(value) >= 1000
    if not isinstance(value, str) or len(value) < 1000:
        return False
    spaces = sum(ch.isspace() for ch in value)
    return spaces < len(value) / 100 or any(ord(ch) < 32 and ch not in "\n\t\r" for ch in value)


def has_payload(tree: ast.AST) -> bool:
    """A self-extracting script: it carries its code as one packed constant."""
    return any(isinstance(n, ast.Constant) and looks_packed(n.value) for n in ast.walk(tree))


def unreadable_payload(record: Record) -> bool:
    """A self-extracting wrapper (no function of its own) whose payload this tool cannot unpack."""
    try:
        outer = ast.parse(script_text(record.script))
    except SyntaxError:
        return False
    defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(outer))
    return not defines and has_payload(outer) and not embedded_sources(outer)


def foreign_code(tree: ast.AST, local_modules: set[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"imports {a.name}.py from the folder" for a in node.names if a.name.split(".")[0] in local_modules]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in local_modules:
            found.append(f"imports {node.module}.py from the folder")
        elif isinstance(node, ast.Call) and call_name(node) in RUNNERS:
            found += [f"runs {text}" for text in string_arguments(node) if re.search(r"\.py\b", text)]
    return found


def call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def string_arguments(node: ast.Call) -> list[str]:
    return [n.value for arg in node.args for n in ast.walk(arg) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


# -----------------------------------------------------------------------------
# Time
# -----------------------------------------------------------------------------


def step_allowance_ms(run: dict) -> float:
    """The official loop checks the clock after each step, so one step may cross 600 s."""
    if run["step_avg_ms"]:
        return float(run["step_avg_ms"])
    if run["train_time_ms"] and run["steps"]:
        return float(run["train_time_ms"]) / run["steps"]
    return 0.0


GRACE_STEPS = 2  # the step that crosses 600 s, and the one the cross-rank stop flag lets through


def check_training_time(record: Record, limit_ms: int) -> Check:
    timed = [r for r in record.runs if isinstance(r["train_time_ms"], (int, float))]
    if not timed:
        return Check("training", NOT_CHECKED, ["no log states its training time"])
    failures, warnings, hessian_ends = [], [], []
    for run in timed:
        step = step_allowance_ms(run)
        if run["train_time_ms"] > limit_ms + GRACE_STEPS * step:
            failures.append(f"{run['name']}: trained {run['train_time_ms'] / 1000:.3f} s, over {limit_ms / 1000:.0f} s "
                            f"plus {GRACE_STEPS} steps ({GRACE_STEPS} x {step / 1000:.3f} s)")
        # Reviewers since #1868 count GPTQ's Hessian collection (it reads training data) as training: the loop
        # plus the Hessians must end inside the limit (a community reading, no organizer ruling): warned.
        loop, hessians = run["training_loop_ms"], run["hessian_time_ms"]
        if isinstance(hessians, (int, float)) and isinstance(loop, (int, float)):
            hessian_ends.append(loop + hessians)
            if loop + hessians > limit_ms:
                warnings.append(f"{run['name']}: training loop {loop / 1000:.3f} s + Hessian collection "
                                f"{hessians / 1000:.1f} s = {(loop + hessians) / 1000:.3f} s, over {limit_ms / 1000:.0f} s; "
                                f"reserve GPTQ_RESERVE_SECONDS >= Hessian time + 1 s")
    longest = max(r["train_time_ms"] for r in timed)
    collected = f"; Hessians collected by {max(hessian_ends) / 1000:.3f} s" if hessian_ends else ""
    return verdict("training", failures, warnings, f"at most {longest / 1000:.3f} s in {len(timed)} log(s) (limit "
                                                   f"{limit_ms / 1000:.0f} s plus {GRACE_STEPS} steps){collected}")


def evaluation_time(run: dict) -> tuple[float | None, str]:
    """(milliseconds, what they measure) by the most specific figure the log gives."""
    if isinstance(run["scored_eval_time_ms"], (int, float)):
        return float(run["scored_eval_time_ms"]), "scored evaluation"
    if isinstance(run["total_eval_time_ms"], (int, float)):
        what = "all evaluations" if run["dialect"] == "ours" else "the log's evaluation time"
        return float(run["total_eval_time_ms"]), what
    return None, ""


def check_evaluation_time(record: Record, limit_ms: int) -> Check:
    failures, warnings, seen = [], [], []
    for run in record.runs:
        milliseconds, what = evaluation_time(run)
        if milliseconds is None:
            continue
        seen.append(milliseconds)
        if milliseconds > limit_ms:
            failures.append(f"{run['name']}: {what} took {milliseconds / 1000:.1f} s, over {limit_ms / 1000:.0f} s")
        total = run["total_eval_time_ms"]
        if what == "scored evaluation" and isinstance(total, (int, float)) and total > limit_ms:
            warnings.append(f"{run['name']}: all evaluation phases together took {total / 1000:.1f} s (diagnostics "
                            f"included); the scored path took {milliseconds / 1000:.1f} s")
    if not seen:
        return Check("evaluation", NOT_CHECKED, ["no log states its evaluation time"])
    return verdict("evaluation", failures, warnings, f"at most {max(seen) / 1000:.1f} s in {len(seen)} log(s) "
                                                     f"(limit {limit_ms / 1000:.0f} s)")


# -----------------------------------------------------------------------------
# A challenge run (10-minute track)
# -----------------------------------------------------------------------------


def check_device(record: Record) -> Check:
    devices = {r["name"]: r["device"] for r in record.runs if r["device"]}
    if not devices:
        return Check("device", NOT_CHECKED, ["no log names its device"])
    failures = grouped([(name, f"ran on {device.upper()}, not on GPUs: not a challenge run")
                        for name, device in devices.items() if device != "cuda"])
    return verdict("device", failures, [], f"CUDA in {len(devices)} log(s)")


def check_world_size(record: Record) -> Check:
    sizes = {r["name"]: r["world_size"] for r in record.runs if r["world_size"]}
    if not sizes:
        return Check("world_size", NOT_CHECKED, ["no log states its world size"])
    failures = grouped([(name, f"world size {size}, the 10-minute track runs on 8 GPUs")
                        for name, size in sizes.items() if size != 8])
    return verdict("world_size", failures, [], f"8 processes in {len(sizes)} log(s)")


def hardware_claims(record: Record) -> list[tuple[str, int | None, str]]:
    """(where, GPU count, GPU model) from each log that names its GPUs and from submission.json."""
    claims = [(run["name"], run["gpu_count"], run["gpu_name"]) for run in record.runs if run["gpu_name"]]
    text = record.submission.get("hardware")
    if isinstance(text, str) and text.strip():
        match = re.match(r"\s*(\d+)\s*[x×*]\s*(.+)", text)
        claims.append(("submission.json hardware", int(match.group(1)) if match else None,
                       match.group(2) if match else text))
    return claims


def check_hardware(record: Record) -> Check:
    claims = hardware_claims(record)
    if not claims:
        return Check("hardware", NOT_CHECKED, ["no log or submission.json names the GPUs"])
    failures = []
    for where, count, model in claims:
        if "H100" not in model.upper().replace(" ", ""):
            failures.append(f"{where}: {model.replace('_', ' ')}, not H100: the 10-minute track is timed on 8xH100")
        elif count is not None and count != 8:
            failures.append(f"{where}: {count} GPUs, not 8")
    return verdict("hardware", failures, [], f"8xH100 named by {', '.join(w for w, _, _ in claims)}")


def check_validation(record: Record) -> Check:
    failures, judged = [], 0
    for run in record.runs:
        if run["val_max_tokens"]:
            failures.append((run["name"], f"VAL_MAX_TOKENS={run['val_max_tokens']}: scored on a cut validation set"))
            judged += 1
        if isinstance(run["val_documents"], int) and run["val_documents"] != VALIDATION_DOCUMENTS:
            failures.append((run["name"], f"{run['val_documents']:,} validation documents, not {VALIDATION_DOCUMENTS:,}"))
            judged += 1
        judged += target_problems(run, failures)
    if not judged:
        tokenizers = sorted({r["tokenizer"] for r in record.runs if r["tokenizer"]})
        reason = (f"tokenizer {', '.join(tokenizers)} has no known validation token count" if tokenizers
                  else "no log names its tokenizer and validation token count")
        return Check("validation", NOT_CHECKED, [reason])
    return verdict("validation", grouped(failures), [], f"the whole validation set in {judged} log(s)")


def target_problems(run: dict, failures: list) -> int:
    """The scored targets against the accepted counts of the run's tokenizer; 1 when judged."""
    known = KNOWN_TARGET_TOKENS.get(run["tokenizer"] or "")
    values = [v for v in (run["val_tokens"], run["target_tokens"]) if isinstance(v, int)]
    if known is None or not values:
        return 0
    if len(set(values)) > 1:
        failures.append((run["name"], f"val_tokens {values[0]:,} != target_tokens {values[1]:,}: not every "
                                      f"validation token is scored"))
    elif values[0] not in known:
        accepted = " or ".join(f"{k:,}" for k in known)
        failures.append((run["name"], f"{values[0]:,} validation tokens, the whole split is {accepted} with "
                                      f"{run['tokenizer']}: a truncated (or other) validation set"))
    return 1


def check_data(record: Record) -> Check:
    """train_shards (the fingerprint of where the data came from) and the BPB denominator (byte sidecar)."""
    failures, warnings, facts = [], [], []
    for run in record.runs:
        caseops = "caseops" in (run["tokenizer"] or "") or run["sidecar"] is True
        shards, sidecar = run["train_shards"], run["sidecar"]
        if shards is not None:
            facts.append(f"train_shards {shards}")
            if shards == REBUILD_TRAIN_SHARDS or (caseops and shards > CANONICAL_TRAIN_SHARDS):
                warnings.append((run["name"], f"train_shards: {shards}, a local rebuild, not the {CANONICAL_TRAIN_SHARDS}-"
                                              f"shard export: the fingerprint of the #2127 leak (validation documents "
                                              f"in training when the split was under {VALIDATION_DOCUMENTS:,}); show the "
                                              f"rebuild kept {VALIDATION_DOCUMENTS:,} (data/download.py --check)"))
        if sidecar is not None:
            facts.append("byte sidecar" + (f" ({run['val_bytes']:,} bytes)" if run["val_bytes"] else "")
                         if sidecar else "byte tables")
        if caseops and sidecar is False:
            failures.append((run["name"], "CaseOps data scored with the tokenizer's byte tables, not its byte sidecar: "
                                          "the operators would count as bytes"))
    if not facts:
        return Check("data", NOT_CHECKED, ["no log states train_shards or how it counted bytes"])
    passed = ", ".join(sorted(set(facts)))
    return verdict("data", grouped(failures), grouped(warnings), passed)


def check_config(record: Record) -> Check:
    """Three seeds of one configuration: every config entry but the seed (and the run's own names) agrees."""
    configs = [(r["name"], r["config"]) for r in record.runs if r["config"]]
    if len(configs) < 2:
        return Check("config", NOT_CHECKED, ["fewer than two logs state their configuration"])
    first_name, first = configs[0]
    failures = []
    for name, config in configs[1:]:
        keys = sorted(k for k in set(first) | set(config) if k not in PER_RUN_CONFIG and first.get(k) != config.get(k))
        if keys:
            shown = ", ".join(f"{k}={first.get(k)!r}/{config.get(k)!r}" for k in keys[:6])
            failures.append(f"{name} differs from {first_name} in {len(keys)} setting(s): {shown}")
    return verdict("config", failures, [], f"{len(configs)} logs, one configuration (seed aside)")


def check_readme(record: Record) -> Check:
    path = record.folder / "README.md"
    if not path.is_file():
        return Check("readme", NOT_CHECKED, ["no README.md (see files)"])
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    todo = [f"README.md line {i}: {line.strip()[:80]}" for i, line in enumerate(lines, 1)
            if re.search(r"\b(TODO|TBD|FIXME)\b", line)]
    if todo:
        return Check("readme", FAIL, ["README.md still has unfinished sections:"] + todo[:5])
    if len(" ".join(lines).split()) < 40:
        return Check("readme", WARN, ["README.md has fewer than 40 words: reviewers expect the method explained"])
    return Check("readme", OK, [f"{len(lines)} lines, no TODO left"])


# -----------------------------------------------------------------------------
# All together
# -----------------------------------------------------------------------------


def track_of(record: Record) -> str:
    """'10min_16mb' or 'non_record_16mb', from the folder's path or submission.json."""
    text = "/".join(record.folder.resolve().parts[-3:]) + " " + str(record.submission.get("track", ""))
    return "non_record_16mb" if "non_record" in text else "10min_16mb"


def check_record(folder: Path, limit_bytes: int = ARTIFACT_LIMIT_BYTES, limit_ms: int = TIME_LIMIT_MS,
                 strict: bool = False, track: str | None = None) -> list[Check]:
    record = read_record(Path(folder))
    track = track or track_of(record)
    checks = [check_files(record), check_submission(record), check_logs(record), check_seeds(record),
              check_config(record), check_score(record), check_artifact(record, limit_bytes, strict),
              check_code(record), check_helpers(record), check_data(record)]
    if track == "10min_16mb":
        checks += [check_training_time(record, limit_ms), check_evaluation_time(record, limit_ms),
                   check_device(record), check_world_size(record), check_hardware(record),
                   check_validation(record), check_readme(record)]
    else:
        checks += [Check(name, NOT_CHECKED, [f"the {track} track has no time or hardware limit"])
                   for name in ("training", "evaluation", "device", "world_size", "hardware")]
        checks += [check_validation(record), check_readme(record)]
    return checks


def report(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{check.status:<12} {check.name:<11} {check.details[0] if check.details else ''}".rstrip())
        lines += [f"{'':<24} {detail}" for detail in check.details[1:]]
    failed = [c.name for c in checks if c.status == FAIL]
    warned = [c.name for c in checks if c.status == WARN]
    unchecked = [c.name for c in checks if c.status == NOT_CHECKED]
    summary = "record:accepted" if not failed else f"record:refused failed:{','.join(failed)}"
    extras = [f"warnings:{','.join(warned)}" if warned else "", f"not_checked:{','.join(unchecked)}" if unchecked else ""]
    lines.append(" ".join([summary] + [e for e in extras if e]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the record folder")
    parser.add_argument("--strict", action="store_true",
                        help="count the shipped train_gpt.py's bytes even when the logs count compressed code")
    parser.add_argument("--track", choices=("10min_16mb", "non_record_16mb"),
                        help="default: from the folder's path or submission.json's track (10min_16mb otherwise)")
    parser.add_argument("--limit-bytes", type=int, default=ARTIFACT_LIMIT_BYTES, help="artifact cap (default 16,000,000)")
    parser.add_argument("--limit-seconds", type=float, default=TIME_LIMIT_MS / 1000,
                        help="training and evaluation time limits, each (default 600)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    checks = check_record(args.folder, args.limit_bytes, round(args.limit_seconds * 1000), args.strict, args.track)
    print(report(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Check a record folder against the challenge's rules before submitting it.

Why: a record that breaks a rule (artifact over 16,000,000 bytes, training or evaluation over
600 s, a score that is not the logs' mean) is rejected on review; better to learn it here.
Every figure is recomputed from the logs (through tools/logparse.py) and the shipped script:

  files       README.md, submission.json, train_gpt.py and at least one log (*.log, or a
              *.txt starting with a code_sha256 line)
  finished    every log has its `final` line
  code        all logs ran the same code (code_sha256); their code_bytes equal the size of
              the shipped train_gpt.py
  artifact    size of train_gpt.py + each log's model_bytes <= 16,000,000, and
              submission.json's artifact_bytes is the largest of them
  time        each log: train_time_ms <= 600,000 and total_eval_time_ms <= 600,000
  score       submission.json's val_bpb equals the mean of the logs' final val_bpb (to 1e-6)
  seeds       submission.json's seeds are the logs' seeds, no seed twice

Exit status: 0 when every check passes, 1 when any fails (each failure is printed).
Usage: python tools/check_record.py records/track_10min_16mb/2026-01-01_Name
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402

ARTIFACT_LIMIT_BYTES = 16_000_000
TIME_LIMIT_MS = 600_000
BPB_TOLERANCE = 1e-6
REQUIRED_FILES = ("README.md", "submission.json", "train_gpt.py")


def is_log(path: Path) -> bool:
    """*.log, or a *.txt that is a train_gpt.py log (it has a code_sha256 line; not requirements.txt)."""
    if not path.is_file():
        return False
    if path.suffix == ".log":
        return True
    return path.suffix == ".txt" and "code_sha256:" in path.read_text(encoding="utf-8", errors="replace")[:4096]


def log_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_log(p))


def check_files(folder: Path) -> list[str]:
    problems = [f"missing {name}" for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not log_files(folder):
        problems.append("no training log (*.log or *.txt)")
    return problems


def read_submission(folder: Path) -> tuple[dict, list[str]]:
    path = folder / "submission.json"
    if not path.is_file():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        return {}, [f"submission.json is not valid JSON: {error}"]
    if not isinstance(data, dict):
        return {}, ["submission.json is not a JSON object"]
    missing = [k for k in ("name", "github_id", "val_bpb", "seeds", "artifact_bytes") if k not in data]
    return data, [f"submission.json lacks {', '.join(missing)}"] if missing else []


def read_runs(folder: Path) -> tuple[list[dict], list[str]]:
    runs, problems = [], []
    for path in log_files(folder):
        run = logparse.read_summary(path)
        if not run["finished"]:
            problems.append(f"{path.name}: no `final` line (the run did not finish)")
            continue
        for key in ("val_bpb", "model_bytes", "train_time_ms", "total_eval_time_ms", "code_sha256"):
            if run.get(key) is None:
                problems.append(f"{path.name}: no {key} in the log")
        runs.append(run)
    return runs, problems


def check_code(runs: list[dict], script_bytes: int | None) -> list[str]:
    problems = []
    hashes = sorted({str(run.get("code_sha256")) for run in runs})
    if len(hashes) > 1:
        problems.append(f"logs ran different code: code_sha256 {', '.join(h[:12] for h in hashes)}")
    for run in runs:
        if script_bytes is not None and run.get("code_bytes") != script_bytes:
            problems.append(f"{Path(run['path']).name}: logged code_bytes {run.get('code_bytes')} but the shipped "
                            f"train_gpt.py has {script_bytes} bytes (not the packed copy of the code that ran?)")
    return problems


def artifact_sizes(runs: list[dict], script_bytes: int) -> dict[str, int]:
    return {Path(run["path"]).name: script_bytes + int(run["model_bytes"])
            for run in runs if isinstance(run.get("model_bytes"), int)}


def check_artifact(runs: list[dict], script_bytes: int | None, submission: dict, limit: int) -> list[str]:
    if script_bytes is None:
        return []
    sizes = artifact_sizes(runs, script_bytes)
    problems = [f"{name}: artifact {size:,} bytes (train_gpt.py {script_bytes:,} + model) exceeds {limit:,}"
                for name, size in sizes.items() if size > limit]
    if sizes and "artifact_bytes" in submission and submission["artifact_bytes"] != max(sizes.values()):
        problems.append(f"submission.json artifact_bytes {submission['artifact_bytes']} != {max(sizes.values())} "
                        f"(train_gpt.py + the largest model_bytes of the logs)")
    return problems


def check_times(runs: list[dict], limit_ms: int) -> list[str]:
    problems = []
    for run in runs:
        for key, what in (("train_time_ms", "training"), ("total_eval_time_ms", "evaluation")):
            value = run.get(key)
            if isinstance(value, (int, float)) and value > limit_ms:
                problems.append(f"{Path(run['path']).name}: {what} took {value / 1000:.1f} s, over {limit_ms / 1000:.0f} s")
    return problems


def check_score(runs: list[dict], submission: dict) -> list[str]:
    values = [run["val_bpb"] for run in runs if isinstance(run.get("val_bpb"), (int, float))]
    claimed = submission.get("val_bpb")
    if not values or not isinstance(claimed, (int, float)):
        return [] if not values else ["submission.json val_bpb is not a number"]
    mean = statistics.fmean(values)
    if abs(mean - claimed) > BPB_TOLERANCE:
        return [f"submission.json val_bpb {claimed} != mean of the logs' final val_bpb {mean:.8f}"]
    return []


def check_seeds(runs: list[dict], submission: dict) -> list[str]:
    seeds = [run.get("seed") for run in runs]
    problems = [f"seed {s} appears in more than one log" for s in sorted({s for s in seeds if seeds.count(s) > 1}, key=str)]
    claimed = submission.get("seeds")
    if isinstance(claimed, list) and sorted(map(str, claimed)) != sorted(map(str, seeds)):
        problems.append(f"submission.json seeds {claimed} != the logs' seeds {seeds}")
    return problems


def check_record(folder: Path, limit_bytes: int = ARTIFACT_LIMIT_BYTES, limit_ms: int = TIME_LIMIT_MS) -> dict[str, list[str]]:
    """Every check's name -> its problems (an empty list: passed)."""
    results = {"files": check_files(folder)}
    submission, results["submission"] = read_submission(folder)
    runs, results["finished"] = read_runs(folder)
    script = folder / "train_gpt.py"
    script_bytes = script.stat().st_size if script.is_file() else None
    results["code"] = check_code(runs, script_bytes)
    results["artifact"] = check_artifact(runs, script_bytes, submission, limit_bytes)
    results["time"] = check_times(runs, limit_ms)
    results["score"] = check_score(runs, submission)
    results["seeds"] = check_seeds(runs, submission)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the record folder")
    parser.add_argument("--limit-bytes", type=int, default=ARTIFACT_LIMIT_BYTES, help="artifact cap (default 16,000,000)")
    parser.add_argument("--limit-seconds", type=float, default=TIME_LIMIT_MS / 1000,
                        help="training and evaluation time limits, each (default 600)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    results = check_record(args.folder, args.limit_bytes, round(args.limit_seconds * 1000))
    for name, problems in results.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {name}")
        for problem in problems:
            print(f"     {problem}")
    failed = [name for name, problems in results.items() if problems]
    print("record OK" if not failed else f"record has problems: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Create a record folder `records/track_10min_16mb/YYYY-MM-DD_Name/` from run logs.

Why: a submission is a folder with the shipped script, one log per seed, `submission.json`
and a README (SPEC §1). Assembling it by hand invites mistakes: a figure copied from the
wrong log, a script that is not the one that ran, a mean computed over the wrong seeds.
This tool reads the figures from the logs only (through tools/logparse.py), ships the
packed copy of the exact code that ran (its sha256 must match the logs' `code_sha256`),
and fills the README skeleton with the measured numbers. The author writes the prose.

Figures: val_bpb and val_loss are the `final` line's; the record's val_bpb is their mean over
the logs; artifact bytes = packed script bytes + the largest `model_bytes` of the logs.

Usage:
  python tools/make_record.py logs/seed42.txt logs/seed314.txt logs/seed999.txt \\
      --name "DualClock PPM mixture" --author "Ada Lovelace" --github-id ada
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402

RECORDS_DIR = Path("records/track_10min_16mb")
ARTIFACT_LIMIT_BYTES = 16_000_000
# Config fields that describe the machine or the run, not the method: left out of the command.
MACHINE_FIELDS = {"seed", "run_id", "data_path", "tokenizer_path", "log_dir", "artifact_path", "checkpoint_path"}


class RecordError(ValueError):
    """Input that cannot make a valid record; the message says which file and why."""


def load_runs(log_paths: list[Path]) -> list[dict]:
    """One summary per log (logparse.summary + records); every log must have finished."""
    runs = []
    for path in log_paths:
        if not Path(path).is_file():
            raise RecordError(f"{path}: no such log")
        records = logparse.read_log(path)
        run = logparse.summary(records)
        run.update(path=Path(path), records=records, world_size=logparse.last(records, "world_size"))
        if not any(r.get("event") == "final" for r in records):
            raise RecordError(f"{path}: no `final` line: the run did not finish")
        for key in ("val_bpb", "val_loss", "model_bytes", "train_time_ms", "total_eval_time_ms"):
            if not isinstance(run.get(key), (int, float)):
                raise RecordError(f"{path}: no {key} in the log")
        runs.append(run)
    if not runs:
        raise RecordError("no logs given")
    return runs


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def check_runs_agree(runs: list[dict]) -> None:
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise RecordError(f"seeds repeat across logs ({seeds}): each log must be a different seed")
    hashes = {run["code_sha256"] for run in runs}
    if len(hashes) != 1:
        raise RecordError(f"the logs ran different code (code_sha256 {sorted(map(str, hashes))})")


def shipped_script(source_path: Path, runs: list[dict]) -> bytes:
    """The script to ship: the packed copy of `source_path`, which must be the code that ran."""
    from tools.pack import packer

    data = source_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != runs[0]["code_sha256"]:
        raise RecordError(f"{source_path} (sha256 {digest[:12]}…) is not the code that ran "
                          f"(logs: {str(runs[0]['code_sha256'])[:12]}…); pass --source with that exact file")
    import train_gpt

    if data.startswith(train_gpt.PACKED_MARKER.encode()):
        return data  # the run used the packed copy itself: ship it unchanged
    pack_source, _ = packer()
    return pack_source(data.decode("utf-8"))


def non_default_settings(config: dict) -> dict[str, str]:
    """Environment variables that differ from Hyperparameters' defaults, as VAR -> value."""
    import dataclasses

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


def slug_of(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not slug:
        raise RecordError(f"name {name!r} gives an empty folder name; pass --slug")
    return slug


def submission(runs: list[dict], code_bytes: int, args, log_names: list[str]) -> dict:
    bpb_mean, bpb_std = mean_and_std([run["val_bpb"] for run in runs])
    loss_mean, loss_std = mean_and_std([run["val_loss"] for run in runs])
    per_seed = [{"seed": run["seed"], "val_bpb": run["val_bpb"], "val_loss": run["val_loss"],
                 "model_bytes": run["model_bytes"], "artifact_bytes": run["model_bytes"] + code_bytes,
                 "train_time_s": round(run["train_time_ms"] / 1000, 3),
                 "eval_time_s": round(run["total_eval_time_ms"] / 1000, 3), "log": log_name}
                for run, log_name in zip(runs, log_names)]
    return {
        "name": args.name, "author": args.author, "github_id": args.github_id, "date": args.date,
        "track": "10min_16mb", "blurb": args.blurb or "",
        "val_bpb": round(bpb_mean, 8), "val_bpb_std": round(bpb_std, 8),
        "val_loss": round(loss_mean, 8), "val_loss_std": round(loss_std, 8),
        "seeds": [run["seed"] for run in runs],
        "artifact_bytes": max(item["artifact_bytes"] for item in per_seed),
        "code_bytes": code_bytes, "model_bytes_max": max(run["model_bytes"] for run in runs),
        "code_sha256": runs[0]["code_sha256"], "per_seed": per_seed,
    }


def readme(record: dict, runs: list[dict]) -> str:
    """The README skeleton: measured figures filled in, prose left to the author (TODO marks)."""
    rows = "\n".join(f"| {s['seed']} | {s['val_bpb']:.6f} | {s['val_loss']:.6f} | {s['artifact_bytes']:,} | "
                     f"{s['train_time_s']:.1f} | {s['eval_time_s']:.1f} |" for s in record["per_seed"])
    settings = non_default_settings(next((r["config"] for r in runs[0]["records"] if "config" in r), {}))
    command = " ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    nproc = runs[0].get("world_size") or 8
    seeds = " ".join(str(s) for s in record["seeds"])
    return f"""# {record['name']}

**val_bpb {record['val_bpb']:.6f}** (mean of {len(runs)} seed{'s' if len(runs) > 1 else ''}, std {record['val_bpb_std']:.6f}) ·
artifact {record['artifact_bytes']:,} bytes (limit {ARTIFACT_LIMIT_BYTES:,}) · by {record['author']} (@{record['github_id']}), {record['date']}

{record['blurb'] or 'TODO: one paragraph: what this record changes and why it helps.'}

## Results

| Seed | val_bpb | val_loss (nats/token) | Artifact bytes | Train time (s) | Eval time (s) |
|---:|---:|---:|---:|---:|---:|
{rows}
| **Mean** | **{record['val_bpb']:.6f}** | {record['val_loss']:.6f} | max {record['artifact_bytes']:,} | | |

Artifact bytes = packed `train_gpt.py` ({record['code_bytes']:,} bytes) + compressed model
(at most {record['model_bytes_max']:,} bytes). Times are from the logs; limits 600 s each.

## Reproduce

```bash
python data/download.py
for SEED in {seeds}; do
  SEED=$SEED {command + ' ' if command else ''}torchrun --standalone --nproc_per_node={nproc} train_gpt.py
done
```

## What changed

TODO: the method, with credits and links for what it builds on.

## Legality of evaluation

TODO: confirm each condition for every evaluation-time component:
- [ ] causal: the distribution for token t depends only on the artifact and tokens < t;
- [ ] normalized: a full distribution over the vocabulary, fixed before token t is read;
- [ ] score before update: no state is updated with a token before it is scored;
- [ ] single pass: every token scored exactly once, left to right.

## Files

- `train_gpt.py`: the packed, self-extracting copy of the code that ran (sha256 of the
  readable source: `{record['code_sha256']}`); run it as is.
- {', '.join('`' + s['log'] + '`' for s in record['per_seed'])}: the training logs.
- `submission.json`: the figures above, machine-readable.
"""


def make_record(args) -> Path:
    runs = load_runs(args.logs)
    check_runs_agree(runs)
    folder = args.records_dir / f"{args.date}_{args.slug or slug_of(args.name)}"
    if folder.exists() and not args.force:
        raise RecordError(f"{folder} exists; pass --force to replace it")
    script = shipped_script(args.source, runs)
    code_bytes = len(script)
    for run in runs:
        if run.get("code_bytes") not in (None, code_bytes):
            raise RecordError(f"{run['path']}: logged code_bytes {run['code_bytes']} but the packed script has "
                              f"{code_bytes} bytes (packed with another Python version?)")
    log_names = [f"train_seed{run['seed']}.log" for run in runs]
    record = submission(runs, code_bytes, args, log_names)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_bytes(script)
    for run, log_name in zip(runs, log_names):
        shutil.copyfile(run["path"], folder / log_name)
    (folder / "submission.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(record, runs), encoding="utf-8")
    return folder


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
    parser.add_argument("--blurb", help="one paragraph for submission.json and the README")
    parser.add_argument("--date", type=iso_date, default=datetime.date.today().isoformat(),
                        help="YYYY-MM-DD (default: today)")
    parser.add_argument("--slug", help="folder name after the date (default: from --name)")
    parser.add_argument("--source", type=Path, default=ROOT / "train_gpt.py",
                        help="the script that ran (default: train_gpt.py); it is packed for shipping")
    parser.add_argument("--records-dir", type=Path, default=RECORDS_DIR, help=f"default {RECORDS_DIR}")
    parser.add_argument("--force", action="store_true", help="replace an existing record folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.slug is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.slug):
        build_parser().error(f"--slug {args.slug!r}: use letters, digits, '_' and '-' only")
    if not re.fullmatch(r"[A-Za-z0-9-]+", args.github_id):
        build_parser().error(f"--github-id {args.github_id!r} is not a GitHub user name")
    try:
        folder = make_record(args)
    except (RecordError, OSError, RuntimeError) as error:
        print(f"make_record.py: error: {error}", file=sys.stderr)
        return 1
    record = json.loads((folder / "submission.json").read_text(encoding="utf-8"))
    print(f"wrote {folder}: val_bpb:{record['val_bpb']:.6f} seeds:{record['seeds']} "
          f"artifact_bytes:{record['artifact_bytes']} code_bytes:{record['code_bytes']}")
    print(f"next: edit {folder / 'README.md'} (TODO marks), then python tools/check_record.py {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

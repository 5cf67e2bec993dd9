"""Run a grid of environment-variable settings and tabulate each run's final figures.

Why: tuning is mostly "run the same script with a few knobs changed, then compare". Every
knob of train_gpt.py is an environment variable, so a sweep is a cartesian product of
settings, one launch each, then one table. `--grid 'TTT_LR=0.005,0.01' --grid 'SEED=1,2'`
gives four runs. Each run gets RUN_ID=<sweep>_<index> and LOG_DIR=<out>/logs, so its log is
known in advance; the final figures are read from it with tools/logparse.py into
<out>/results.csv and <out>/results.md (also printed). Variable names are checked against
the Hyperparameters fields first, so a typo fails before any compute is spent.

The command defaults to `torchrun --standalone --nproc_per_node=N train_gpt.py`; give
another after `--`. A run's stdout and stderr go to <out>/logs/<run_id>.out.

Usage:
  python tools/sweep.py --grid 'TTT_LR=0.005,0.01' --grid 'SEED=1,2' --dry-run
  python tools/sweep.py --grid 'DC_SHARE=0.005,0.02' --nproc 8 --out sweeps/share
  python tools/sweep.py --grid 'SEED=1,2' -- python my_script.py
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402

RESULT_COLUMNS = ("val_bpb", "val_loss", "final_eval", "train_time_s", "eval_time_s", "artifact_bytes", "model_params")


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """['A=1,2', 'B=x'] -> [('A', ['1', '2']), ('B', ['x'])]; ValueError with the bad item."""
    grid, seen = [], set()
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ValueError(f"--grid {item!r}: expected NAME=value1,value2,...")
        if name in seen:
            raise ValueError(f"--grid {name} given twice")
        if name in ("RUN_ID", "LOG_DIR"):
            raise ValueError(f"--grid {name}: the sweep sets it for every run")
        seen.add(name)
        grid.append((name, [v.strip() for v in values.split(",") if v.strip()]))
    return grid


def check_names(grid: list[tuple[str, list[str]]]) -> None:
    """Every name must be a Hyperparameters field in upper case, and every value must parse."""
    import train_gpt

    fields = {field.name.upper() for field in dataclasses.fields(train_gpt.Hyperparameters)}
    for name, values in grid:
        if name not in fields:
            raise ValueError(f"--grid {name}: not a Hyperparameters field (see the README's variable table)")
        for value in values:
            try:
                train_gpt.Hyperparameters.from_env({name: value})
            except ValueError as error:
                raise ValueError(f"--grid {name}={value}: {error}") from None


def settings(grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """The cartesian product, first variable slowest."""
    names = [name for name, _ in grid]
    return [dict(zip(names, combination)) for combination in itertools.product(*(values for _, values in grid))]


def default_command(nproc: int) -> list[str]:
    return ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "train_gpt.py"]


def run_one(command: list[str], setting: dict[str, str], run_id: str, log_dir: Path) -> dict:
    """Launch one run; return its row: the setting, status and the log's final figures."""
    env = {**os.environ, **setting, "RUN_ID": run_id, "LOG_DIR": str(log_dir)}
    started = time.time()
    with open(log_dir / f"{run_id}.out", "w", encoding="utf-8") as output:
        code = subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT).returncode
    row = {"run_id": run_id, **setting, "status": "ok" if code == 0 else f"exit {code}",
           "wall_s": round(time.time() - started, 1)}
    log_path = log_dir / f"{run_id}.txt"
    if log_path.is_file():
        run = logparse.read_summary(log_path)
        row.update(val_bpb=run["val_bpb"], val_loss=run["val_loss"], final_eval=run["final_eval"],
                   train_time_s=seconds(run["train_time_ms"]), eval_time_s=seconds(run["total_eval_time_ms"]),
                   artifact_bytes=run["artifact_bytes"], model_params=run["model_params"])
        if code == 0 and not run["finished"]:
            row["status"] = "no final line"
    elif code == 0:
        row["status"] = "no log"
    return row


def seconds(milliseconds) -> float | None:
    return round(milliseconds / 1000, 1) if isinstance(milliseconds, (int, float)) else None


def write_tables(rows: list[dict], names: list[str], out_dir: Path) -> str:
    """results.csv and results.md under out_dir; returns the markdown."""
    columns = ["run_id", *names, "status", *RESULT_COLUMNS, "wall_s"]
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c), c) for c in columns) + " |")
    markdown = "\n".join(lines) + "\n"
    (out_dir / "results.md").write_text(markdown, encoding="utf-8")
    return markdown


def cell(value, column: str = "val_bpb") -> str:
    """Scores with 6 decimals, everything else as logged."""
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) and column in ("val_bpb", "val_loss") else str(value)


def sweep(grid: list[tuple[str, list[str]]], command: list[str], out_dir: Path, name: str,
          stop_on_error: bool = False, log=print) -> list[dict]:
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows, combos = [], settings(grid)
    for index, setting in enumerate(combos):
        run_id = f"{name}_{index:03d}"
        described = " ".join(f"{k}={v}" for k, v in setting.items())
        log(f"[{index + 1}/{len(combos)}] {run_id} {described}")
        row = run_one(command, setting, run_id, log_dir)
        log(f"    {row['status']} val_bpb:{cell(row.get('val_bpb'))} wall:{row['wall_s']}s")
        rows.append(row)
        write_tables(rows, [n for n, _ in grid], out_dir)  # partial results survive an interruption
        if stop_on_error and row["status"] != "ok":
            break
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", action="append", required=True, metavar="NAME=v1,v2",
                        help="one variable and its values; repeat for more variables")
    parser.add_argument("--nproc", type=int, default=8, help="GPUs for the default torchrun command (default 8)")
    parser.add_argument("--name", default="sweep", help="run id prefix (default sweep)")
    parser.add_argument("--out", type=Path, help="output folder (default sweeps/<name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failed run")
    parser.add_argument("--no-check", action="store_true",
                        help="do not check names against train_gpt.Hyperparameters (for other scripts)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command to run instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    command = command or default_command(args.nproc)
    if args.nproc < 1:
        parser.error("--nproc must be at least 1")
    if not args.name.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--name {args.name!r}: use letters, digits, '_' and '-'")
    try:
        grid = parse_grid(args.grid)
        if not args.no_check:
            check_names(grid)
    except ValueError as error:
        parser.error(str(error))
    out_dir = args.out or Path("sweeps") / args.name
    if args.dry_run:
        for index, setting in enumerate(settings(grid)):
            extra = {"RUN_ID": f"{args.name}_{index:03d}", "LOG_DIR": str(out_dir / "logs")}
            print(" ".join(f"{k}={shlex.quote(v)}" for k, v in {**setting, **extra}.items()), shlex.join(command))
        return 0
    rows = sweep(grid, command, out_dir, args.name, args.stop_on_error)
    print(write_tables(rows, [n for n, _ in grid], out_dir), end="")
    print(f"wrote {out_dir / 'results.csv'} and {out_dir / 'results.md'}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

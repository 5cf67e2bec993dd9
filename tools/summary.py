"""Print a run's results: its scored val_bpb, every evaluation stage, the artifact and the times.

Why: a log holds hundreds of lines; after a run (the CPU demo, a pod run, a record someone else
published) the user wants the few figures that matter. Any dialect is read (tools/logparse.py):
this project's logs and the logs real challenge records ship. For each log it prints a table of
the evaluations (diagnostics marked), then `key:value` lines other tools can read; the first is
always `val_bpb:<scored value>` (or `val_bpb:none` with the reason when the run has no score).

Exit status 0 when every log has a scored result, 1 otherwise.
Usage: python tools/summary.py logs/<run_id>.txt [more logs...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402

# The key:value lines after the table, in order; a key the log does not state is left out.
FIGURES = (("final_eval", "scored_by"), ("seed", "seed"), ("train_time_ms", "train_time_ms"), ("steps", "steps"),
           ("eval_time_ms", "eval_time_ms"), ("scored_eval_time_ms", "scored_eval_time_ms"),
           ("total_eval_time_ms", "total_eval_time_ms"), ("artifact_bytes", "artifact_bytes"),
           ("model_bytes", "model_bytes"), ("code_bytes", "code_bytes"), ("code_bytes_compressed", "code_bytes_compressed"),
           ("world_size", "world_size"), ("device", "device"), ("gpu_name", "gpu"), ("val_tokens", "val_tokens"),
           ("tokenizer", "tokenizer"), ("model_params", "model_params"), ("target_tokens", "target_tokens"),
           ("val_documents", "val_documents"), ("train_shards", "train_shards"), ("sidecar", "sidecar"),
           ("val_bytes", "val_bytes"), ("hessian_time_ms", "hessian_time_ms"), ("ngram_tilt_hints", "ngram_tilt_hints"))


def evaluation_rows(run: dict) -> list[str]:
    """One markdown row per evaluation, in the order they ran."""
    rows = []
    for evaluation in run["evaluations"]:
        loss = "" if evaluation["val_loss"] is None else f"{evaluation['val_loss']:.6f}"
        seconds = "" if evaluation["eval_time_ms"] is None else f"{evaluation['eval_time_ms'] / 1000:.1f}"
        note = "diagnostic" if evaluation["diagnostic"] else ("scored" if evaluation["name"] == run["final_eval"] else "")
        rows.append(f"| {evaluation['name']} | {evaluation['val_bpb']:.6f} | {loss} | {seconds} | {note} |")
    return rows


def figure_text(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return str(round(value)) if value.is_integer() else f"{value:.6g}"
    return str(value)


def key_values(run: dict) -> list[str]:
    if run["finished"]:
        # As logged (repr is the shortest exact form): 1.1177 stays 1.1177, not 1.11770000.
        first = f"val_bpb:{run['val_bpb']!r}" + (f" val_loss:{run['val_loss']!r}" if run["val_loss"] is not None else "")
    else:
        first = f"val_bpb:none finished:0 reason:{run['unfinished_reason'].replace(' ', '_')}"
    pairs = [f"{label}:{figure_text(run[key])}" for key, label in FIGURES if run.get(key) is not None]
    lines = [first, " ".join(pairs[:6]), " ".join(pairs[6:17]), " ".join(pairs[17:])]
    for event in ("eval_budget", "dualclock"):
        if run[event]:
            lines.append(event + " " + " ".join(f"{k}:{v}" for k, v in run[event].items() if k != "event"))
    return [line for line in lines if line]


def summarize(path: Path) -> tuple[str, bool]:
    """(the text for one log, whether it has a scored result)."""
    run = logparse.read_run(path)
    lines = [f"## {path} ({run['dialect']} log)", ""]
    rows = evaluation_rows(run)
    if rows:
        lines += ["| stage | val_bpb | val_loss | time (s) | |", "|---|---:|---:|---:|---|", *rows, ""]
    lines += key_values(run)
    return "\n".join(lines) + "\n", run["finished"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="run logs of any dialect")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.logs if not p.is_file()]
    if missing:
        parser.error(f"no such log: {', '.join(missing)}")
    results = [summarize(path) for path in args.logs]
    print("\n".join(text for text, _ in results), end="")
    return 0 if all(finished for _, finished in results) else 1


if __name__ == "__main__":
    sys.exit(main())

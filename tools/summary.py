"""Print a run's results as a short table: BPB of each evaluation stage, artifact, times.

Why: a log holds hundreds of lines; after a run (the CPU demo, a pod run) the user wants the
few figures that matter side by side: val_bpb and val_loss of every evaluation (pre_quant,
quantized, sliding, ttt), the DualClock line when present, the artifact bytes against the
cap, and the training and evaluation times. Read through tools/logparse.py.

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


def stage_rows(records: list[dict]) -> list[tuple[str, str, str, str]]:
    """(stage, val_bpb, val_loss, seconds) for each `eval:` line, in the order they ran."""
    return [(str(r["eval"]), f"{r['val_bpb']:.6f}", f"{r.get('val_loss', float('nan')):.6f}",
             f"{r.get('eval_time_ms', 0) / 1000:.1f}")
            for r in records if "eval" in r and r.get("event") != "final" and isinstance(r.get("val_bpb"), (int, float))]


def summarize(path: Path) -> str:
    records = logparse.read_log(path)
    run = logparse.summary(records)
    lines = [f"## {path.name}", "", "| stage | val_bpb | val_loss | time (s) |", "|---|---:|---:|---:|"]
    lines += [f"| {stage} | {bpb} | {loss} | {seconds} |" for stage, bpb, loss, seconds in stage_rows(records)]
    dualclock = next((r for r in reversed(records) if r.get("event") == "dualclock"), None)
    if dualclock:
        experts = ", ".join(f"{k}={dualclock[k]}" for k in ("neural_bpb", "global_bpb", "local_bpb", "mixed_bpb",
                                                           "mixer_weights") if k in dualclock)
        lines += ["", f"DualClock: {experts}"]
    lines.append("")
    if run["artifact_bytes"] is not None:
        lines.append(f"artifact: {run['artifact_bytes']:,} bytes (code {run['code_bytes']:,} + model "
                     f"{run['model_bytes']:,}; limit 16,000,000)")
    train_ms = logparse.last(records, "train_time_ms", {"event": "train_done"})
    if train_ms is not None:
        lines.append(f"training: {train_ms / 1000:.1f} s, {logparse.last(records, 'steps')} steps; "
                     f"model_params {run['model_params']}")
    if run["val_bpb"] is not None:
        lines.append(f"final ({run['final_eval']}): val_bpb {run['val_bpb']:.6f}, evaluation "
                     f"{(run['total_eval_time_ms'] or 0) / 1000:.1f} s")
    else:
        lines.append("no `final` line: the run did not finish")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="run logs (logs/<run_id>.txt)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.logs if not p.is_file()]
    if missing:
        parser.error(f"no such log: {', '.join(missing)}")
    print("\n".join(summarize(path) for path in args.logs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

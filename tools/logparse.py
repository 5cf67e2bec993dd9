"""Parse train_gpt.py logs: the one reader shared by every tool and test.

A log line is a sequence of space-separated `key:value` tokens; the first token may be a bare
word (an event name such as `final` or `dualclock`). Two lines are special: `config:` is
followed by the resolved Hyperparameters as one JSON object, and `versions:` / `device:` lines
are ordinary key:value lines. Values are returned as int, float or str, whichever parses.
"""
from __future__ import annotations

import json
from pathlib import Path


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_line(line: str) -> dict:
    """`eval:ttt val_loss:2.1 val_bpb:1.08` -> {'eval': 'ttt', 'val_loss': 2.1, 'val_bpb': 1.08}.

    A leading bare word becomes {'event': word}. Tokens without a colon after the first are
    ignored (free text is allowed at the end of a line)."""
    line = line.strip()
    if line.startswith("config:"):
        return {"config": json.loads(line[len("config:"):])}
    out: dict = {}
    for index, token in enumerate(line.split()):
        key, sep, value = token.partition(":")
        if not sep:
            if index == 0:
                out["event"] = token
            continue
        out[key] = parse_value(value)
    return out


def parse_log(text: str) -> list[dict]:
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def read_log(path) -> list[dict]:
    return parse_log(Path(path).read_text(encoding="utf-8", errors="replace"))


def last(records: list[dict], key: str, where: dict | None = None):
    """The value of `key` in the last record having it (and matching `where`), else None."""
    for record in reversed(records):
        if key in record and all(record.get(k) == v for k, v in (where or {}).items()):
            return record[key]
    return None


def summary(records: list[dict]) -> dict:
    """The figures a record needs from one run log."""
    config = next((r["config"] for r in records if "config" in r), {})
    return {
        "seed": config.get("seed"),
        "val_bpb": last(records, "val_bpb", {"event": "final"}),
        "val_loss": last(records, "val_loss", {"event": "final"}),
        "final_eval": last(records, "eval", {"event": "final"}),
        "train_time_ms": last(records, "train_time_ms", {"event": "final"}),
        "total_eval_time_ms": last(records, "total_eval_time_ms", {"event": "final"}),
        "code_bytes": last(records, "code_bytes"),
        "model_bytes": last(records, "model_bytes"),
        "artifact_bytes": last(records, "artifact_bytes"),
        "model_params": last(records, "model_params"),
        "code_sha256": last(records, "code_sha256"),
    }


# -----------------------------------------------------------------------------
# Curves and run summaries for the tools (additions; the functions above are unchanged).
# -----------------------------------------------------------------------------


def step_number(value) -> int | None:
    """`step:10/20000` parses as the string '10/20000'; return 10 (or the int as is)."""
    if isinstance(value, int):
        return value
    head = str(value).split("/", 1)[0]
    return int(head) if head.isdigit() else None


def train_points(records: list[dict]) -> list[dict]:
    """Training-loss curve: [{'step', 'time_s', 'train_loss'}] from the step lines, in order."""
    return [{"step": step_number(r.get("step")), "time_s": r["train_time_ms"] / 1000.0, "train_loss": r["train_loss"]}
            for r in records
            if isinstance(r.get("train_loss"), (int, float)) and isinstance(r.get("train_time_ms"), (int, float))]


def val_points(records: list[dict]) -> list[dict]:
    """Validation BPB against wall time since training started: [{'name', 'time_s', 'val_bpb'}].

    Lines written during training (with train_time_ms) sit at that time; the evaluations after
    training (`eval:<name> ... eval_time_ms:T`) follow the end of training one after another
    (plus the `artifact` line's gptq_time_ms), each at the time it finished. The `final` line repeats the last evaluation and is skipped."""
    points, clock_ms = [], 0.0
    for r in records:
        if r.get("event") == "train_done" and isinstance(r.get("train_time_ms"), (int, float)):
            clock_ms = float(r["train_time_ms"])
        if r.get("event") == "artifact" and isinstance(r.get("gptq_time_ms"), (int, float)):
            clock_ms += float(r["gptq_time_ms"])  # quantization runs between the evaluations
        if r.get("event") == "final" or not isinstance(r.get("val_bpb"), (int, float)):
            continue
        if "eval" in r:
            clock_ms += float(r.get("eval_time_ms") or 0)
            points.append({"name": str(r["eval"]), "time_s": clock_ms / 1000.0, "val_bpb": r["val_bpb"]})
        elif isinstance(r.get("train_time_ms"), (int, float)):
            clock_ms = max(clock_ms, float(r["train_time_ms"]))
            points.append({"name": "train", "time_s": r["train_time_ms"] / 1000.0, "val_bpb": r["val_bpb"]})
    return points


def read_summary(path) -> dict:
    """summary() of the log at `path`, plus its 'path' and whether it has a 'final' line."""
    records = read_log(path)
    result = summary(records)
    result["path"] = str(path)
    result["finished"] = any(r.get("event") == "final" for r in records)
    return result

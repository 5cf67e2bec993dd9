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

"""Read training logs of every dialect: ours and the ones real challenge records ship.

Why one reader: every record tool (summary, plot, significance, check, make) must agree on
what a log says, and competitors compare their runs with records written by other scripts.
Two families exist:

- **ours** (docs/CONTRACTS.md): space-separated `key:value` tokens, an optional leading event
  word, a `config:{json}` line, and a `final` line that carries the score.
- **upstream**: the challenge's baseline script and the records derived from it. Facts are
  free-form lines: score lines such as `final_int8_zlib_roundtrip_exact val_loss:.. val_bpb:..`,
  `quantized_ttt_phased val_loss:.. val_bpb:.. eval_time:..ms` or `legal_ttt_exact ..`
  (`val_loss: 2.8` with a space also occurs); sizes as `Code size: N bytes`,
  `Code size (compressed): N bytes`, `Serialized model int8+zlib: N bytes`,
  `Total submission size ...: N bytes` or `budget:N/16000000`; times with units (`600038ms`,
  `596176ms` after a space, `391.2s`, `0.8m`); the seed as `seed:1337`, `  seed: 42` in a
  `Hyperparameters:` block, or `s:42`; in-training lines `step:200/20000 val_loss:..` or
  `4000/20000 val_loss: ..`; and logs that open with the whole source code of the script.

The scored result of an upstream log is its last score line that is not a diagnostic
(pre-quantization or `diagnostic ...` lines evaluate something other than the artifact's
score); an `X_exact` line is the precise copy of the `X` line before it, one evaluation.
`parse_run` returns one dictionary with the same keys for both families (see `empty_run`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# -----------------------------------------------------------------------------
# Our dialect: one key:value record per line (the functions tests and tools have always used)
# -----------------------------------------------------------------------------


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


TOKEN = re.compile(r'[^\s:"]+:"(?:[^"\\]|\\.)*"|\S+')  # key:"a JSON string", or any run of non-spaces


def parse_line(line: str) -> dict:
    """`eval:ttt val_loss:2.1 val_bpb:1.08` -> {'eval': 'ttt', 'val_loss': 2.1, 'val_bpb': 1.08}.

    A leading bare word becomes {'event': word}. Tokens without a colon after the first are
    ignored (free text is allowed at the end of a line). A value in double quotes is a JSON string
    and may hold spaces: `fa3_unavailable:"No module named 'flash_attn_interface'"`."""
    line = line.strip()
    if line.startswith("config:{"):
        try:
            return {"config": json.loads(line[len("config:"):])}
        except json.JSONDecodeError:
            return {}
    out: dict = {}
    for index, token in enumerate(TOKEN.findall(line)):
        key, sep, value = token.partition(":")
        if not sep:
            if index == 0:
                out["event"] = token
            continue
        out[key] = parse_quoted(value) if value.startswith('"') else parse_value(value)
    return out


def parse_quoted(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_log(text: str) -> list[dict]:
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def read_text(path) -> str:
    """A log's text; bytes that are not UTF-8 (binary junk, a latin-1 script echoed) are replaced."""
    return Path(path).read_text(encoding="utf-8", errors="replace")


def read_log(path) -> list[dict]:
    return parse_log(read_text(path))


def last(records: list[dict], key: str, where: dict | None = None):
    """The value of `key` in the last record having it (and matching `where`), else None."""
    for record in reversed(records):
        if key in record and all(record.get(k) == v for k, v in (where or {}).items()):
            return record[key]
    return None


def step_number(value) -> int | None:
    """`step:10/20000` parses as the string '10/20000'; return 10 (or the int as is)."""
    if isinstance(value, int):
        return value
    head = str(value).split("/", 1)[0]
    return int(head) if head.isdigit() else None


# -----------------------------------------------------------------------------
# The unified run: the same keys whatever the dialect
# -----------------------------------------------------------------------------

NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?"


def empty_run() -> dict:
    """Every key a parsed run has; None where the log does not say.

    finished / val_bpb / val_loss / final_eval: the scored result and the evaluation that gave it
    (unfinished_reason says why there is none). evaluations: every evaluation after training, in
    order ({name, val_bpb, val_loss, eval_time_ms, tokens, diagnostic}). train / train_val: the
    in-training curves ({step, time_s, ...}). train_time_ms: what the 600 s training limit
    applies to (ours: loop + GPTQ); training_loop_ms: the loop alone; hessian_time_ms and gptq_time_ms
    (ours, newer logs): GPTQ's Hessian collection and quantization, apart. eval_time_ms: the scored
    evaluation; scored_eval_time_ms: the scored path as our newer logs state it;
    total_eval_time_ms: all evaluations (or the dialect's own total). artifact_bytes: the
    log's own total; code_bytes_compressed: set when the log counts its code compressed.

    The May 2026 facts: target_tokens (the scored targets where the log states them apart from
    val_tokens), val_documents (phased TTT's `total_docs`), train_shards (the data's fingerprint: 80 =
    the CaseOps export, 1499 = a local rebuild of 10M-token shards), val_bytes and sidecar (the BPB
    denominator and whether a byte sidecar gave it; upstream: a CaseOps run, which reads the sidecar),
    hessian_time_ms (GPTQ's Hessian collection, which touches training data), ngram_tilt_hints (the
    `ngram_tilt:hints total=` count). config: ours, the config JSON; upstream, the `Hyperparameters:`
    block as text values."""
    return {
        "dialect": None, "finished": False, "unfinished_reason": "no scored val_bpb line",
        "val_bpb": None, "val_loss": None, "final_eval": None, "eval_time_ms": None,
        "evaluations": [], "train": [], "train_val": [],
        "seed": None, "world_size": None, "device": None, "gpu_name": None, "gpu_count": None,
        "torch_version": None, "train_time_ms": None, "training_loop_ms": None, "step_avg_ms": None, "steps": None,
        "hessian_time_ms": None, "gptq_time_ms": None,
        "scored_eval_time_ms": None, "total_eval_time_ms": None,
        "code_bytes": None, "code_bytes_compressed": None, "model_bytes": None, "artifact_bytes": None,
        "artifact_limit_bytes": None, "val_tokens": None, "tokenizer": None, "val_max_tokens": None,
        "code_sha256": None, "config": {}, "model_params": None, "dualclock": None, "eval_budget": None,
        "target_tokens": None, "val_documents": None, "train_shards": None, "val_bytes": None, "sidecar": None,
        "hessian_time_ms": None, "ngram_tilt_hints": None,
    }


def number(text: str):
    """'15,863,068' -> 15863068; '1.25' -> 1.25."""
    text = text.replace(",", "")
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def milliseconds(value: str, unit: str) -> float:
    """A time with its unit (ms, s or m, as logs print them) in milliseconds."""
    scale = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "min": 60_000.0}[unit.lower()]
    return float(value.replace(",", "")) * scale


def is_ours(text: str) -> bool:
    return bool(re.search(r"^code_sha256:[0-9a-f]+", text, re.MULTILINE)) or "\nfinal eval:" in text


def parse_run(text: str) -> dict:
    """The unified figures of one log, whatever its dialect."""
    return parse_ours(text) if is_ours(text) else parse_upstream(text)


def read_run(path) -> dict:
    """parse_run of the log at `path`, plus its 'path'."""
    run = parse_run(read_text(path))
    run["path"] = str(path)
    return run


def summary(records: list[dict]) -> dict:
    """The unified figures from our dialect's parsed records (kept for callers holding records)."""
    return run_from_records(records)


def read_summary(path) -> dict:
    """read_run under its older name (sweep.py and scripts use it)."""
    return read_run(path)


# -----------------------------------------------------------------------------
# Ours
# -----------------------------------------------------------------------------


def parse_ours(text: str) -> dict:
    return run_from_records(parse_log(text))


def run_from_records(records: list[dict]) -> dict:
    run = empty_run()
    config = next((r["config"] for r in records if "config" in r), {})
    final = next((r for r in reversed(records) if r.get("event") == "final"), None)
    run.update(dialect="ours", config=config, seed=config.get("seed"), val_max_tokens=config.get("val_max_tokens"),
               tokenizer=Path(config["tokenizer_path"]).name if config.get("tokenizer_path") else None,
               world_size=last(records, "world_size"), device=last(records, "device"),
               gpu_name=last(records, "gpu"), torch_version=last(records, "torch"),
               code_sha256=last(records, "code_sha256"), model_params=last(records, "model_params"),
               val_tokens=last(records, "val_tokens"), code_bytes=last(records, "code_bytes"),
               val_bytes=last(records, "val_bytes"), train_shards=last(records, "train_shards"),
               model_bytes=last(records, "model_bytes"), artifact_bytes=last(records, "artifact_bytes"),
               artifact_limit_bytes=last(records, "artifact_limit_bytes"),
               hessian_time_ms=last(records, "hessian_time_ms"), gptq_time_ms=last(records, "gptq_time_ms"),
               dualclock=next((r for r in reversed(records) if r.get("event") == "dualclock"), None),
               eval_budget=next((r for r in reversed(records) if r.get("event") == "eval_budget"), None))
    if run["gpu_name"] == "none":
        run["gpu_name"] = None
    if run["val_bytes"] is not None:
        run["sidecar"] = bool(last(records, "sidecar"))
    run["gpu_count"] = run["world_size"] if run["gpu_name"] else None
    run["train"] = ours_train_points(records)
    run["evaluations"] = ours_evaluations(records)
    steps = [r for r in records if "train_loss" in r]
    if steps:
        run["step_avg_ms"] = steps[-1].get("step_avg_ms")
    run["steps"] = last(records, "steps", {"event": "train_done"}) or (step_number(steps[-1]["step"]) if steps else None)
    run["train_time_ms"] = run["training_loop_ms"] = last(records, "train_time_ms", {"event": "train_done"})
    if final is not None:
        apply_ours_final(run, final, records)
    return run


def apply_ours_final(run: dict, final: dict, records: list[dict]) -> None:
    """The `final` line: the score, and the times the challenge's limits apply to."""
    if not is_number(final.get("val_bpb")):
        run["unfinished_reason"] = "the final line has no val_bpb"
        return
    scored = next((e for e in reversed(run["evaluations"]) if e["name"] == final.get("eval")), None)
    run.update(finished=True, unfinished_reason=None, val_bpb=final["val_bpb"], val_loss=final.get("val_loss"),
               final_eval=str(final.get("eval")), train_time_ms=final.get("train_time_ms"),
               total_eval_time_ms=final.get("total_eval_time_ms"),
               scored_eval_time_ms=final.get("scored_eval_time_ms"),
               eval_time_ms=scored["eval_time_ms"] if scored else None)
    if is_number(final.get("artifact_bytes")):
        run["artifact_bytes"] = final["artifact_bytes"]


def ours_evaluations(records: list[dict]) -> list[dict]:
    """The `eval:<name>` lines in order; GPTQ (the `artifact` line) runs between two of them."""
    evaluations, pause_ms = [], 0.0
    for r in records:
        if r.get("event") == "artifact":  # Hessians, GPTQ, then (newer logs) serialization, between evaluations
            pause_ms += sum(r[k] for k in ("hessian_time_ms", "gptq_time_ms", "serialize_time_ms") if is_number(r.get(k)))
        if "eval" in r and r.get("event") != "final" and is_number(r.get("val_bpb")):
            evaluations.append({"name": str(r["eval"]), "val_loss": r.get("val_loss"), "val_bpb": r["val_bpb"],
                                "eval_time_ms": r.get("eval_time_ms"), "tokens": r.get("tokens"),
                                "diagnostic": r["eval"] == "pre_quant", "pause_before_ms": pause_ms})
            pause_ms = 0.0
    return evaluations


def ours_train_points(records: list[dict]) -> list[dict]:
    return [{"step": step_number(r.get("step")), "time_s": r["train_time_ms"] / 1000.0, "train_loss": r["train_loss"]}
            for r in records if is_number(r.get("train_loss")) and is_number(r.get("train_time_ms"))]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -----------------------------------------------------------------------------
# Upstream
# -----------------------------------------------------------------------------

SEPARATOR = re.compile(r"^={20,}\s*$")
RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:")  # torchrun's --tee / log-line-prefix
STEP_PREFIX = re.compile(r"^\s*(?:step:\s*)?(\d+)/(\d+)\b")
VAL_BPB = re.compile(rf"(?<![\w.])val_bpb\s*[:=]\s*({NUMBER})")
VAL_LOSS = re.compile(rf"(?<![\w.])val_loss\s*[:=]\s*({NUMBER})")
TIME_TOKEN = r"(?:eval_time|time|eval|elapsed)"
EVAL_TIME = re.compile(rf"(?<![\w.]){TIME_TOKEN}\s*[:=]\s*({NUMBER})\s*(ms|s|m)\b")
TRAIN_TIME = re.compile(rf"(?<![\w.])train_time\s*[:=]\s*({NUMBER})\s*(ms|s|m|min)\b")
STEP_AVG = re.compile(rf"step_avg\s*[:=]\s*({NUMBER})\s*ms")
TRAIN_LOSS = re.compile(rf"(?<![\w.])train_loss\s*[:=]\s*({NUMBER})")
SIZE_LINES = (
    ("code_bytes_compressed", re.compile(rf"^Code size \(compressed\):\s*({NUMBER})\s*bytes")),
    ("code_bytes", re.compile(rf"^Code size(?: \(uncompressed\))?:\s*({NUMBER})\s*bytes")),
    ("model_bytes", re.compile(rf"^Serialized model \S[^:]*:\s*({NUMBER})\s*bytes")),
    ("artifact_bytes", re.compile(rf"^Total submission size \S[^:]*:\s*({NUMBER})\s*bytes")),
    ("raw_artifact_bytes", re.compile(rf"^Total submission size:\s*({NUMBER})\s*bytes")),
)
BUDGET = re.compile(r"(?<![\w.])(?:budget|total)\s*[:=]\s*(\d[\d,]*)\s*/\s*(\d[\d,]*)\b")
CODE_TOKEN = re.compile(r"(?<![\w.])code\s*[:=]\s*(\d+)\b")
SEED_LINE = re.compile(r"^\s*seed\s*[:=]\s*(\d+)\s*$")
SEED_TOKEN = re.compile(r"(?<![\w./])(?:seed|s)\s*[:=]\s*(\d+)\b")
WORLD_SIZE = re.compile(r"(?<![\w.])world_size\s*[:=]\s*(\d+)\b")
VAL_TOKENS = (re.compile(r"(?<![\w.])val_tokens\s*[:=]\s*(\d+)"),
              re.compile(r"^val_loader:.*(?<![\w.])tokens\s*[:=]\s*(\d+)"))
TOKENIZER = re.compile(r"(?<![\w.])tokenizer_path\s*[:=]\s*(\S+)")
TOTAL_EVAL = re.compile(rf"(?<![\w.])total_eval_time\s*[:=]\s*({NUMBER})\s*(ms|s|m)\b", re.IGNORECASE)
STOPPED = re.compile(rf"^stopping_early\b.*?train_time\s*[:=]\s*({NUMBER})\s*(ms|s|m)\b(?:.*?step\s*[:=]\s*(\d+))?")
TORCH = re.compile(r"^Running PyTorch\s+(\S+)")
NVIDIA_SMI_GPU = re.compile(r"^\|\s+(\d+)\s+(NVIDIA [^|]*?|Tesla [^|]*?)\s{2,}(?:On|Off)\s+\|")
MODEL_PARAMS = re.compile(r"(?<![\w.])model_params\s*[:=]\s*(\d+)")
DIAGNOSTIC_NAME = re.compile(r"diagnostic|pre[-_ ]?quant|post[-_ ]?ema", re.IGNORECASE)
TARGET_TOKENS = re.compile(r"(?<![\w.])target_tokens\s*[:=]\s*(\d+)")
TRAIN_SHARDS = re.compile(r"^train_shards\s*[:=]\s*(\d+)")
TOTAL_DOCS = re.compile(r"(?<![\w.])(?:total_docs|val_docs|docs_val)\s*[:=]\s*(\d+)")
# `GPTQ:collected 67 Hessians in 4.7s`, `Hessians collected: 67 layers, 4.6s`, `Hessian collection 815 ms`.
HESSIAN_TIME = re.compile(rf"hessians?\b.*?(?<![\w.])({NUMBER})\s*(ms|s)\b", re.IGNORECASE)
NGRAM_HINTS = re.compile(r"^ngram_tilt:hints\b.*?(?<![\w.])total\s*=\s*(\d+)")
HYPERPARAMETER = re.compile(r"^\s+([A-Za-z_][\w.]*)\s*:\s*(.*?)\s*$")
CASEOPS_ON = re.compile(r"caseops(?:_enabled)?$", re.IGNORECASE)


def source_preamble_end(lines: list[str]) -> int:
    """Upstream logs may open with the script's source, then a line of '='; skip that source.

    Returns the index of the first line after the source (0 when the log has none)."""
    for index, line in enumerate(lines[:20000]):
        if SEPARATOR.match(line):
            head = lines[:index]
            looks_like_code = any(re.match(r"^(import \w|from [\w.]+ import |def \w|class \w)", h) for h in head)
            return index + 1 if looks_like_code else 0
    return 0


def parse_upstream(text: str) -> dict:
    run = empty_run()
    run["dialect"] = "upstream"
    lines = text.splitlines()
    facts: dict = {}
    for line in lines[source_preamble_end(lines):]:
        line = RANK_PREFIX.sub("", line.rstrip("\r"))
        read_hyperparameter(line, run, facts)
        read_upstream_line(line, run, facts)
    finish_upstream(run, facts)
    return run


def read_hyperparameter(line: str, run: dict, facts: dict) -> None:
    """The `Hyperparameters:` block: `  key: value` lines after it, until the first line that is not one."""
    if line.strip() == "Hyperparameters:" and "config_done" not in facts:
        facts["in_config"] = True
        return
    if facts.get("in_config"):
        entry = HYPERPARAMETER.match(line)
        if entry:
            run["config"][entry.group(1)] = entry.group(2)
            if CASEOPS_ON.match(entry.group(1)) and entry.group(2).lower() in ("true", "1"):
                run["sidecar"] = True  # CaseOps trainers read the byte sidecar for BPB
            return
        facts["in_config"], facts["config_done"] = False, True


def read_may_facts(stripped: str, run: dict) -> None:
    """The facts of the May 2026 logs (empty_run's doc); the first mention counts, the Hessian time the last."""
    for key, pattern in (("target_tokens", TARGET_TOKENS), ("train_shards", TRAIN_SHARDS),
                         ("val_documents", TOTAL_DOCS), ("ngram_tilt_hints", NGRAM_HINTS)):
        found = pattern.search(stripped)
        if found and run[key] is None:
            run[key] = int(found.group(1))
    hessian = HESSIAN_TIME.search(stripped)
    if hessian:
        run["hessian_time_ms"] = milliseconds(hessian.group(1), hessian.group(2))


def read_upstream_line(line: str, run: dict, facts: dict) -> None:
    """Record what one line says; later lines overwrite earlier ones for sizes and times."""
    stripped = line.strip()
    if not stripped:
        return
    read_header_facts(line, stripped, run, facts)
    read_may_facts(stripped, run)
    read_size_facts(stripped, run, facts)
    step = STEP_PREFIX.match(stripped)
    if step:
        read_step_line(stripped, int(step.group(1)), run, facts)
    elif VAL_BPB.search(stripped):
        add_evaluation(stripped, run)
    stopped = STOPPED.match(stripped)
    if stopped:
        facts["stopped_ms"] = milliseconds(stopped.group(1), stopped.group(2))
        if stopped.group(3):
            run["steps"] = int(stopped.group(3))
    total = TOTAL_EVAL.search(stripped)
    if total:
        facts["total_eval_ms"] = milliseconds(total.group(1), total.group(2))


def read_header_facts(line: str, stripped: str, run: dict, facts: dict) -> None:
    """Seed, world size, tokenizer, validation tokens, PyTorch and GPUs: the first mention counts."""
    seed = SEED_LINE.match(stripped) or SEED_TOKEN.search(stripped)
    if seed and run["seed"] is None and not stripped.startswith(("warmup", "ttt")):
        run["seed"] = int(seed.group(1))
    for key, pattern in (("world_size", WORLD_SIZE), ("model_params", MODEL_PARAMS)):
        found = pattern.search(stripped)
        if found and run[key] is None:
            run[key] = int(found.group(1))
    for pattern in VAL_TOKENS:
        found = pattern.search(stripped)
        if found and run["val_tokens"] is None:
            run["val_tokens"] = int(found.group(1))
    tokenizer = TOKENIZER.search(stripped)
    if tokenizer and run["tokenizer"] is None:
        run["tokenizer"] = Path(tokenizer.group(1).strip("'\",")).name
    torch = TORCH.match(stripped)
    if torch and run["torch_version"] is None:
        run["torch_version"] = torch.group(1)
    gpu = NVIDIA_SMI_GPU.match(line)
    if gpu:
        facts.setdefault("gpus", {})[int(gpu.group(1))] = gpu.group(2).strip()


def read_size_facts(stripped: str, run: dict, facts: dict) -> None:
    for key, pattern in SIZE_LINES:
        found = pattern.match(stripped)
        if found:
            facts[key] = number(found.group(1))
            return
    budget = BUDGET.search(stripped)
    if budget:
        facts["budget_bytes"] = number(budget.group(1))
        run["artifact_limit_bytes"] = number(budget.group(2))
        code = CODE_TOKEN.search(stripped)  # `artifact:15.86MB code:71002 budget:N/16000000`
        if code:
            facts["code_bytes"] = number(code.group(1))


def read_step_line(stripped: str, step: int, run: dict, facts: dict) -> None:
    """`step:N/M train_loss:.. train_time:..ms` or `N/M val_loss: ..`: the training curves."""
    train_time = TRAIN_TIME.search(stripped)
    time_ms = milliseconds(train_time.group(1), train_time.group(2)) if train_time else None
    if time_ms is not None:
        facts["last_step_ms"] = time_ms
        run["steps"] = step if run["steps"] is None or step > run["steps"] else run["steps"]
    step_avg = STEP_AVG.search(stripped)
    if step_avg:
        run["step_avg_ms"] = float(step_avg.group(1))
    loss = TRAIN_LOSS.search(stripped)
    if loss:
        run["train"].append({"step": step, "time_s": None if time_ms is None else time_ms / 1000.0,
                             "train_loss": float(loss.group(1))})
    bpb = VAL_BPB.search(stripped)
    if bpb:
        val_loss = VAL_LOSS.search(stripped)
        run["train_val"].append({"step": step, "time_s": None if time_ms is None else time_ms / 1000.0,
                                 "val_bpb": float(bpb.group(1)),
                                 "val_loss": float(val_loss.group(1)) if val_loss else None})


def add_evaluation(stripped: str, run: dict) -> None:
    """A score line: its name is the text before the figures; `X_exact` merges into `X`."""
    bpb = VAL_BPB.search(stripped)
    loss = VAL_LOSS.search(stripped)
    first = min(m.start() for m in (bpb, loss) if m)
    name = stripped[:first].strip().rstrip(":").strip() or "eval"
    if ":" in name or "=" in name:
        return  # a progress line (`ttt_sliding:done val_loss=..`): the score line that follows counts
    timed = EVAL_TIME.search(stripped)
    evaluation = {"name": name, "val_bpb": float(bpb.group(1)), "val_loss": float(loss.group(1)) if loss else None,
                  "eval_time_ms": milliseconds(timed.group(1), timed.group(2)) if timed else None,
                  "tokens": None, "diagnostic": bool(DIAGNOSTIC_NAME.search(name))}
    rough = name[: -len("_exact")] if name.endswith("_exact") else None
    for index in range(len(run["evaluations"]) - 1, -1, -1):
        if rough is not None and run["evaluations"][index]["name"] == rough:
            evaluation["eval_time_ms"] = evaluation["eval_time_ms"] or run["evaluations"][index]["eval_time_ms"]
            del run["evaluations"][index]
            break
    run["evaluations"].append(evaluation)


def finish_upstream(run: dict, facts: dict) -> None:
    """Turn the collected facts into the unified figures."""
    scored = [e for e in run["evaluations"] if not e["diagnostic"]]
    if scored:
        score = scored[-1]
        run.update(finished=True, unfinished_reason=None, val_bpb=score["val_bpb"], val_loss=score["val_loss"],
                   final_eval=score["name"], eval_time_ms=score["eval_time_ms"])
    elif run["evaluations"]:
        run["unfinished_reason"] = "only diagnostic evaluations (the scored evaluation never ran)"
    run["train_time_ms"] = run["training_loop_ms"] = facts.get("stopped_ms", facts.get("last_step_ms"))
    timed = [e["eval_time_ms"] for e in run["evaluations"] if e["eval_time_ms"] is not None and not e["diagnostic"]]
    run["total_eval_time_ms"] = facts.get("total_eval_ms", sum(timed) if timed else None)
    run["code_bytes"] = facts.get("code_bytes")
    run["code_bytes_compressed"] = facts.get("code_bytes_compressed")
    run["model_bytes"] = facts.get("model_bytes")
    run["artifact_bytes"] = facts.get("artifact_bytes", facts.get("budget_bytes", facts.get("raw_artifact_bytes")))
    gpus = facts.get("gpus")
    if gpus:
        run.update(device="cuda", gpu_count=len(gpus), gpu_name=sorted(set(gpus.values()))[0].replace(" ", "_"))


# -----------------------------------------------------------------------------
# Curves for the plots
# -----------------------------------------------------------------------------


def as_run(source) -> dict:
    """A run dictionary from a run, our parsed records, or a log's text."""
    if isinstance(source, dict):
        return source
    if isinstance(source, str):
        return parse_run(source)
    return run_from_records(source)


def train_points(source) -> list[dict]:
    """Training-loss curve [{'step', 'time_s', 'train_loss'}]; times missing from a line are
    interpolated by step between the lines that have them."""
    run = as_run(source)
    points = [dict(p) for p in run["train"]]
    fill_times(points, reference=timed_steps(run))
    return [p for p in points if p["time_s"] is not None]


def val_points(source) -> list[dict]:
    """Validation BPB against wall time since training started: [{'name', 'time_s', 'val_bpb'}].

    In-training validations sit at their training time; the evaluations after training follow
    the end of training one after another, each at the time it finished (plus GPTQ for ours)."""
    run = as_run(source)
    during = [dict(p, name="train") for p in run["train_val"]]
    fill_times(during, reference=timed_steps(run))
    points = [{"name": "train", "time_s": p["time_s"], "val_bpb": p["val_bpb"]} for p in during if p["time_s"] is not None]
    clock_ms = float(run["training_loop_ms"] or run["train_time_ms"] or 0.0)
    for evaluation in run["evaluations"]:
        clock_ms += float(evaluation.get("pause_before_ms") or 0.0) + float(evaluation["eval_time_ms"] or 0.0)
        points.append({"name": evaluation["name"], "time_s": clock_ms / 1000.0, "val_bpb": evaluation["val_bpb"]})
    return points


def timed_steps(run: dict) -> list[dict]:
    """Steps with a known time: the training lines, and the last step at the training clock."""
    points = [p for p in run["train"] if p["time_s"] is not None]
    if run["steps"] and is_number(run["training_loop_ms"]):
        points.append({"step": run["steps"], "time_s": run["training_loop_ms"] / 1000.0})
    return points


def fill_times(points: list[dict], reference: list[dict] | None = None) -> None:
    """Give points without a time one interpolated (by step) from points that have one."""
    known = sorted({(p["step"], p["time_s"]) for p in (reference or []) + points
                    if p.get("time_s") is not None and p.get("step") is not None})
    if not known:
        return
    for point in points:
        if point["time_s"] is None and point.get("step") is not None:
            point["time_s"] = interpolate(known, point["step"])


def interpolate(known: list[tuple[int, float]], step: int) -> float:
    """Linear in step between the neighbours; beyond the ends, the nearest end's pace."""
    before = [k for k in known if k[0] <= step]
    after = [k for k in known if k[0] >= step]
    if before and after:
        (s0, t0), (s1, t1) = before[-1], after[0]
        return t0 if s1 == s0 else t0 + (t1 - t0) * (step - s0) / (s1 - s0)
    s_end, t_end = (before or after)[-1 if before else 0]
    pace = t_end / s_end if s_end else 0.0
    return t_end + pace * (step - s_end)

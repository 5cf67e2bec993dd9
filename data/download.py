"""Download the published SP8192 FineWeb export from the Hugging Face hub, verified.

Why: a record run needs the exact published shards and tokenizer (docs/data.md). This tool reads
the export's manifest to learn how many shards exist, fetches the validation shards, the
first N training shards and the tokenizer into the layout `train_gpt.py` reads, checks
every shard's header and size, and leaves verified files alone when run again.

Remote layout (dataset repo `kevclark/parameter-golf`, remote root `datasets`):
  datasets/manifest.json
  datasets/datasets/fineweb10B_sp8192/fineweb_{val,train}_NNNNNN.bin
  datasets/tokenizers/fineweb_8192_bpe.model
Local layout (under --out, default data/): the same paths without the remote root:
  data/manifest.json, data/datasets/fineweb10B_sp8192/…, data/tokenizers/fineweb_8192_bpe.model

The manifest's schema is not documented; the reader accepts, in this order (see
`shard_counts`):
  1. {"datasets": [{"name": "fineweb10B_sp8192", "tokenizer_name": T,
                    "stats": {"files_train": N, "files_val": M}}, …],
      "tokenizers": [{"name": T, "model_path": "tokenizers/….model", …}, …]}
     (the schema the challenge's own downloader reads);
  2. an object with the counts directly, at top level or under the dataset's name:
     {"files_train"|"train_shards"|"num_train_shards": N, "files_val"|"val_shards"|…: M};
  3. a list of file paths ({"files": [...]} or a bare list): shards counted by name.
Anything else stops with an error that shows the manifest's top-level keys.

A complete local copy: the tokenizer, every validation shard and the first N training shards,
each valid, where N is --train-shards when given, else what the last download of that dataset
asked for (recorded in `download.json` beside the manifest), else every shard the manifest
lists. `--check` and the download apply this one rule, so a copy made with --train-shards 80
is complete for `run.sh` (which checks where DATA_PATH and TOKENIZER_PATH point, with
--data-path and --tokenizer-path; a folder outside the standard layout, with no manifest, is
checked for what it holds: contiguous valid shards from 000000).

CaseOps (`--variant caseops`): the export every record since April 2026 trains on, from the dataset
repo `romeerp/parameter-golf-caseops-v1` (same remote root and manifest reading): the dataset folder
`fineweb10B_sp8192_lossless_caps_caseops_v1_reserved`, the tokenizer
`tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model` (its four case operators must be
pieces 4-7), and beside every validation shard its byte sidecar `fineweb_val_bytes_NNNNNN.bin`, which a
complete copy includes. `--check` also verifies each sidecar parallels its shard (same length, 0 at every
BOS) and looks for the #2127 leak: validation documents, found by a hash of their tokens, inside the
training shards (docs/data.md).

Resuming: each file is fetched to `<name>.partial`, verified, then renamed, so a file under
its final name is always complete; an interrupted run is resumed by running it again (files
already present and valid are skipped, invalid ones are fetched again; the hub client also
resumes its own interrupted downloads in its cache). `huggingface_hub` is needed only here,
and only without --hub-dir; tests use --hub-dir, a local folder laid out like the repo.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

if __package__ in (None, ""):  # run as a script: make `data.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_gpt import BOS_ID, load_shard  # noqa: E402  (the one definition of the format)
from train_gpt import read_shard_header as verify_shard  # noqa: E402

DEFAULT_REPO_ID = "kevclark/parameter-golf"
CASEOPS_REPO_ID = "romeerp/parameter-golf-caseops-v1"  # the CaseOps export every record since April uses
CASEOPS_NAME = "lossless_caps_caseops_v1_reserved"
LEAK_SAMPLE_DOCUMENTS = 256  # validation documents hashed to look for in the training shards
LEAK_SCAN_TOKENS = 200_000_000  # training tokens scanned: #2127's leaked documents sit in the first shards
LEAK_MIN_TOKENS = 32  # shorter documents may repeat across the splits by chance
DEFAULT_REMOTE_ROOT = "datasets"
DEFAULT_VOCAB_SIZE = 8192
STATE_FILE = "download.json"  # beside manifest.json: training shards the last download asked for, per dataset
REFRESH_HINT = "the local manifest.json may be stale: fetch it again with --refresh-manifest"
TRAIN_COUNT_KEYS = ("files_train", "train_shards", "num_train_shards", "train_files", "n_train_shards")
VAL_COUNT_KEYS = ("files_val", "val_shards", "num_val_shards", "val_files", "n_val_shards")


class DownloadError(RuntimeError):
    """A failure the user can act on; the message says what and how."""


# -----------------------------------------------------------------------------
# Transports: fetch(remote_path, destination) copies one file of the repo to a local path.
# -----------------------------------------------------------------------------


class DirectoryHub:
    """A local folder laid out like the hub repo (tests, mirrors, offline copies)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DownloadError(f"--hub-dir {self.root} is not a folder")

    def describe(self) -> str:
        return f"local hub folder {self.root}"

    def __call__(self, remote_path: str, destination: Path) -> None:
        source = self.root / remote_path
        if not source.is_file():
            raise DownloadError(f"{remote_path} is not in {self.describe()}")
        shutil.copyfile(source, destination)


class HuggingFaceHub:
    """The real hub, through `huggingface_hub.hf_hub_download` (an optional dependency)."""

    def __init__(self, repo_id: str = DEFAULT_REPO_ID, revision: str | None = None):
        self.repo_id, self.revision = repo_id, revision

    def describe(self) -> str:
        return f"Hugging Face dataset repo {self.repo_id}"

    def __call__(self, remote_path: str, destination: Path) -> None:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            raise DownloadError("the huggingface_hub package is needed to download from the hub: "
                                "pip install huggingface_hub (or use --hub-dir with a local copy)") from None
        try:
            cached = hf_hub_download(repo_id=self.repo_id, filename=remote_path, repo_type="dataset",
                                     revision=self.revision)
        except Exception as error:  # the client raises many kinds: HTTP, connection, offline, 404
            raise DownloadError(f"could not download {remote_path} from {self.describe()}: "
                                f"{type(error).__name__}: {error}. Check the network (or HF_ENDPOINT / "
                                f"HF_HUB_OFFLINE), or use --hub-dir with a local copy.") from None
        source = Path(cached).resolve()
        try:  # the cache blob is immutable: a hard link saves the copy when on the same disk
            os.link(source, destination)
        except OSError:
            shutil.copyfile(source, destination)


Fetch = Callable[[str, Path], None]


# -----------------------------------------------------------------------------
# Manifest
# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the manifest says exists for one dataset."""
    train_shards: int
    val_shards: int
    tokenizer_files: tuple[str, ...]  # paths relative to the remote root


def first_count(entry: dict, keys: tuple[str, ...]) -> int | None:
    for source in (entry, entry.get("stats") if isinstance(entry.get("stats"), dict) else {}):
        for key in keys:
            if isinstance(source.get(key), (int, str)) and str(source[key]).isdigit():
                return int(source[key])
    return None


def counts_from_entry(entry: dict) -> tuple[int, int] | None:
    train, val = first_count(entry, TRAIN_COUNT_KEYS), first_count(entry, VAL_COUNT_KEYS)
    return (train, val) if train is not None and val is not None else None


def tokenizer_files_from(manifest: dict, entry: dict) -> tuple[str, ...]:
    """Schema 1: the tokenizer entry named by the dataset, its model (and vocab) paths."""
    name = entry.get("tokenizer_name")
    for tokenizer in manifest.get("tokenizers") or []:
        if isinstance(tokenizer, dict) and tokenizer.get("name") == name:
            paths = [str(tokenizer[k]) for k in ("model_path", "vocab_path", "path") if tokenizer.get(k)]
            return tuple(relative_to_root(p) for p in paths)
    return ()


def relative_to_root(path: str) -> str:
    """'…/tokenizers/x.model' -> 'tokenizers/x.model' (exporters may write longer paths)."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("tokenizers"):]) if "tokenizers" in parts else path


def counts_from_file_list(files: list, dataset_name: str) -> tuple[int, int] | None:
    pattern = re.compile(rf"(^|/){re.escape(dataset_name)}/fineweb_(train|val)_\d{{6}}\.bin$")
    found = [m.group(2) for f in files if isinstance(f, str) and (m := pattern.search(f))]
    return (found.count("train"), found.count("val")) if found else None


def shard_counts(manifest, dataset_name: str, default_tokenizer: str) -> Plan:
    """Read the shard counts for `dataset_name` from any of the accepted schemas (module doc)."""
    if isinstance(manifest, dict) and isinstance(manifest.get("datasets"), list):
        for entry in manifest["datasets"]:
            if isinstance(entry, dict) and entry.get("name") == dataset_name and (c := counts_from_entry(entry)):
                files = tokenizer_files_from(manifest, entry) or (default_tokenizer,)
                return Plan(c[0], c[1], files)
    if isinstance(manifest, dict):
        for entry in (manifest.get(dataset_name), manifest):
            if isinstance(entry, dict) and (c := counts_from_entry(entry)):
                return Plan(c[0], c[1], (default_tokenizer,))
    files = manifest.get("files") if isinstance(manifest, dict) else manifest
    if isinstance(files, list) and (c := counts_from_file_list(files, dataset_name)):
        return Plan(c[0], c[1], (default_tokenizer,))
    keys = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
    raise DownloadError(f"manifest.json has no shard counts for {dataset_name} in any schema this tool "
                        f"reads (top level: {keys}); {REFRESH_HINT}, and see `python data/download.py --help`")


# -----------------------------------------------------------------------------
# Fetch and verify
# -----------------------------------------------------------------------------


def verify_file(path: Path, kind: str | None = None) -> str:
    """Raise (ValueError / DownloadError) unless `path` is a valid file of its kind.

    `kind` is the suffix of the final name (a `.partial` file is checked as what it will be)."""
    kind = kind or path.suffix
    if kind == ".bin":
        return f"{verify_shard(path)} tokens"
    if kind == ".model":
        return verify_tokenizer(path, expected_name=path.name.removesuffix(".partial"))
    if path.stat().st_size == 0:
        raise DownloadError(f"{path} is empty")
    if kind == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DownloadError(f"{path} is not valid JSON: {error}") from None
    return f"{path.stat().st_size} bytes"


def verify_tokenizer(path: Path, expected_name: str) -> str:
    import sentencepiece as spm

    try:
        processor = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as error:
        raise DownloadError(f"{path} is not a SentencePiece model: {error}") from None
    match = re.search(r"_(\d+)_bpe(_\w+)?\.model$", expected_name)
    if match and processor.vocab_size() != int(match.group(1)):
        raise DownloadError(f"{path} has vocab {processor.vocab_size()}, its name says {match.group(1)}")
    operators = [processor.piece_to_id(op) for op in "\ue001\ue002\ue003\ue004"]
    if "caseops" in expected_name and operators != [4, 5, 6, 7]:
        raise DownloadError(f"{path} is not a CaseOps tokenizer: the four operators are not pieces 4-7")
    return f"vocab {processor.vocab_size()}"


def is_valid(path: Path) -> bool:
    try:
        verify_file(path)
        return True
    except (ValueError, DownloadError, OSError):
        return False


def fetch_verified(fetch: Fetch, remote_path: str, destination: Path, log=print) -> str:
    """Skip a valid local file; else fetch to .partial, verify, rename. Returns what it did."""
    if destination.is_file():
        if is_valid(destination):
            return "present"
        log(f"replacing invalid local file {destination}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    started = time.time()
    fetch(remote_path, partial)
    try:
        detail = verify_file(partial, destination.suffix)
    except (ValueError, DownloadError) as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"downloaded {remote_path} is corrupt: {error}") from None
    os.replace(partial, destination)
    log(f"fetched {destination} ({detail}, {time.time() - started:.1f}s)")
    return "fetched"


def dataset_names(vocab_size: int, variant: str = "sp") -> tuple[str, str]:
    """(dataset folder, tokenizer path) of an export: the plain SP<V> one or the CaseOps one (published: V=8192)."""
    if variant == "caseops":
        return f"fineweb10B_sp{vocab_size}_{CASEOPS_NAME}", f"tokenizers/fineweb_{vocab_size}_bpe_{CASEOPS_NAME}.model"
    return f"fineweb10B_sp{vocab_size}", f"tokenizers/fineweb_{vocab_size}_bpe.model"


def has_sidecar(dataset_name: str) -> bool:
    """CaseOps data carries a byte sidecar per validation shard (docs/data.md)."""
    return "caseops" in dataset_name


def load_manifest(fetch: Fetch, out_dir: Path, remote_root: str, refresh: bool, log=print):
    local = out_dir / "manifest.json"
    if refresh and local.exists():
        local.unlink()
    fetch_verified(fetch, remote_path(remote_root, "manifest.json"), local, log)
    return json.loads(local.read_text(encoding="utf-8"))


def remote_path(remote_root: str, relative: str) -> str:
    return f"{remote_root.strip('/')}/{relative}" if remote_root.strip("/") else relative


def planned_files(plan: Plan, dataset_name: str, train_shards: int | None) -> list[str]:
    """Relative paths (to the remote root and to --out) of every file to have locally."""
    if train_shards is None:
        train_shards = plan.train_shards
    if train_shards > plan.train_shards:
        raise DownloadError(f"--train-shards {train_shards}: the manifest lists only {plan.train_shards} "
                            f"training shards for {dataset_name} ({REFRESH_HINT})")
    folder = f"datasets/{dataset_name}"
    sidecars = [f"{folder}/fineweb_val_bytes_{i:06d}.bin" for i in range(plan.val_shards)]
    return (list(plan.tokenizer_files)
            + [f"{folder}/fineweb_val_{i:06d}.bin" for i in range(plan.val_shards)]
            + sidecars * has_sidecar(dataset_name)
            + [f"{folder}/fineweb_train_{i:06d}.bin" for i in range(train_shards)])


def download(fetch: Fetch, out_dir: Path | str = "data", vocab_size: int = DEFAULT_VOCAB_SIZE,
             train_shards: int | None = None, remote_root: str = DEFAULT_REMOTE_ROOT,
             refresh_manifest: bool = False, workers: int = 4, log=print, variant: str = "sp") -> dict:
    """Fetch manifest, tokenizer, all val shards (CaseOps: and their byte sidecars) and the first
    `train_shards` train shards."""
    out_dir = Path(out_dir)
    dataset_name, default_tokenizer = dataset_names(vocab_size, variant)
    manifest = load_manifest(fetch, out_dir, remote_root, refresh_manifest, log)
    plan = shard_counts(manifest, dataset_name, default_tokenizer)
    files = planned_files(plan, dataset_name, train_shards)

    def one(relative: str) -> str:
        return fetch_verified(fetch, remote_path(remote_root, relative), out_dir / relative, log)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(one, files))
    record_request(out_dir, dataset_name, plan.train_shards if train_shards is None else train_shards)
    model = next((f for f in plan.tokenizer_files if f.endswith(".model")), default_tokenizer)
    return {"dataset_dir": out_dir / "datasets" / dataset_name,
            "tokenizer_path": out_dir / model, "files": len(files),
            "fetched": outcomes.count("fetched"), "present": outcomes.count("present")}


def read_state(out_dir: Path) -> dict:
    path = out_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def record_request(out_dir: Path, dataset_name: str, train_shards: int) -> None:
    state = read_state(out_dir)
    state[dataset_name] = {"train_shards": train_shards}
    (out_dir / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def check_local(out_dir: Path | str = "data", vocab_size: int = DEFAULT_VOCAB_SIZE, train_shards: int | None = None,
                data_path: Path | str | None = None, tokenizer_path: Path | str | None = None,
                variant: str = "sp") -> list[str]:
    """Problems with the local copy (empty list: complete, valid and without leak), by the rule of the module doc.
    data_path / tokenizer_path: where train_gpt.py will read (default: the standard layout under out_dir)."""
    out_dir = Path(out_dir)
    dataset_name, default_tokenizer = dataset_names(vocab_size, variant)
    folder = Path(data_path) if data_path else out_dir / "datasets" / dataset_name
    problems = check_files(out_dir, folder, default_tokenizer, train_shards, data_path, tokenizer_path)
    return problems or sidecar_problems(folder) + leak_problems(folder)


def check_files(out_dir: Path, folder: Path, default_tokenizer: str, train_shards: int | None,
                data_path: Path | str | None, tokenizer_path: Path | str | None) -> list[str]:
    if data_path and (folder.parent.name != "datasets" or not (folder.parent.parent / "manifest.json").is_file()):
        return check_folder(folder, Path(tokenizer_path or out_dir / default_tokenizer), train_shards)
    root = folder.parent.parent if data_path else out_dir
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    plan = shard_counts(json.loads(manifest_path.read_text(encoding="utf-8")), folder.name, default_tokenizer)
    if train_shards is None:
        train_shards = read_state(root).get(folder.name, {}).get("train_shards")
    files = [root / f for f in planned_files(plan, folder.name, train_shards)]
    if tokenizer_path:  # train_gpt.py reads this one, wherever it is
        files = [Path(tokenizer_path)] + [f for f in files if f.suffix == ".bin"]
    return [f"{f} is missing or invalid" for f in files if not is_valid(f)]


def check_folder(folder: Path, tokenizer_path: Path, train_shards: int | None) -> list[str]:
    """A shard folder outside the standard layout: valid shards numbered from 000000 without gaps, at least
    one validation shard and `train_shards` (or at least one) training shards, and a valid tokenizer."""
    problems = [] if is_valid(tokenizer_path) else [f"{tokenizer_path} is missing or invalid"]
    for split, wanted in (("val", None), ("train", train_shards)):
        present = sorted(folder.glob(f"fineweb_{split}_[0-9]*.bin"))
        count = len(present) if wanted is None else wanted
        expected = [folder / f"fineweb_{split}_{i:06d}.bin" for i in range(max(count, 1))]
        problems += [f"{f} is missing or invalid" for f in expected if not is_valid(f)]
        problems += [f"{f} is out of sequence (shards must be numbered from 000000 without gaps)"
                     for f in present if f not in expected and wanted is None]
    return problems


def sidecar_problems(folder: Path) -> list[str]:
    """Each byte sidecar parallels its val shard: as many entries as tokens, 0 at every BOS."""
    problems = []
    for sidecar in sorted(folder.glob("fineweb_val_bytes_[0-9]*.bin")):
        shard = folder / sidecar.name.replace("val_bytes_", "val_")
        tokens, counts = load_shard(shard), load_shard(sidecar)
        if len(tokens) != len(counts):
            problems.append(f"{sidecar} has {len(counts)} entries, {shard.name} {len(tokens)} tokens")
        elif counts[tokens == BOS_ID].any():
            problems.append(f"{sidecar} gives bytes to BOS tokens: not the sidecar of {shard.name}")
    if has_sidecar(folder.name) and not problems and not list(folder.glob("fineweb_val_bytes_[0-9]*.bin")):
        problems.append(f"{folder} is CaseOps data without its byte sidecar fineweb_val_bytes_000000.bin")
    return problems


def documents_of(tokens: np.ndarray) -> list[np.ndarray]:
    """The stream cut at every BOS (each piece starts with its BOS); what precedes the first BOS is dropped."""
    starts = np.flatnonzero(tokens == BOS_ID)
    return np.split(tokens, starts)[1:] if len(starts) else []


def leak_problems(folder: Path, sample: int = LEAK_SAMPLE_DOCUMENTS, scan_tokens: int = LEAK_SCAN_TOKENS) -> list[str]:
    """Challenge issue #2127: validation documents inside the training shards. Hashes the content of `sample`
    validation documents spread over the split and looks for them among the training documents of the first
    `scan_tokens` training tokens (where a too-small validation split puts them). More than 1 % found: a leak."""
    val = np.concatenate([load_shard(p) for p in sorted(folder.glob("fineweb_val_[0-9]*.bin"))])
    documents = [d for d in documents_of(val) if len(d) >= LEAK_MIN_TOKENS]
    if not documents:
        return []
    picked = [documents[i] for i in np.linspace(0, len(documents) - 1, min(sample, len(documents))).astype(int)]
    wanted = {d.tobytes() for d in picked}
    lengths = np.array(sorted({len(d) for d in picked}))
    found, scanned = set(), 0
    for path in sorted(folder.glob("fineweb_train_[0-9]*.bin")):
        tokens = load_shard(path)
        starts = np.append(np.flatnonzero(tokens == BOS_ID), len(tokens))
        candidates = np.flatnonzero(np.isin(np.diff(starts), lengths))  # only documents of a sampled length
        found.update(c for i in candidates if (c := tokens[starts[i]:starts[i + 1]].tobytes()) in wanted)
        scanned += len(tokens)
        if scanned >= scan_tokens:
            break
    if len(found) * 100 <= len(wanted):
        return []
    return [f"LEAK: {len(found)} of {len(wanted)} sampled validation documents are in the training shards "
            f"(challenge issue #2127: a split of fewer than 50,000 validation documents, or shards of two builds "
            f"mixed in one folder); rebuild into an empty folder or download the export again"]


# -----------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-shards", type=non_negative_int,
                        help="how many training shards (default: all the manifest lists)")
    parser.add_argument("--out", type=Path, default=Path("data"), help="local data root (default: data)")
    parser.add_argument("--vocab-size", type=non_negative_int, default=DEFAULT_VOCAB_SIZE,
                        help="which export: fineweb10B_sp<V> (default 8192)")
    parser.add_argument("--variant", choices=("sp", "caseops"), default="sp",
                        help="sp: the plain SP<V> export (default); caseops: the CaseOps SP8192 export, with the "
                             "byte sidecar of its validation shard")
    parser.add_argument("--repo-id", help=f"dataset repo (default {DEFAULT_REPO_ID}; CaseOps: {CASEOPS_REPO_ID})")
    parser.add_argument("--revision", help="repo revision (branch, tag or commit; default: main)")
    parser.add_argument("--remote-root", default=DEFAULT_REMOTE_ROOT,
                        help=f"folder of the export inside the repo (default {DEFAULT_REMOTE_ROOT!r})")
    parser.add_argument("--hub-dir", type=Path, help="read from a local folder laid out like the repo instead")
    parser.add_argument("--refresh-manifest", action="store_true", help="fetch manifest.json again")
    parser.add_argument("--workers", type=non_negative_int, default=4, help="parallel downloads (default 4)")
    parser.add_argument("--check", action="store_true",
                        help="only verify the local copy (no network); exit 1 if incomplete")
    parser.add_argument("--data-path", type=Path, help="with --check: the shard folder to verify (train_gpt's DATA_PATH)")
    parser.add_argument("--tokenizer-path", type=Path,
                        help="with --check: the tokenizer to verify (train_gpt's TOKENIZER_PATH)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.check:
            problems = check_local(args.out, args.vocab_size, args.train_shards, args.data_path, args.tokenizer_path,
                                   args.variant)
            for problem in problems[:20]:
                print(problem)
            where = Path(args.data_path or args.out / "datasets" / dataset_names(args.vocab_size, args.variant)[0])
            shards = len(list(where.glob("fineweb_train_[0-9]*.bin")))
            sidecar = " with byte sidecar" if list(where.glob("fineweb_val_bytes_[0-9]*.bin")) else ""
            print(f"local data complete: {where} (train_shards: {shards}{sidecar}; no validation document found "
                  f"in training)" if not problems else f"{len(problems)} problem(s) with the local data at {where}")
            return 1 if problems else 0
        repo_id = args.repo_id or (CASEOPS_REPO_ID if args.variant == "caseops" else DEFAULT_REPO_ID)
        fetch = DirectoryHub(args.hub_dir) if args.hub_dir else HuggingFaceHub(repo_id, args.revision)
        result = download(fetch, args.out, args.vocab_size, args.train_shards, args.remote_root,
                          args.refresh_manifest, args.workers, variant=args.variant)
    except (DownloadError, ValueError, OSError, json.JSONDecodeError) as error:
        print(f"download.py: error: {error}", file=sys.stderr)
        return 1
    print(f"{result['files']} files: {result['fetched']} fetched, {result['present']} already present; "
          f"DATA_PATH={result['dataset_dir']} TOKENIZER_PATH={result['tokenizer_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

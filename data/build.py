"""Build a tokenizer and train/val shards from any corpus of documents, locally.

Why: the published SP8192 FineWeb export needs the network and ~16 GB; the CPU demo, the
tests and anyone experimenting with another corpus need the same files built from text on
disk (or from the embedded standard-library corpus, `data/corpus.py`). The output is
exactly what `train_gpt.py` reads (docs/data.md):

  <out>/tokenizers/<name>_<V>_bpe.model                 SentencePiece BPE, vocab V
  <out>/datasets/<name>_sp<V>/fineweb_val_000000.bin    the first N documents
  <out>/datasets/<name>_sp<V>/fineweb_train_000000.bin  the rest, shard after shard

Tokenizer: SentencePiece BPE with the published trainer settings (byte_fallback,
split_digits, nmt_nfkc, add_dummy_prefix=False, character_coverage 0.999,
hard_vocab_limit=False, ids pad 0 / bos 1 / eos 2 / unk 3). Unlike the published export
(trained on the first documents of the stream, validation included), the tokenizer here
is trained on the training documents only, so validation text stays unseen.
Shards: a header of 256 little-endian int32 (magic 20240520, version 1, token count), then
uint16 tokens; every document is BOS (id 1) followed by its tokens, no EOS.

Usage:
  python data/build.py                                  # embedded corpus, vocab 8192
  python data/build.py --vocab-size 1024 --out data     # the CPU demo's dataset
  python data/build.py docs.jsonl more/ --name mycorpus # .jsonl ("text" field), files, folders
  python data/build.py --caseops --vocab-size 1024      # CaseOps demo data: own tokenizer + byte sidecar
  python data/build.py docs_selected.jsonl --caseops --tokenizer fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model \
      --name fineweb10B --out data/rebuild              # the challenge's CaseOps data, validation = 50,000 docs
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

if __package__ in (None, ""):  # run as a script: make `data.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_gpt import write_shard  # noqa: E402  (the one definition of the format)

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
DEFAULT_VOCAB_SIZE = 8192
DEFAULT_SHARD_TOKENS = 100_000_000  # the published shard size
CHALLENGE_VAL_DOCUMENTS = 50_000  # the challenge's validation split: its raw documents' first 50,000
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


# -----------------------------------------------------------------------------
# Reading documents
# -----------------------------------------------------------------------------


def read_jsonl(path: Path, text_field: str = "text") -> Iterator[str]:
    """One document per line: the `text_field` string of each JSON object."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ValueError(f"{path}:{line_number}: expected an object with a string {text_field!r} field")
            yield record[text_field]


def input_files(path: Path) -> list[Path]:
    """A file is itself; a folder is its .jsonl and text files, recursively, in sorted order."""
    if path.is_file():
        return [path]
    if path.is_dir():
        wanted = (".jsonl",) + TEXT_SUFFIXES
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    raise FileNotFoundError(f"input {path} does not exist")


def read_documents(paths: Iterable[Path | str], text_field: str = "text") -> list[str]:
    """Documents from .jsonl files (one per line) and text files (one per file), in order."""
    documents: list[str] = []
    for path in paths:
        files = input_files(Path(path))
        if not files:
            raise ValueError(f"input folder {path} holds no .jsonl or text files")
        for file in files:
            if file.suffix.lower() == ".jsonl":
                documents.extend(read_jsonl(file, text_field))
            else:
                documents.append(file.read_text(encoding="utf-8", errors="replace"))
    return documents


# -----------------------------------------------------------------------------
# Tokenizer
# -----------------------------------------------------------------------------


def trainer_settings(vocab_size: int, threads: int = 1, sentence_limit: int = 2_000_000,
                     character_coverage: float = 0.999) -> dict:
    """The published SentencePiece trainer settings (docs/data.md), plus sampling for speed."""
    return dict(
        model_type="bpe", vocab_size=vocab_size, character_coverage=character_coverage,
        byte_fallback=True, split_digits=True, normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
        hard_vocab_limit=False, input_sentence_size=sentence_limit, shuffle_input_sentence=True,
        num_threads=threads, minloglevel=2,
    )


def training_sentences(documents: Iterable[str]) -> Iterator[str]:
    """SentencePiece trains on lines ("sentences"); blank lines carry nothing."""
    for document in documents:
        for line in document.replace("\x00", " ").splitlines():
            if line.strip():
                yield line


def train_tokenizer(documents: list[str], vocab_size: int, threads: int = 1,
                    sentence_limit: int = 2_000_000, user_symbols: tuple[str, ...] = ()) -> bytes:
    """Train the BPE model in memory; return the serialized model (the .model file's bytes).
    `user_symbols` become single pieces right after the specials (CaseOps: its four operators, ids 4-7)."""
    import sentencepiece as spm

    if vocab_size > 65536:
        raise ValueError(f"vocab_size {vocab_size} does not fit uint16 shards (at most 65536)")
    if vocab_size < 260 + len(user_symbols) + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small: {4 + len(user_symbols)} special + 256 byte "
                         f"pieces come first")
    writer = io.BytesIO()
    extra = {"user_defined_symbols": list(user_symbols)} if user_symbols else {}
    spm.SentencePieceTrainer.train(sentence_iterator=training_sentences(documents), model_writer=writer,
                                   **trainer_settings(vocab_size, threads, sentence_limit), **extra)
    return writer.getvalue()


def load_tokenizer(model: bytes | str | Path):
    import sentencepiece as spm

    if isinstance(model, bytes):
        return spm.SentencePieceProcessor(model_proto=model)
    return spm.SentencePieceProcessor(model_file=str(model))


# -----------------------------------------------------------------------------
# Shards
# -----------------------------------------------------------------------------


def document_tokens(processor, documents: list[str], batch_documents: int = 256,
                    threads: int = 1) -> Iterator[np.ndarray]:
    """BOS followed by the document's tokens, one uint16 array per document."""
    for start in range(0, len(documents), batch_documents):
        batch = documents[start:start + batch_documents]
        for ids in processor.encode(batch, out_type=int, num_threads=threads):
            tokens = np.empty(len(ids) + 1, dtype=np.uint16)
            tokens[0] = BOS_ID
            tokens[1:] = ids
            yield tokens


def caseops_arrays(processor, transformed: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per CaseOps document: BOS + its tokens, and the sidecar entries (BOS 0, then each token's original bytes)."""
    from data.caseops import tokens_and_bytes

    for text in transformed:
        ids, counts = tokens_and_bytes(processor, text)
        yield (np.array([BOS_ID] + ids, dtype=np.uint16), np.array([0] + counts, dtype=np.int64))


def write_split(arrays: Iterable[np.ndarray], folder: Path, split: str, shard_tokens: int) -> tuple[list[Path], int]:
    """Concatenate the documents' tokens and cut them into shards of `shard_tokens` tokens.

    Documents run across shard boundaries, as in the published export; the loader and the
    validation stream concatenate shards, so only the order matters."""
    paths: list[Path] = []
    pending: list[np.ndarray] = []
    pending_tokens = total = 0

    def flush(final: bool) -> None:
        nonlocal pending, pending_tokens
        stream = np.concatenate(pending) if pending else np.empty(0, dtype=np.uint16)
        while len(stream) >= shard_tokens or (final and len(stream)):
            path = folder / f"fineweb_{split}_{len(paths):06d}.bin"
            write_shard(path, stream[:shard_tokens])
            paths.append(path)
            stream = stream[shard_tokens:]
        pending, pending_tokens = ([stream] if len(stream) else []), len(stream)

    for tokens in arrays:
        pending.append(tokens)
        pending_tokens += len(tokens)
        total += len(tokens)
        if pending_tokens >= shard_tokens:
            flush(final=False)
    flush(final=True)
    return paths, total


def refuse_other_shards(folder: Path) -> None:
    """A CaseOps build writes only into a folder without shards: mixing a new split with an old one is how 80 %
    of the validation documents ended up in 15 records' training data (challenge issue #2127)."""
    present = sorted(p.name for p in folder.glob("fineweb_*.bin"))
    if present:
        raise ValueError(f"{folder} already holds {len(present)} shard(s) ({present[0]}, ...): a CaseOps build "
                         f"writes into an empty folder only (mixed builds leaked validation into training: challenge "
                         f"issue #2127); remove them or choose another --out")


def check_caseops_tokenizer(processor) -> None:
    from data.caseops import OPERATORS

    ids = [processor.piece_to_id(op) for op in OPERATORS]
    if ids != [4, 5, 6, 7]:
        raise ValueError(f"not a CaseOps tokenizer: its operator pieces have ids {ids}, expected [4, 5, 6, 7] "
                         f"(user-defined symbols after the four specials)")


def remove_stale_shards(folder: Path) -> None:
    """A rebuild with fewer shards must not leave old ones for the loader's glob to find."""
    for pattern in ("fineweb_train_*.bin", "fineweb_val_*.bin"):
        for path in folder.glob(pattern):
            path.unlink()


def output_paths(out_dir: Path | str, name: str, vocab_size: int) -> dict:
    out_dir = Path(out_dir)
    return {
        "dataset_dir": out_dir / "datasets" / f"{name}_sp{vocab_size}",
        "tokenizer_path": out_dir / "tokenizers" / f"{name}_{vocab_size}_bpe.model",
    }


def build_dataset(documents: list[str], out_dir: Path | str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                  val_documents: int | None = None, name: str = "corpus",
                  shard_tokens: int = DEFAULT_SHARD_TOKENS, threads: int = 1,
                  sentence_limit: int = 2_000_000, log=print, caseops: bool = False,
                  tokenizer: bytes | None = None) -> dict:
    """Tokenizer + shards for `documents`; validation is the first `val_documents` documents.

    caseops: the documents go through data/caseops.py's transform first, the tokenizer holds the four operators
    as user-defined symbols, the validation split gets its byte sidecar (fineweb_val_bytes_NNNNNN.bin, cut like
    the val shards), and the output folder must hold no shards. tokenizer: an existing model's bytes (e.g. the
    challenge's CaseOps tokenizer, for a rebuild from its raw documents) instead of training one.

    Returns a dict: dataset_dir, tokenizer_path, train_shards, val_shards (lists of Paths),
    train_tokens, val_tokens, vocab_size, documents, val_documents."""
    documents = [d for d in documents if d.strip()]
    if val_documents is None:
        val_documents = max(1, len(documents) // 10)
    if not 1 <= val_documents < len(documents):
        raise ValueError(f"need 1 <= val_documents < number of non-empty documents ({len(documents)}), "
                         f"got {val_documents}")
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad dataset name {name!r}")
    paths = output_paths(out_dir, name, vocab_size)
    folder = paths["dataset_dir"]
    if caseops:
        from data.caseops import OPERATORS, encode

        refuse_other_shards(folder)
        documents = [encode(d) for d in documents]
    started = time.time()
    model = tokenizer or train_tokenizer(documents[val_documents:], vocab_size, threads, sentence_limit,
                                         OPERATORS if caseops else ())
    paths["tokenizer_path"].parent.mkdir(parents=True, exist_ok=True)
    temporary = paths["tokenizer_path"].with_suffix(".model.tmp")
    temporary.write_bytes(model)
    os.replace(temporary, paths["tokenizer_path"])
    log(f"tokenizer {paths['tokenizer_path']} vocab:{vocab_size} time:{time.time() - started:.1f}s")
    processor = load_tokenizer(model)
    if processor.vocab_size() != vocab_size:
        raise ValueError(f"the tokenizer has {processor.vocab_size()} pieces, not {vocab_size}")
    if caseops:
        check_caseops_tokenizer(processor)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_shards(folder)
    extra = {}
    if caseops:
        pairs = list(caseops_arrays(processor, documents[:val_documents]))
        sidecar_paths, sidecar_total = write_split((b for _, b in pairs), folder, "val_bytes", shard_tokens)
        val_paths, val_tokens = write_split((t for t, _ in pairs), folder, "val", shard_tokens)
        extra = {"sidecar_shards": sidecar_paths, "sidecar_bytes": int(sum(int(b.sum()) for _, b in pairs))}
    else:
        val_paths, val_tokens = write_split(document_tokens(processor, documents[:val_documents], threads=threads),
                                            folder, "val", shard_tokens)
    train_paths, train_tokens = write_split(document_tokens(processor, documents[val_documents:], threads=threads),
                                            folder, "train", shard_tokens)
    log(f"shards {folder} val:{len(val_paths)} files/{val_tokens} tokens "
        f"train:{len(train_paths)} files/{train_tokens} tokens time:{time.time() - started:.1f}s")
    return {**paths, "train_shards": train_paths, "val_shards": val_paths, "train_tokens": train_tokens,
            "val_tokens": val_tokens, "vocab_size": vocab_size, "documents": len(documents),
            "val_documents": val_documents, **extra}


# -----------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("Usage:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path,
                        help=".jsonl files (one document per line), text files (one document each) or folders; "
                             "none: the embedded standard-library corpus")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output root (default: data)")
    parser.add_argument("--name", help="dataset name (default: stdlib for the embedded corpus, else corpus)")
    parser.add_argument("--vocab-size", type=positive_int, default=DEFAULT_VOCAB_SIZE, help="default 8192")
    parser.add_argument("--val-documents", type=positive_int,
                        help="validation = the first N documents (default: 10%% of them)")
    parser.add_argument("--shard-tokens", type=positive_int, default=DEFAULT_SHARD_TOKENS,
                        help="tokens per shard (default 100,000,000)")
    parser.add_argument("--text-field", default="text", help="JSON field holding the text in .jsonl inputs")
    parser.add_argument("--max-documents", type=positive_int, help="use only the first N documents")
    parser.add_argument("--with-source", action="store_true",
                        help="embedded corpus only: add the standard library's .py source files (~11 MB)")
    parser.add_argument("--threads", type=positive_int, default=1, help="SentencePiece threads (default 1)")
    parser.add_argument("--caseops", action="store_true",
                        help="CaseOps: transform the text (data/caseops.py), write the val byte sidecar; "
                             "the output folder must hold no shards")
    parser.add_argument("--tokenizer", type=Path,
                        help="use this SentencePiece model instead of training one (with --caseops: the "
                             "challenge's CaseOps tokenizer; validation is then fixed at 50,000 documents)")
    parser.add_argument("--sentence-limit", type=positive_int, default=2_000_000,
                        help="lines sampled to train the tokenizer (default 2,000,000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.inputs:
            documents = read_documents(args.inputs, args.text_field)
        else:
            from data.corpus import stdlib_documents
            documents = stdlib_documents(include_source=args.with_source)
        if args.max_documents:
            documents = documents[:args.max_documents]
        name = args.name or ("corpus" if args.inputs else "stdlib_src" if args.with_source else "stdlib")
        name += "_caseops" * (args.caseops and not args.name)
        tokenizer = args.tokenizer.read_bytes() if args.tokenizer else None
        val_documents = args.val_documents
        if args.caseops and tokenizer:  # a rebuild of the challenge's data: its split, nothing else
            if val_documents not in (None, CHALLENGE_VAL_DOCUMENTS):
                raise ValueError(f"--val-documents {val_documents}: a CaseOps rebuild with the challenge's tokenizer "
                                 f"keeps the challenge's split, the first {CHALLENGE_VAL_DOCUMENTS:,} documents (a "
                                 f"smaller one puts validation documents into training: issue #2127)")
            val_documents = CHALLENGE_VAL_DOCUMENTS
        result = build_dataset(documents, args.out, args.vocab_size, val_documents, name,
                               args.shard_tokens, args.threads, args.sentence_limit,
                               caseops=args.caseops, tokenizer=tokenizer)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 1
    print(f"DATA_PATH={result['dataset_dir']} TOKENIZER_PATH={result['tokenizer_path']} "
          f"VOCAB_SIZE={result['vocab_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

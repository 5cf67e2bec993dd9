"""CaseOps: the transform round-trips on every string class and on random Unicode; a CaseOps build's byte
sidecar sums to the original text's bytes; on plain SP data the sidecar and the look-up tables agree; the
trainer scores CaseOps data by its sidecar and refuses CaseOps data without one."""
import dataclasses
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_gpt
from conftest import ROOT, TINY_ENV
from data import caseops
from data.caseops import ALLCAPS, CAPNEXT, ESC, TITLE, CaseOpsError, decode, encode


def test_the_spec_example_encodes_as_published():
    assert encode("The NASA Launch of iPhone A") == (
        f"{TITLE}the {ALLCAPS}nasa {TITLE}launch of i{CAPNEXT}phone {TITLE}a")


@pytest.mark.parametrize("text, encoded", [
    ("word", "word"),  # all lower case: copied
    ("A", TITLE + "a"),  # a single capital
    ("I am", TITLE + "i am"),
    ("OK", ALLCAPS + "ok"),  # two or more capitals
    ("Title", TITLE + "title"),
    ("McDonald", f"{TITLE}mc{CAPNEXT}donald"),  # mixed-case runs
    ("iPhone", f"i{CAPNEXT}phone"),
    ("ABc", f"{TITLE}a{CAPNEXT}bc"),
    ("aBC", f"a{CAPNEXT}b{CAPNEXT}c"),
    ("x" + TITLE + "Y", f"x{ESC}{TITLE}{TITLE}y"),  # operators in the input
    (ESC + ESC, ESC + ESC + ESC + ESC),
    ("Ünïcode ÉCOLE Straße", f"Ünïcode É{ALLCAPS}cole {TITLE}stra\u00dfe"),  # non-ASCII letters untouched, split runs
    ("NASA's R2D2 x86", f"{ALLCAPS}nasa's {TITLE}r2{TITLE}d2 x86"),
    ("", ""),
])
def test_every_string_class_round_trips(text, encoded):
    assert encode(text) == encoded
    assert decode(encoded) == text
    assert not any("A" <= c <= "Z" for c in encoded)


def random_text(rng: random.Random, length: int) -> str:
    """Letters of both cases, operators, spaces, and code points from all over Unicode (no surrogates)."""
    pools = [lambda: rng.choice("abcxyzABCXYZ"), lambda: rng.choice(caseops.OPERATORS), lambda: rng.choice(" \n\t.'"),
             lambda: chr(rng.choice([rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)]))]
    return "".join(rng.choice(pools)() for _ in range(length))


def test_random_unicode_round_trips():
    rng = random.Random(20240520)
    for _ in range(3000):
        text = random_text(rng, rng.randrange(0, 40))
        encoded = encode(text)
        assert decode(encoded) == text, repr(text)
        assert encode(decode(encoded)) == encoded


def test_the_demo_corpus_round_trips():
    from data.corpus import stdlib_documents

    documents = stdlib_documents()
    assert sum(map(len, documents)) > 1_000_000
    changed = 0
    for document in documents:
        encoded = encode(document)
        assert decode(encoded) == document
        changed += encoded != document
    assert changed > len(documents) // 2  # the transform did fold capitals


@pytest.mark.parametrize("bad", [
    "Abc",  # an ASCII capital
    TITLE, "a" + CAPNEXT,  # an operator with no letter after it
    TITLE + " a", ALLCAPS + "1",
    CAPNEXT + "a",  # CAPNEXT outside a word
    "a" + TITLE + "b", "ab" + ALLCAPS + "cd",  # TITLE / ALLCAPS inside a word
    ALLCAPS + "a b",  # ALLCAPS on a single letter
    ALLCAPS + "a" + CAPNEXT + "b",
    TITLE + TITLE + "a",
    ESC, ESC + "a",  # ESC must escape an operator character
])
def test_decode_rejects_misplaced_operators(bad):
    with pytest.raises(CaseOpsError):
        decode(bad)


# -----------------------------------------------------------------------------
# The byte sidecar
# -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caseops_build(tmp_path_factory):
    from data.build import build_dataset
    from data.corpus import stdlib_documents

    documents = [d for d in stdlib_documents()[:400] if d.strip()]
    # Documents that exercise the accounting: operators in the text, whitespace the normalizer drops at the ends,
    # NFKC-changed characters, collapsed inner spaces, byte-fallback characters.
    documents[:0] = ["\n\t  The NASA Launch of iPhone A.  \n", f"Escaped {TITLE}TITLE and {ESC}ESC; ＡＢＣ ﬁx  x\u3000",
                     "東京 ☃ 🎉 Ünïcödé   MixedCase iPhone\u200b"]
    out = tmp_path_factory.mktemp("caseops")
    result = build_dataset(documents, out, vocab_size=512, val_documents=43, name="stdlib_caseops",
                           log=lambda *_: None, caseops=True)
    return documents, result


def test_caseops_tokenizer_holds_the_operators_as_user_symbols(caseops_build):
    _, result = caseops_build
    processor = train_gpt.load_tokenizer(str(result["tokenizer_path"]), 512)
    assert [processor.id_to_piece(i) for i in range(4, 8)] == list(caseops.OPERATORS)
    assert processor.encode(f"{TITLE}the") == [4] + processor.encode("the")  # operators break words
    assert all(processor.is_byte(i) for i in range(8, 264))


def test_sidecar_sums_to_the_original_bytes_of_each_document(caseops_build):
    documents, result = caseops_build
    folder = result["dataset_dir"]
    tokens = train_gpt.load_shard(folder / "fineweb_val_000000.bin")
    counts = train_gpt.load_shard(folder / "fineweb_val_bytes_000000.bin").astype(np.int64)
    assert len(tokens) == len(counts) == result["val_tokens"]
    starts = list(np.flatnonzero(tokens == train_gpt.BOS_ID)) + [len(tokens)]
    assert len(starts) - 1 == 43
    for index, (begin, end) in enumerate(zip(starts[:-1], starts[1:])):
        assert counts[begin] == 0  # BOS carries no byte
        operators = (tokens[begin:end] >= 4) & (tokens[begin:end] <= 7)
        original = documents[index]
        assert counts[begin:end].sum() == caseops.stripped_bytes(original), repr(original[:60])
        if not (ESC in original):  # an escaped operator character is text: its token carries 3 bytes
            assert counts[begin:end][operators].sum() == 0
    assert result["sidecar_bytes"] == counts.sum() == sum(caseops.stripped_bytes(d) for d in documents[:43])
    # The look-up tables would count every operator piece as 3 bytes: the sidecar is what makes BPB exact.
    processor = train_gpt.load_tokenizer(str(result["tokenizer_path"]), 512)
    tables = train_gpt.build_byte_tables(processor)
    assert tables.target_bytes(torch.from_numpy(tokens.astype(np.int64))).sum() > counts.sum()


def test_sidecar_and_tables_agree_on_plain_sp_data(tiny_dataset):
    """On text the tokenizer reproduces exactly, the sidecar (by surfaces) and the look-up tables (by pieces) give
    every document the same bytes, and every token that is not a byte piece the same bytes."""
    from data.corpus import stdlib_documents

    processor = train_gpt.load_tokenizer(str(tiny_dataset["tokenizer_path"]), 512)
    tables = train_gpt.build_byte_tables(processor)
    compared = 0
    for document in stdlib_documents()[:120] + ["Ünïcödé 東京 ☃ 🎉 naïve café"]:
        text = processor.decode(processor.encode(document))  # normalized: what the tables describe
        ids, counts = caseops.tokens_and_bytes(processor, text)
        assert ids == processor.encode(text)
        from_tables = tables.target_bytes(torch.tensor([train_gpt.BOS_ID] + ids)).long().tolist()
        assert sum(counts) == sum(from_tables) == len(text.encode("utf-8"))
        plain = [i for i, token in enumerate(ids) if not processor.is_byte(token)]
        assert [counts[i] for i in plain] == [from_tables[i] for i in plain]
        compared += len(plain)
    assert compared > 10_000


def test_caseops_build_refuses_a_folder_with_shards(caseops_build):
    from data.build import build_dataset

    documents, result = caseops_build
    with pytest.raises(ValueError, match="#2127"):
        build_dataset(documents, result["dataset_dir"].parent.parent, vocab_size=512, val_documents=10,
                      name="stdlib_caseops", log=lambda *_: None, caseops=True)


def test_rebuild_with_the_challenge_tokenizer_keeps_50000_validation_documents(caseops_build, tmp_path, capsys):
    from data.build import main

    documents, result = caseops_build
    code = main(["--caseops", "--tokenizer", str(result["tokenizer_path"]), "--vocab-size", "512",
                 "--val-documents", "10000", "--out", str(tmp_path)])
    assert code == 1 and "50,000" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.bin"))


# -----------------------------------------------------------------------------
# The trainer's byte accounting
# -----------------------------------------------------------------------------


def test_trainer_uses_the_sidecar_and_checks_it(caseops_build, tmp_path):
    _, result = caseops_build
    folder = result["dataset_dir"]
    processor = train_gpt.load_tokenizer(str(result["tokenizer_path"]), 512)
    assert train_gpt.find_shards(str(folder), "val") == [str(folder / "fineweb_val_000000.bin")]
    h = train_gpt.Hyperparameters.from_env({"DATA_PATH": str(folder), "EVAL_SEQ_LEN": "64", "VAL_MAX_TOKENS": "2048"})
    tokens = train_gpt.load_validation_tokens(h.data_path, 64, 2048)
    sidecar = train_gpt.load_byte_sidecar(h, tokens, processor)
    counts = train_gpt.load_shard(folder / "fineweb_val_bytes_000000.bin")[:tokens.numel()].astype(np.int64)
    assert torch.equal(sidecar.target_bytes(tokens), torch.from_numpy(counts[1:]).double())
    # A CaseOps tokenizer without a sidecar would count operators as bytes: refused.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "fineweb_val_000000.bin").write_bytes((folder / "fineweb_val_000000.bin").read_bytes())
    h = train_gpt.Hyperparameters.from_env({"DATA_PATH": str(bare), "EVAL_SEQ_LEN": "64", "VAL_MAX_TOKENS": "2048"})
    with pytest.raises(AssertionError, match="no byte sidecar"):
        train_gpt.load_byte_sidecar(h, tokens, processor)
    # A sidecar that is not the val shard's: shifted (bytes on BOS), or shorter.
    shifted = np.roll(train_gpt.load_shard(folder / "fineweb_val_bytes_000000.bin"), 1)
    train_gpt.write_shard(bare / "fineweb_val_bytes_000000.bin", shifted)
    with pytest.raises(AssertionError, match="not the val"):
        train_gpt.load_byte_sidecar(h, tokens, processor)
    train_gpt.write_shard(bare / "fineweb_val_bytes_000000.bin", shifted[:1000])
    with pytest.raises(AssertionError, match="not the val"):
        train_gpt.load_byte_sidecar(h, tokens, processor)
    # Plain SP data: no sidecar, the tables.
    plain = tmp_path / "plain"
    plain.mkdir()
    assert train_gpt.load_byte_sidecar(dataclasses.replace(h, data_path=str(plain)), tokens, plain_processor()) is None


def plain_processor():
    class Plain:  # a tokenizer without the operators: piece_to_id gives unk
        def piece_to_id(self, piece):
            return 0

        def unk_id(self):
            return 0
    return Plain()


def test_caseops_cpu_run_scores_bytes_of_the_text(caseops_build, tmp_path):
    """The CPU pipeline on CaseOps data: the BPB denominator it logs is the sidecar's, i.e. the original text's
    bytes, and val_bpb = val_loss · targets / ln 2 / those bytes."""
    from tools.logparse import read_log

    _, result = caseops_build
    env = {k: v for k, v in os.environ.items() if not k.startswith(train_gpt.ENV_PREFIXES)}
    env.update(TINY_ENV, DATA_PATH=str(result["dataset_dir"]), TOKENIZER_PATH=str(result["tokenizer_path"]),
               LOG_DIR=str(tmp_path), ARTIFACT_PATH=str(tmp_path / "m.ptz"), CHECKPOINT_PATH="", RUN_ID="caseops",
               ITERATIONS="4", VAL_MAX_TOKENS="2048", TTT_EPOCHS="0", EVAL_DIAGNOSTICS="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    records = read_log(tmp_path / "caseops.txt")
    line = next(r for r in records if "val_bytes" in r)
    counts = train_gpt.load_shard(result["dataset_dir"] / "fineweb_val_bytes_000000.bin").astype(np.int64)
    assert line["sidecar"] == 1 and line["val_bytes"] == counts[1:2049].sum()
    final = next(r for r in records if r.get("event") == "final")
    assert math.isclose(final["val_bpb"], final["val_loss"] * 2048 / math.log(2) / line["val_bytes"], rel_tol=1e-6)


# -----------------------------------------------------------------------------
# The CaseOps export: download, check, and the #2127 leak
# -----------------------------------------------------------------------------


def caseops_copy(documents, out, val_documents, tokenizer=None):
    from data.build import build_dataset

    return build_dataset(documents, out, vocab_size=512, val_documents=val_documents, name="fineweb10B",
                         shard_tokens=100_000, log=lambda *_: None, caseops=True, tokenizer=tokenizer)


def fake_caseops_hub(result, root):
    """The CaseOps export's layout: datasets/{manifest.json, datasets/<name>/*, tokenizers/<name>.model}."""
    import json
    import shutil

    from data import download

    name, tokenizer = download.dataset_names(512, "caseops")
    export = root / "datasets"
    shutil.copytree(result["dataset_dir"], export / "datasets" / name)
    (export / "tokenizers").mkdir(parents=True)
    shutil.copyfile(result["tokenizer_path"], export / tokenizer)
    manifest = {"datasets": [{"name": name, "tokenizer_name": "caseops", "stats": {
        "files_train": len(result["train_shards"]), "files_val": len(result["val_shards"])}}],
        "tokenizers": [{"name": "caseops", "model_path": tokenizer}]}
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def test_download_caseops_fetches_the_sidecar_and_checks_it(caseops_build, tmp_path, capsys):
    from data import download

    documents, _ = caseops_build
    result = caseops_copy(documents, tmp_path / "build", 12)
    assert len(result["train_shards"]) >= 3 and len(result["val_shards"]) == 1
    hub = fake_caseops_hub(result, tmp_path / "hub")
    out = tmp_path / "data"
    fetched = download.download(download.DirectoryHub(hub), out, 512, train_shards=2, log=lambda *_: None,
                                variant="caseops")
    folder = fetched["dataset_dir"]
    assert folder.name == "fineweb10B_sp512_lossless_caps_caseops_v1_reserved"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin",
        "fineweb_val_bytes_000000.bin"]
    assert download.check_local(out, 512, variant="caseops") == []
    assert download.main(["--check", "--variant", "caseops", "--vocab-size", "512", "--out", str(out)]) == 0
    assert "train_shards: 2 with byte sidecar" in capsys.readouterr().out
    # The complete-copy rule covers the sidecar: missing, it is fetched again; a wrong one is refused.
    sidecar = folder / "fineweb_val_bytes_000000.bin"
    sidecar.unlink()
    assert download.check_local(out, 512, variant="caseops") == [f"{sidecar} is missing or invalid"]
    counts = train_gpt.load_shard(hub / "datasets" / "datasets" / folder.name / sidecar.name)
    train_gpt.write_shard(sidecar, np.roll(counts, 1))
    assert "BOS" in download.check_local(out, 512, variant="caseops")[0]
    sidecar.unlink()
    again = download.download(download.DirectoryHub(hub), out, 512, log=lambda *_: None, variant="caseops")
    assert again["fetched"] == 1 + len(result["train_shards"]) - 2
    assert download.check_local(out, 512, variant="caseops") == []


def test_check_finds_validation_documents_in_training(caseops_build, tmp_path, capsys):
    """Issue #2127: training shards of a build whose validation split was too small, in a folder whose val shard
    is right. The shard count cannot tell; the documents' content does."""
    from data import download

    documents, _ = caseops_build
    clean = caseops_copy(documents, tmp_path / "clean", 12)
    tokenizer = clean["tokenizer_path"].read_bytes()
    leaky = caseops_copy(documents, tmp_path / "leaky", 3, tokenizer=tokenizer)
    folder, tokenizer_path = clean["dataset_dir"], clean["tokenizer_path"]
    assert download.check_local(tmp_path, 512, data_path=folder, tokenizer_path=tokenizer_path) == []
    for shard in folder.glob("fineweb_train_*.bin"):
        shard.unlink()
    for shard in leaky["train_shards"]:
        (folder / shard.name).write_bytes(shard.read_bytes())
    problems = download.check_local(tmp_path, 512, data_path=folder, tokenizer_path=tokenizer_path)
    assert len(problems) == 1 and problems[0].startswith("LEAK:") and "#2127" in problems[0]
    assert download.main(["--check", "--vocab-size", "512", "--data-path", str(folder), "--tokenizer-path",
                          str(tokenizer_path)]) == 1
    assert "LEAK" in capsys.readouterr().out

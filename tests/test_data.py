"""Tests of data/: the embedded corpus, the local builder, the shard format and the downloader.

The downloader is tested against a fake hub folder (no network): a manifest, shards built by
the builder, and a tokenizer; corrupt and partial files are made on purpose.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from data import build, corpus, download  # noqa: E402
import train_gpt  # noqa: E402
from train_gpt import SHARD_MAGIC  # noqa: E402

HEADER_BYTES = 1024

ROOT = Path(__file__).resolve().parent.parent
TINY_VOCAB = 512


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return corpus.stdlib_documents()


@pytest.fixture(scope="module")
def tiny_build(documents, tmp_path_factory):
    """A vocab-512 dataset of 120 documents, 10 of them validation, in small shards."""
    out = tmp_path_factory.mktemp("built")
    stale = out / "datasets" / "fineweb10B_sp512" / "fineweb_train_000099.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from an earlier build")
    result = build.build_dataset(documents[:120], out, vocab_size=TINY_VOCAB, val_documents=10,
                                 name="fineweb10B", shard_tokens=40_000, log=lambda *_: None)
    return result, documents[:120]


# -----------------------------------------------------------------------------
# Embedded corpus
# -----------------------------------------------------------------------------


def test_corpus_is_large_real_and_deterministic(documents):
    assert len(documents) > 200
    assert corpus.corpus_bytes(documents) > 1_000_000
    assert all(document.strip() for document in documents)
    assert len(set(documents)) == len(documents)
    assert any(document.startswith("Module json") for document in documents)
    assert any("with_stmt" in document or "The \"with\" statement" in document for document in documents)
    assert corpus.stdlib_documents() == documents


def test_corpus_harvest_prints_nothing(capfd):
    corpus.harvest()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_documents_from_harvest_sorts_and_deduplicates():
    harvest = {"topics": {"b": "topic b", "a": "topic a", "empty": "  "},
               "modules": {"zeta": [["", "shared doc"], ["zeta.f", "own doc"]],
                           "alpha": [["", "shared doc"], ["alpha.g", "g doc"]]}}
    documents = corpus.documents_from_harvest(harvest)
    assert sorted(documents) == sorted(["topic a", "topic b", "Module alpha\n\nshared doc\n\nalpha.g\ng doc",
                                        "Module zeta\n\nzeta.f\nown doc"])
    assert documents == corpus.documents_from_harvest(harvest)


def test_corpus_cli(tmp_path):
    assert corpus.main(["--out", str(tmp_path / "c.jsonl")]) == 0
    lines = (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 200 and "text" in json.loads(lines[0])
    with pytest.raises(SystemExit) as exit_info:
        corpus.main([])
    assert exit_info.value.code == 2


# -----------------------------------------------------------------------------
# Shard format
# -----------------------------------------------------------------------------


def test_shard_round_trip_and_errors(tmp_path):
    path = tmp_path / "s.bin"
    tokens = np.array([1, 5, 65535, 0], dtype=np.uint16)
    train_gpt.write_shard(path, tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    assert np.frombuffer(path.read_bytes()[:12], dtype="<i4").tolist() == [SHARD_MAGIC, 1, 4]
    assert train_gpt.load_shard(path, mmap=False).tolist() == tokens.tolist()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="uint16"):
        train_gpt.write_shard(path, np.array([70000]))


def test_write_split_cuts_a_stream_into_exact_shards(tmp_path):
    arrays = [np.arange(n, dtype=np.uint16) for n in (7, 3, 12, 1)]
    paths, total = build.write_split(iter(arrays), tmp_path, "train", shard_tokens=5)
    assert total == 23 and len(paths) == 5
    assert [p.name for p in paths][0] == "fineweb_train_000000.bin"
    joined = np.concatenate([train_gpt.load_shard(p, mmap=False) for p in paths])
    assert joined.tolist() == np.concatenate(arrays).tolist()
    assert [train_gpt.read_shard_header(p) for p in paths] == [5, 5, 5, 5, 3]


# -----------------------------------------------------------------------------
# Builder
# -----------------------------------------------------------------------------


def test_build_layout_and_stale_shards(tiny_build):
    result, _ = tiny_build
    assert result["dataset_dir"].name == "fineweb10B_sp512"
    assert result["tokenizer_path"].name == "fineweb10B_512_bpe.model"
    assert result["tokenizer_path"].parent.name == "tokenizers"
    assert result["dataset_dir"].parent.name == "datasets"
    names = sorted(p.name for p in result["dataset_dir"].iterdir())
    assert "fineweb_train_000099.bin" not in names
    assert names == sorted(p.name for p in result["train_shards"] + result["val_shards"])
    assert len(result["train_shards"]) > 1
    assert sum(train_gpt.read_shard_header(p) for p in result["train_shards"]) == result["train_tokens"]


def test_build_documents_are_bos_plus_tokens(tiny_build):
    result, documents = tiny_build
    processor = build.load_tokenizer(result["tokenizer_path"])
    stream = np.concatenate([train_gpt.load_shard(p, mmap=False) for p in result["val_shards"]])
    starts = np.flatnonzero(stream == build.BOS_ID)
    assert stream[0] == build.BOS_ID and len(starts) == 10
    assert build.EOS_ID not in stream and stream.max() < TINY_VOCAB
    pieces = np.split(stream, starts[1:])
    for piece, document in zip(pieces, documents[:10]):
        assert piece[1:].tolist() == processor.encode(document)
    train = np.concatenate([train_gpt.load_shard(p, mmap=False) for p in result["train_shards"]])
    assert int((train == build.BOS_ID).sum()) == 110


def test_build_tokenizer_has_published_settings(tiny_build):
    processor = build.load_tokenizer(tiny_build[0]["tokenizer_path"])
    assert processor.vocab_size() == TINY_VOCAB
    assert [processor.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (processor.pad_id(), processor.bos_id(), processor.eos_id(), processor.unk_id()) == (0, 1, 2, 3)
    assert processor.encode("2024", out_type=str) == ["2", "0", "2", "4"]  # split_digits
    assert not processor.encode("hello", out_type=str)[0].startswith("\u2581")  # no dummy prefix
    assert processor.encode("\U0001d11e", out_type=str) == ["<0xF0>", "<0x9D>", "<0x84>", "<0x9E>"]  # byte_fallback
    assert processor.decode(processor.encode("\ufb01le")) == "file"  # NFKC: the ligature is two letters


def test_build_rejects_bad_arguments(tmp_path):
    documents = ["one document", "another", "a third"]
    with pytest.raises(ValueError, match="val_documents"):
        build.build_dataset(documents, tmp_path, vocab_size=TINY_VOCAB, val_documents=3)
    with pytest.raises(ValueError, match="uint16"):
        build.train_tokenizer(documents, 70000)
    with pytest.raises(ValueError, match="too small"):
        build.train_tokenizer(documents, 100)


def test_read_documents_from_jsonl_text_and_folders(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "first"}\n\n{"text": "second", "id": 2}\n', encoding="utf-8")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("third", encoding="utf-8")
    (folder / "sub" / "c.md").write_text("fourth", encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\0")
    assert build.read_documents([tmp_path / "a.jsonl", folder]) == ["first", "second", "third", "fourth"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*'text'"):
        build.read_documents([tmp_path / "bad.jsonl"])
    (tmp_path / "broken.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        build.read_documents([tmp_path / "broken.jsonl"])
    with pytest.raises(FileNotFoundError):
        build.read_documents([tmp_path / "missing"])


def test_build_cli(tmp_path, documents):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents[:40]), encoding="utf-8")
    run = subprocess.run([sys.executable, str(ROOT / "data" / "build.py"), str(source), "--out", str(tmp_path / "out"),
                          "--vocab-size", "512", "--val-documents", "4", "--name", "demo"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "DATA_PATH=" in run.stdout and (tmp_path / "out/datasets/demo_sp512/fineweb_val_000000.bin").is_file()
    assert (tmp_path / "out/tokenizers/demo_512_bpe.model").is_file()
    assert build.main([str(tmp_path / "missing.jsonl")]) == 1
    with pytest.raises(SystemExit) as exit_info:
        build.main(["--vocab-size", "zero"])
    assert exit_info.value.code == 2


# -----------------------------------------------------------------------------
# Downloader, against a fake hub folder
# -----------------------------------------------------------------------------


class CountingFetch:
    """Wraps a transport and records which remote paths were actually fetched."""

    def __init__(self, inner):
        self.inner, self.fetched = inner, []

    def __call__(self, remote_path, destination):
        self.fetched.append(remote_path)
        self.inner(remote_path, destination)


def make_fake_hub(tiny_build, root: Path, manifest=None) -> Path:
    """The published layout: <root>/datasets/{manifest.json, datasets/fineweb10B_sp512/*, tokenizers/*}."""
    result, _ = tiny_build
    export = root / "datasets"
    shutil.copytree(result["dataset_dir"], export / "datasets" / "fineweb10B_sp512")
    (export / "tokenizers").mkdir(parents=True)
    shutil.copyfile(result["tokenizer_path"], export / "tokenizers" / "fineweb_512_bpe.model")
    if manifest is None:
        manifest = {"datasets": [{"name": "fineweb10B_sp512", "tokenizer_name": "sp_bpe_512",
                                  "stats": {"files_train": len(result["train_shards"]),
                                            "files_val": len(result["val_shards"])}}],
                    "tokenizers": [{"name": "sp_bpe_512", "model_path": "tokenizers/fineweb_512_bpe.model"}]}
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def test_download_fetches_verifies_and_skips(tiny_build, tmp_path):
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    fetch = CountingFetch(download.DirectoryHub(hub))
    out = tmp_path / "data"
    result = download.download(fetch, out, vocab_size=TINY_VOCAB, train_shards=2, log=lambda *_: None)
    folder = out / "datasets" / "fineweb10B_sp512"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert (out / "tokenizers" / "fineweb_512_bpe.model").is_file() and (out / "manifest.json").is_file()
    assert result["fetched"] == 4 and len(fetch.fetched) == 5  # + the manifest
    assert all(path.startswith("datasets/") for path in fetch.fetched)
    assert download.check_local(out, TINY_VOCAB, 2) == []
    fetch.fetched.clear()
    again = download.download(fetch, out, vocab_size=TINY_VOCAB, train_shards=2, log=lambda *_: None)
    assert fetch.fetched == [] and again["present"] == 4


def test_download_replaces_partial_local_file(tiny_build, tmp_path):
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    out = tmp_path / "data"
    download.download(download.DirectoryHub(hub), out, TINY_VOCAB, train_shards=1, log=lambda *_: None)
    shard = out / "datasets" / "fineweb10B_sp512" / "fineweb_train_000000.bin"
    complete = shard.read_bytes()
    shard.write_bytes(complete[: len(complete) // 2])  # an interrupted copy
    (shard.parent / "fineweb_val_000000.bin.partial").write_bytes(b"junk")  # a leftover temp file
    assert download.check_local(out, TINY_VOCAB, 1) == [f"{shard} is missing or invalid"]
    fetch = CountingFetch(download.DirectoryHub(hub))
    download.download(fetch, out, TINY_VOCAB, train_shards=1, log=lambda *_: None)
    assert fetch.fetched == ["datasets/datasets/fineweb10B_sp512/fineweb_train_000000.bin"]
    assert shard.read_bytes() == complete


def test_download_detects_corrupt_hub_shard(tiny_build, tmp_path):
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    bad = hub / "datasets" / "datasets" / "fineweb10B_sp512" / "fineweb_train_000001.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    out = tmp_path / "data"
    with pytest.raises(download.DownloadError, match="fineweb_train_000001.bin is corrupt"):
        download.download(download.DirectoryHub(hub), out, TINY_VOCAB, train_shards=2, workers=1,
                          log=lambda *_: None)
    folder = out / "datasets" / "fineweb10B_sp512"
    assert not (folder / "fineweb_train_000001.bin").exists()
    assert not (folder / "fineweb_train_000001.bin.partial").exists()


def test_download_rejects_bad_tokenizer_and_too_many_shards(tiny_build, tmp_path):
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    with pytest.raises(download.DownloadError, match="lists only"):
        download.download(download.DirectoryHub(hub), tmp_path / "a", TINY_VOCAB, train_shards=99,
                          log=lambda *_: None)
    (hub / "datasets" / "tokenizers" / "fineweb_512_bpe.model").write_bytes(b"not a model")
    with pytest.raises(download.DownloadError, match="not a SentencePiece model"):
        download.download(download.DirectoryHub(hub), tmp_path / "b", TINY_VOCAB, train_shards=0,
                          log=lambda *_: None)


@pytest.mark.parametrize("manifest, expected", [
    ({"datasets": [{"name": "fineweb10B_sp8192", "tokenizer_name": "t", "stats": {"files_train": 80, "files_val": 1}}],
      "tokenizers": [{"name": "t", "model_path": "/x/tokenizers/a.model", "vocab_path": "tokenizers/a.vocab"}]},
     (80, 1, ("tokenizers/a.model", "tokenizers/a.vocab"))),
    ({"fineweb10B_sp8192": {"train_shards": 5, "val_shards": "2"}}, (5, 2, ("tokenizers/fineweb_8192_bpe.model",))),
    ({"num_train_shards": 3, "num_val_shards": 1}, (3, 1, ("tokenizers/fineweb_8192_bpe.model",))),
    (["datasets/fineweb10B_sp8192/fineweb_train_000000.bin", "datasets/fineweb10B_sp8192/fineweb_val_000000.bin",
      "datasets/fineweb10B_sp8192/fineweb_train_000001.bin", "datasets/fineweb10B_sp1024/fineweb_val_000000.bin"],
     (2, 1, ("tokenizers/fineweb_8192_bpe.model",))),
])
def test_manifest_schemas(manifest, expected):
    plan = download.shard_counts(manifest, "fineweb10B_sp8192", "tokenizers/fineweb_8192_bpe.model")
    assert (plan.train_shards, plan.val_shards, plan.tokenizer_files) == expected


def test_manifest_unknown_schema_is_a_clear_error():
    with pytest.raises(download.DownloadError, match=r"no shard counts .*top level: \['version'\]"):
        download.shard_counts({"version": 2}, "fineweb10B_sp8192", "tokenizers/x.model")


def test_hub_transport_errors_are_clear(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(download.DownloadError, match="pip install huggingface_hub"):
        download.HuggingFaceHub()("datasets/manifest.json", tmp_path / "m")

    def unreachable(**kwargs):
        raise OSError("Failed to resolve 'huggingface.co'")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=unreachable))
    with pytest.raises(download.DownloadError, match="could not download datasets/manifest.json .*Check the network"):
        download.HuggingFaceHub()("datasets/manifest.json", tmp_path / "m")


def test_download_cli(tiny_build, tmp_path, capsys):
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    out = tmp_path / "data"
    common = ["--out", str(out), "--vocab-size", "512", "--train-shards", "1"]
    assert download.main(common + ["--check"]) == 1
    assert download.main(common + ["--hub-dir", str(hub)]) == 0
    assert "3 files: 3 fetched" in capsys.readouterr().out
    assert download.main(common + ["--check"]) == 0
    assert download.main(common + ["--hub-dir", str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    run = subprocess.run([sys.executable, str(ROOT / "data" / "download.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and "manifest" in run.stdout


def test_check_and_download_agree_on_a_partial_copy(tiny_build, tmp_path, capsys):
    """After `--train-shards 1` of 2, the check (as run.sh calls it: no --train-shards, where DATA_PATH
    and TOKENIZER_PATH point) finds the copy complete, and a second download fetches nothing."""
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    out = tmp_path / "data"
    download.download(download.DirectoryHub(hub), out, TINY_VOCAB, train_shards=1, log=lambda *_: None)
    folder = out / "datasets" / "fineweb10B_sp512"
    tokenizer = out / "tokenizers" / "fineweb_512_bpe.model"
    assert download.check_local(out, TINY_VOCAB) == []
    assert download.check_local(out, TINY_VOCAB, data_path=folder, tokenizer_path=tokenizer) == []
    assert download.check_local(out, TINY_VOCAB, 2) == [f"{folder / 'fineweb_train_000001.bin'} is missing or invalid"]
    shards = len(tiny_build[0]["train_shards"])
    assert download.main(["--check", "--out", str(out), "--vocab-size", "512", "--data-path", str(folder),
                          "--tokenizer-path", str(tokenizer)]) == 0
    assert "local data complete" in capsys.readouterr().out
    fetch = CountingFetch(download.DirectoryHub(hub))
    download.download(fetch, out, TINY_VOCAB, log=lambda *_: None)  # no --train-shards: everything
    assert sorted(fetch.fetched) == [f"datasets/datasets/fineweb10B_sp512/fineweb_train_{i:06d}.bin" for i in range(1, shards)]
    assert download.check_local(out, TINY_VOCAB) == []


def test_check_a_folder_outside_the_layout(tiny_build, tmp_path):
    result, _ = tiny_build
    folder = tmp_path / "elsewhere"
    shutil.copytree(result["dataset_dir"], folder)
    tokenizer = result["tokenizer_path"]
    assert download.check_local(tmp_path, TINY_VOCAB, data_path=folder, tokenizer_path=tokenizer) == []
    assert download.check_local(tmp_path, TINY_VOCAB, 5, data_path=folder, tokenizer_path=tokenizer) == [
        f"{folder / f'fineweb_train_{i:06d}.bin'} is missing or invalid" for i in range(len(result["train_shards"]), 5)]
    (folder / "fineweb_train_000000.bin").rename(folder / "fineweb_train_000007.bin")
    problems = download.check_local(tmp_path, TINY_VOCAB, data_path=folder, tokenizer_path=tokenizer)
    assert any("out of sequence" in p for p in problems) and any("000000.bin is missing" in p for p in problems)
    assert download.check_local(tmp_path, TINY_VOCAB, data_path=folder, tokenizer_path=tmp_path / "none.model") \
        [0].endswith("none.model is missing or invalid")


def test_a_stale_manifest_says_how_to_refresh_it(tiny_build, tmp_path):
    hub = make_fake_hub(tiny_build, tmp_path / "hub")
    out = tmp_path / "data"
    download.download(download.DirectoryHub(hub), out, TINY_VOCAB, train_shards=1, log=lambda *_: None)
    (out / "manifest.json").write_text(json.dumps({"version": 1}), encoding="utf-8")
    with pytest.raises(download.DownloadError, match="--refresh-manifest"):
        download.check_local(out, TINY_VOCAB)
    with pytest.raises(download.DownloadError, match="--refresh-manifest"):
        download.planned_files(download.Plan(2, 1, ()), "fineweb10B_sp512", 3)

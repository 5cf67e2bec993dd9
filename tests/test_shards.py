"""Shard format: round trip, and every malformed shard rejected before training starts."""
import numpy as np
import pytest

import train_gpt


def test_round_trip(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 8192, size=5000)
    path = tmp_path / "fineweb_train_000000.bin"
    train_gpt.write_shard(path, tokens)
    assert path.stat().st_size == 1024 + 2 * tokens.size
    assert np.array_equal(train_gpt.load_shard(path), tokens)
    assert np.array_equal(train_gpt.load_shard(path, mmap=False), tokens)


def _corrupt(path, offset, value):
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda p: _corrupt(p, 0, 12345), "bad magic"),
    (lambda p: _corrupt(p, 4, 2), "unsupported shard version"),
    (lambda p: _corrupt(p, 8, 99), "header says 99 tokens"),
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), "truncated or corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "shorter than"),
])
def test_bad_shards_are_rejected(tmp_path, damage, message):
    path = tmp_path / "fineweb_val_000000.bin"
    train_gpt.write_shard(path, np.arange(100))
    damage(path)
    with pytest.raises(ValueError, match=message):
        train_gpt.find_shards(str(tmp_path), "val")


def test_missing_shards_name_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="fineweb_train_"):
        train_gpt.find_shards(str(tmp_path), "train")


def test_loader_windows_come_from_the_shards_and_restart(tmp_path):
    train_gpt.write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(1000) % 500)
    train_gpt.write_shard(tmp_path / "fineweb_train_000001.bin", 500 + np.arange(700) % 300)
    loader = train_gpt.TrainLoader(str(tmp_path), seq_len=32, rank=0, world_size=1, seed=3)
    first = loader.next_batch(8, "cpu")
    assert first.shape == (8, 33)
    diffs = first[:, 1:] - first[:, :-1]  # windows are contiguous runs of a shard
    assert ((diffs == 1) | (diffs == -499) | (diffs == -299)).all()
    loader.reset()
    assert torch_equal(loader.next_batch(8, "cpu"), first)


def test_validation_stream_is_truncated_to_whole_windows(tmp_path):
    train_gpt.write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(300))
    train_gpt.write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(300, 450))
    tokens = train_gpt.load_validation_tokens(str(tmp_path), seq_len=64)
    assert tokens.numel() == 7 * 64 + 1 and tokens[-1].item() == 448


def torch_equal(a, b):
    return bool((a == b).all())

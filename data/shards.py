"""The shard file format (SPEC §2), shared by the builder, the downloader and their tests.

A shard is a header of 256 little-endian int32 (`[0]` = 20240520 magic, `[1]` = 1 version,
`[2]` = number of tokens, the rest zero) followed by the tokens as little-endian uint16, so
its size is exactly 1024 + 2·n bytes. `train_gpt.py` reads the same format in its DATA
section; this copy exists so that the data tools do not import torch.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(ValueError):
    """A file that is not a valid shard; the message says why."""


def shard_header(token_count: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, token_count
    return header.tobytes()


def write_shard(path: Path | str, tokens: np.ndarray) -> None:
    """Write atomically: a reader never sees a half-written shard under the final name."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 65536):
        raise ValueError("token ids must fit uint16")
    if tokens.size >= 2**31:
        raise ValueError("too many tokens for one shard (the count is an int32)")
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(shard_header(int(tokens.size)))
        handle.write(tokens.astype("<u2", copy=False).tobytes())
    os.replace(temporary, path)


def verify_shard(path: Path | str) -> int:
    """Check magic, version and size; return the token count or raise ShardError."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    with open(path, "rb") as handle:
        header = np.frombuffer(handle.read(HEADER_BYTES), dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: magic {int(header[0])}, expected {SHARD_MAGIC}")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: version {int(header[1])}, expected {SHARD_VERSION}")
    count = int(header[2])
    if count < 0 or size != HEADER_BYTES + 2 * count:
        raise ShardError(f"{path}: {size} bytes, but the header's {count} tokens need {HEADER_BYTES + 2 * count}")
    return count


def read_shard(path: Path | str) -> np.ndarray:
    """The tokens of a verified shard, as uint16."""
    count = verify_shard(path)
    return np.fromfile(path, dtype="<u2", count=count, offset=HEADER_BYTES)

"""Sparse disk images made with truncate + pwrite, as a hypervisor leaves them."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

MiB = 1 << 20


def make_sparse(path: Path, size: int, pieces: list[tuple[int, int]], seed: int = 7) -> bytes | None:
    """Create `path` of `size` bytes with random data at `pieces`; returns the whole content when small."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for offset, length in pieces:
            os.pwrite(fd, rng.randbytes(length), offset)
    finally:
        os.close(fd)
    return path.read_bytes() if size <= 256 * MiB else None


# 4 KiB-aligned pieces separated by holes: what SEEK_DATA must report exactly
PIECES = [(1 * MiB, 64 << 10), (8 * MiB, MiB), (20 * MiB - 4096, 8192), (31 * MiB, MiB)]
SIZE = 32 * MiB


@pytest.fixture
def sparse_disk(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "disk one-flat.vmdk"
    return path, make_sparse(path, SIZE, PIECES)

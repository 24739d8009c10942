"""Extent lists: incremental adds agree with a full merge; sparse files report their data extents."""

from __future__ import annotations

import os
import random

from inventory.connectors.lab.extents import add, allocated, clip, coalesce


def test_add_agrees_with_coalesce():
    rng = random.Random(5)
    for _ in range(200):
        extents, added = [], []
        for _ in range(rng.randint(1, 40)):
            extent = (rng.randrange(0, 10_000), rng.randint(0, 300))
            added.append(extent)
            extents = add(extents, *extent)
        assert extents == coalesce(added)
        assert all(a[0] + a[1] < b[0] for a, b in zip(extents, extents[1:], strict=False))


def test_clip_and_allocated(tmp_path):
    assert clip([(0, 10), (20, 10)], 5, 20) == [(5, 5), (20, 5)]
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(16 << 20)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"x" * 8192, 1 << 20)
        os.pwrite(fd, b"y" * 4096, 8 << 20)
    finally:
        os.close(fd)
    assert allocated(path) == [(1 << 20, 8192), (8 << 20, 4096)]
    assert allocated(path, 4 << 20) == [(1 << 20, 8192)]

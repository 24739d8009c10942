"""Extent lists: sorted, non-overlapping (offset, length) pairs, and what a sparse file holds."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable

Extent = tuple[int, int]


def coalesce(extents: Iterable[Extent]) -> list[Extent]:
    """Sort and merge overlapping or touching extents; empty ones are dropped."""
    merged: list[list[int]] = []
    for offset, length in sorted((int(o), int(n)) for o, n in extents if n > 0):
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset + length - merged[-1][0])
        else:
            merged.append([offset, length])
    return [(o, n) for o, n in merged]


def add(extents: list[Extent], offset: int, length: int) -> list[Extent]:
    """A new list with one extent added (merging only its neighbours, so large lists stay cheap)."""
    if length <= 0:
        return extents
    start = max(bisect_left(extents, (offset, 0)) - 1, 0)
    end = start
    while end < len(extents) and extents[end][0] <= offset + length:
        end += 1
    return extents[:start] + coalesce([*extents[start:end], (offset, length)]) + extents[end:]


def clip(extents: Iterable[Extent], offset: int, length: int) -> list[Extent]:
    """The parts of `extents` inside [offset, offset + length)."""
    stop = offset + length
    out = []
    for o, n in extents:
        lo, hi = max(o, offset), min(o + n, stop)
        if lo < hi:
            out.append((lo, hi - lo))
    return out


def allocated(path: str | os.PathLike, size: int | None = None) -> list[Extent]:
    """Data extents of a sparse file, found with SEEK_DATA/SEEK_HOLE (never reading the data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size if size is None else size
        out: list[Extent] = []
        pos = 0
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            out.append((data, hole - data))
            pos = hole
        return out
    finally:
        os.close(fd)


def total(extents: Iterable[Extent]) -> int:
    return sum(n for _, n in extents)

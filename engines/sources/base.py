"""The source interface: a disk to back up (image file, block device, or HTTPS range reads).

The backup pipeline asks a source which byte ranges hold data (`extents`), then worker threads
call `read_into` concurrently for chunk-sized pieces, so network latency is hidden by
parallel reads. A source must be safe to read from several threads at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator


class Source(ABC):
    #: capacity of the disk in bytes
    size: int

    @abstractmethod
    def extents(self) -> Iterator[tuple[int, int]]:
        """(offset, length) ranges that may hold data, ascending, non-overlapping.

        Sparse-aware (SEEK_DATA/SEEK_HOLE) for files; the changed extents when a CBT list was
        given; the whole disk when the source cannot tell.
        """

    @abstractmethod
    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill `buf` from `offset` (positional, thread-safe); returns bytes read (short only at the end)."""

    def close(self) -> None:  # noqa: B027 - optional hook: sources without resources need nothing
        """Release files or connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

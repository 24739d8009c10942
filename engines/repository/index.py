"""The set of chunk ids on the target, kept compact: 32 bytes per chunk instead of ~100 for a set.

A backup lists the 256 chunk folders once at its start; each folder's ids are sorted into one
bytes buffer and looked up by bisection, so a repository of millions of chunks fits the
appliance's memory budget. Ids added during the backup go to a small ordinary set.
"""

from __future__ import annotations

from bisect import bisect_left

from engines.repository import format as fmt


class _SortedIds:
    """A read-only sequence view of a buffer of sorted 32-byte ids (for bisect)."""

    def __init__(self, ids: list[bytes]):
        ids.sort()
        self.buf = b"".join(ids)

    def __len__(self) -> int:
        return len(self.buf) // fmt.ID_SIZE

    def __getitem__(self, i: int) -> bytes:
        return self.buf[i * fmt.ID_SIZE : (i + 1) * fmt.ID_SIZE]

    def __contains__(self, chunk_id: bytes) -> bool:
        i = bisect_left(self, chunk_id)
        return i < len(self) and self[i] == chunk_id


class ChunkIndex:
    def __init__(self) -> None:
        self._folders: dict[int, _SortedIds] = {}
        self._added: set[bytes] = set()

    def add_folder(self, prefix: int, ids: list[bytes]) -> None:
        self._folders[prefix] = _SortedIds(ids)

    def add(self, chunk_id: bytes) -> None:
        self._added.add(chunk_id)

    def __contains__(self, chunk_id: bytes) -> bool:
        folder = self._folders.get(chunk_id[0])
        return chunk_id in self._added or (folder is not None and chunk_id in folder)

    def __len__(self) -> int:
        return sum(len(f) for f in self._folders.values()) + len(self._added)

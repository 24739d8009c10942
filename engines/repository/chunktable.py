"""A disk's chunk table: chunk index -> 32-byte chunk id, compact enough for multi-terabyte disks.

A dict of int -> bytes costs about 200 bytes per entry (a 2 TiB disk of 1 MiB chunks: ~400 MiB).
Here indexes live in segments of 4,096 positions, each a bytearray of ids plus one presence byte
per position, allocated only where the disk has data: 33 bytes per position of a used segment,
nothing for holes. Iteration is in ascending index order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping

ID_SIZE = 32
SEGMENT_BITS = 12
SEGMENT = 1 << SEGMENT_BITS
MASK = SEGMENT - 1
PRESENT = b"\x01"


class ChunkTable(MutableMapping):
    __slots__ = ("_segments", "_len")

    def __init__(self, items: Mapping[int, bytes] | Iterable[tuple[int, bytes]] = ()):
        self._segments: dict[int, tuple[bytearray, bytearray]] = {}  # segment -> (ids, presence)
        self._len = 0
        self.update_from(items.items() if isinstance(items, Mapping) else items)

    def update_from(self, pairs: Iterable[tuple[int, bytes]]) -> None:
        """Set many entries (the fast path of loading a manifest)."""
        segments, added = self._segments, 0
        for index, cid in pairs:
            if index < 0 or len(cid) != ID_SIZE:
                raise ValueError(f"bad chunk table entry: index {index}, id of {len(cid)} bytes")
            segment = segments.get(index >> SEGMENT_BITS)
            if segment is None:
                segment = segments[index >> SEGMENT_BITS] = (bytearray(SEGMENT * ID_SIZE), bytearray(SEGMENT))
            position = index & MASK
            if not segment[1][position]:
                segment[1][position] = 1
                added += 1
            segment[0][position * ID_SIZE:(position + 1) * ID_SIZE] = cid
        self._len += added

    def __len__(self) -> int:
        return self._len

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        segment = self._segments.get(index >> SEGMENT_BITS)
        return segment is not None and segment[1][index & MASK] == 1

    def __getitem__(self, index: int) -> bytes:
        segment = self._segments.get(index >> SEGMENT_BITS) if index >= 0 else None
        if segment is None or not segment[1][index & MASK]:
            raise KeyError(index)
        offset = (index & MASK) * ID_SIZE
        return bytes(segment[0][offset:offset + ID_SIZE])

    def __setitem__(self, index: int, cid: bytes) -> None:
        if index < 0:
            raise KeyError(index)
        if len(cid) != ID_SIZE:
            raise ValueError(f"a chunk id is {ID_SIZE} bytes, not {len(cid)}")
        segment = self._segments.get(index >> SEGMENT_BITS)
        if segment is None:
            segment = self._segments[index >> SEGMENT_BITS] = (bytearray(SEGMENT * ID_SIZE), bytearray(SEGMENT))
        position = index & MASK
        if not segment[1][position]:
            segment[1][position] = 1
            self._len += 1
        segment[0][position * ID_SIZE:(position + 1) * ID_SIZE] = cid

    def __delitem__(self, index: int) -> None:
        segment = self._segments.get(index >> SEGMENT_BITS) if index >= 0 else None
        if segment is None or not segment[1][index & MASK]:
            raise KeyError(index)
        segment[1][index & MASK] = 0
        self._len -= 1

    def __iter__(self) -> Iterator[int]:
        for number in sorted(self._segments):
            base, presence = number << SEGMENT_BITS, self._segments[number][1]
            position = presence.find(PRESENT)
            while position >= 0:
                yield base + position
                position = presence.find(PRESENT, position + 1)

    def items(self) -> Iterator[tuple[int, bytes]]:  # type: ignore[override]
        for number in sorted(self._segments):
            base, (ids, presence) = number << SEGMENT_BITS, self._segments[number]
            view = memoryview(ids)
            position = presence.find(PRESENT)
            while position >= 0:
                yield base + position, bytes(view[position * ID_SIZE:(position + 1) * ID_SIZE])
                position = presence.find(PRESENT, position + 1)

    def values(self) -> Iterator[bytes]:  # type: ignore[override]
        return (cid for _, cid in self.items())

    def copy(self) -> ChunkTable:
        table = ChunkTable()
        table._segments = {n: (bytearray(ids), bytearray(presence)) for n, (ids, presence) in self._segments.items()}
        table._len = self._len
        return table

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(self) == len(other) and all(other.get(i) == cid for i, cid in self.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ChunkTable({self._len} chunks)"

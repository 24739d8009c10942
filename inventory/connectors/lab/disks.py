"""Lab virtual disks: a chain of sparse image files, like VMware's base disk and snapshot deltas.

`chain[0]` is the base image (a raw sparse file of the disk's capacity). Each snapshot freezes
the current top and adds a delta; a delta is a sparse file of the same size plus the list of
extents written into it, so a read is the base overlaid with every delta in order. Removing a
snapshot copies its child delta into the frozen file (consolidation) and deletes the delta.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from inventory.connectors.base import ConnectorError
from inventory.connectors.lab import extents as ext

IO_SIZE = 4 << 20


def create_image(path: Path, capacity: int) -> None:
    """A new empty sparse image (reads as zeros, takes no space)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(capacity)


class DiskChain:
    """One virtual disk as stored in the lab inventory: {"capacity_bytes", "chain": [{"file", "written"}]}."""

    def __init__(self, folder: Path, disk: dict):
        self.folder = folder
        self.disk = disk
        self.capacity = int(disk["capacity_bytes"])

    @property
    def links(self) -> list[dict]:
        return self.disk["chain"]

    def path(self, index: int = -1) -> Path:
        return self.folder / self.links[index]["file"]

    def paths(self, upto: int = -1) -> list[Path]:
        stop = len(self.links) if upto == -1 else upto + 1
        return [self.folder / link["file"] for link in self.links[:stop]]

    def index_of(self, relative: str) -> int:
        for i, link in enumerate(self.links):
            if link["file"] == relative:
                return i
        raise KeyError(relative)

    # -- reading ---------------------------------------------------------------------
    def read(self, offset: int, length: int, upto: int = -1) -> bytes:
        """The disk's bytes as seen at chain position `upto` (-1 = the running VM's view)."""
        buf = bytearray(max(0, min(length, self.capacity - offset)))
        with self._open(upto) as files:
            self._read_into(files, memoryview(buf), offset)
        return bytes(buf)

    @contextmanager
    def _open(self, upto: int) -> Iterator[list[tuple[int, list]]]:
        """The chain's files up to `upto`, opened once: (fd, written extents) pairs, base first."""
        stop = len(self.links) if upto == -1 else upto + 1
        with ExitStack() as stack:
            yield [
                (stack.enter_context(open(self.folder / link["file"], "rb")).fileno(), link["written"])
                for link in self.links[:stop]
            ]

    @staticmethod
    def _read_into(files: list[tuple[int, list]], view: memoryview, offset: int) -> None:
        (base, _), *deltas = files
        got = os.preadv(base, [view], offset)
        view[got:] = bytes(len(view) - got)
        for fd, written in deltas:
            for o, n in ext.clip(written, offset, len(view)):
                os.preadv(fd, [view[o - offset:o - offset + n]], o)

    def allocated(self, upto: int = -1) -> list[ext.Extent]:
        """Extents holding data in this view: the base's data extents plus everything written to deltas."""
        stop = len(self.links) if upto == -1 else upto + 1
        found = ext.allocated(self.path(0), self.capacity)
        for link in self.links[1:stop]:
            found.extend(tuple(e) for e in link["written"])
        return ext.coalesce(found)

    def digest(self, upto: int = -1) -> str:
        """SHA-256 of the whole disk as seen at chain position `upto`."""
        h = hashlib.sha256()
        buf = memoryview(bytearray(IO_SIZE))
        with self._open(upto) as files:
            for offset in range(0, self.capacity, IO_SIZE):
                view = buf[:min(IO_SIZE, self.capacity - offset)]
                self._read_into(files, view, offset)
                h.update(view)
        return h.hexdigest()

    # -- changing --------------------------------------------------------------------
    def write(self, offset: int, data: bytes) -> None:
        """Write into the top of the chain (the base, or the newest delta)."""
        if offset < 0 or offset + len(data) > self.capacity:
            raise ConnectorError(
                f"A write of {len(data)} bytes at offset {offset} falls outside the {self.capacity}-byte disk."
            )
        fd = os.open(self.path(-1), os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        top = self.links[-1]
        if len(self.links) > 1:
            top["written"] = ext.add([tuple(e) for e in top["written"]], offset, len(data))

    def freeze(self, delta_relative: str) -> str:
        """Freeze the current top (a snapshot): new writes go to a new empty delta; returns the frozen file."""
        frozen = self.links[-1]["file"]
        create_image(self.folder / delta_relative, self.capacity)
        self.links.append({"file": delta_relative, "written": []})
        return frozen

    def consolidate(self, index: int) -> Path:
        """Merge delta `index` into its parent and drop it from the chain.

        Returns the delta's path: the caller deletes it once the inventory is saved, so a crash
        in between leaves a chain that still reads the same.
        """
        if index < 1 or index >= len(self.links):
            raise ValueError(f"Chain position {index} is not a delta.")
        parent, child = self.links[index - 1], self.links[index]
        written = [tuple(e) for e in child["written"]]
        with open(self.folder / child["file"], "rb") as src, open(self.folder / parent["file"], "r+b") as dst:
            for offset, length in written:
                for pos in range(offset, offset + length, IO_SIZE):
                    n = min(IO_SIZE, offset + length - pos)
                    os.pwrite(dst.fileno(), os.pread(src.fileno(), n, pos), pos)
            os.fsync(dst.fileno())
        if parent["written"] is not None:
            parent["written"] = ext.coalesce([*(tuple(e) for e in parent["written"]), *written])
        del self.links[index]
        return self.folder / child["file"]

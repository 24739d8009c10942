"""A disk image file or a block device (hot-add), read sparse-aware with positional reads."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any

from engines.errors import SourceError, SourceNotFound
from engines.sources import validate_extents
from engines.sources.base import Source


class FileSource(Source):
    """Reads `path`; `changed_extents` (from CBT) limits `extents()` to exactly those ranges."""

    def __init__(self, path: str | os.PathLike, changed_extents: Iterable[Any] | None = None):
        self.path = os.fspath(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceNotFound(
                f"Disk {self.path!r} does not exist: check the path or that the disk is attached."
            ) from None
        except PermissionError:
            raise SourceError(
                f"Cannot read disk {self.path!r}: permission denied; run the engine as a user that may read it."
            ) from None
        mode = os.fstat(self._fd).st_mode
        self.is_block_device = stat.S_ISBLK(mode)
        if self.is_block_device:
            # st_size is 0 for block devices; the end offset is the capacity
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
        elif stat.S_ISREG(mode):
            self.size = os.fstat(self._fd).st_size
        else:
            os.close(self._fd)
            what = "a folder" if stat.S_ISDIR(mode) else "neither a disk image file nor a block device"
            raise SourceError(f"{self.path!r} is {what}: give the path of a disk image or block device.")
        self.changed_extents = None if changed_extents is None else validate_extents(changed_extents, self.size)
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger kernel read-ahead
        except OSError:
            pass

    def extents(self) -> Iterator[tuple[int, int]]:
        if self.changed_extents is not None:
            yield from self.changed_extents
        elif self.is_block_device:
            if self.size:
                yield (0, self.size)
        else:
            yield from self._data_extents()

    def _data_extents(self) -> Iterator[tuple[int, int]]:
        offset = 0
        while offset < self.size:
            try:
                start = os.lseek(self._fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset: the rest is a hole
                    return
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # file system cannot tell
                    yield (offset, self.size - offset)
                    return
                raise
            end = min(os.lseek(self._fd, start, os.SEEK_HOLE), self.size)
            if end > start:
                yield (start, end - start)
            offset = end

    def read_into(self, offset: int, buf: memoryview) -> int:
        view = memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" else buf
        want = min(len(view), max(0, self.size - offset))
        done = 0
        while done < want:
            try:
                n = os.preadv(self._fd, [view[done:want]], offset + done)
            except OSError as exc:
                raise SourceError(
                    f"Reading disk {self.path!r} at offset {offset + done} failed ({exc.strerror}): "
                    "check the disk and the storage it lives on."
                ) from exc
            if n == 0:
                break
            done += n
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

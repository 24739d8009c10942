"""The restore writer: puts a disk back into a file or block device from concurrent workers.

Workers call `write(offset, data)` in any order (positional writes, no ordering needed).
Files are truncated to the disk size first, so chunks never written (zero chunks) stay holes;
a block device keeps its old bytes there unless `write_zeros=True`. `finish()` flushes and
optionally compares a whole-disk digest with the one recorded at backup time.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterable

from engines.errors import DigestMismatch, RestoreError

ZERO_BLOCK = bytes(1 << 20)
DIGEST_BLOCK = 4 << 20


def _is_zero(data: memoryview) -> bool:
    # compares in 1 MiB pieces against a shared zero block: a memcmp, no allocation
    for start in range(0, len(data), len(ZERO_BLOCK)):
        piece = data[start : start + len(ZERO_BLOCK)]
        if piece != ZERO_BLOCK[: len(piece)]:
            return False
    return True


def _new_hash(algorithm: str):
    if algorithm == "blake3":
        import blake3

        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    try:
        return hashlib.new(algorithm)
    except ValueError:
        raise RestoreError(f"Unknown digest algorithm {algorithm!r}: use sha256 or blake3.") from None


def disk_digest(path: str | os.PathLike, size: int | None = None, algorithm: str = "sha256") -> str:
    """Hex digest of the first `size` bytes of a file or block device (holes read as zeros)."""
    digest = _new_hash(algorithm)
    buf = bytearray(DIGEST_BLOCK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if size is None:
            size = os.lseek(fd, 0, os.SEEK_END)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        offset = 0
        while offset < size:
            n = os.preadv(fd, [view[: min(DIGEST_BLOCK, size - offset)]], offset)
            if n == 0:
                raise RestoreError(f"{os.fspath(path)!r} ends at {offset} bytes, before the disk size {size}.")
            digest.update(view[:n])
            offset += n
    finally:
        os.close(fd)
    return digest.hexdigest()


class DiskWriter:
    """Writes one restored disk of `size` bytes to `path` (a file, created or replaced, or a block device)."""

    def __init__(self, path: str | os.PathLike, size: int, *, write_zeros: bool = False):
        self.path = os.fspath(path)
        self.size = size
        self.write_zeros = write_zeros
        self.bytes_written = 0
        self._lock = threading.Lock()
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = 0
        self.is_block_device = stat.S_ISBLK(mode)
        flags = os.O_WRONLY | os.O_CLOEXEC | (0 if self.is_block_device else os.O_CREAT)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            raise RestoreError(f"Cannot create {self.path!r}: its folder does not exist; create it first.") from None
        except PermissionError:
            raise RestoreError(f"Cannot write {self.path!r}: permission denied; choose a writable place.") from None
        except IsADirectoryError:
            raise RestoreError(f"{self.path!r} is a folder: give the path of the disk file to write.") from None
        try:
            if self.is_block_device:
                capacity = os.lseek(self._fd, 0, os.SEEK_END)
                if capacity < size:
                    raise RestoreError(
                        f"Block device {self.path!r} holds {capacity} bytes, less than the disk's {size}: "
                        "attach a device at least as large."
                    )
            else:
                # drop old contents first so every chunk not written reads back as a hole
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, size)
        except OSError as exc:
            os.close(self._fd)
            raise RestoreError(f"Cannot prepare {self.path!r} for a disk of {size} bytes ({exc.strerror}).") from exc
        except RestoreError:
            os.close(self._fd)
            raise

    def preallocate(self, runs: Iterable[tuple[int, int]]) -> None:
        """Reserve space for data runs up front, so out-of-order writes get contiguous extents."""
        if self.is_block_device:
            return
        for offset, length in runs:
            try:
                os.posix_fallocate(self._fd, offset, length)
            except OSError as exc:
                raise self._write_error(offset, exc) from exc

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `offset`; an all-zero piece is skipped (left a hole) unless zeros are wanted."""
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise RestoreError(f"A write at {offset} of {len(view)} bytes falls outside the disk of {self.size} bytes.")
        if not self.write_zeros and _is_zero(view):
            return
        self._pwrite_all(offset, view)

    def zero(self, offset: int, length: int) -> None:
        """Mark a zero range (a chunk the backup did not store): written only when zeros are wanted."""
        if not self.write_zeros:
            return
        end = offset + length
        while offset < end:
            n = min(len(ZERO_BLOCK), end - offset)
            self._pwrite_all(offset, memoryview(ZERO_BLOCK)[:n])
            offset += n

    def _pwrite_all(self, offset: int, view: memoryview) -> None:
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as exc:
                raise self._write_error(offset + done, exc) from exc
        with self._lock:
            self.bytes_written += done

    def _write_error(self, offset: int, exc: OSError) -> RestoreError:
        return RestoreError(
            f"Writing the restored disk {self.path!r} at offset {offset} failed ({exc.strerror}): "
            "free space or pick another destination, then restore again."
        )

    def finish(self, expected_digest: str | None = None, algorithm: str = "sha256") -> str | None:
        """Flush to stable storage; with `expected_digest`, read the disk back and compare."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise self._write_error(0, exc) from exc
        finally:
            self.close()
        if expected_digest is None:
            return None
        actual = disk_digest(self.path, self.size, algorithm)
        if actual != expected_digest.lower():
            raise DigestMismatch(
                f"The restored disk {self.path!r} does not match the backup: {algorithm} {actual}, "
                f"expected {expected_digest}; run verify on the repository and restore again."
            )
        return actual

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DiskWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

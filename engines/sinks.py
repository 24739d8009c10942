"""The restore writer: puts a disk back into a file or block device from concurrent workers.

Workers call `write(offset, data)` in any order (positional writes, no ordering needed).
Files are truncated to the disk size first, so chunks never written (zero chunks) stay holes;
a block device keeps its old bytes there unless `write_zeros=True`. `finish()` flushes and
optionally compares a whole-disk digest with the one recorded at backup time.

Aligned pieces go straight to the device with O_DIRECT, from an aligned copy: a restore
writes gigabytes once and never reads them back, and pushing them through the page cache
cost more than the whole rest of the restore (allocating fresh pages, dirty-page throttling,
then a long final fsync). With `io_threads`, `write` only makes that copy and queues it, so
the caller goes back to decompressing while the device works. Unaligned pieces (a disk's
short tail) and file systems without direct IO go through the page cache. See
docs/performance.md, "Restore".
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import stat
import threading
from collections.abc import Iterable

from engines.errors import DigestMismatch, RestoreError

ZERO_BLOCK = bytes(1 << 20)
DIGEST_BLOCK = 4 << 20
# O_DIRECT needs buffer, offset and length aligned to the logical block size (512 B or 4 KiB)
ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_ALIGNED_ZEROS = mmap.mmap(-1, len(ZERO_BLOCK))  # anonymous memory reads as zeros and is page-aligned


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

    def __init__(self, path: str | os.PathLike, size: int, *, write_zeros: bool = False, io_threads: int = 0):
        self.path = os.fspath(path)
        self.size = size
        self.write_zeros = write_zeros
        self.bytes_written = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # each thread's aligned copy buffer for direct writes
        self._dfd = -1
        self._direct = False
        self._error: BaseException | None = None  # the first failure of a queued write
        self._todo: queue.Queue = queue.Queue()
        self._free: queue.Queue = queue.Queue()  # aligned buffers not in flight (None: not made yet)
        self._io: list[threading.Thread] = []
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
        if _O_DIRECT:
            try:
                self._dfd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | _O_DIRECT)
                self._direct = True
            except OSError:  # the file system has no direct IO (EINVAL): the page cache it is
                pass
        if self._direct and io_threads > 0:
            for _ in range(io_threads + 2):  # a few more buffers than writes in flight keep callers going
                self._free.put(None)
            self._io = [threading.Thread(target=self._io_loop, name=f"disk-writer-{i}", daemon=True)
                        for i in range(io_threads)]
            for t in self._io:
                t.start()

    @property
    def direct(self) -> bool:
        """Whether aligned writes still bypass the page cache."""
        return self._direct

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
        if self._io and self._direct and offset % ALIGN == 0 and len(view) % ALIGN == 0:
            self._queue(offset, view)
        else:
            self._pwrite_all(offset, view)

    def _queue(self, offset: int, view: memoryview) -> None:
        self._raise_failure()
        buf = self._free.get()  # blocks while every buffer is in flight: the device sets the pace
        if buf is None or len(buf) < len(view):
            buf = mmap.mmap(-1, -(-len(view) // mmap.PAGESIZE) * mmap.PAGESIZE)
        memoryview(buf)[: len(view)] = view
        self._todo.put((offset, buf, len(view)))

    def _io_loop(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                self._todo.task_done()
                return
            offset, buf, n = item
            try:
                if self._error is None:
                    self._pwrite_all(offset, memoryview(buf)[:n], aligned=True)
            except BaseException as exc:  # noqa: B036 - raised in the caller's thread by write() or flush()
                with self._lock:
                    self._error = self._error or exc
            finally:
                self._free.put(buf)
                self._todo.task_done()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Wait for every queued write; raises the first one that failed."""
        if self._io:
            self._todo.join()
        self._raise_failure()

    def zero(self, offset: int, length: int) -> None:
        """Mark a zero range (a chunk the backup did not store): written only when zeros are wanted."""
        if not self.write_zeros:
            return
        end = offset + length
        while offset < end:
            n = min(len(ZERO_BLOCK), end - offset)
            self._pwrite_all(offset, memoryview(_ALIGNED_ZEROS)[:n], aligned=True)
            offset += n

    def _aligned_copy(self, view: memoryview) -> memoryview:
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < len(view):
            if buf is not None:
                buf.close()
            buf = self._local.buf = mmap.mmap(-1, -(-len(view) // mmap.PAGESIZE) * mmap.PAGESIZE)
        out = memoryview(buf)[: len(view)]
        out[:] = view
        return out

    def _pwrite_all(self, offset: int, view: memoryview, aligned: bool = False) -> None:
        """Write all of `view` at `offset`: directly when aligned and possible, else through the page cache."""
        total = len(view)
        if self._direct and offset % ALIGN == 0 and total % ALIGN == 0:
            if not aligned:
                view = self._aligned_copy(view)
            done = self._pwrite_direct(offset, view)
            view, offset = view[done:], offset + done
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as exc:
                raise self._write_error(offset + done, exc) from exc
        with self._lock:
            self.bytes_written += total

    def _pwrite_direct(self, offset: int, view: memoryview) -> int:
        """Bytes written with O_DIRECT; stops early (for the page cache to finish) on a short or refused write."""
        done = 0
        while done < len(view):
            try:
                n = os.pwrite(self._dfd, view[done:], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise self._write_error(offset + done, exc) from exc
                self._direct = False  # stricter alignment than ALIGN: the page cache from now on
                return done
            done += n
            if n == 0 or n % ALIGN:
                return done
        return done

    def _write_error(self, offset: int, exc: OSError) -> RestoreError:
        return RestoreError(
            f"Writing the restored disk {self.path!r} at offset {offset} failed ({exc.strerror}): "
            "free space or pick another destination, then restore again."
        )

    def finish(self, expected_digest: str | None = None, algorithm: str = "sha256") -> str | None:
        """Flush to stable storage; with `expected_digest`, read the disk back and compare."""
        try:
            self.flush()
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
        """Stop the writer threads (after the writes already queued) and close the disk."""
        for _ in self._io:
            self._todo.put(None)
        for t in self._io:
            t.join()
        self._io = []
        self._direct = False
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DiskWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

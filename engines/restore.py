"""Restore: fetch, authenticate, decompress and write each chunk of a disk, in any order.

Workers write their own chunks with positional writes; zero chunks are never written, so a
file output keeps them as holes. The optional digest check reads the output back and
recomputes the restore point's whole-disk digest.

Each chunk is authenticated by AES-GCM with its id as associated data: only the repository
key can make a blob that opens under that id, so a damaged, truncated, swapped or forged
blob is refused. The restore does not re-hash the plaintext with keyed BLAKE3 (about 15 %
of its CPU): that re-hash could only catch a key holder who sealed other bytes under an id,
i.e. a faulty backup writer, which `verify` (it keeps the re-hash) and the whole-disk digest
check (`check_digest`) catch end to end. The plaintext length is still checked against the
chunk's place in the disk.
"""

from __future__ import annotations

import os
import stat
import threading
import time

import zstandard

from engines.backup import Cancelled, chunk_ranges
from engines.errors import DigestMismatch, RestoreError, TargetNotFound
from engines.progress import Emit, Progress
from engines.repository import format as fmt
from engines.repository.keys import IntegrityError
from engines.repository.store import Repository
from engines.sinks import DiskWriter
from engines.sources.file import FileSource
from engines.workers import run_parallel

IO_THREADS = 2  # direct writes in flight while the workers decompress the next chunks


def _runs(indexes: list[int], chunk_size: int, size: int) -> list[tuple[int, int]]:
    """Byte runs covered by consecutive chunk indexes (for preallocation)."""
    runs: list[tuple[int, int]] = []
    for index in indexes:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return [(s * chunk_size, min(e * chunk_size, size) - s * chunk_size) for s, e in runs]


def _fetch(repo: Repository, chunk_id: bytes, length: int, scratch: dict) -> memoryview:
    """One chunk's plaintext, authenticated and decompressed; IntegrityError names what is wrong."""
    try:
        blob = repo.target.get(fmt.chunk_path(chunk_id))
    except TargetNotFound:
        raise IntegrityError("missing from the target") from None
    flags, plain = repo.keys.open_into(blob, chunk_id, scratch["buf"])
    if flags & fmt.FLAG_ZSTD:
        try:
            plain = memoryview(scratch["dctx"].decompress(plain, max_output_size=repo.chunk_size))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"does not decompress ({exc})") from None
    if len(plain) != length:
        raise IntegrityError(f"holds {len(plain)} bytes where the disk needs {length}")
    return plain


def restore_disk(repo: Repository, manifest: fmt.Manifest, disk_name: str, output: str, *, threads: int = 2,
                 check_digest: bool = False, emit: Emit | None = None,
                 cancel: threading.Event | None = None) -> dict:
    cancel = cancel or threading.Event()
    disk = next((d for d in manifest.disks if d.name == disk_name), None)
    if disk is None:
        names = ", ".join(d.name for d in manifest.disks)
        raise RestoreError(f"Restore point {manifest.id} has no disk {disk_name!r}; its disks are: {names}.")
    cs = manifest.chunk_size
    t0 = time.monotonic()
    try:
        block = stat.S_ISBLK(os.stat(output).st_mode)
    except FileNotFoundError:
        block = False
    indexes = sorted(disk.chunks)
    writer = DiskWriter(output, disk.size, write_zeros=block, io_threads=IO_THREADS)
    try:
        writer.preallocate(_runs(indexes, cs, disk.size))
        if block:  # a device keeps old bytes: zero chunks must be written
            present = set(indexes)
            for index in range(-(-disk.size // cs)):
                if index not in present:
                    writer.zero(index * cs, min(cs, disk.size - index * cs))

        def handle(index: int, scratch: dict) -> None:
            if not scratch:
                scratch["buf"] = bytearray(repo.blob_capacity())
                scratch["dctx"] = zstandard.ZstdDecompressor()
            try:
                plain = _fetch(repo, disk.chunks[index], min(cs, disk.size - index * cs), scratch)
            except IntegrityError as exc:
                raise RestoreError(
                    f"Chunk {disk.chunks[index].hex()} of disk {disk.name!r} at offset {index * cs} is damaged "
                    f"({exc}): run verify, then restore from another restore point.", code="chunk_corrupt") from None
            writer.write(index * cs, plain)
            progress.add(len(plain))

        total = sum(min(cs, disk.size - i * cs) for i in indexes)
        with Progress(emit, "restore", total) as progress:
            run_parallel(threads, iter(indexes), handle, cancel)
        if cancel.is_set():
            raise Cancelled("The restore was cancelled; the output is incomplete.")
        writer.finish()
    finally:
        writer.close()
    result = {"disk": disk.name, "size": disk.size, "written_bytes": writer.bytes_written,
              "seconds": round(time.monotonic() - t0, 3)}
    if check_digest:
        actual = output_digest(repo, output, disk.size, threads=threads)
        if actual != disk.digest:
            raise DigestMismatch(f"The restored disk {output!r} does not match restore point {manifest.id} "
                                 f"(digest {actual}, expected {disk.digest}): run verify, then restore again.")
        result["digest"] = actual
    return result


def output_digest(repo: Repository, path: str, size: int, *, threads: int = 2) -> str:
    """The whole-disk digest of a written disk, reading only its allocated extents."""
    cs = repo.chunk_size
    chunks: dict[int, bytes] = {}
    with FileSource(path) as source:
        ranges = chunk_ranges(source.extents(), cs, size)
        work = (i for start, end in ranges for i in range(start, end))

        def handle(index: int, scratch: dict) -> None:
            buf = scratch.setdefault("buf", bytearray(cs))
            n = min(cs, size - index * cs)
            view = memoryview(buf)[:n]
            got = source.read_into(index * cs, view)
            view[got:n] = bytes(n - got)
            chunks[index] = repo.keys.chunk_id(view)

        run_parallel(threads, work, handle, threading.Event())
    tail = repo.keys.chunk_id(bytes(size % cs))
    return fmt.disk_digest(size, cs, chunks, repo.zero_chunk_id, tail)

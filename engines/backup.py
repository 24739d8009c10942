"""Backup: source -> chunker -> hash / compress / encrypt -> target, then the manifest last.

Each worker thread reads its chunk into its own reused buffer, tests for zeros, hashes,
compresses, encrypts into a reused buffer and uploads; the C libraries release the GIL, so
threads scale with cores. The manifest is written only after every chunk is on the target,
so an interrupted backup leaves no restore point, and its uploaded chunks are reused next time.
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import zstandard

from engines.contract import log_event
from engines.errors import EngineError
from engines.progress import Emit, Progress
from engines.repository import format as fmt
from engines.repository.index import ChunkIndex
from engines.repository.locks import BACKUP_LOCK_WAIT, RepositoryLock
from engines.repository.store import Repository, new_restore_point_id, utc_now
from engines.sources.base import Source
from engines.workers import MB, Throttle

log = logging.getLogger(__name__)

CBT_SAMPLE = 8  # unchanged chunks re-read per disk to catch a wrong changed-extent list


class Cancelled(EngineError):
    code = "cancelled"
    exit_code = 143  # as if ended by SIGTERM, after a clean stop


@dataclass
class DiskInput:
    name: str
    source: Source
    changed_extents: list[tuple[int, int]] | None = None  # CBT: only these ranges changed since the parent
    change_id: str = ""


@dataclass
class _DiskState:
    record: fmt.DiskRecord
    ranges: list[tuple[int, int]]  # chunk index ranges [start, end) to read
    source: Source
    stored: int = 0
    cbt: bool = False  # unchanged chunks come from the parent


@dataclass
class BackupStats:
    logical_bytes: int = 0
    read_bytes: int = 0
    zero_chunks: int = 0
    new_chunks: int = 0
    reused_chunks: int = 0
    stored_bytes: int = 0  # bytes of new chunk files
    cbt_sampled: int = 0  # unchanged chunks re-read to check the changed-extent list
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def chunk_ranges(extents: Iterator[tuple[int, int]], chunk_size: int, size: int) -> list[tuple[int, int]]:
    """Merge byte extents into ascending chunk index ranges [start, end)."""
    last = -(-size // chunk_size)
    ranges: list[tuple[int, int]] = []
    for offset, length in sorted(extents):
        if length <= 0 or offset >= size:
            continue
        start, end = offset // chunk_size, min(-(-(offset + length) // chunk_size), last)
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((start, end))
    return ranges


class BackupPipeline:
    def __init__(self, repo: Repository, *, threads: int = 2, emit: Emit | None = None,
                 cancel: threading.Event | None = None, cbt_sample: int = CBT_SAMPLE,
                 read_limit: float | None = None, lock_wait: float = BACKUP_LOCK_WAIT):
        self.repo = repo
        self.cbt_sample = cbt_sample
        self.threads = max(1, threads)
        self.emit = emit
        self.cancel = cancel or threading.Event()
        self.lock_wait = lock_wait
        # One bucket for the VM: every worker thread's source reads draw from it.
        self.throttle = Throttle(read_limit, cancel=self.cancel) if read_limit else None
        self.stats = BackupStats()
        self._lock = threading.Lock()
        self._known: ChunkIndex = ChunkIndex()
        self._failure: BaseException | None = None

    def run(self, vm: str, disks: list[DiskInput], *, vm_config: dict | None = None,
            parent_id: str = "") -> fmt.Manifest:
        started, t0 = utc_now(), time.monotonic()
        lock = RepositoryLock(self.repo.target, "shared", f"backup of {vm}", wait=self.lock_wait, cancel=self.cancel,
                              on_wait=self._log)
        with lock:
            if lock.waited:
                self._log(f"Repository lock taken after waiting {lock.waited:.0f} s.")
            if self.throttle is not None:
                self._log(f"Reads limited to {self.throttle.rate / MB:g} MB/s for this VM.")
            parent = self._load_parent(vm, parent_id)
            parent_id = parent.id if parent else ""
            states = [self._plan(d, parent) for d in disks]
            kind = "full" if parent is None else (
                "incremental-cbt" if all(st.cbt for st in states) else "incremental")
            self._known = self.repo.chunk_ids()
            for st in states:
                self._reread_missing(st)
            total = sum((e - s) for st in states for s, e in st.ranges) * self.repo.chunk_size
            with Progress(self.emit, "backup", total) as progress:
                self._run_workers(states, progress)
            for st in states:
                d = st.record
                tail = self.repo.keys.chunk_id(bytes(d.size % self.repo.chunk_size))
                d.digest = fmt.disk_digest(d.size, self.repo.chunk_size, d.chunks, self.repo.zero_chunk_id, tail)
                d.stored_bytes = st.stored
            self.stats.logical_bytes = sum(st.record.size for st in states)
            self.stats.seconds = round(time.monotonic() - t0, 3)
            manifest = fmt.Manifest(id=new_restore_point_id(), vm=vm, chunk_size=self.repo.chunk_size,
                                    started=started, finished=utc_now(), vm_config=vm_config or {},
                                    disks=[st.record for st in states], parent=parent_id, kind=kind,
                                    stats=self.stats_dict())
            if self.cancel.is_set():
                raise Cancelled("The backup was cancelled; no restore point was written.")
            self.repo.save_manifest(manifest)
        return manifest

    def stats_dict(self) -> dict:
        s = self.stats
        stats = {"logical_bytes": s.logical_bytes, "read_bytes": s.read_bytes, "zero_chunks": s.zero_chunks,
                 "new_chunks": s.new_chunks, "reused_chunks": s.reused_chunks, "stored_bytes": s.stored_bytes,
                 "cbt_sampled_chunks": s.cbt_sampled, "seconds": s.seconds}
        if self.throttle is not None:
            stats.update(throttle_mbps=self.throttle.rate / MB, throttled_seconds=round(self.throttle.slept, 3))
        return stats

    def _load_parent(self, vm: str, parent_id: str) -> fmt.Manifest | None:
        if not parent_id:
            return None
        try:
            return self.repo.load_manifest(vm, parent_id)
        except EngineError as exc:
            # Still a complete backup: every allocated extent is read, known chunks are not uploaded.
            self._log(f"{exc} Backing up every allocated extent instead of only the changed ones.", "warning")
            return None

    def _plan(self, disk: DiskInput, parent: fmt.Manifest | None) -> _DiskState:
        cs = self.repo.chunk_size
        size = disk.source.size
        record = fmt.DiskRecord(name=disk.name, size=size, change_id=disk.change_id)
        base = next((d for d in parent.disks if d.name == disk.name), None) if parent else None
        changed = chunk_ranges(iter(disk.changed_extents or ()), cs, size)
        distrust = self._cbt_mismatch(disk, base, changed) if base is not None and base.size == size else None
        use_cbt = disk.changed_extents is not None and base is not None and base.size == size and distrust is None
        if use_cbt:
            record.chunks = base.chunks.copy()  # unchanged chunks keep the parent's ids
            extents, how = iter(disk.changed_extents), "the changed extents (CBT)"
        elif distrust is not None:
            extents, how = disk.source.extents(), f"every allocated extent: {distrust}"
        else:
            extents, how = disk.source.extents(), "every allocated extent"
            if disk.changed_extents is not None:
                why = "its size changed" if base is not None else "the parent restore point does not have it"
                how += f": the changed-extent list was ignored because {why}"
        state = _DiskState(record, chunk_ranges(extents, cs, size), disk.source, cbt=use_cbt)
        to_read = sum(e - s for s, e in state.ranges) * cs
        self._log(f"Disk {disk.name!r} ({size} bytes): reading {to_read} bytes, {how}.")
        return state

    def _cbt_mismatch(self, disk: DiskInput, base: fmt.DiskRecord, changed: list[tuple[int, int]]) -> str | None:
        """Re-read a random sample of chunks the changed-extent list calls unchanged; describe any that differ."""
        if disk.changed_extents is None or self.cbt_sample <= 0:
            return None
        cs = self.repo.chunk_size
        starts = [s for s, _ in changed]

        def is_changed(i: int) -> bool:
            k = bisect.bisect_right(starts, i) - 1
            return k >= 0 and i < changed[k][1]

        unchanged = [i for i in base.chunks if not is_changed(i)]
        buf = bytearray(cs)
        for index in sorted(random.sample(unchanged, min(self.cbt_sample, len(unchanged)))):
            n = min(cs, base.size - index * cs)
            view = memoryview(buf)[:n]
            got = disk.source.read_into(index * cs, view)
            if self.throttle is not None:
                self.throttle.take(n)  # paid after the read: the first chunk is not held back
            view[got:n] = bytes(n - got)
            self.stats.cbt_sampled += 1
            if self.repo.keys.chunk_id(view) != base.chunks[index]:
                return (f"the changed-extent list says nothing changed at offset {index * cs}, but the data there "
                        "differs from the parent restore point, so the list cannot be trusted")
        return None

    def _reread_missing(self, st: _DiskState) -> None:
        """Chunks inherited from the parent but gone from the target (damaged, removed) are read again."""
        cs = self.repo.chunk_size
        missing = [i for i, cid in st.record.chunks.items() if cid not in self._known]
        if missing:
            self._log(f"Disk {st.record.name!r}: {len(missing)} chunk(s) of the parent restore point are missing "
                      "from the target; reading them again.", "warning")
            extents = [(s * cs, (e - s) * cs) for s, e in st.ranges] + [(i * cs, cs) for i in missing]
            st.ranges = chunk_ranges(iter(extents), cs, st.record.size)

    def _log(self, message: str, level: str = "info") -> None:
        log.info(message)
        if self.emit is not None:
            self.emit(log_event(level, message))

    def _work(self, states: list[_DiskState]) -> Iterator[tuple[_DiskState, int]]:
        for st in states:
            for start, end in st.ranges:
                for index in range(start, end):
                    yield st, index

    def _run_workers(self, states: list[_DiskState], progress: Progress) -> None:
        work = self._work(states)
        workers = [threading.Thread(target=self._worker, args=(work, progress), name=f"backup-{i}")
                   for i in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if self._failure is not None:
            raise self._failure
        if self.cancel.is_set():
            raise Cancelled("The backup was cancelled; no restore point was written.")

    def _next(self, work: Iterator) -> tuple[_DiskState, int] | None:
        with self._lock:
            if self._failure is not None or self.cancel.is_set():
                return None
            return next(work, None)

    def _worker(self, work: Iterator, progress: Progress) -> None:
        try:
            self._process(work, progress)
        except BaseException as exc:  # noqa: B036 - handed to the main thread, which re-raises it
            with self._lock:
                if self._failure is None:
                    self._failure = exc

    def _process(self, work: Iterator, progress: Progress) -> None:
        repo, cs = self.repo, self.repo.chunk_size
        buf = bytearray(cs)
        view = memoryview(buf)
        zeros = bytes(cs)
        sealed = bytearray(repo.blob_capacity())
        cctx = zstandard.ZstdCompressor(level=repo.config.compression_level)
        while (item := self._next(work)) is not None:
            st, index = item
            offset = index * cs
            n = min(cs, st.record.size - offset)
            got = st.source.read_into(offset, view[:n])
            if self.throttle is not None:
                self.throttle.take(n)  # paid after the read: the first chunk is not held back
            if got < n:
                view[got:n] = zeros[: n - got]
            data = buf if n == cs else view[:n]
            is_zero = buf == zeros if n == cs else bytes(data) == zeros[:n]
            if is_zero:
                with self._lock:
                    st.record.chunks.pop(index, None)
                    self.stats.zero_chunks += 1
                    self.stats.read_bytes += n
                progress.add(n)
                continue
            cid = repo.keys.chunk_id(data)
            with self._lock:
                st.record.chunks[index] = cid
                self.stats.read_bytes += n
                fresh = cid not in self._known
                if fresh:
                    self._known.add(cid)  # claimed: other workers with the same content skip it
                else:
                    self.stats.reused_chunks += 1
            if fresh:
                packed = cctx.compress(data)
                payload, flags = (packed, fmt.FLAG_ZSTD) if len(packed) < n else (data, 0)
                blob = repo.keys.seal_into(sealed, payload, flags, cid)
                repo.put_chunk_blob(cid, blob)
                with self._lock:
                    self.stats.new_chunks += 1
                    self.stats.stored_bytes += len(blob)
                    st.stored += len(blob)
            progress.add(n)

"""Verify: read and authenticate every chunk that restore points name.

Each distinct chunk is fetched once; a bad chunk is reported at every place that names it
(VM, restore point, disk, byte offset), so the operator knows exactly what is affected.
"""

from __future__ import annotations

import threading
import time

import zstandard

from engines.backup import Cancelled
from engines.errors import EngineError
from engines.progress import Emit, Progress
from engines.repository import format as fmt
from engines.repository.keys import IntegrityError
from engines.repository.store import Repository
from engines.workers import run_parallel


def verify(repo: Repository, *, vm: str | None = None, restore_point: str | None = None, threads: int = 2,
           repair: bool = False, emit: Emit | None = None, cancel: threading.Event | None = None) -> dict:
    """With `repair`, damaged chunk files are deleted so the next backup of that data uploads them again."""
    t0 = time.monotonic()
    problems: list[dict] = []
    sizes: dict[bytes, int] = {}  # each distinct chunk once; where bad ones sit is found afterwards
    points = list(repo.restore_points(vm))
    if restore_point:
        points = [p for p in points if p[1] == restore_point]
        if not points:
            raise EngineError(f"Restore point {restore_point} does not exist in this repository: list the restore "
                              "points and pick one.", code="restore_point_not_found")
    readable = []
    for point_vm, rp in points:
        try:
            manifest = repo.load_manifest(point_vm, rp)
        except EngineError as exc:
            problems.append({"vm": point_vm, "restore_point": rp, "disk": None, "offset": None, "chunk": None,
                             "reason": str(exc)})
            continue
        readable.append((point_vm, rp))
        for disk in manifest.disks:
            for index, cid in disk.chunks.items():
                sizes[cid] = min(manifest.chunk_size, disk.size - index * manifest.chunk_size)
    bad: dict[bytes, str] = {}
    lock = threading.Lock()

    def handle(cid: bytes, scratch: dict) -> None:
        if not scratch:
            scratch["buf"] = bytearray(repo.blob_capacity())
            scratch["dctx"] = zstandard.ZstdDecompressor()
        try:
            repo.read_chunk(cid, scratch["buf"], scratch["dctx"])
        except IntegrityError as exc:
            with lock:
                bad[cid] = str(exc)
        progress.add(sizes[cid])

    cancel = cancel or threading.Event()
    with Progress(emit, "verify", sum(sizes.values())) as progress:
        run_parallel(threads, iter(list(sizes)), handle, cancel)
    if cancel.is_set():
        raise Cancelled("Verify was cancelled before it read every chunk.")
    if repair:
        for cid, reason in bad.items():
            if reason != "missing from the target":
                repo.target.delete(fmt.chunk_path(cid))
    for point_vm, rp in readable if bad else ():
        manifest = repo.load_manifest(point_vm, rp)
        for disk in manifest.disks:
            for index, cid in disk.chunks.items():
                if cid in bad:
                    problems.append({"vm": point_vm, "restore_point": rp, "disk": disk.name,
                                     "offset": index * manifest.chunk_size, "chunk": cid.hex(), "reason": bad[cid]})
    problems.sort(key=lambda p: (p["vm"], p["restore_point"], p["disk"] or "", p["offset"] or 0))
    return {"restore_points": len(points), "chunks": len(sizes), "bad_chunks": len(bad), "problems": problems,
            "ok": not problems, "repaired": repair and bool(bad), "seconds": round(time.monotonic() - t0, 3)}


def describe(problem: dict) -> str:
    """One sentence per problem, for logs and error events."""
    if problem["disk"] is None:
        return f"VM {problem['vm']!r} restore point {problem['restore_point']}: {problem['reason']}"
    return (f"VM {problem['vm']!r} restore point {problem['restore_point']} disk {problem['disk']!r} at offset "
            f"{problem['offset']}: chunk {problem['chunk']} {problem['reason']}")

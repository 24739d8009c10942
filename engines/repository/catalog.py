"""Catalog rebuild and statistics, from the target alone (the server is disposable)."""

from __future__ import annotations

from engines.errors import EngineError
from engines.repository.store import Repository


def rebuild(repo: Repository) -> dict:
    """Every restore point on the target, with what the server's catalog records about it."""
    points, damaged = [], []
    for vm, rp in repo.restore_points():
        try:
            points.append(repo.load_manifest(vm, rp).summary())
        except EngineError as exc:
            damaged.append({"vm": vm, "restore_point": rp, "reason": str(exc)})
    return {"repository_id": repo.config.id, "chunk_size": repo.chunk_size, "restore_points": points,
            "damaged": damaged}


def stats(repo: Repository) -> dict:
    """Logical size of all restore points against the bytes the repository stores."""
    logical = data = 0
    referenced: set[bytes] = set()
    points = 0
    vms: set[str] = set()
    for vm, rp in repo.restore_points():
        manifest = repo.load_manifest(vm, rp)
        points += 1
        vms.add(vm)
        for disk in manifest.disks:
            logical += disk.size
            data += sum(min(manifest.chunk_size, disk.size - i * manifest.chunk_size) for i in disk.chunks)
            referenced.update(disk.chunks.values())
    sizes = repo.chunk_sizes()
    stored = sum(sizes.values())
    orphans = [cid for cid in sizes if cid not in referenced]
    return {
        "restore_points": points,
        "vms": len(vms),
        "logical_bytes": logical,  # sum of disk sizes over every restore point
        "data_bytes": data,  # the same without zero chunks and holes
        "stored_bytes": stored,  # chunk files on the target
        "chunks": len(sizes),
        "orphan_chunks": len(orphans),
        "orphan_bytes": sum(sizes[c] for c in orphans),
        "missing_chunks": len(referenced - sizes.keys()),
        "dedup_ratio": round(data / stored, 2) if stored else None,  # dedup and compression together
        "logical_ratio": round(logical / stored, 2) if stored else None,
    }

"""Prune: retention (keep last / daily / weekly / monthly per VM), then mark and sweep chunks.

Prune holds the exclusive lock, so no backup runs meanwhile. Unreferenced chunks are first
recorded in `prune/pending` with the time they were found; only a later sweep (or this one,
once the grace period has passed) deletes them if they are still unreferenced. That also
collects the chunks and temporary files an interrupted backup left behind.

A cancel (SIGTERM) stops prune between two files: what it deleted so far was unreferenced, the
pending list keeps every file not yet deleted with the time it was first seen, the lock is
released, and the next prune carries on where this one stopped.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from engines.backup import Cancelled
from engines.contract import log_event
from engines.errors import EngineError, TargetNotFound
from engines.progress import Emit, Progress
from engines.repository import format as fmt
from engines.repository.locks import RepositoryLock
from engines.repository.store import Repository

GRACE_SECONDS = 6 * 3600


@dataclass
class Retention:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    @classmethod
    def from_dict(cls, raw: dict) -> Retention:
        try:
            policy = cls(**{k if k.startswith("keep_") else f"keep_{k}": int(v) for k, v in raw.items()})
        except TypeError:
            raise EngineError(f"Unknown retention setting in {sorted(raw)}: use keep_last, keep_daily, keep_weekly "
                              "and keep_monthly.", code="bad_job_spec") from None
        if min(policy.keep_last, policy.keep_daily, policy.keep_weekly, policy.keep_monthly) < 0 or not any(
                (policy.keep_last, policy.keep_daily, policy.keep_weekly, policy.keep_monthly)):
            raise EngineError("A retention policy must keep at least one restore point: set keep_last, keep_daily, "
                              "keep_weekly or keep_monthly above zero.", code="bad_job_spec")
        return policy

    def keep(self, ids: list[str]) -> set[str]:
        """Restore point ids (of one VM) to keep; ids start with their UTC creation time."""
        newest_first = sorted(ids, reverse=True)
        kept = set(newest_first[: self.keep_last])
        buckets = ((self.keep_daily, "%Y-%m-%d"), (self.keep_weekly, "%G-W%V"), (self.keep_monthly, "%Y-%m"))
        for count, bucket in buckets:
            seen: set[str] = set()
            for rp in newest_first:
                if len(seen) >= count:
                    break
                key = point_time(rp).strftime(bucket)
                if key not in seen:
                    seen.add(key)
                    kept.add(rp)
        return kept


def point_time(restore_point_id: str) -> datetime:
    return datetime.strptime(restore_point_id[:22], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)


def _load_pending(repo: Repository) -> dict[str, float]:
    try:
        return json.loads(repo.target.get(fmt.PRUNE_PENDING_PATH)).get("paths", {})
    except (TargetNotFound, ValueError):
        return {}


def _stop_if_cancelled(cancel: threading.Event, done: str) -> None:
    if cancel.is_set():
        raise Cancelled(f"Prune was cancelled {done}; the repository is consistent: run prune again to finish.")


def prune(repo: Repository, policy: Retention, *, grace_seconds: float = GRACE_SECONDS, dry_run: bool = False,
          emit: Emit | None = None, cancel: threading.Event | None = None) -> dict:
    t0 = time.monotonic()
    cancel = cancel or threading.Event()
    with RepositoryLock(repo.target, "exclusive", "prune"):
        _stop_if_cancelled(cancel, "before it changed anything")
        by_vm: dict[str, list[str]] = {}
        for vm, rp in repo.restore_points():
            by_vm.setdefault(vm, []).append(rp)
        forgotten = []
        for vm, ids in by_vm.items():
            keep = policy.keep(ids)
            for rp in ids:
                if rp not in keep:
                    _stop_if_cancelled(cancel, f"after forgetting {len(forgotten)} restore point(s), before "
                                       "deleting any chunk")
                    forgotten.append({"vm": vm, "restore_point": rp})
                    if not dry_run:
                        repo.delete_manifest(vm, rp)
        # Mark: every chunk a remaining restore point names; a damaged manifest stops the sweep.
        referenced: set[bytes] = set()
        gone = {(f["vm"], f["restore_point"]) for f in forgotten}
        for vm, rp in repo.restore_points():
            if (vm, rp) in gone:
                continue
            _stop_if_cancelled(cancel, f"after forgetting {len(forgotten)} restore point(s), before deleting any "
                               "chunk")
            try:
                manifest = repo.load_manifest(vm, rp)
            except EngineError as exc:
                raise EngineError(f"{exc} Prune deleted no chunks, because it cannot tell which chunks that restore "
                                  "point needs.", code="manifest_corrupt") from None
            for disk in manifest.disks:
                referenced.update(disk.chunks.values())
        # Sweep: unreferenced chunk files and leftover temporary files, once past the grace period.
        now = time.time()
        pending = _load_pending(repo)
        candidates: dict[str, int] = {}
        for folder in repo.target.list(fmt.CHUNKS_DIR):
            if not folder.is_dir:
                continue
            _stop_if_cancelled(cancel, f"after forgetting {len(forgotten)} restore point(s), before deleting any "
                               "chunk")
            for entry in repo.target.list(f"{fmt.CHUNKS_DIR}/{folder.name}"):
                if fmt.is_chunk_name(entry.name) and bytes.fromhex(entry.name) in referenced:
                    continue
                candidates[f"{fmt.CHUNKS_DIR}/{folder.name}/{entry.name}"] = entry.size
        if emit is not None:
            emit(log_event("info", f"Prune: {len(candidates)} unreferenced file(s) found; sweeping those past the "
                           "grace period."))
        new_pending: dict[str, float] = {}
        deleted, freed = 0, 0
        with Progress(emit, "prune", len(candidates)) as progress:
            for path, size in candidates.items():
                first_seen = pending.get(path, now)
                if cancel.is_set():
                    new_pending[path] = first_seen  # not swept yet: keeps its first-seen time
                elif now - first_seen >= grace_seconds:
                    if not dry_run:
                        repo.target.delete(path)
                    deleted += 1
                    freed += size
                else:
                    new_pending[path] = first_seen
                progress.add(1)
        if not dry_run:
            repo.target.makedirs(fmt.PRUNE_PENDING_PATH.rsplit("/", 1)[0])
            repo.target.put(fmt.PRUNE_PENDING_PATH, json.dumps({"paths": new_pending}).encode())
        _stop_if_cancelled(cancel, f"after deleting {deleted} of {len(candidates)} unreferenced file(s) "
                           f"({freed} bytes)")
    return {"forgotten": forgotten, "kept": sum(len(v) for v in by_vm.values()) - len(forgotten),
            "deleted_files": deleted, "freed_bytes": freed, "pending_files": len(new_pending), "dry_run": dry_run,
            "seconds": round(time.monotonic() - t0, 3)}

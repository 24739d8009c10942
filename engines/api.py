"""The engine's Python API: one function per operation, the same ones the CLI runs.

Each takes a target (a TargetSpec or its dict), the repository passphrase and plain
arguments, and returns a JSON-ready dict (what the `result` event carries).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engines.backup import CBT_SAMPLE, BackupPipeline, DiskInput
from engines.contract import DiskSpec, JobSpec, log_event
from engines.errors import EngineError, TargetError, TargetNotFound, TargetPermissionDenied
from engines.progress import Emit
from engines.repository import catalog
from engines.repository import format as fmt
from engines.repository import prune as prune_mod
from engines.repository import verify as verify_mod
from engines.repository.keys import unwrap_master_key
from engines.repository.locks import BACKUP_LOCK_WAIT
from engines.repository.store import Repository, RepositoryError
from engines.restore import restore_disk
from engines.sources import open_source
from engines.sources.device import find_device
from engines.targets import TargetSpec, open_target
from engines.workers import read_limit

TargetLike = TargetSpec | dict


def _spec(target: TargetLike) -> TargetSpec:
    if isinstance(target, TargetSpec):
        return target
    known = set(TargetSpec.__dataclass_fields__)
    unknown = set(target) - known
    if unknown:
        raise EngineError(f"Unknown target settings: {', '.join(sorted(unknown))}.", code="bad_job_spec")
    return TargetSpec(**target)


@contextmanager
def open_repository(target: TargetLike, passphrase: str) -> Iterator[Repository]:
    with open_target(_spec(target)) as t:
        yield Repository.open(t, passphrase)


def _threads(threads: int | None, target: TargetLike | None = None) -> int:
    if threads:
        return int(threads)
    cores = os.cpu_count() or 2
    # One more thread than cores hides blocking reads and writes; network round trips need more.
    return cores + 1 if target is None or _spec(target).type == "local" else cores + 3


def init(target: TargetLike, passphrase: str, *, chunk_size: int = fmt.DEFAULT_CHUNK_SIZE,
         compression_level: int = 3, kdf_n: int = 1 << 15) -> dict:
    with open_target(_spec(target)) as t:
        repo = Repository.create(t, passphrase, chunk_size=chunk_size, compression_level=compression_level,
                                 kdf_n=kdf_n)
        return {"repository_id": repo.config.id, "chunk_size": repo.chunk_size, "format_version": fmt.FORMAT_VERSION}


PROBE_PREFIX = ".vafleet-probe-"  # the test file's name; never a name the repository uses


def probe(target: TargetLike, passphrase: str = "") -> dict:
    """Check a target before it holds backups: reach it, create the repository folder if missing, write, read
    back and delete a small test file, report free space (None when the protocol cannot tell) and whether a
    repository is already there. No passphrase is needed; with one, an existing repository must open with it
    (else WrongPassphrase, code "wrong_passphrase")."""
    spec = _spec(target)
    with open_target(spec) as t:
        try:
            t.makedirs("")
        except TargetError as exc:
            if type(exc) is not TargetError or exc.code != TargetError.code:
                raise  # unreachable, refused login, no permission...: the target's own sentence
            cause = exc.__cause__
            reason = getattr(cause, "strerror", None) or str(exc)
            raise TargetError(f"The repository folder {spec.path!r} cannot be created on the target ({reason}): "
                              "check the path.", code="target_bad_path") from exc
        name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        data = b"VA Fleet write test " + secrets.token_bytes(48)
        t.put(name, data)
        try:
            back = t.get(name)
        finally:
            t.delete(name)
        if back != data:
            raise TargetError(f"The target returned other bytes than those just written to a test file "
                              f"({len(back)} instead of {len(data)} bytes): check the server's storage.",
                              code="target_corrupt")
        try:
            free = t.free_space()
        except (TargetNotFound, TargetPermissionDenied):
            free = None  # the folder is writable: only the figure is refused
        result = {"reachable": True, "writable": True, "free_bytes": free, "initialized": False,
                  "format_version": None, "repository_id": None, "chunk_size": None, "passphrase_ok": None}
        try:
            raw = t.get(fmt.CONFIG_PATH)
        except TargetNotFound:
            return result
        try:
            config = fmt.RepositoryConfig.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"The folder holds a config file that is not a readable VA Fleet repository "
                                  f"config ({exc}): choose an empty folder, or restore the config from a copy.",
                                  code="repository_corrupt") from None
        result.update(initialized=True, format_version=config.version, repository_id=config.id,
                      chunk_size=config.chunk_size)
        if passphrase:
            Repository.open(t, passphrase)  # WrongPassphrase / unsupported_format with their sentences
            result["passphrase_ok"] = True
        return result


def change_passphrase(target: TargetLike, passphrase: str, new_passphrase: str) -> dict:
    with open_target(_spec(target)) as t:
        repo = Repository.open(t, passphrase)
        repo.change_passphrase(unwrap_master_key(passphrase, repo.config), new_passphrase)
        return {"repository_id": repo.config.id}


def _open_source(disk: DiskSpec):
    if disk.device is not None:
        return open_source("device", device=disk.device)
    if disk.path.startswith(("http://", "https://")):
        options = dict(disk.options)
        if options.get("auth"):
            options["auth"] = tuple(options["auth"])  # JSON has no tuples
        return open_source("http", url=disk.path, **options)
    return open_source("file", path=disk.path)


def backup(target: TargetLike, passphrase: str, vm: str, disks: list[DiskSpec], *, vm_config: dict | None = None,
           parent: str = "", threads: int | None = None, verify_after: bool = False, cbt_sample: int = CBT_SAMPLE,
           throttle_mbps: float | None = None, lock_wait: float = BACKUP_LOCK_WAIT, emit: Emit | None = None,
           cancel: threading.Event | None = None) -> dict:
    """Back up a VM's disks; with `verify_after`, authenticate every chunk the new restore point names.
    `throttle_mbps` limits the VM's source reads (MB/s); `lock_wait` is how long to wait for prune's lock (s)."""
    if not vm:
        raise EngineError("A backup needs the VM's name.", code="bad_job_spec")
    if not disks:
        raise EngineError(f"The backup of VM {vm!r} names no disks: give at least one disk path.",
                          code="bad_job_spec")
    names = [d.name for d in disks]
    if len(set(names)) != len(names):
        raise EngineError(f"The backup of VM {vm!r} names a disk twice ({', '.join(names)}): give each disk a "
                          "distinct name.", code="bad_job_spec")
    limit = read_limit(throttle_mbps)
    with open_repository(target, passphrase) as repo:
        sources = []
        try:
            for d in disks:
                sources.append(_open_source(d))
                if emit is not None and d.device is not None:
                    emit(log_event("info", f"Disk {d.name!r} is {sources[-1].found_as}."))
            inputs = [DiskInput(d.name or f"disk{i}", s, d.changed_extents, d.change_id)
                      for i, (d, s) in enumerate(zip(disks, sources, strict=True))]
            pipeline = BackupPipeline(repo, threads=_threads(threads, target), emit=emit, cancel=cancel,
                                      cbt_sample=cbt_sample, read_limit=limit, lock_wait=lock_wait)
            manifest = pipeline.run(vm, inputs, vm_config=vm_config, parent_id=parent)
        finally:
            for s in sources:
                s.close()
        result = {"restore_point": manifest.id, "vm": vm, "kind": manifest.kind, "parent": manifest.parent,
                  "disks": manifest.summary()["disks"], "stats": manifest.stats}
        if verify_after:
            checked = verify_mod.verify(repo, vm=vm, restore_point=manifest.id, threads=_threads(threads, target),
                                        emit=emit, cancel=cancel)
            if not checked["ok"]:
                raise EngineError(f"Restore point {manifest.id} was written but does not verify: "
                                  f"{verify_mod.describe(checked['problems'][0])}. Run verify on the repository.",
                                  code="verify_failed")
            result["verified"] = {"chunks": checked["chunks"], "seconds": checked["seconds"]}
        return result


def restore(target: TargetLike, passphrase: str, restore_point: str, disks: list[DiskSpec], *, vm: str = "",
            threads: int | None = None, check_digest: bool = False, emit: Emit | None = None,
            cancel: threading.Event | None = None) -> dict:
    """Write each disk to its `path`, or to the hot-added `device` found on this appliance (a block device)."""
    with open_repository(target, passphrase) as repo:
        found_vm, rp = repo.find_restore_point(restore_point, vm or None)
        manifest = repo.load_manifest(found_vm, rp)
        wanted = disks or []
        if not wanted:
            raise EngineError("A restore needs at least one disk with an output path or device.",
                              code="bad_job_spec")
        outputs = [_restore_output(d, emit) for d in wanted]  # every device found before any is written
        results = [restore_disk(repo, manifest, d.name, output, threads=_threads(threads, target),
                                check_digest=check_digest,
                                emit=emit, cancel=cancel) for d, output in zip(wanted, outputs, strict=True)]
        return {"restore_point": rp, "vm": found_vm, "disks": results}


def _restore_output(disk: DiskSpec, emit: Emit | None) -> str:
    if disk.device is None:
        if not disk.path:
            raise EngineError(f"Disk {disk.name!r} of the restore names no output: give a path or a device.",
                              code="bad_job_spec")
        return disk.path
    path, found_as = find_device(disk.device)
    if emit is not None:
        emit(log_event("info", f"Disk {disk.name!r} is written to {found_as}."))
    return str(path)


def list_restore_points(target: TargetLike, passphrase: str, *, vm: str | None = None) -> dict:
    with open_repository(target, passphrase) as repo:
        return {"restore_points": [repo.load_manifest(v, rp).summary() for v, rp in repo.restore_points(vm)]}


def verify(target: TargetLike, passphrase: str, *, vm: str | None = None, restore_point: str | None = None,
           threads: int | None = None, repair: bool = False, emit: Emit | None = None,
           cancel: threading.Event | None = None) -> dict:
    with open_repository(target, passphrase) as repo:
        return verify_mod.verify(repo, vm=vm, restore_point=restore_point, threads=_threads(threads, target),
                                 repair=repair, emit=emit, cancel=cancel)


def prune(target: TargetLike, passphrase: str, *, retention: dict, grace_seconds: float = prune_mod.GRACE_SECONDS,
          dry_run: bool = False, emit: Emit | None = None, cancel: threading.Event | None = None) -> dict:
    with open_repository(target, passphrase) as repo:
        return prune_mod.prune(repo, prune_mod.Retention.from_dict(retention), grace_seconds=grace_seconds,
                               dry_run=dry_run, emit=emit, cancel=cancel)


def stats(target: TargetLike, passphrase: str) -> dict:
    with open_repository(target, passphrase) as repo:
        return catalog.stats(repo)


def rebuild_catalog(target: TargetLike, passphrase: str) -> dict:
    with open_repository(target, passphrase) as repo:
        return catalog.rebuild(repo)


def run_job(job: JobSpec, emit: Emit | None = None, cancel: threading.Event | None = None) -> dict:
    """Run one job spec (what `python -m engines` does with stdin)."""
    o = job.options
    ops: dict[str, Callable[[], dict]] = {
        "init": lambda: init(job.target, job.passphrase, chunk_size=int(o.get("chunk_size", fmt.DEFAULT_CHUNK_SIZE)),
                             compression_level=int(o.get("compression_level", 3)), kdf_n=int(o.get("kdf_n", 1 << 15))),
        "backup": lambda: backup(job.target, job.passphrase, job.vm, job.disks, vm_config=job.vm_config,
                                 parent=job.parent, threads=o.get("threads"), verify_after=bool(o.get("verify")),
                                 cbt_sample=int(o.get("cbt_sample", CBT_SAMPLE)), throttle_mbps=o.get("throttle_mbps"),
                                 lock_wait=float(o.get("lock_wait", BACKUP_LOCK_WAIT)), emit=emit, cancel=cancel),
        "restore": lambda: restore(job.target, job.passphrase, job.restore_point, job.disks, vm=job.vm,
                                   threads=o.get("threads"), check_digest=bool(o.get("check_digest")), emit=emit,
                                   cancel=cancel),
        "list": lambda: list_restore_points(job.target, job.passphrase, vm=job.vm or None),
        "verify": lambda: verify(job.target, job.passphrase, vm=job.vm or None, restore_point=job.restore_point or None,
                                 threads=o.get("threads"), repair=bool(o.get("repair")), emit=emit, cancel=cancel),
        "prune": lambda: prune(job.target, job.passphrase, retention=o.get("retention") or {},
                               grace_seconds=float(o.get("grace_seconds", prune_mod.GRACE_SECONDS)),
                               dry_run=bool(o.get("dry_run")), emit=emit, cancel=cancel),
        "stats": lambda: stats(job.target, job.passphrase),
        "change_passphrase": lambda: change_passphrase(job.target, job.passphrase, str(o.get("new_passphrase", ""))),
        "catalog": lambda: rebuild_catalog(job.target, job.passphrase),
        "probe": lambda: probe(job.target, job.passphrase),
    }
    return ops[job.operation]()

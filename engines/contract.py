"""The contract between the server and the engine process (ARCHITECTURE.md §3).

The server writes one JSON job spec on the engine's stdin; the engine writes JSON-lines
events on stdout. This module is the shared definition: the server may import it (and
only it) from the engines package.

Job spec::

    {"operation": "backup", "target": {"type": "local", "path": "/srv/repo", ...},
     "passphrase": "...",
     "vm": {"name": "web 01", "config": {...}},
     "disks": [{"name": "scsi0:0", "path": "/dev/sdb", "changed_extents": [[0, 65536]], "change_id": "52 ..."}],
     "parent": "20261125T101500Z-1a2b3c4d",
     "options": {"threads": 2}}

Operations and their fields (besides "target" and "passphrase"):

- init: options.chunk_size (bytes, power of two, default 1 MiB), options.kdf_n (scrypt cost).
- backup: vm {name, config}, disks [{name, path | device, changed_extents?, change_id?, options?}],
  a hot-added disk named by `device` {uuid?, bus?, unit?, timeout?} (the backing UUID, the SCSI
  controller's bus and the disk's unit, at least the UUID or both bus and unit) that the engine
  finds on the appliance (engines/sources/device.py); parent (restore point id; with changed_extents,
  an incremental that reads only those extents), options.threads, options.verify (authenticate the new restore point),
  options.cbt_sample (unchanged chunks re-read to check the changed-extent list, default 8).
  Result: restore_point, kind, disks (size, digest, change_id...), stats.
- restore: restore_point, vm?, disks [{name, path | device}] (output file or block device, or a
  hot-added disk named by `device` as for a backup, found on the appliance and written as a block
  device), options.check_digest. Result: disks with written bytes (and digest).
- list / catalog: every restore point (catalog also lists damaged manifests).
- verify: vm?, restore_point?, options.repair (delete damaged chunks so the next backup
  uploads them again). Problems end in an error event "verify_failed" with a "problems"
  list of {vm, restore_point, disk, offset, chunk, reason}.
- prune: options.retention {keep_last, keep_daily, keep_weekly, keep_monthly},
  options.grace_seconds, options.dry_run.
- stats: logical vs stored bytes and the dedup ratio.
- change_passphrase: options.new_passphrase (the master key is rewrapped; nothing else changes).
- probe: checks a target before it holds backups; "passphrase" is optional. Connects, creates the
  repository folder if missing, writes, reads back and deletes a small test file. Result:
  reachable, writable (both true: failures are the targets' error events), free_bytes (null
  when the protocol cannot tell), initialized (a repository config is there), format_version,
  repository_id, chunk_size (null when not initialized), passphrase_ok (null without a
  passphrase or a repository; a wrong one ends in the error "wrong_passphrase").

Events, one JSON object per line, each with "type" and "time":
progress (phase, done, total bytes, rate in bytes/s, eta in s), log (level, message),
result (operation plus the figures above), error (code, message). Exit code 0 after a
result; non-zero after an error (143 when cancelled by SIGTERM).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from engines.errors import EngineError

OPERATIONS = ("init", "backup", "restore", "list", "verify", "prune", "stats", "catalog", "change_passphrase",
              "probe")


class BadJobSpec(EngineError):
    code = "bad_job_spec"


DEVICE_EXAMPLE = '{"uuid": "6000C298-1ca0-3c6d-8a2f-b5f7b3ae5df7", "bus": 0, "unit": 1}'


@dataclass(frozen=True)
class DeviceSpec:
    """A hot-added disk as the hypervisor names it; the engine finds its block device on the appliance."""

    uuid: str = ""  # the backing UUID as 32 lower-case hex digits
    bus: int | None = None  # the SCSI controller's bus number
    unit: int | None = None  # the disk's unit number on that controller (the guest's SCSI target)
    timeout: float = 30.0  # seconds to wait for the device to appear

    @classmethod
    def from_dict(cls, raw: object, disk: str) -> DeviceSpec:
        def bad(why: str) -> BadJobSpec:
            return BadJobSpec(f"Disk {disk!r}: the device {why}; give it as {DEVICE_EXAMPLE}.")

        if not isinstance(raw, dict):
            raise bad(f"must be an object, not {type(raw).__name__}")
        unknown = sorted(set(raw) - {"uuid", "bus", "unit", "timeout"})
        if unknown:
            raise bad(f"has unknown field(s) {', '.join(unknown)}")
        uuid = raw.get("uuid") or ""
        if not isinstance(uuid, str):
            raise bad("uuid must be a string")
        digits = uuid.replace("-", "").replace(" ", "").lower()
        if uuid and (len(digits) != 32 or any(c not in "0123456789abcdef" for c in digits)):
            raise bad(f"uuid {uuid!r} is not 32 hexadecimal digits")
        bus, unit = raw.get("bus"), raw.get("unit")
        if (bus is None) != (unit is None):
            raise bad("needs both bus and unit, or neither")
        for label, value, top in (("bus", bus, 3), ("unit", unit, 15)):
            if value is not None and (type(value) is not int or not 0 <= value <= top):
                raise bad(f"{label} must be a whole number from 0 to {top}, not {value!r}")
        if unit == 7:
            raise bad("unit 7 is the SCSI controller itself, not a disk")
        if not digits and bus is None:
            raise bad("names neither a uuid nor a bus and unit")
        timeout = raw.get("timeout", cls.timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise bad(f"timeout must be a number of seconds from 0 to 3600, not {timeout!r}")
        return cls(uuid=digits, bus=bus, unit=unit, timeout=float(timeout))


@dataclass
class DiskSpec:
    name: str
    path: str = ""  # source to read (backup) or output to write (restore)
    device: DeviceSpec | None = None  # a hot-added disk to find on the appliance (instead of path)
    changed_extents: list[tuple[int, int]] | None = None  # from CBT; None means read everything
    change_id: str = ""
    options: dict = field(default_factory=dict)  # source-specific (e.g. HTTPS headers, TLS)


@dataclass
class JobSpec:
    operation: str
    target: dict
    passphrase: str = field(default="", repr=False)
    vm: str = ""
    vm_config: dict = field(default_factory=dict)
    disks: list[DiskSpec] = field(default_factory=list)
    parent: str = ""  # restore point the backup builds on
    restore_point: str = ""  # restore point to restore or verify
    options: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | bytes) -> JobSpec:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise BadJobSpec(f"The job spec is not valid JSON ({exc}).") from None
        if not isinstance(doc, dict):
            raise BadJobSpec("The job spec must be a JSON object.")
        operation = doc.get("operation")
        if operation not in OPERATIONS:
            raise BadJobSpec(f"Unknown operation {operation!r}; expected one of: {', '.join(OPERATIONS)}.")
        if not isinstance(doc.get("target"), dict) or "type" not in doc["target"]:
            raise BadJobSpec("The job spec needs a target object with at least a type.")
        vm = doc.get("vm") or {}
        if isinstance(vm, str):
            vm = {"name": vm}
        disks = []
        for raw in doc.get("disks") or []:
            extents = raw.get("changed_extents")
            try:
                changed = None if extents is None else [(int(o), int(n)) for o, n in extents]
            except (TypeError, ValueError):
                changed = [(-1, -1)]
            if changed is not None and any(o < 0 or n < 0 for o, n in changed):
                raise BadJobSpec(f"Disk {raw.get('name')!r}: changed_extents must be [offset, length] pairs of "
                                 "non-negative integers.")
            device = None
            if raw.get("device") is not None:
                if operation not in ("backup", "restore"):
                    raise BadJobSpec(f"Disk {raw.get('name')!r}: only a backup or a restore uses a hot-added "
                                     f"device; give the {operation} a path.")
                if raw.get("path"):
                    raise BadJobSpec(f"Disk {raw.get('name')!r} names both a path and a device: give one of them.")
                device = DeviceSpec.from_dict(raw["device"], str(raw.get("name", "")))
            disks.append(DiskSpec(name=str(raw.get("name", "")), path=str(raw.get("path", "")), device=device,
                                  changed_extents=changed, change_id=str(raw.get("change_id", "")),
                                  options=raw.get("options") or {}))
        return cls(operation=operation, target=doc["target"], passphrase=doc.get("passphrase", ""),
                   vm=str(vm.get("name", "")), vm_config=vm.get("config") or {}, disks=disks,
                   parent=doc.get("parent") or "", restore_point=doc.get("restore_point") or "",
                   options=doc.get("options") or {})


def _event(event_type: str, /, **fields) -> dict:
    return {"type": event_type, "time": round(time.time(), 3), **fields}


def progress_event(phase: str, done: int, total: int, rate: float, eta: float | None) -> dict:
    return _event("progress", phase=phase, done=done, total=total, rate=round(rate),
                  eta=None if eta is None else round(eta, 1))


def log_event(level: str, message: str) -> dict:
    return _event("log", level=level, message=message)


def result_event(operation: str, **figures) -> dict:
    return _event("result", operation=operation, **figures)


def error_event(code: str, message: str, **details) -> dict:
    return _event("error", code=code, message=message, **details)


def encode_event(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))

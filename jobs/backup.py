"""One VM's backup on its appliance: snapshot, hot-add or network source, engine run, release, catalog.

The snapshot and every hot-added disk are released on every path (success, failure, cancel); the task
row records them while held, so the sweeper can release them after a crash. The engine writes straight
to the repository: only its JSON events pass through this process.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime

from django.utils import timezone

from appliances.actions import engine_ready_transport
from core.errors import ActionableError
from inventory.connectors import connector_for
from inventory.connectors.base import ChangeIdUnknown, Connector, ConnectorError, SnapshotRef
from jobs.engine import EngineFailed, run_engine_operation
from jobs.events import EventLog
from jobs.models import RestorePoint, Task
from jobs.targets import target_spec


class Cancelled(ActionableError):
    code = "cancelled"


def vm_key(vm) -> str:
    """The VM's name in the repository: stable across renames (instance UUID, else connection + moref)."""
    return vm.uuid or f"{vm.connection_id}-{vm.moref}"


def appliance_address(appliance) -> str:
    """Where the appliance connects from, seen from this machine (for the lab's network-mode server)."""
    if appliance.transport == "local":
        return "127.0.0.1"
    handle = appliance.deploy_handle or {}
    if handle.get("labhost"):
        from appliances.labhost import LabHost

        host = LabHost.find(handle["labhost"])
        if host is not None and host.info is not None:
            return host.info.host_address
    return appliance.address or ""


def run_backup(task: Task, log: EventLog, config: dict, cancelled) -> RestorePoint:
    vm, appliance, repository = task.vm, task.appliance, task.repository
    with connector_for(task.connection) as connector:
        log.phase("snapshot", f"Taking a snapshot of {vm.name}")
        snapshot = connector.create_snapshot(vm.moref, f"vafleet-task-{task.pk}", quiesce=config.get("quiesce", False))
        task.snapshot = snapshot.moref
        task.save(update_fields=["snapshot"])
        try:
            return _with_snapshot(task, log, config, cancelled, connector, snapshot, appliance, repository)
        finally:
            release(task, connector, log)


def release(task: Task, connector: Connector, log: EventLog | None = None) -> None:
    """Detach what was hot-added and remove the snapshot; records what is still held if that fails."""
    appliance = task.appliance
    for key in list(task.attached):
        try:
            connector.detach_disk(appliance.vm_moref, key)
        except ConnectorError as exc:
            if log:
                log.log(f"Could not detach disk {key} from {appliance.name}: {exc}", "warning")
            continue
        task.attached.remove(key)
    if task.snapshot:
        try:
            connector.remove_snapshot(task.vm.moref, task.snapshot)
            task.snapshot = ""
        except ConnectorError as exc:
            if log:
                log.log(f"Could not remove snapshot {task.snapshot}: {exc}; the sweeper retries.", "warning")
    task.save(update_fields=["attached", "snapshot"])


def _with_snapshot(task, log, config, cancelled, connector, snapshot: SnapshotRef, appliance, repository):
    from jobs.repositories import ensure_initialized

    parent = (RestorePoint.objects.filter(repository=repository, vm=task.vm).order_by("-taken").first())
    log.phase("engine", f"Checking the engine on {appliance.name}")
    with engine_ready_transport(appliance) as transport, ExitStack() as sources:
        log.log(f"Engine {appliance.engine_version} on {appliance.name}.")
        ensure_initialized(repository, transport)
        disks = []
        for disk in snapshot.disks:
            disks.append(_disk_source(task, log, connector, snapshot, disk, appliance, sources))
            _changed_blocks(task, log, connector, snapshot, disk, disks[-1], parent, config)
        spec = {
            "operation": "backup", "target": target_spec(repository), "passphrase": repository.passphrase,
            "vm": {"name": vm_key(task.vm), "config": _vm_config(task.vm)}, "disks": disks,
            "parent": parent.rp_id if parent else "",
            "options": {"verify": bool(config.get("verify", True)),
                        "compression_level": int(config.get("compression_level", 3)),
                        "throttle_mbps": config.get("throttle_mbps") or 0},  # MB/s per VM; 0: no limit
        }
        log.phase("backup", f"Backing up {len(disks)} disk(s) {task.get_mode_display().lower()} to {repository}")
        result = run_engine_job(transport, appliance, spec, log, cancelled)
    return _record(task, repository, result)


def _disk_source(task, log, connector, snapshot, disk, appliance, sources: ExitStack) -> dict:
    name = f"disk-{disk['key']}"
    if task.mode == Task.Mode.HOTADD:
        key = connector.attach_disk(appliance.vm_moref, disk["file_name"])
        task.attached.append(key)
        task.save(update_fields=["attached"])
        device = connector.device(appliance.vm_moref, key) if hasattr(connector, "device") else None
        if device and "path" not in device:  # named as the guest sees it; the engine finds it on the appliance
            slot, uuid = f"{device['bus']}:{device['unit']}", f" (uuid {device['uuid']})" if device.get("uuid") else ""
            log.log(f"{disk['file_name']} hot-added to {appliance.name} as SCSI {slot}{uuid}.")
            return {"name": name, "device": {"uuid": device.get("uuid", ""), "bus": device["bus"],
                                             "unit": device["unit"]}}
        if device and len(device["chain"]) == 1:
            log.log(f"{disk['file_name']} hot-added to {appliance.name} as device {key}.")
            return {"name": name, "path": device["path"]}
        connector.detach_disk(appliance.vm_moref, key)
        task.attached.remove(key)
        task.save(update_fields=["attached"])
        log.log(f"{disk['file_name']} is hot-added but not readable as one device here (older snapshots "
                "below it): reading it over the network instead.", "warning")
    source = sources.enter_context(connector.network_disk(task.vm.moref, snapshot, disk, appliance_address(appliance)))
    log.log(f"{disk['file_name']} read over the network.")
    return {"name": name, "path": source["path"], "options": source.get("options", {})}


def _changed_blocks(task, log, connector, snapshot, disk, source: dict, parent, config) -> None:
    """Changed-block tracking: the extents since the parent's change id, and the new change id."""
    if not config.get("use_cbt", True):
        return
    previous = ""
    if parent is not None:
        previous = next((d.get("change_id", "") for d in parent.disks if d.get("name") == source["name"]), "")
    try:
        if previous:
            extents, change_id = connector.changed_areas(task.vm.moref, snapshot.moref, disk["key"], previous)
            source["changed_extents"] = [list(e) for e in extents]
            log.log(f"{source['name']}: changed-block tracking gives {len(extents)} extent(s) since the last backup.")
        else:
            _, change_id = connector.changed_areas(task.vm.moref, snapshot.moref, disk["key"], "*")
            if parent is not None:
                log.log(f"{source['name']}: the last restore point records no change id (a restore wrote the disk, "
                        "or tracking was off). Reading the whole disk; only new chunks are stored.")
        source["change_id"] = change_id
    except ChangeIdUnknown as exc:
        log.log(f"{source['name']}: {exc} Reading the whole disk; only new chunks are stored.", "warning")
        if previous:  # the snapshot's own change id still lets the next backup be incremental
            try:
                source["change_id"] = connector.changed_areas(task.vm.moref, snapshot.moref, disk["key"], "*")[1]
            except ConnectorError:
                pass
    except ConnectorError as exc:
        log.log(f"{source['name']}: no changed-block tracking ({exc}); reading the whole disk.", "info")


def _vm_config(vm) -> dict:
    return {"name": vm.name, "moref": vm.moref, "uuid": vm.uuid, "guest_os": vm.guest_os, "num_cpu": vm.num_cpu,
            "memory_mb": vm.memory_mb, "folder": vm.folder,
            "disks": [{"key": d.key, "label": d.label, "capacity_bytes": d.capacity_bytes}
                      for d in vm.disks.all()]}


def run_engine_job(transport, appliance, spec: dict, log: EventLog, cancelled) -> dict:
    """Run one engine operation on the appliance; its events go to the task log; returns the result event."""
    try:
        result, _ = run_engine_operation(transport, appliance, spec, log.engine, cancelled=cancelled)
    except EngineFailed as exc:
        if exc.code == "cancelled":
            raise Cancelled(str(exc)) from exc
        raise
    return result


def _record(task, repository, result: dict) -> RestorePoint:
    stats = result.get("stats") or {}
    finished = result.get("finished") or ""
    try:
        taken = datetime.fromisoformat(finished.replace("Z", "+00:00")) if finished else timezone.now()
    except ValueError:
        taken = timezone.now()
    point = RestorePoint.objects.create(
        repository=repository, rp_id=result["restore_point"], vm=task.vm, vm_name=vm_key(task.vm),
        kind=result.get("kind", ""), parent=result.get("parent", ""), taken=taken,
        disks=result.get("disks") or [], vm_config=_vm_config(task.vm),
        logical_bytes=int(stats.get("logical_bytes") or 0), stored_bytes=int(stats.get("stored_bytes") or 0),
        verified=bool(result.get("verified")))
    task.restore_point, task.result = point, {k: v for k, v in result.items() if k not in ("type", "time")}
    task.save(update_fields=["restore_point", "result"])
    return point

"""Restores, run by an appliance: a restore point as a new VM, into a folder, over the VM's own disks, or
one disk into an existing VM's disk.

As a new VM: the VM is created with disks of the backed-up sizes, each disk is hot-added (writable,
the VM is off) to an appliance whose host mounts the destination datastore, the engine writes into
it and checks the whole-disk digest recorded at backup time, the disks are detached. A failure
removes the half-restored VM. Into a folder: the engine writes `<folder>/<disk>.img` on the appliance.

A hot-added disk reaches the engine as the connector's `device()` names it: a local path (the lab),
or on vSphere its backing UUID and SCSI slot, which the engine looks up on the appliance
(engines/sources/device.py) and writes as a block device.

In place (`original`: the backed-up VM's own disks; `disk`: one disk of the restore point into a disk
of another VM): the target VM must be powered off, have no snapshots and disks at least as large as
the backed-up ones, and the request must carry `"confirm": true`. The disks are hot-added writable to
an appliance whose host mounts their datastores, the engine writes into them with the digest check,
they are detached, and the catalog forgets the change ids of the VM's restore points (the appliance's
writes are not in the VM's changed-block tracking), so its next backup reads the whole disk once.
"""

from __future__ import annotations

import posixpath
import re
from contextlib import ExitStack
from dataclasses import dataclass, field

from appliances.actions import engine_ready_transport
from appliances.models import Appliance
from appliances.services import DEPLOYED
from core.errors import ActionableError
from inventory.connectors import connector_for
from inventory.connectors.base import ConnectorError, NewVmSpec
from inventory.models import Datastore, Host, Network, VirtualMachine
from jobs.backup import Cancelled, run_engine_job
from jobs.events import EventLog
from jobs.models import RestorePoint, Task
from jobs.targets import target_spec

IN_PLACE = ("original", "disk")
MODES = ("new_vm", "folder", *IN_PLACE)


class RestoreRefused(ActionableError):
    code = "restore_refused"
    http_status = 400


@dataclass
class Overwrite:
    """One disk of the restore point written over one disk of a VM."""

    source: str  # the disk's name in the restore point
    size: int
    key: int  # the target VM's disk key
    file_name: str
    datastore: str  # moref
    capacity: int


@dataclass
class InPlacePlan:
    vm: VirtualMachine
    disks: list[Overwrite] = field(default_factory=list)

    def datastores(self) -> list[Datastore]:
        morefs = {d.datastore for d in self.disks}
        found = list(Datastore.objects.filter(connection_id=self.vm.connection_id, moref__in=morefs))
        if len(found) != len(morefs):
            raise RestoreRefused(f"A datastore of VM {self.vm.name} is not in the inventory yet: synchronise "
                                 f"{self.vm.connection.name}, then restore again.")
        return found


def restore_appliance(point, destination: dict, datastores: list[Datastore] | None = None) -> Appliance:
    """A ready appliance that can write the destination (hot-add on a host that mounts its datastore(s))."""
    ready = Appliance.objects.filter(state=Appliance.State.READY)
    if destination.get("mode") in IN_PLACE:
        return _in_place_appliance(ready, destination, datastores or [])
    if destination.get("appliance") and not ready.filter(pk=destination["appliance"]).exists():
        raise RestoreRefused("The chosen appliance is not ready.")
    if destination.get("mode") == "folder":
        candidates = ready
    else:
        datastore = Datastore.objects.filter(pk=destination["datastore"]).first()
        if datastore is None:
            raise RestoreRefused("The destination datastore does not exist (any more): choose another one.")
        candidates = ready.filter(connection_id=datastore.connection_id, host__datastores=datastore)
        if destination.get("appliance") and not candidates.filter(pk=destination["appliance"]).exists():
            raise RestoreRefused(f"The chosen appliance's host does not mount datastore {datastore.name}: choose an "
                                 "appliance on a host that does (hot-add), or let VA Fleet choose.")
    if destination.get("appliance"):
        return candidates.get(pk=destination["appliance"])
    chosen = candidates.order_by("-vcpus", "name").first()
    if chosen is None:
        raise RestoreRefused("No ready appliance can write there: the restore needs one whose host mounts the "
                             "destination datastore (hot-add).")
    return chosen


def writable_datastore_ids() -> set[int]:
    """Datastores some ready appliance can write by hot-add (its host mounts them): `restore_appliance`'s rule,
    for every datastore in one query."""
    return set(Datastore.objects.filter(hosts__deployed_appliances__state=Appliance.State.READY)
               .values_list("pk", flat=True))


def _in_place_appliance(ready, destination: dict, datastores: list[Datastore]) -> Appliance:
    candidates = ready
    for datastore in datastores:
        candidates = candidates.filter(connection_id=datastore.connection_id, host__datastores=datastore)
    names = ", ".join(sorted(d.name for d in datastores))
    if destination.get("appliance"):
        if not ready.filter(pk=destination["appliance"]).exists():
            raise RestoreRefused("The chosen appliance is not ready.")
        chosen = candidates.filter(pk=destination["appliance"]).first()
        if chosen is None:
            raise RestoreRefused(f"The chosen appliance's host does not mount datastore(s) {names}: choose an "
                                 "appliance on a host that does (hot-add).")
        return chosen
    chosen = candidates.distinct().order_by("-vcpus", "name").first()
    if chosen is None:
        raise RestoreRefused(f"No ready appliance can write the disks: the restore needs one whose host mounts "
                             f"datastore(s) {names} (hot-add).")
    return chosen


def _disk_key(name: str, point) -> int | None:
    """The VM disk key a restore point's disk was backed up from (`disk-<key>`)."""
    found = re.fullmatch(r"disk-(\d+)", name or "")
    if found:
        return int(found.group(1))
    position = [d["name"] for d in point.disks].index(name)
    keys = [d.get("key") for d in (point.vm_config or {}).get("disks") or []]
    return int(keys[position]) if position < len(keys) and keys[position] is not None else None


def in_place_plan(point, destination: dict) -> InPlacePlan:
    """Check an in-place restore against the target VM as the hypervisor sees it now; RestoreRefused if not."""
    mode = destination.get("mode")
    if mode == "original":
        vm = VirtualMachine.objects.filter(pk=point.vm_id).first()  # as the inventory has it now
        if vm is None or vm.vanished_at is not None:
            raise RestoreRefused(f"The VM backed up as {point.vm_name} is no longer in the inventory: restore it as "
                                 "a new VM instead.")
    else:
        vm = VirtualMachine.objects.filter(pk=destination.get("vm") or None, vanished_at=None).first()
        if vm is None:
            raise RestoreRefused("Choose the VM whose disk is to be overwritten (it is not in the inventory).")
    try:
        with connector_for(vm.connection) as connector:
            current = {int(d["key"]): d for d in connector.vm_disks(vm.moref)}
            snapshots = connector.list_snapshots(vm.moref)
    except ConnectorError as exc:
        raise RestoreRefused(f"Could not read the disks of VM {vm.name} from {vm.connection.name} ({exc}): check "
                             "the connection, then restore again.") from exc
    plan = InPlacePlan(vm=vm)
    if mode == "original":
        for source in point.disks:
            key = _disk_key(source["name"], point)
            if key not in current:
                raise RestoreRefused(f"VM {vm.name} no longer has the disk {source['name']} was backed up from: "
                                     "restore it as a new VM, or restore that disk into a chosen disk.")
            plan.disks.append(_overwrite(vm, source, current[key]))
    else:
        names = [d["name"] for d in point.disks]
        source = next((d for d in point.disks if d["name"] == destination.get("disk")), None)
        if source is None:
            raise RestoreRefused(f"The restore point has no disk {destination.get('disk')!r}; its disks are: "
                                 f"{', '.join(names)}.")
        try:
            target = current.get(int(destination.get("target_disk_key")))
        except (TypeError, ValueError):
            target = None
        if target is None:
            keys = ", ".join(str(k) for k in sorted(current)) or "none"
            raise RestoreRefused(f"Choose the disk of VM {vm.name} to overwrite by its key (target_disk_key); its "
                                 f"disks are: {keys}.")
        plan.disks.append(_overwrite(vm, source, target))
    if vm.power_state != VirtualMachine.PowerState.OFF:
        raise RestoreRefused(f"VM {vm.name} is {vm.get_power_state_display().lower() or 'not known to be off'}: "
                             "power it off, then restore again (its disks are overwritten in place).")
    if snapshots:
        raise RestoreRefused(f"VM {vm.name} has {len(snapshots)} snapshot(s): remove them before restoring over its "
                             "disks.")
    if destination.get("confirm") is not True:
        disks = ", ".join(f"{d.key} ({d.file_name})" for d in plan.disks)
        raise RestoreRefused(f"This restore overwrites disk(s) {disks} of VM {vm.name}: everything written to them "
                             'since the backup is lost. Confirm it ("confirm": true) to go on.')
    return plan


def _overwrite(vm, source: dict, disk: dict) -> Overwrite:
    size, capacity = int(source["size"]), int(disk["capacity_bytes"])
    if capacity < size:
        raise RestoreRefused(f"Disk {disk['key']} of VM {vm.name} holds {capacity / 2**20:,.0f} MiB, less than the "
                             f"{size / 2**20:,.0f} MiB of {source['name']}: choose a disk at least as large.")
    return Overwrite(source=source["name"], size=size, key=int(disk["key"]), file_name=disk["file_name"],
                     datastore=disk["datastore"], capacity=capacity)


def run_restore(task: Task, log: EventLog, cancelled) -> str:
    destination = task.spec
    if destination.get("mode") == "folder":
        return _into_folder(task, log, cancelled, destination)
    if destination.get("mode") in IN_PLACE:
        return _in_place(task, log, cancelled, destination)
    return _as_new_vm(task, log, cancelled, destination)


def _spec(task: Task, disks: list[dict]) -> dict:
    point = task.restore_point
    return {"operation": "restore", "target": target_spec(point.repository), "passphrase": point.repository.passphrase,
            "vm": {"name": point.vm_name}, "restore_point": point.rp_id, "disks": disks,
            "options": {"check_digest": True}}


def _into_folder(task, log, cancelled, destination: dict) -> str:
    point, folder = task.restore_point, destination["folder"].rstrip("/")
    disks = [{"name": d["name"], "path": posixpath.join(folder, f"{d['name']}.img")} for d in point.disks]
    log.phase("restore", f"Writing {len(disks)} disk image(s) into {folder} on {task.appliance_name}")
    with engine_ready_transport(task.appliance) as transport:
        transport.run(["mkdir", "-p", folder], timeout=30)
        run_engine_job(transport, task.appliance, _spec(task, disks), log, cancelled)
    return f"{len(disks)} disk image(s) written into {folder} on {task.appliance_name}; digests checked."


def _as_new_vm(task, log, cancelled, destination: dict) -> str:
    point, appliance = task.restore_point, task.appliance
    _deployed(appliance)
    host = Host.objects.select_related("datacenter").get(pk=destination["host"])
    datastore = Datastore.objects.get(pk=destination["datastore"])
    network = Network.objects.filter(pk=destination.get("network")).first()
    config = point.vm_config or {}
    with connector_for(host.connection) as connector:
        log.phase("create", f"Creating VM {destination['name']} on {host.name}")
        vm = connector.create_vm(NewVmSpec(
            name=destination["name"], datacenter=host.datacenter.moref, host=host.moref, datastore=datastore.moref,
            network=network.moref if network else None, num_cpu=int(config.get("num_cpu") or 1),
            memory_mb=int(config.get("memory_mb") or 1024), guest_os=config.get("guest_os") or "otherGuest64",
            disk_capacities=[int(d["size"]) for d in point.disks]))
        task.spec = {**destination, "vm_moref": vm}
        task.save(update_fields=["spec"])
        try:
            with engine_ready_transport(appliance) as transport, ExitStack() as held:
                outputs = []
                for source, disk in zip(point.disks, connector.vm_disks(vm), strict=True):
                    key = connector.attach_disk(appliance.vm_moref, disk["file_name"], writable=True)
                    held.callback(connector.detach_disk, appliance.vm_moref, key)
                    output, seen_as = _hot_added_output(connector, appliance, key, source["name"])
                    log.log(f"{disk['file_name']} hot-added writable to {appliance.name} as {seen_as}; "
                            f"{source['name']} goes there.")
                    outputs.append(output)
                log.phase("restore", f"Writing {len(outputs)} disk(s) through {appliance.name} (hot-add)")
                run_engine_job(transport, appliance, _spec(task, outputs), log, cancelled)
        except BaseException:
            try:
                connector.destroy_vm(vm)
                log.log(f"The half-restored VM {destination['name']} was removed.", "warning")
            except ConnectorError as exc:
                log.log(f"Could not remove the half-restored VM {destination['name']} ({vm}): {exc}", "error")
            raise
    return f"VM {destination['name']} restored on {host.name} ({vm}); every disk's digest matches the backup."


def _in_place(task, log, cancelled, destination: dict) -> str:
    appliance = task.appliance
    _deployed(appliance)
    plan = in_place_plan(task.restore_point, destination)  # again: the VM may have changed since it was queued
    vm = plan.vm
    with connector_for(vm.connection) as connector:
        with engine_ready_transport(appliance) as transport, ExitStack() as held:
            outputs, files = [], []
            for disk in plan.disks:
                key = connector.attach_disk(appliance.vm_moref, disk.file_name, writable=True)
                task.attached.append(key)
                task.save(update_fields=["attached"])
                held.callback(_detach, task, connector, appliance, key, log)
                output, seen_as = _hot_added_output(connector, appliance, key, disk.source)
                log.log(f"Disk {disk.key} of {vm.name} ({disk.file_name}) hot-added writable to {appliance.name} "
                        f"as {seen_as}; {disk.source} goes there.")
                outputs.append(output)
                if "path" in output:
                    files.append({**output, "capacity": disk.capacity, "size": disk.size})
            log.phase("restore", f"Overwriting {len(outputs)} disk(s) of {vm.name} through {appliance.name} "
                                 "(hot-add)")
            keys = ", ".join(str(d.key) for d in plan.disks)
            try:
                run_engine_job(transport, appliance, _spec(task, outputs), log, cancelled)
            except Cancelled as exc:
                raise Cancelled(f"The restore was cancelled while it overwrote disk(s) {keys} of VM {vm.name}: they "
                                "hold part of the restore point now; restore again before powering the VM on.") from exc
            except BaseException:
                log.log(f"Disk(s) {keys} of VM {vm.name} may be partly overwritten: restore again before powering "
                        "it on.", "error")
                raise
            finally:
                _keep_capacity(transport, files, log)
                _forget_change_ids(vm, log)
        if hasattr(connector, "reset_cbt"):
            connector.reset_cbt(vm.moref)
            log.log(f"Changed-block tracking of {vm.name} reset.")
    disks = ", ".join(str(d.key) for d in plan.disks)
    return f"Disk(s) {disks} of VM {vm.name} overwritten with restore point {task.restore_point.rp_id}; every " \
           "disk's digest matches the backup."


def _detach(task, connector, appliance, key: int, log: EventLog) -> None:
    try:
        connector.detach_disk(appliance.vm_moref, key)
    except ConnectorError as exc:
        log.log(f"Could not detach disk {key} from {appliance.name}: {exc}; the sweeper retries.", "warning")
        return
    task.attached.remove(key)
    task.save(update_fields=["attached"])


def _keep_capacity(transport, outputs: list[dict], log: EventLog) -> None:
    """A file-backed disk larger than the restored one was cut to the restored size: give it its size back
    (the bytes past the restored disk read as zeros). Only for `path` outputs: devices keep their size."""
    for output in outputs:
        if output["capacity"] > output["size"]:
            done = transport.run(["sh", "-c", 'test -b "$1" || truncate -s "$2" "$1"', "-", output["path"],
                                  str(output["capacity"])], timeout=60)
            if done.exit:
                log.log(f"Could not give {output['path']} its size of {output['capacity']} bytes back: "
                        f"{done.stderr.decode(errors='replace').strip()}", "warning")
            else:
                log.log(f"{output['name']} filled {output['size']} of the disk's {output['capacity']} bytes; "
                        "the rest reads as zeros.")


def _forget_change_ids(vm: VirtualMachine, log: EventLog) -> None:
    """The appliance's writes are not in the VM's own changed-block tracking: without the change ids of its
    restore points, the VM's next backup reads its whole disk(s) once (hash dedup stores only what differs)."""
    for point in RestorePoint.objects.filter(vm=vm):
        if any("change_id" in disk for disk in point.disks):
            point.disks = [{k: v for k, v in disk.items() if k != "change_id"} for disk in point.disks]
            point.save(update_fields=["disks"])
    log.log(f"The next backup of {vm.name} reads its whole disk(s) once: the restore's writes are not in its "
            "changed-block tracking.")


def _deployed(appliance) -> None:
    if appliance.state not in DEPLOYED:
        raise RestoreRefused(f"{appliance.name} is {appliance.get_state_display().lower()}: a restore through "
                             "hot-add needs a deployed appliance; deploy it or choose another one, then restore "
                             "again.")


def _hot_added_output(connector, appliance, key: int, name: str) -> tuple[dict, str]:
    """The engine's output for a disk hot-added to the appliance, and how the log names it: the local path where
    the connector gives one (the lab), else the backing UUID and SCSI slot the engine looks up (vSphere)."""
    device = connector.device(appliance.vm_moref, key) if hasattr(connector, "device") else {}
    if device.get("path"):
        return {"name": name, "path": device["path"]}, f"device {key}"
    if device.get("bus") is None and not device.get("uuid"):
        raise RestoreRefused(f"The {connector.label or connector.kind} connector cannot tell how {appliance.name} "
                             "sees a hot-added disk: restore into a folder instead.")
    uuid = device.get("uuid") or ""
    seen_as = f"SCSI {device['bus']}:{device['unit']}" if device.get("bus") is not None else "a disk"
    return ({"name": name, "device": {"uuid": uuid, "bus": device.get("bus"), "unit": device.get("unit")}},
            seen_as + (f" (uuid {uuid})" if uuid else ""))

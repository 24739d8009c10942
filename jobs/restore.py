"""Restores, run by an appliance: a restore point as a new VM, or its disk images into a folder.

As a new VM: the VM is created with disks of the backed-up sizes, each disk is hot-added (writable,
the VM is off) to an appliance whose host mounts the destination datastore, the engine writes into
it and checks the whole-disk digest recorded at backup time, the disks are detached. A failure
removes the half-restored VM. Into a folder: the engine writes `<folder>/<disk>.img` on the appliance.
"""

from __future__ import annotations

import posixpath
from contextlib import ExitStack

from appliances.actions import engine_ready_transport
from appliances.models import Appliance
from appliances.services import DEPLOYED
from core.errors import ActionableError
from inventory.connectors import connector_for
from inventory.connectors.base import ConnectorError, NewVmSpec
from inventory.models import Datastore, Host, Network
from jobs.backup import run_engine_job
from jobs.events import EventLog
from jobs.models import Task
from jobs.targets import target_spec


class RestoreRefused(ActionableError):
    code = "restore_refused"
    http_status = 400


def restore_appliance(point, destination: dict) -> Appliance:
    """A ready appliance that can write the destination (hot-add on a host that mounts its datastore)."""
    ready = Appliance.objects.filter(state=Appliance.State.READY)
    if destination.get("appliance"):
        chosen = ready.filter(pk=destination["appliance"]).first()
        if chosen is None:
            raise RestoreRefused("The chosen appliance is not ready.")
        return chosen
    if destination.get("mode") == "folder":
        chosen = ready.order_by("-vcpus", "name").first()
    else:
        datastore = Datastore.objects.filter(pk=destination["datastore"]).first()
        if datastore is None:
            raise RestoreRefused("The destination datastore does not exist (any more): choose another one.")
        chosen = (ready.filter(connection_id=datastore.connection_id, host__datastores=datastore)
                  .order_by("-vcpus", "name").first())
    if chosen is None:
        raise RestoreRefused("No ready appliance can write there: the restore needs one whose host mounts the "
                             "destination datastore (hot-add).")
    return chosen


def run_restore(task: Task, log: EventLog, cancelled) -> str:
    destination = task.spec
    if destination.get("mode") == "folder":
        return _into_folder(task, log, cancelled, destination)
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
                    key = connector.attach_disk(appliance.vm_moref, disk["file_name"])
                    held.callback(connector.detach_disk, appliance.vm_moref, key)
                    outputs.append({"name": source["name"], "path": _device_path(connector, appliance, key)})
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


def _device_path(connector, appliance, key: int) -> str:
    if appliance.state not in DEPLOYED or not hasattr(connector, "device"):
        raise RestoreRefused(f"{appliance.name} cannot name the device of a hot-added disk on this hypervisor yet.")
    return connector.device(appliance.vm_moref, key)["path"]

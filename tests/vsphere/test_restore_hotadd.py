"""Restores to vSphere through hot-add on the vCenter simulator: as a new VM, over the VM's own disks, and one
disk into another VM's disk, through the same runner as the lab.

The appliance stands in for a VA as in test_backup_job.py (a local engine, its VM record one of the
simulator's VMs). Each target disk is hot-added writable (independent persistent) to that VM; the
connector names it by SCSI slot only (the simulator gives hot-added disks no backing UUID), and a
thread plays the guest's kernel and udev: it links a fake `/dev/sdX` to the simulator's flat file of
each disk that appears, so the engine's writes land in that file.

What the simulator stores for a new VM: `CreateVM_Task` makes `<vm>/<vm>.vmdk` and `<vm>/<vm>-flat.vmdk`
for the first disk (`<vm>_1.vmdk`, `<vm>_1-flat.vmdk` for the next), both empty whatever the capacity, so
the stand-in udev links the `-flat.vmdk` file as it does for a backup, and the restore fills it.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyVmomi import vim

from engines.sources.device import DEVICE_ROOT_ENV, SYSFS_ROOT_ENV
from inventory.connectors.vsphere import VSphereConnector
from inventory.connectors.vsphere.network import parse_file_name
from inventory.models import Datastore, VirtualDisk, VirtualMachine
from inventory.sync import sync_connection
from jobs import services
from jobs.models import BackupJob, JobRun, Repository, Task
from jobs.runs import execute_restore, execute_run
from tests.vsphere.helpers import (
    GuestDevices,
    appliance_disk_files,
    flat_file,
    messages,
    params_for,
    stand_in_appliance,
)
from tests.vsphere.test_backup_job import PASSPHRASE, simulator, vcenter  # noqa: F401 - the same simulator set-up

pytestmark = pytest.mark.vcsim

MIB = 1 << 20
SIZE = 5 * MIB


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def backed_up(vcenter, tmp_path: Path, vm: VirtualMachine):
    """Known bytes with holes in the VM's first disk, backed up in network mode; returns (restore point, bytes)."""
    path = flat_file(vm, vm.disks.order_by("key").first().key)
    rng = random.Random(vm.pk)
    with open(path, "r+b") as f:
        f.truncate(SIZE)
        os.pwrite(f.fileno(), rng.randbytes(MIB + 777), 0)
        os.pwrite(f.fileno(), rng.randbytes(MIB), 3 * MIB)  # 2-3 MiB and the tail stay holes
    repository = Repository.objects.create(name="vcsim repo", kind="local", path=str(tmp_path / "repo"),
                                           passphrase=PASSPHRASE, chunk_size=MIB)
    job = BackupJob.objects.create(name="nightly", repository=repository, mode=BackupJob.Mode.NETWORK)
    job.vms.set([vm])
    run = execute_run(services.start_run(job, queue=False).pk)
    task = run.tasks.get()
    assert run.state == JobRun.State.SUCCEEDED, (task.message, messages(task))
    return task.restore_point, path.read_bytes()


@contextmanager
def guest_udev(simulator, vcenter, appliance, root: Path, monkeypatch) -> Iterator[GuestDevices]:
    """The appliance guest's udev for the duration of the block; the local engine finds the disks it links."""
    datastores = {d.name: d.url for d in Datastore.objects.filter(connection=vcenter)}
    guest = GuestDevices(simulator, appliance.vm_moref, datastores, root)
    monkeypatch.setenv(DEVICE_ROOT_ENV, str(guest.dev))  # the local engine process inherits these
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(guest.sys))
    guest.start()
    try:
        yield guest
    finally:
        guest.stop.set()
        guest.join()
    assert guest.failure is None


def power_off(simulator, vcenter, vm: VirtualMachine) -> VirtualMachine:
    """Power the VM off in the simulator and bring that into the inventory."""
    with VSphereConnector(params_for(simulator)) as connector:
        collector = connector._connect()
        collector.wait(vim.VirtualMachine(vm.moref, collector.si._stub).PowerOffVM_Task())
    assert sync_connection(vcenter.pk).ok
    vm = VirtualMachine.objects.get(pk=vm.pk)
    assert vm.power_state == VirtualMachine.PowerState.OFF
    return vm


def stored_flat_file(datastores: dict[str, str], file_name: str) -> Path:
    datastore, relative = parse_file_name(file_name)
    return Path(datastores[datastore]) / (relative.removesuffix(".vmdk") + "-flat.vmdk")


def test_a_restore_as_a_new_vm_writes_its_disk_through_hot_add(vcenter, simulator, tmp_path, monkeypatch):
    vm = VirtualMachine.objects.filter(connection=vcenter, is_template=False).order_by("name")[0]
    appliance = stand_in_appliance(vcenter, vm)
    point, source = backed_up(vcenter, tmp_path, vm)
    datastore = Datastore.objects.filter(hosts=appliance.host).order_by("name").first()
    disks_before = appliance_disk_files(simulator, appliance.vm_moref)

    with guest_udev(simulator, vcenter, appliance, tmp_path / "va", monkeypatch) as guest:
        task = execute_restore(services.start_restore(point, {
            "mode": "new_vm", "name": "restored-web", "host": appliance.host_id, "datastore": datastore.pk},
            queue=False).pk)

    assert task.state == Task.State.SUCCEEDED, (task.message, messages(task))
    moref = task.spec["vm_moref"]
    assert task.message == f"VM restored-web restored on {appliance.host.name} ({moref}); every disk's digest " \
                           "matches the backup."
    ((bus, unit, uuid, file_name),) = guest.plugged
    assert uuid == "" and file_name == f"[{datastore.name}] restored-web/restored-web.vmdk"
    assert guest.modes[file_name] == "independent_persistent"  # writable: the writes stay in the file
    log = messages(task)
    assert f"{file_name} hot-added writable to {appliance.name} as SCSI {bus}:{unit}; disk-" in log
    assert f"is written to {guest.dev}/sdb at SCSI {bus}:{unit}." in log
    with VSphereConnector(params_for(simulator)) as connector:
        (disk,) = connector.vm_disks(moref)
    assert disk["file_name"] == file_name and disk["capacity_bytes"] == SIZE
    restored = stored_flat_file({d.name: d.url for d in Datastore.objects.filter(connection=vcenter)}, file_name)
    assert sha256(restored.read_bytes()) == sha256(source)
    assert appliance_disk_files(simulator, appliance.vm_moref) == disks_before  # detached again


def test_restores_over_a_powered_off_vm_and_into_another_vms_disk(vcenter, simulator, tmp_path, monkeypatch):
    vm = VirtualMachine.objects.filter(connection=vcenter, is_template=False, cbt_enabled=True).order_by("name")[0]
    appliance = stand_in_appliance(vcenter, vm)
    point, source = backed_up(vcenter, tmp_path, vm)
    assert point.disks[0].get("change_id")  # the next backup would be incremental
    disk = vm.disks.order_by("key").first()
    path = flat_file(vm, disk.key)
    with open(path, "r+b") as f:  # the guest writes after the backup, in data and in a hole
        os.pwrite(f.fileno(), b"\xee" * 300_000, MIB // 2)
        os.pwrite(f.fileno(), b"\xee" * 4096, 2 * MIB + 5)
    assert sha256(path.read_bytes()) != sha256(source)
    other_disk = (VirtualDisk.objects.filter(vm__connection=vcenter, vm__is_template=False,
                                             datastore__in=appliance.host.datastores.all())
                  .exclude(vm__moref__in=[vm.moref, appliance.vm_moref]).order_by("vm__name", "key").first())
    other = other_disk.vm
    other_path = flat_file(other, other_disk.key)
    other_path.write_bytes(random.Random(5).randbytes(SIZE + MIB))  # old bytes, longer than the restored disk
    vm, other = power_off(simulator, vcenter, vm), power_off(simulator, vcenter, other)
    disks_before = appliance_disk_files(simulator, appliance.vm_moref)

    with guest_udev(simulator, vcenter, appliance, tmp_path / "va", monkeypatch) as guest:
        original = execute_restore(services.start_restore(point, {"mode": "original", "confirm": True},
                                                          queue=False).pk)
        into = execute_restore(services.start_restore(point, {
            "mode": "disk", "disk": f"disk-{disk.key}", "vm": other.pk, "target_disk_key": other_disk.key,
            "confirm": True}, queue=False).pk)

    assert original.state == Task.State.SUCCEEDED, (original.message, messages(original))
    assert into.state == Task.State.SUCCEEDED, (into.message, messages(into))
    assert [file_name for *_, file_name in guest.plugged] == [disk.file_name, other_disk.file_name]
    assert set(guest.modes.values()) == {"independent_persistent"}
    assert sha256(path.read_bytes()) == sha256(source)  # the backed-up bytes are back, zeros where holes were
    assert f"Disk {disk.key} of {vm.name} ({disk.file_name}) hot-added writable to {appliance.name} as SCSI " \
           in messages(original)
    # The appliance's writes are not in the VM's changed-block tracking: the next backup reads everything.
    assert f"The next backup of {vm.name} reads its whole disk(s) once" in messages(original)
    point.refresh_from_db()
    assert not any("change_id" in d for d in point.disks)
    after = execute_run(services.start_run(BackupJob.objects.get(name="nightly"), queue=False).pk).tasks.get()
    assert after.state == Task.State.SUCCEEDED and after.restore_point.kind != "incremental-cbt", after.message
    # The stand-in device is the flat file itself, so it ends at the restored size; a real device keeps its own.
    assert sha256(other_path.read_bytes()[:SIZE]) == sha256(source)
    assert original.attached == [] and into.attached == []
    assert appliance_disk_files(simulator, appliance.vm_moref) == disks_before

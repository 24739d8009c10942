"""A backup job and a restore against the vCenter simulator, through the same runner as the lab.

The simulator runs no guest, so an appliance on this machine stands in for a deployed VA: an
`Appliance` row of the vSphere connection (transport `local`, state ready, its VM one of the
simulator's VMs, serving the simulator's hosts), bootstrapped like a local deployment
(`install_va_side` + `ensure_engine`). Its engine reads the snapshot disk over the network (the
datastore's `/folder` URL with the session cookie and the pinned thumbprint), or in hot-add mode
finds the attached disk by its SCSI slot in a fake /dev and /sys that a thread fills as the guest's
udev would, and writes to a local folder repository.

What the simulator does with snapshots: a snapshot's config is a copy of the VM's config when it was
taken, so its disks name the base files (`[ds] vm/vm.vmdk`), not delta disks; the datastore keeps
`vm.vmdk` and `vm-flat.vmdk` as they are, and the flat file is what network mode reads. The test
puts the "guest" bytes straight into that flat file and records the same writes with the harness's
change tracker (`Simulator.write`), whose change ids the snapshots capture.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from appliances.actions import current_bundle
from engines.sources.device import DEVICE_ROOT_ENV, SYSFS_ROOT_ENV
from inventory.models import Datastore, VirtualMachine
from inventory.sync import sync_connection
from jobs import services
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task
from jobs.runs import execute_restore, execute_run
from tests.vsphere.helpers import (
    GuestDevices,
    appliance_disk_files,
    connection_for,
    flat_file,
    messages,
    snapshots,
    stand_in_appliance,
)

pytestmark = pytest.mark.vcsim

MIB = 1 << 20
SIZE = 6 * MIB
PASSPHRASE = "Repo-Passphrase-1"


@pytest.fixture
def simulator(vcsim_factory):
    return vcsim_factory(vms=4, cluster_hosts=1, standalone_hosts=1)


@pytest.fixture
def vcenter(simulator, transactional_db):
    connection = connection_for(simulator, name="vc-jobs")
    assert sync_connection(connection.pk).ok
    return connection


def guest_write(simulator, path: Path, vm: str, key: int, offset: int, data: bytes) -> None:
    """What a guest write does: the bytes land in the disk and the change tracker records the extent."""
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), data, offset)
    simulator.write(vm, key, offset, len(data))


def test_backup_incremental_and_restore_of_a_vsphere_vm(vcenter, simulator, tmp_path):
    vm = VirtualMachine.objects.filter(connection=vcenter, cbt_enabled=True, is_template=False).order_by("name")[0]
    key = vm.disks.order_by("key").first().key
    appliance = stand_in_appliance(vcenter, vm)
    assert appliance.engine_version == current_bundle().version

    # Known bytes with holes: data, 1 MiB of zeros, data, a sparse tail.
    path = flat_file(vm, key)
    assert path.is_file()
    rng = random.Random(11)
    with open(path, "r+b") as f:
        f.truncate(SIZE)
        os.pwrite(f.fileno(), rng.randbytes(2 * MIB + 123), 0)
        os.pwrite(f.fileno(), rng.randbytes(MIB), 3 * MIB)

    repository = Repository.objects.create(name="vcsim repo", kind="local", path=str(tmp_path / "repo"),
                                           passphrase=PASSPHRASE, chunk_size=MIB)
    job = BackupJob.objects.create(name="vsphere nightly", repository=repository, mode=BackupJob.Mode.NETWORK)
    job.vms.set([vm])

    run = execute_run(services.start_run(job, queue=False).pk)
    task = run.tasks.get()
    assert run.state == JobRun.State.SUCCEEDED, (task.message, messages(task))
    assert task.appliance_id == appliance.pk
    assert task.mode == Task.Mode.NETWORK and task.mode_reason == "The job asks for network mode."
    assert "read over the network" in messages(task)
    first = task.restore_point
    assert first is not None and first.kind == "full"
    (disk,) = first.disks
    assert disk["size"] == SIZE and len(disk["digest"]) == 64  # the whole-disk digest restores check
    assert task.result["stats"]["zero_chunks"] == 2  # the sparse tail, 4-6 MiB
    assert disk.get("change_id", "").endswith("/0")  # the change id the snapshot captured
    assert task.snapshot == "" and snapshots(simulator, vm.moref) == []

    # The guest writes; the tracker knows where.
    guest_write(simulator, path, vm.moref, key, MIB // 2, rng.randbytes(64 * 1024))
    guest_write(simulator, path, vm.moref, key, 5 * MIB, rng.randbytes(MIB))  # in the sparse tail
    second_run = execute_run(services.start_run(job, queue=False).pk)
    second = second_run.tasks.get()
    assert second_run.state == JobRun.State.SUCCEEDED, (second.message, messages(second))
    point = second.restore_point
    assert point.kind == "incremental-cbt" and point.parent == first.rp_id
    assert "changed-block tracking gives 2 extent(s) since the last backup" in messages(second)
    assert point.disks[0]["change_id"].endswith("/2")
    assert point.disks[0]["digest"] != disk["digest"]
    assert second.result["stats"]["read_bytes"] < SIZE  # only the chunks the extents touch
    assert snapshots(simulator, vm.moref) == []
    assert RestorePoint.objects.filter(repository=repository, vm=vm).count() == 2

    # An unknown change id: a full read, and the log says why.
    RestorePoint.objects.filter(pk=point.pk).update(disks=[{**point.disks[0], "change_id": "52 unknown/9"}])
    guest_write(simulator, path, vm.moref, key, 4 * MIB, rng.randbytes(4096))
    third_run = execute_run(services.start_run(job, queue=False).pk)
    third = third_run.tasks.get()
    assert third_run.state == JobRun.State.SUCCEEDED, (third.message, messages(third))
    assert third.restore_point.kind != "incremental-cbt"
    assert "Reading the whole disk; only new chunks are stored." in messages(third)
    assert third.restore_point.disks[0]["change_id"].endswith("/3")  # the next run is incremental again
    assert snapshots(simulator, vm.moref) == []

    guest_write(simulator, path, vm.moref, key, 2 * MIB + 123, b"\x01" * 1000)  # where the first hole began
    fourth_run = execute_run(services.start_run(job, queue=False).pk)
    fourth = fourth_run.tasks.get()
    assert fourth_run.state == JobRun.State.SUCCEEDED, (fourth.message, messages(fourth))
    assert fourth.restore_point.kind == "incremental-cbt"
    assert fourth.result["stats"]["read_bytes"] < SIZE
    assert snapshots(simulator, vm.moref) == []

    # Into a folder: the image is the source file, byte for byte.
    source = path.read_bytes()
    folder = tmp_path / "images"
    restore = execute_restore(services.start_restore(fourth.restore_point, {"mode": "folder", "folder": str(folder)},
                                                     queue=False).pk)
    assert restore.state == Task.State.SUCCEEDED, (restore.message, messages(restore))
    (image,) = folder.glob("*.img")
    restored = image.read_bytes()
    assert len(restored) == SIZE and hashlib.sha256(restored).digest() == hashlib.sha256(source).digest()
    assert restore.message.endswith("digests checked.")


def test_without_change_tracking_every_run_reads_the_whole_disk_and_a_refused_disk_leaves_no_snapshot(
        vcenter, simulator, tmp_path):
    vm = VirtualMachine.objects.filter(connection=vcenter, cbt_enabled=False, is_template=False).order_by("name")[0]
    key = vm.disks.order_by("key").first().key
    stand_in_appliance(vcenter, vm)
    path = flat_file(vm, key)
    with open(path, "r+b") as f:
        f.truncate(2 * MIB)
        os.pwrite(f.fileno(), random.Random(3).randbytes(MIB), 0)
    repository = Repository.objects.create(name="vcsim repo", kind="local", path=str(tmp_path / "repo"),
                                           passphrase=PASSPHRASE, chunk_size=MIB)
    job = BackupJob.objects.create(name="no cbt", repository=repository, mode=BackupJob.Mode.NETWORK)
    job.vms.set([vm])

    kinds = []
    for _ in range(2):
        run = execute_run(services.start_run(job, queue=False).pk)
        task = run.tasks.get()
        assert run.state == JobRun.State.SUCCEEDED, (task.message, messages(task))
        assert "Changed block tracking is off" in messages(task) and "Reading the whole disk" in messages(task)
        assert task.result["stats"]["read_bytes"] == 2 * MIB
        kinds.append(task.restore_point.kind)
        assert snapshots(simulator, vm.moref) == []
    assert kinds == ["full", "incremental"]  # hash dedup only: no changed extents

    # No flat file and a descriptor that is not a raw image: refused with a sentence, snapshot removed.
    path.unlink()
    run = execute_run(services.start_run(job, queue=False).pk)
    task = run.tasks.get()
    assert run.state == JobRun.State.FAILED and task.state == Task.State.FAILED
    assert "not a raw image" in task.message
    assert task.snapshot == "" and snapshots(simulator, vm.moref) == []


def test_hot_add_backup_finds_the_disk_on_the_appliance(vcenter, simulator, tmp_path, monkeypatch):
    vm = VirtualMachine.objects.filter(connection=vcenter, is_template=False).order_by("name")[0]
    disk = vm.disks.order_by("key").first()
    appliance = stand_in_appliance(vcenter, vm)
    path = flat_file(vm, disk.key)
    with open(path, "r+b") as f:
        f.truncate(3 * MIB)
        os.pwrite(f.fileno(), random.Random(17).randbytes(MIB + 4567), MIB // 2)
    repository = Repository.objects.create(name="vcsim repo", kind="local", path=str(tmp_path / "repo"),
                                           passphrase=PASSPHRASE, chunk_size=MIB)
    job = BackupJob.objects.create(name="hot-add nightly", repository=repository, mode=BackupJob.Mode.HOTADD)
    job.vms.set([vm])
    datastores = {d.name: d.url for d in Datastore.objects.filter(connection=vcenter)}
    guest = GuestDevices(simulator, appliance.vm_moref, datastores, tmp_path / "va")
    monkeypatch.setenv(DEVICE_ROOT_ENV, str(guest.dev))  # the local engine process inherits these
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(guest.sys))
    disks_before = appliance_disk_files(simulator, appliance.vm_moref)

    guest.start()
    try:
        run = execute_run(services.start_run(job, queue=False).pk)
    finally:
        guest.stop.set()
        guest.join()
    assert guest.failure is None

    task = run.tasks.get()
    assert run.state == JobRun.State.SUCCEEDED, (task.message, messages(task))
    assert task.mode == Task.Mode.HOTADD
    ((bus, unit, uuid, file_name),) = guest.plugged  # the snapshot's disk, as the simulator attached it
    assert file_name == disk.file_name
    assert f"{file_name} hot-added to {appliance.name} as SCSI {bus}:{unit}" in messages(task)
    assert uuid == ""  # the simulator gives hot-added disks no backing UUID: the engine went by the SCSI slot
    assert f"Disk 'disk-{disk.key}' is {guest.dev}/sdb at SCSI {bus}:{unit}." in messages(task)
    assert "read over the network" not in messages(task)

    # Detached again, snapshot removed: the appliance VM has its own disks only.
    assert appliance_disk_files(simulator, appliance.vm_moref) == disks_before
    assert file_name not in disks_before and task.attached == []
    assert task.snapshot == "" and snapshots(simulator, vm.moref) == []

    # The restore point holds the flat file's bytes.
    folder = tmp_path / "images"
    restore = execute_restore(services.start_restore(task.restore_point, {"mode": "folder", "folder": str(folder)},
                                                     queue=False).pk)
    assert restore.state == Task.State.SUCCEEDED, (restore.message, messages(restore))
    (image,) = folder.glob("*.img")
    assert hashlib.sha256(image.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()

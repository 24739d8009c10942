"""Restores in place, in the lab through the built-in local appliance: over the VM's own disks
("original") and one disk into another VM's disk ("disk"); refusals change nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from appliances.models import Appliance
from inventory.connectors.lab import LabConnector
from inventory.models import VirtualMachine
from inventory.sync import sync_connection
from jobs import services
from jobs.models import Task
from jobs.restore import RestoreRefused
from jobs.runs import execute_restore, execute_run
from tests.jobs.conftest import job_for

MIB = 1 << 20


def hot_addable(lab, disks: int | None = None) -> list[VirtualMachine]:
    """VMs of the lab whose every disk is on a datastore the local appliance's host mounts."""
    mounted = set(Appliance.objects.get(name="local-appliance").host.datastores.values_list("pk", flat=True))
    found = []
    for vm in VirtualMachine.objects.filter(connection=lab).order_by("name"):
        keys = {d.datastore_id for d in vm.disks.all()}
        if keys and keys <= mounted and (disks is None or len(keys) and vm.disks.count() == disks):
            found.append(vm)
    return found


def power(lab, vm: VirtualMachine, state: str) -> VirtualMachine:
    """Power the lab VM on or off, and record it as an inventory sync would."""
    LabConnector(root=lab.options["root"]).set_power(vm.moref, state)
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state=state)
    vm.refresh_from_db()
    assert vm.power_state == state
    return vm


def synced(lab, moref: str) -> VirtualMachine:
    """A VM just created in the lab, brought into the inventory."""
    result = sync_connection(lab.pk, claimed=True)  # the lab fixture leaves a sync queued (claimed)
    assert result.ok, result.message
    return VirtualMachine.objects.get(connection=lab, moref=moref)


def digests(connector: LabConnector, moref: str) -> list[str]:
    return [connector.disk_digest(moref, d["key"]) for d in connector.vm_disks(moref)]


def backed_up(lab, repository, vm):
    from jobs.models import BackupJob

    job = BackupJob.objects.filter(name=f"job {vm.name}").first() or job_for(repository, [vm], name=f"job {vm.name}")
    run = execute_run(services.start_run(job, queue=False).pk)
    task = run.tasks.get()
    assert task.restore_point is not None, task.message
    return task.restore_point


def test_restore_over_the_vms_own_disks(lab, repository):
    connector = LabConnector(root=lab.options["root"])
    vm = hot_addable(lab)[0]
    before = digests(connector, vm.moref)
    point = backed_up(lab, repository, vm)
    connector.write(vm.moref, percent=20, seed="after the backup")
    changed = digests(connector, vm.moref)
    assert changed != before
    newer = backed_up(lab, repository, vm)  # the restore goes back past this one
    assert newer.kind == "incremental-cbt"

    # Powered on: refused, nothing queued, nothing changed.
    power(lab, vm, "poweredOn")
    with pytest.raises(RestoreRefused, match="power it off"):
        services.start_restore(point, {"mode": "original", "confirm": True}, queue=False)
    vm = power(lab, vm, "poweredOff")
    # Off but not confirmed: refused with what would be lost.
    for confirm in ({}, {"confirm": False}, {"confirm": "yes"}):
        with pytest.raises(RestoreRefused, match=r"overwrites disk\(s\).*\"confirm\": true"):
            services.start_restore(point, {"mode": "original", **confirm}, queue=False)
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()
    assert digests(connector, vm.moref) == changed

    task = execute_restore(services.start_restore(point, {"mode": "original", "confirm": True}, queue=False).pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    assert "digest matches" in task.message and task.vm_id == vm.pk and task.mode == Task.Mode.HOTADD
    assert digests(connector, vm.moref) == before
    assert task.attached == [] and connector.devices(task.appliance.vm_moref) == []
    assert task.events.filter(type="result").exists()

    # The next backup records the restored content: the disks' change tracking was reset, so it reads
    # them whole instead of trusting changes counted since the newer restore point.
    power(lab, vm, "poweredOn")
    again = backed_up(lab, repository, vm)
    assert [d["digest"] for d in again.disks] == [d["digest"] for d in point.disks]
    assert [d["digest"] for d in again.disks] != [d["digest"] for d in newer.disks]
    assert again.kind != "incremental-cbt"
    logs = [e.data.get("message") or "" for e in again.tasks.get().events.filter(type="log")]
    assert any("Reading the whole disk; only new chunks are stored." in m for m in logs), logs
    assert not any("cannot be trusted" in m for m in logs), logs  # not left to the engine's sampling to notice


def test_restore_one_disk_into_another_vms_disk(lab, repository):
    connector = LabConnector(root=lab.options["root"])
    source, target = hot_addable(lab)[:2]
    point = backed_up(lab, repository, source)
    disk = point.disks[0]
    source_key = connector.vm_disks(source.moref)[0]["key"]
    wanted = connector.disk_digest(source.moref, source_key)
    target = power(lab, target, "poweredOff")
    target_disk = connector.vm_disks(target.moref)[0]
    assert connector.disk_digest(target.moref, target_disk["key"]) != wanted

    ask = {"mode": "disk", "disk": disk["name"], "vm": target.pk, "target_disk_key": target_disk["key"]}
    task = execute_restore(services.start_restore(point, {**ask, "confirm": True}, queue=False).pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    assert task.vm_name == target.name
    assert connector.disk_digest(target.moref, target_disk["key"]) == wanted
    assert connector.devices(task.appliance.vm_moref) == []


def test_restore_one_disk_into_a_larger_disk_keeps_its_size(lab, repository, tmp_path):
    from inventory.connectors.base import NewVmSpec

    connector = LabConnector(root=lab.options["root"])
    source = hot_addable(lab)[0]
    point = backed_up(lab, repository, source)
    disk = point.disks[0]
    appliance = Appliance.objects.get(name="local-appliance")
    datastore = appliance.host.datastores.order_by("name").first()
    big = connector.create_vm(NewVmSpec(name="bigger", datacenter=appliance.host.datacenter.moref,
                                        host=appliance.host.moref, datastore=datastore.moref, network=None,
                                        num_cpu=1, memory_mb=512, guest_os="otherGuest64",
                                        disk_capacities=[int(disk["size"]) + 2 * MIB]))
    target = synced(lab, big)
    assert target.power_state == "poweredOff"
    key = connector.vm_disks(big)[0]["key"]
    task = execute_restore(services.start_restore(point, {
        "mode": "disk", "disk": disk["name"], "vm": target.pk, "target_disk_key": key, "confirm": True},
        queue=False).pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    size = int(disk["size"])
    head = connector.read_disk(big, key, 0, size)
    source_key = connector.vm_disks(source.moref)[0]["key"]
    assert hashlib.sha256(head).digest() == hashlib.sha256(connector.read_disk(source.moref, source_key, 0,
                                                                                 size)).digest()
    assert connector.read_disk(big, key, size, 2 * MIB) == bytes(2 * MIB)  # past the restored disk: zeros
    device = connector.attach_disk(appliance.vm_moref, connector.vm_disks(big)[0]["file_name"])
    try:  # the disk file keeps its size (the engine cuts a file output to the restored size)
        assert Path(connector.device(appliance.vm_moref, device)["path"]).stat().st_size == size + 2 * MIB
    finally:
        connector.detach_disk(appliance.vm_moref, device)
    assert any("the rest reads as zeros" in (e.data.get("message") or "") for e in task.events.all())


def test_refusals_name_the_problem_and_change_nothing(lab, repository):
    from inventory.connectors.base import NewVmSpec

    connector = LabConnector(root=lab.options["root"])
    source, target = hot_addable(lab)[:2]
    point = backed_up(lab, repository, source)
    disk = point.disks[0]
    target = power(lab, target, "poweredOff")
    target_key = connector.vm_disks(target.moref)[0]["key"]
    appliance = Appliance.objects.get(name="local-appliance")
    small = connector.create_vm(NewVmSpec(name="too-small", datacenter=appliance.host.datacenter.moref,
                                          host=appliance.host.moref,
                                          datastore=appliance.host.datastores.order_by("name").first().moref,
                                          network=None, num_cpu=1, memory_mb=512, guest_os="otherGuest64",
                                          disk_capacities=[int(disk["size"]) - MIB]))
    small_vm = synced(lab, small)
    small_key = connector.vm_disks(small)[0]["key"]
    before = {m: digests(connector, m) for m in (source.moref, target.moref, small)}
    base = {"mode": "disk", "disk": disk["name"], "vm": target.pk, "target_disk_key": target_key, "confirm": True}

    cases = [
        ({**base, "disk": "disk-9999"}, r"has no disk 'disk-9999'; its disks are: " + disk["name"]),
        ({**base, "vm": small_vm.pk, "target_disk_key": small_key}, r"less than the .* choose a disk at least"),
        ({**base, "target_disk_key": 12345}, r"by its key \(target_disk_key\); its disks are"),
        ({**base, "vm": 999999}, "Choose the VM whose disk"),
        ({**base, "confirm": None}, r"Confirm it \(\"confirm\": true\)"),
        ({"mode": "original", "confirm": True}, "power it off"),  # the source VM is powered on
        ({"mode": "sideways"}, "Choose how to restore"),
    ]
    for destination, sentence in cases:
        with pytest.raises(RestoreRefused, match=sentence):
            services.start_restore(point, destination, queue=False)
    power(lab, target, "poweredOn")
    with pytest.raises(RestoreRefused, match=f"VM {target.name} is powered on: power it off"):
        services.start_restore(point, base, queue=False)
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()
    assert {m: digests(connector, m) for m in before} == before


def test_a_vm_powered_on_after_queueing_is_refused_at_run_time(lab, repository):
    connector = LabConnector(root=lab.options["root"])
    vm = hot_addable(lab)[0]
    point = backed_up(lab, repository, vm)
    connector.write(vm.moref, percent=10, seed="later")
    power(lab, vm, "poweredOff")
    changed = digests(connector, vm.moref)
    queued = services.start_restore(point, {"mode": "original", "confirm": True}, queue=False)
    power(lab, vm, "poweredOn")
    task = execute_restore(queued.pk)
    assert task.state == Task.State.FAILED and task.error_code == "restore_refused"
    assert "power it off" in task.message
    assert digests(connector, vm.moref) == changed


def test_a_cancelled_restore_over_a_vm_says_its_disks_are_partly_written(lab, repository):
    connector = LabConnector(root=lab.options["root"])
    vm = hot_addable(lab)[0]
    point = backed_up(lab, repository, vm)
    power(lab, vm, "poweredOff")
    queued = services.start_restore(point, {"mode": "original", "confirm": True}, queue=False)
    services.cancel_task(queued)  # the engine is stopped at its first event
    task = execute_restore(queued.pk)
    assert task.state == Task.State.CANCELLED and task.error_code == "cancelled", task.message
    assert "restore again before powering the VM on" in task.message
    assert task.attached == [] and connector.devices(task.appliance.vm_moref) == []


def test_the_api_takes_the_in_place_modes_and_refuses_without_confirmation(lab, repository, api_client_for):
    vm = power(lab, hot_addable(lab)[0], "poweredOff")
    point = backed_up(lab, repository, vm)
    operator = api_client_for("operator")
    url = f"/api/jobs/restore-points/{point.pk}/restore/"
    refused = operator.post(url, {"mode": "original"}, format="json")
    assert refused.status_code == 400, refused.json()
    assert "confirm" in str(refused.json())
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()
    accepted = operator.post(url, {"mode": "original", "confirm": True}, format="json")
    assert accepted.status_code == 202, accepted.json()
    task = Task.objects.get(kind=Task.Kind.RESTORE)
    assert task.destination == {"mode": "original", "confirm": True} and task.spec["q2_task"]  # queued for real
    assert operator.get(f"/api/jobs/tasks/{task.pk}/").json()["spec"] == task.destination

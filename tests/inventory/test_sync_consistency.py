"""A sync either applies a whole, consistent inventory or changes nothing."""

from __future__ import annotations

import json

import pytest

from inventory.connectors.lab import LabConnector, seed
from inventory.models import Connection, Datastore, Host, VirtualDisk, VirtualMachine
from inventory.sync import claim, sync_connection

MIB = 1 << 20


@pytest.fixture
def lab_connection(tmp_path, db):
    root = tmp_path / "lab"
    seed(root, vms=6, disk_size=2 * MIB)
    connection = Connection.objects.create(name="Lab", kind="lab", options={"root": str(root)})
    assert sync_connection(connection.pk).ok
    return connection, LabConnector(root=root)


def _snapshot_of_db():
    return {
        "vms": sorted(VirtualMachine.objects.values_list("pk", "moref", "name", "vanished_at")),
        "hosts": sorted(Host.objects.values_list("pk", "moref", "vanished_at")),
        "datastores": sorted(Datastore.objects.values_list("pk", "moref", "vanished_at")),
        "disks": sorted(VirtualDisk.objects.values_list("pk", "vm_id", "key", "capacity_bytes")),
        "mounts": sorted(Datastore.hosts.through.objects.values_list("datastore_id", "host_id")),
    }


def test_resync_keeps_ids_and_marks_vanished(lab_connection):
    connection, lab = lab_connection
    before = {vm.moref: vm.pk for vm in VirtualMachine.objects.all()}
    gone = lab.find_vm("web-01")
    lab.destroy_vm(gone)

    result = sync_connection(connection.pk)

    assert result.ok, result.message
    after = {vm.moref: vm.pk for vm in VirtualMachine.objects.all()}
    assert after == before, "database ids must stay stable across syncs"
    assert VirtualMachine.objects.get(moref=gone).vanished_at is not None
    assert VirtualMachine.objects.filter(vanished_at__isnull=True).count() == len(before) - 1


def test_unreadable_inventory_fails_with_a_sentence_and_changes_nothing(lab_connection):
    connection, lab = lab_connection
    before = _snapshot_of_db()
    (lab.root / "inventory.json").write_text("{ this is not json")

    result = sync_connection(connection.pk)

    assert not result.ok
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ERROR
    assert "Cannot read the lab inventory" in connection.status_message
    assert _snapshot_of_db() == before


def test_failure_while_applying_rolls_everything_back(lab_connection):
    connection, lab = lab_connection
    before = _snapshot_of_db()
    path = lab.root / "inventory.json"
    data = json.loads(path.read_text())
    # A VM placed in a datacenter the inventory does not have: applying fails half-way.
    last_vm = sorted(data["vms"])[-1]
    data["vms"][last_vm]["datacenter"] = "datacenter-999"
    data["vms"][sorted(data["vms"])[0]]["name"] = "renamed-before-the-failure"
    path.write_text(json.dumps(data))

    result = sync_connection(connection.pk)

    assert not result.ok
    assert "the inventory was left unchanged" in result.message
    assert _snapshot_of_db() == before
    assert not VirtualMachine.objects.filter(name="renamed-before-the-failure").exists()


def test_a_second_sync_cannot_claim_a_running_one(lab_connection):
    connection, _ = lab_connection
    assert claim(connection.pk)
    assert not claim(connection.pk)
    result = sync_connection(connection.pk)
    assert not result.ok and "already running" in result.message

"""Backup-time operations against the simulator: snapshots, hot-add to an appliance, restore VMs."""

from __future__ import annotations

import pytest

from inventory.connectors.base import ChangeIdUnknown, NewVmSpec, NotFound
from inventory.connectors.vsphere import VSphereConnector
from tests.vsphere.helpers import params_for

pytestmark = pytest.mark.vcsim

MIB, GIB = 1 << 20, 1 << 30


@pytest.fixture
def simulator(vcsim_factory):
    return vcsim_factory(vms=6, cluster_hosts=1, standalone_hosts=1, task_delay_ms=50)


@pytest.fixture
def connector(simulator):
    with VSphereConnector(params_for(simulator)) as connector:
        yield connector


@pytest.fixture
def inventory(connector):
    return connector.fetch_inventory()


def test_snapshot_lifecycle(connector, inventory):
    vm = next(v for v in inventory.vms if len(v.disks) == 2)

    snapshot = connector.create_snapshot(vm.moref, "va-fleet-backup")

    assert snapshot.vm == vm.moref and snapshot.name == "va-fleet-backup"
    assert sorted(d["file_name"] for d in snapshot.disks) == sorted(d.file_name for d in vm.disks)
    assert {d["capacity_bytes"] for d in snapshot.disks} == {d.capacity_bytes for d in vm.disks}
    assert [s.moref for s in connector.list_snapshots(vm.moref)] == [snapshot.moref]

    connector.remove_snapshot(vm.moref, snapshot.moref)

    assert connector.list_snapshots(vm.moref) == []
    with pytest.raises(NotFound, match="has no snapshot"):
        connector.remove_snapshot(vm.moref, snapshot.moref)


def test_hot_add_and_detach(connector, inventory):
    source, appliance = inventory.vms[0], inventory.vms[1]
    snapshot = connector.create_snapshot(source.moref, "hot-add")
    file_name = snapshot.disks[0]["file_name"]

    key = connector.attach_disk(appliance.moref, file_name)

    after = {v.moref: v for v in connector.fetch_inventory().vms}[appliance.moref]
    attached = next(d for d in after.disks if d.key == key)
    assert attached.file_name == file_name and attached.disk_mode == "independent_nonpersistent"
    assert len(after.disks) == len(appliance.disks) + 1

    connector.detach_disk(appliance.moref, key)

    after = {v.moref: v for v in connector.fetch_inventory().vms}[appliance.moref]
    assert [d.key for d in after.disks] == [d.key for d in appliance.disks]
    source_now = {v.moref: v for v in connector.fetch_inventory().vms}[source.moref]
    assert file_name in {d.file_name for d in source_now.disks}  # detaching never deletes the source's disk
    with pytest.raises(NotFound, match="no disk with key"):
        connector.detach_disk(appliance.moref, key)
    connector.remove_snapshot(source.moref, snapshot.moref)


def test_create_vm_for_a_restore(connector, inventory):
    host = inventory.hosts[0]
    datastore = next(d for d in inventory.datastores if d.hosts == [host.moref])  # host-local
    network = next(n for n in inventory.networks if n.kind == "distributed")

    moref = connector.create_vm(NewVmSpec(
        name="restore of web01", datacenter=inventory.datacenters[0].moref, host=host.moref,
        datastore=datastore.moref, network=network.moref, num_cpu=2, memory_mb=2048,
        disk_capacities=[4 << 30, 1 << 30], guest_os="debian11_64Guest",
    ))

    vm = {v.moref: v for v in connector.fetch_inventory().vms}[moref]
    assert (vm.name, vm.host, vm.num_cpu, vm.memory_mb) == ("restore of web01", host.moref, 2, 2048)
    assert [d.capacity_bytes for d in vm.disks] == [4 << 30, 1 << 30]
    assert {d.datastore for d in vm.disks} == {datastore.moref}
    assert vm.networks == [network.moref]


def test_create_vm_in_a_missing_folder_says_so(connector, inventory):
    with pytest.raises(NotFound, match="The VM folder 'Nowhere' does not exist"):
        connector.create_vm(NewVmSpec(
            name="x", datacenter=inventory.datacenters[0].moref, host=inventory.hosts[0].moref,
            datastore=inventory.datastores[0].moref, folder="Nowhere",
        ))


def test_changed_areas_between_snapshots(simulator, connector, inventory):
    vm = next(v for v in inventory.vms if v.cbt_enabled)
    key = vm.disks[0].key
    first = connector.create_snapshot(vm.moref, "full")
    extents, first_id = connector.changed_areas(vm.moref, first.moref, key, "*")
    assert extents == [] and first_id.endswith("/0")

    simulator.write(vm.moref, key, 0, MIB)
    simulator.write(vm.moref, key, 5 * GIB, 2 * MIB)  # beyond the simulator's 4 GiB answer window
    simulator.write(vm.moref, key, MIB // 2, MIB)  # overlaps the first write
    second = connector.create_snapshot(vm.moref, "incremental")
    extents, second_id = connector.changed_areas(vm.moref, second.moref, key, first_id)

    assert extents == [(0, MIB + MIB // 2), (5 * GIB, 2 * MIB)]
    assert second_id.endswith("/3") and second_id != first_id
    assert connector.changed_areas(vm.moref, second.moref, key, second_id) == ([], second_id)
    # the first snapshot still describes the disk as it was
    assert connector.changed_areas(vm.moref, first.moref, key, "*") == ([], first_id)


def test_changed_areas_with_an_unknown_change_id(connector, inventory):
    vm = next(v for v in inventory.vms if v.cbt_enabled)
    snapshot = connector.create_snapshot(vm.moref, "full")

    with pytest.raises(ChangeIdUnknown, match="the whole disk is read this time"):
        connector.changed_areas(vm.moref, snapshot.moref, vm.disks[0].key, "52 00 11 22/7")


def test_changed_areas_without_cbt(connector, inventory):
    vm = next(v for v in inventory.vms if not v.cbt_enabled and not v.is_template)
    snapshot = connector.create_snapshot(vm.moref, "full")

    with pytest.raises(ChangeIdUnknown, match="Changed block tracking is off"):
        connector.changed_areas(vm.moref, snapshot.moref, vm.disks[0].key, "*")

"""Hot-add of snapshot disks to an appliance VM, datastore visibility, and VMs created for restores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inventory.connectors.base import ConnectorError, NewVmSpec, NotFound

MIB = 1 << 20


def _ids(lab):
    inv = lab.fetch_inventory()
    hosts = {h.name: h.moref for h in inv.hosts}
    stores = {d.name: d.moref for d in inv.datastores}
    return inv, hosts, stores


def _appliance(lab, host="esx-02.lab.local", datastore="shared-vmfs-01"):
    inv, hosts, stores = _ids(lab)
    spec = NewVmSpec(name="va-01", datacenter=inv.datacenters[0].moref, host=hosts[host],
                     datastore=stores[datastore], disk_capacities=[2 * MIB], guest_os="debian12_64Guest")
    return lab.create_vm(spec)


def test_attach_snapshot_disk_and_read_it(lab):
    appliance = _appliance(lab)
    vm = lab.find_vm("db-01")
    snap = lab.create_snapshot(vm, "backup")
    disk = snap.disks[1]
    key = lab.attach_disk(appliance, disk["file_name"])
    assert key == 2001  # after the appliance's own disk 2000
    device = lab.device(appliance, key)
    assert device["path"] == disk["path"] and device["chain"] == [disk["path"]]
    assert device["capacity_bytes"] == 8 * MIB and device["writable"] is False
    with open(device["path"], "rb") as f:
        assert f.read(MIB) == lab.read_device(appliance, key, 0, MIB)
    lab.write(vm, percent=5, seed=4)  # the guest keeps writing; the attached file does not change
    assert lab.read_device(appliance, key, 0, 8 * MIB) == Path(disk["path"]).read_bytes()
    record = next(v for v in lab.fetch_inventory().vms if v.moref == appliance)
    assert [d.file_name for d in record.disks][1] == disk["file_name"]

    with pytest.raises(ConnectorError, match="is attached to va-01.*detach it first"):
        lab.remove_snapshot(vm, snap.moref)
    with pytest.raises(ConnectorError, match="already attached"):
        lab.attach_disk(appliance, disk["file_name"])
    lab.detach_disk(appliance, key)
    with pytest.raises(NotFound, match="no attached disk with device key 2001"):
        lab.detach_disk(appliance, key)
    lab.remove_snapshot(vm, snap.moref)


def test_hot_add_needs_the_datastore_on_the_appliance_host(lab):
    appliance = _appliance(lab, host="esx-02.lab.local")
    vm = lab.find_vm("web-01")  # on local-esx-01
    snap = lab.create_snapshot(vm, "backup")
    with pytest.raises(ConnectorError, match="does not mount datastore local-esx-01.*network"):
        lab.attach_disk(appliance, snap.disks[0]["file_name"])


def test_running_disk_cannot_be_attached(lab):
    appliance = _appliance(lab)
    with pytest.raises(ConnectorError, match="running disk of VM app-01.*snapshot"):
        lab.attach_disk(appliance, "[shared-vmfs-01] app-01/app-01.vmdk")
    with pytest.raises(NotFound, match="form '\\[datastore\\] folder/disk.vmdk'"):
        lab.attach_disk(appliance, "app-01.vmdk")
    with pytest.raises(NotFound, match="no datastore named 'nowhere'"):
        lab.attach_disk(appliance, "[nowhere] app-01/app-01.vmdk")
    with pytest.raises(NotFound, match="does not exist"):
        lab.attach_disk(appliance, "[shared-vmfs-01] app-01/missing.vmdk")


def test_create_vm_for_a_restore_and_write_through_the_appliance(lab):
    appliance = _appliance(lab)
    inv, hosts, stores = _ids(lab)
    spec = NewVmSpec(name="db-01 (restored) / 2026", datacenter=inv.datacenters[0].moref,
                     host=hosts["esx-02.lab.local"], datastore=stores["shared-nfs-01"],
                     network=inv.networks[0].moref, num_cpu=4, memory_mb=8192,
                     disk_capacities=[8 * MIB, 3 * MIB + 512], folder="Restores")
    moref = lab.create_vm(spec)
    record = next(v for v in lab.fetch_inventory().vms if v.moref == moref)
    assert record.name == spec.name and record.power_state == "poweredOff" and record.folder == "Restores"
    assert [d.capacity_bytes for d in record.disks] == [8 * MIB, 3 * MIB + 512]
    assert record.disks[0].file_name == "[shared-nfs-01] db-01_restored_2026/db-01_restored_2026.vmdk"
    assert lab.read_disk(moref, 2001, 0, 3 * MIB + 512) == bytes(3 * MIB + 512)  # empty and sparse

    key = lab.attach_disk(appliance, record.disks[0].file_name)  # powered off: the appliance may write
    device = lab.device(appliance, key)
    assert device["writable"] is True
    source = lab.read_disk(lab.find_vm("db-01"), 2000, 0, 8 * MIB)
    fd = os.open(device["path"], os.O_WRONLY)
    try:
        os.pwrite(fd, source, 0)
    finally:
        os.close(fd)
    lab.detach_disk(appliance, key)
    assert lab.disk_digest(moref, 2000) == lab.disk_digest(lab.find_vm("db-01"), 2000)
    lab.destroy_vm(moref)
    assert moref not in {v.moref for v in lab.fetch_inventory().vms}
    assert not Path(device["path"]).exists()


def test_create_vm_bad_input(lab):
    inv, hosts, stores = _ids(lab)
    dc = inv.datacenters[0].moref
    with pytest.raises(NotFound, match="no host 'host-999'"):
        lab.create_vm(NewVmSpec(name="x", datacenter=dc, host="host-999", datastore=stores["shared-nfs-01"]))
    with pytest.raises(ConnectorError, match="does not mount datastore local-esx-01"):
        lab.create_vm(NewVmSpec(name="x", datacenter=dc, host=hosts["esx-03.lab.local"],
                                datastore=stores["local-esx-01"]))
    with pytest.raises(ConnectorError, match="positive multiple of 512"):
        lab.create_vm(NewVmSpec(name="x", datacenter=dc, host=hosts["esx-03.lab.local"],
                                datastore=stores["shared-nfs-01"], disk_capacities=[1000]))
    assert "x" not in {v.name for v in lab.fetch_inventory().vms}


def test_current_delta_of_a_vm_with_snapshots_cannot_be_attached(lab):
    appliance = _appliance(lab)
    vm = lab.find_vm("app-01")
    lab.set_power(vm, "poweredOff")
    lab.create_snapshot(vm, "kept")
    with pytest.raises(ConnectorError, match="snapshot delta of VM app-01"):
        lab.attach_disk(appliance, "[shared-vmfs-01] app-01/app-01-000001.vmdk")
    assert lab.devices(appliance) == []

"""Snapshots like VMware's: the frozen file does not change, writes go to a delta, removal consolidates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from inventory.connectors.base import ConnectorError, NotFound

MIB = 1 << 20


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_snapshot_freezes_the_base_while_the_vm_writes(lab):
    vm = lab.find_vm("db-01")
    original = {key: lab.disk_digest(vm, key) for key in (2000, 2001)}
    snap = lab.create_snapshot(vm, "backup-1")
    assert [d["key"] for d in snap.disks] == [2000, 2001]
    disk = snap.disks[0]
    assert disk["file_name"] == "[shared-nfs-01] db-01/db-01.vmdk"
    assert Path(disk["path"]).is_absolute() and disk["chain"] == [disk["path"]]
    assert disk["capacity_bytes"] == 8 * MIB and disk["datastore"].startswith("datastore-")
    frozen = file_digest(disk["path"])
    assert frozen == original[2000]

    lab.write(vm, percent=10, seed=7)
    assert file_digest(disk["path"]) == frozen  # the base did not move
    assert lab.disk_digest(vm, 2000, snapshot=snap.moref) == frozen
    current = lab.disk_digest(vm, 2000)
    assert current != frozen
    delta = Path(disk["path"]).with_name("db-01-000001.vmdk")
    assert delta.is_file()

    lab.remove_snapshot(vm, snap.moref)
    assert not delta.exists() and lab.list_snapshots(vm) == []
    assert file_digest(disk["path"]) == current  # consolidated: base = what the VM wrote
    assert lab.disk_digest(vm, 2001) != original[2001]


def test_written_bytes_read_back_and_survive_consolidation(lab):
    vm = lab.find_vm("web-01")
    snap = lab.create_snapshot(vm, "s")
    payload = b"VA Fleet lab write test " * 700  # not block-aligned on purpose
    lab.write_at(vm, 2000, 12345, payload)
    assert lab.read_disk(vm, 2000, 12345, len(payload)) == payload
    base = Path(snap.disks[0]["path"])
    assert base.read_bytes()[12345:12345 + len(payload)] != payload
    before = lab.read_disk(vm, 2000, 0, 8 * MIB)
    lab.remove_snapshot(vm, snap.moref)
    assert base.read_bytes() == before
    assert before[12345:12345 + len(payload)] == payload


def test_nested_snapshots_keep_each_frozen_view(lab):
    vm = lab.find_vm("app-01")
    first = lab.create_snapshot(vm, "first")
    lab.write(vm, percent=5, seed=1)
    second = lab.create_snapshot(vm, "second")
    second_view = lab.disk_digest(vm, 2000, snapshot=second.moref)
    assert len(second.disks[0]["chain"]) == 2
    lab.write(vm, percent=5, seed=2)
    current = lab.disk_digest(vm, 2000)

    lab.remove_snapshot(vm, first.moref)  # merges the first delta into the base
    [left] = lab.list_snapshots(vm)
    assert left.moref == second.moref and left.disks[0]["file_name"].endswith("app-01.vmdk")
    assert lab.disk_digest(vm, 2000, snapshot=second.moref) == second_view
    assert lab.disk_digest(vm, 2000) == current
    lab.remove_snapshot(vm, second.moref)
    assert file_digest(left.disks[0]["path"]) == current


def test_list_and_remove_unknown_snapshot(lab):
    vm = lab.find_vm("web-01")
    snap = lab.create_snapshot(vm, "nightly")
    assert [(s.moref, s.name) for s in lab.list_snapshots(vm)] == [(snap.moref, "nightly")]
    lab.remove_snapshot(vm, snap.moref)
    with pytest.raises(NotFound, match="may have been removed already"):
        lab.remove_snapshot(vm, snap.moref)


def test_disks_over_2_tib_stay_sparse_and_track_changes(lab):
    from inventory.connectors.base import NewVmSpec

    inv = lab.fetch_inventory()
    store = next(d.moref for d in inv.datastores if d.name == "shared-nfs-01")
    capacity = 5 << 39  # 2.5 TiB
    vm = lab.create_vm(NewVmSpec(name="archive-01", datacenter=inv.datacenters[0].moref, host=inv.hosts[0].moref,
                                 datastore=store, disk_capacities=[capacity]))
    lab.set_cbt(vm, True)
    full = lab.create_snapshot(vm, "full")
    assert lab.changed_areas(vm, full.moref, 2000, "*")[0] == []
    lab.remove_snapshot(vm, full.moref)
    tail = capacity - 3 * MIB
    lab.write_at(vm, 2000, tail, b"end of the archive")
    second = lab.create_snapshot(vm, "incremental")
    assert lab.changed_areas(vm, second.moref, 2000, full.disks[0]["change_id"])[0] == [(tail, 18)]
    lab.remove_snapshot(vm, second.moref)
    assert lab.read_disk(vm, 2000, tail, 18) == b"end of the archive"
    assert Path(second.disks[0]["path"]).stat().st_blocks * 512 < 1 * MIB
    with pytest.raises(ConnectorError, match="falls outside"):
        lab.write_at(vm, 2000, capacity - 4, b"too long")

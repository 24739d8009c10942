"""The lab's changed-block tracking reports exactly what the guest wrote between two snapshots."""

from __future__ import annotations

import pytest

from inventory.connectors.base import ChangeIdUnknown
from inventory.connectors.lab.extents import allocated, coalesce

MIB = 1 << 20
BLOCK = 4096


def test_star_reports_every_allocated_extent(lab):
    vm = lab.find_vm("web-01")
    snap = lab.create_snapshot(vm, "full")
    extents, change_id = lab.changed_areas(vm, snap.moref, 2000, "*")
    assert extents == allocated(snap.disks[0]["path"]) and extents
    assert change_id == snap.disks[0]["change_id"] and change_id.count("/") == 1


def test_changed_areas_are_exactly_the_writes_between_snapshots(lab):
    vm = lab.find_vm("db-01")
    first = lab.create_snapshot(vm, "full")
    _, since = lab.changed_areas(vm, first.moref, 2001, "*")
    lab.remove_snapshot(vm, first.moref)
    before = lab.read_disk(vm, 2001, 0, 8 * MIB)

    written = lab.write(vm, percent=5, seed=11)
    lab.write_at(vm, 2001, 100, b"odd offset")
    expected = coalesce([*written[2001], (100, 10)])
    second = lab.create_snapshot(vm, "incremental")
    extents, change_id = lab.changed_areas(vm, second.moref, 2001, since)
    assert extents == expected and change_id != since

    # every block that differs lies inside a reported extent, and the writes did change data
    after = lab.read_disk(vm, 2001, 0, 8 * MIB)
    differing = [o for o in range(0, 8 * MIB, BLOCK) if before[o:o + BLOCK] != after[o:o + BLOCK]]
    assert differing
    assert all(any(s <= o < s + n or o <= s < o + BLOCK for s, n in extents) for o in differing)
    # writes after the snapshot are not part of it
    lab.write(vm, percent=5, seed=12)
    assert lab.changed_areas(vm, second.moref, 2001, since)[0] == expected
    assert lab.changed_areas(vm, second.moref, 2001, change_id) == ([], change_id)


def test_reset_change_id_forces_a_full_read(lab):
    vm = lab.find_vm("app-01")
    first = lab.create_snapshot(vm, "full")
    since = first.disks[0]["change_id"]
    lab.remove_snapshot(vm, first.moref)
    lab.reset_cbt(vm)
    second = lab.create_snapshot(vm, "after reset")
    with pytest.raises(ChangeIdUnknown, match="a full read of the disk is needed"):
        lab.changed_areas(vm, second.moref, 2000, since)
    with pytest.raises(ChangeIdUnknown, match="full read"):
        lab.changed_areas(vm, second.moref, 2000, "not-a-change-id")
    assert lab.changed_areas(vm, second.moref, 2000, "*")[0]  # a full read still works


def test_cbt_off_means_full_reads(lab):
    vm = lab.find_vm("web-01")
    lab.set_cbt(vm, False)
    snap = lab.create_snapshot(vm, "no cbt")
    assert snap.disks[0]["change_id"] == ""
    with pytest.raises(ChangeIdUnknown, match="tracking was off"):
        lab.changed_areas(vm, snap.moref, 2000, "anything/1")
    lab.remove_snapshot(vm, snap.moref)
    lab.set_cbt(vm, True)
    assert next(v for v in lab.fetch_inventory().vms if v.moref == vm).cbt_enabled
    first = lab.create_snapshot(vm, "cbt on")
    lab.remove_snapshot(vm, first.moref)
    lab.write_at(vm, 2000, 0, b"x" * BLOCK)
    second = lab.create_snapshot(vm, "next")
    assert lab.changed_areas(vm, second.moref, 2000, first.disks[0]["change_id"])[0] == [(0, BLOCK)]

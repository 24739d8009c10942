"""The seeded lab's shape, its disk content, idempotent re-seeding and clear errors."""

from __future__ import annotations

import re
import zlib

import pytest

from inventory.connectors.base import NotFound, Unreachable
from inventory.connectors.lab import LabConnector, seed
from inventory.connectors.lab.extents import allocated, total

MIB = 1 << 20
REGION = 64 << 10


@pytest.fixture(scope="module")
def full_lab(tmp_path_factory) -> LabConnector:
    root = tmp_path_factory.mktemp("full") / "lab"
    result = seed(root, vms=32, disk_size=4 * MIB)
    assert (result.created, result.kept) == (32, 0)
    return LabConnector(root=root)


def test_seed_shape(full_lab):
    inv = full_lab.fetch_inventory()
    assert len(inv.datacenters) == 1
    assert sorted(h.name for h in inv.hosts) == [f"esx-{i:02d}.lab.local" for i in range(1, 5)]
    hosts = {h.moref for h in inv.hosts}
    shared = [ds for ds in inv.datastores if len(ds.hosts) > 1]
    local = [ds for ds in inv.datastores if len(ds.hosts) == 1]
    assert len(shared) == 2 and all(set(ds.hosts) == hosts for ds in shared)
    assert len(local) == 4 and {ds.hosts[0] for ds in local} == hosts
    assert sorted(n.kind for n in inv.networks) == ["distributed", "standard"]
    assert len(inv.vms) == 32 and len({vm.name for vm in inv.vms}) == 32
    assert {len(vm.disks) for vm in inv.vms} == {1, 2}
    assert {vm.power_state for vm in inv.vms} == {"poweredOn", "poweredOff"}
    assert {vm.host for vm in inv.vms} == hosts
    local_ids = {ds.moref for ds in local}
    assert any(set(vm.datastores) <= local_ids for vm in inv.vms)
    assert any(not set(vm.datastores) & local_ids for vm in inv.vms)
    for vm in inv.vms:
        assert vm.guest_os and vm.folder and vm.tags and vm.num_cpu >= 1 and vm.memory_mb >= 1024
    morefs = [h.moref for h in inv.hosts] + [d.moref for d in inv.datastores] + [v.moref for v in inv.vms]
    assert all(re.fullmatch(r"(host|datastore|vm)-\d+", m) for m in morefs)
    assert {n.moref.split("-")[0] for n in inv.networks} == {"network", "dvportgroup"}


def test_disks_are_sparse_realistic_and_all_different(full_lab):
    inv = full_lab.fetch_inventory()
    digests = set()
    for vm in inv.vms:
        for disk in vm.disks:
            path = _disk_path(full_lab, disk.file_name)
            used = total(allocated(path))
            assert 0.10 * disk.capacity_bytes <= used <= 0.40 * disk.capacity_bytes, disk.file_name
            assert path.stat().st_blocks * 512 < disk.capacity_bytes
            digests.add(full_lab.disk_digest(vm.moref, disk.key))
    assert len(digests) == sum(len(vm.disks) for vm in inv.vms)


def test_content_mixes_text_records_and_random(full_lab):
    kinds = set()
    for vm in full_lab.fetch_inventory().vms:
        disk = full_lab.read_disk(vm.moref, 2000, 0, 4 * MIB)
        for offset in range(0, 4 * MIB, REGION):  # a 4 MiB disk is made of 64 KiB regions
            region = disk[offset:offset + REGION]
            if region == bytes(REGION):
                kinds.add("hole")
            elif region.count(b" ") > REGION // 20:
                kinds.add("text")
            elif len(zlib.compress(region, 1)) > 0.99 * REGION:
                kinds.add("random")
            else:
                kinds.add("records")
    assert kinds == {"hole", "text", "random", "records"}


def test_seed_is_deterministic(tmp_path):
    seed(tmp_path / "a", vms=3, disk_size=2 * MIB)
    seed(tmp_path / "b", vms=3, disk_size=2 * MIB)
    a, b = LabConnector(root=tmp_path / "a"), LabConnector(root=tmp_path / "b")
    for name in ("web-01", "db-01", "app-01"):
        assert a.disk_digest(a.find_vm(name), 2000) == b.disk_digest(b.find_vm(name), 2000)


def test_reseed_keeps_existing_vms_and_their_content(lab):
    web = lab.find_vm("web-01")
    lab.write(web, percent=10, seed=3)
    before = lab.disk_digest(web, 2000)
    inventory_before = {vm.name: vm.moref for vm in lab.fetch_inventory().vms}
    result = seed(lab.root, vms=4, disk_size=8 * MIB)
    assert (result.created, result.kept) == (0, 4)
    assert lab.disk_digest(web, 2000) == before
    result = seed(lab.root, vms=6, disk_size=8 * MIB)
    assert (result.created, result.kept) == (2, 4)
    after = {vm.name: vm.moref for vm in lab.fetch_inventory().vms}
    assert {k: after[k] for k in inventory_before} == inventory_before and len(after) == 6


def test_unknown_vm_is_a_sentence(lab):
    with pytest.raises(NotFound, match=r"The lab has no VM 'vm-999'.*sync the connection"):
        lab.create_snapshot("vm-999", "backup")
    with pytest.raises(NotFound, match="has no snapshot 'snapshot-1'"):
        lab.remove_snapshot(lab.find_vm("web-01"), "snapshot-1")
    with pytest.raises(NotFound, match="has no disk with key 2009"):
        lab.write_at(lab.find_vm("web-01"), 2009, 0, b"x")


def test_missing_lab_root_is_unreachable(tmp_path):
    with pytest.raises(Unreachable, match="does not exist: run `manage.py lab seed"):
        LabConnector(root=tmp_path / "nowhere").test()
    (tmp_path / "empty").mkdir()
    with pytest.raises(Unreachable, match="has no inventory"):
        LabConnector(root=tmp_path / "empty").fetch_inventory()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "inventory.json").write_text("{not json")
    with pytest.raises(Unreachable, match="Cannot read the lab inventory"):
        LabConnector(root=tmp_path / "broken").test()


def test_bad_seed_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        seed(tmp_path, vms=-1)
    with pytest.raises(ValueError, match="whole MiB"):
        seed(tmp_path, disk_size=1000)


def test_lab_imports_no_django():
    import subprocess
    import sys

    code = "import sys, inventory.connectors.lab; sys.exit(any(m.startswith('django') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=_project_dir()).returncode == 0


def _project_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def _disk_path(lab: LabConnector, file_name: str):
    from inventory.connectors.lab.state import parse_file_name

    datastore, relative = parse_file_name(file_name)
    return lab.root / "datastores" / datastore / relative


def test_operations_on_a_missing_lab_create_nothing(tmp_path):
    lab = LabConnector(root=tmp_path / "nowhere")
    with pytest.raises(Unreachable, match="does not exist"):
        lab.create_snapshot("vm-101", "backup")
    with pytest.raises(Unreachable, match="does not exist"):
        lab.changed_areas("vm-101", "snapshot-1", 2000, "*")
    assert not (tmp_path / "nowhere").exists()


def test_fill_sets_the_written_share(tmp_path):
    seed(tmp_path / "lab", vms=2, disk_size=8 * MIB, fill=0.65)
    lab = LabConnector(root=tmp_path / "lab")
    for vm in lab.fetch_inventory().vms:
        for disk in vm.disks:
            path = _disk_path(lab, disk.file_name)
            assert abs(total(allocated(path)) / disk.capacity_bytes - 0.65) < 0.02
    with pytest.raises(ValueError, match="between 0 and 1"):
        seed(tmp_path / "lab", fill=1.5)

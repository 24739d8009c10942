"""Several processes change one lab at once without losing each other's updates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
ROUNDS = 12
WORKER = """
import sys
from inventory.connectors.base import NewVmSpec
from inventory.connectors.lab import LabConnector

root, tag, slot, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lab = LabConnector(root=root)
inv = lab.fetch_inventory()
host = next(h.moref for h in inv.hosts)
store = next(d.moref for d in inv.datastores if d.name == "shared-vmfs-01")
db = lab.find_vm("db-01")
for i in range(rounds):
    lab.create_vm(NewVmSpec(name=f"{tag}-{i}", datacenter=inv.datacenters[0].moref, host=host,
                            datastore=store, disk_capacities=[1 << 20]))
    lab.write_at(db, 2001, (slot * rounds + i) * 8192, tag.encode() * 16)
"""


def test_two_processes_do_not_lose_updates(lab):
    db = lab.find_vm("db-01")
    first = lab.create_snapshot(db, "before")
    lab.remove_snapshot(db, first.moref)
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(lab.root), tag, str(slot), str(ROUNDS)], cwd=PROJECT)
        for slot, tag in enumerate(("alpha", "bravo"))
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]

    names = {vm.name for vm in lab.fetch_inventory().vms}
    assert {f"{tag}-{i}" for tag in ("alpha", "bravo") for i in range(ROUNDS)} <= names
    assert len(names) == 4 + 2 * ROUNDS
    for slot, tag in enumerate(("alpha", "bravo")):
        for i in range(ROUNDS):
            offset = (slot * ROUNDS + i) * 8192
            assert lab.read_disk(db, 2001, offset, 16 * len(tag)) == tag.encode() * 16
    second = lab.create_snapshot(db, "after")
    extents, _ = lab.changed_areas(db, second.moref, 2001, first.disks[1]["change_id"])
    assert extents == [(slot * ROUNDS * 8192 + i * 8192, 80) for slot in range(2) for i in range(ROUNDS)]

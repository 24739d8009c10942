"""Lab snapshots and changed-block queries, with VMware's semantics.

Creating a snapshot freezes each disk's current file and starts a delta; removing it merges
the delta back (consolidation). A snapshot records, per disk, the frozen file and the change
id at that moment, so changed areas between two snapshots are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from inventory.connectors.base import ChangeIdUnknown, ConnectorError, NotFound, SnapshotRef
from inventory.connectors.lab import extents as ext
from inventory.connectors.lab.state import LabState, get, new_moref
from inventory.connectors.lab.vms import chain_of, datastore_file_name, disk_of, tracker_of


def create_snapshot(state: LabState, vm_moref: str, name: str, *, quiesce: bool = False) -> SnapshotRef:
    with state.edit() as data:
        vm = get(data, "vms", vm_moref)
        moref = new_moref(data, "snapshot")
        disks = []
        for disk in vm["disks"]:
            change_id = ""
            if vm["cbt_enabled"]:
                tracker = tracker_of(state, data, disk)
                change_id = tracker.checkpoint()
                tracker.save()
            delta = f"{disk['stem']}-{disk['next_delta']:06d}.vmdk"
            disk["next_delta"] += 1
            frozen = chain_of(state, data, disk).freeze(delta)
            disks.append({"key": disk["key"], "frozen": frozen, "change_id": change_id})
        snapshot = {
            "moref": moref,
            "name": name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "quiesced": bool(quiesce and vm["power_state"] == "poweredOn"),
            "disks": disks,
        }
        vm["snapshots"].append(snapshot)
        return snapshot_ref(state, data, vm_moref, snapshot)


def remove_snapshot(state: LabState, vm_moref: str, snapshot_moref: str) -> None:
    """Delete a snapshot: its child deltas are merged into the frozen files (consolidation)."""
    stale: list[Path] = []
    with state.edit() as data:
        vm = get(data, "vms", vm_moref)
        snapshot = find(vm, vm_moref, snapshot_moref)
        _refuse_if_attached(data, vm_moref, vm, snapshot)
        for entry in snapshot["disks"]:
            disk = disk_of(vm, entry["key"], vm_moref)
            chain = chain_of(state, data, disk)
            index = chain.index_of(entry["frozen"])
            child = disk["chain"][index + 1]["file"]
            stale.append(chain.consolidate(index + 1))
            for other in vm["snapshots"]:  # a later snapshot that froze the delta now sees the merged file
                for other_entry in other["disks"]:
                    if other_entry["key"] == entry["key"] and other_entry["frozen"] == child:
                        other_entry["frozen"] = entry["frozen"]
        vm["snapshots"].remove(snapshot)
    for path in stale:
        path.unlink(missing_ok=True)


def _refuse_if_attached(data: dict, vm_moref: str, vm: dict, snapshot: dict) -> None:
    frozen = {(e["key"], e["frozen"]) for e in snapshot["disks"]}
    for appliance in data["vms"].values():
        for device in appliance["attached"]:
            if device["vm"] == vm_moref and (device["disk_key"], device["file"]) in frozen:
                raise ConnectorError(
                    f"Snapshot {snapshot['name']!r} of VM {vm['name']} cannot be removed: its disk is attached to "
                    f"{appliance['name']} ({device['file_name']}); detach it first."
                )


def list_snapshots(state: LabState, vm_moref: str) -> list[SnapshotRef]:
    data = state.read()
    vm = get(data, "vms", vm_moref)
    return [snapshot_ref(state, data, vm_moref, s) for s in vm["snapshots"]]


def find(vm: dict, vm_moref: str, snapshot_moref: str) -> dict:
    for snapshot in vm["snapshots"]:
        if snapshot["moref"] == snapshot_moref:
            return snapshot
    raise NotFound(
        f"VM {vm['name']} ({vm_moref}) has no snapshot {snapshot_moref!r}; it may have been removed already."
    )


def snapshot_ref(state: LabState, data: dict, vm_moref: str, snapshot: dict) -> SnapshotRef:
    vm = data["vms"][vm_moref]
    disks = []
    for entry in snapshot["disks"]:
        disk = disk_of(vm, entry["key"], vm_moref)
        chain = chain_of(state, data, disk)
        index = chain.index_of(entry["frozen"])
        disks.append({
            "key": disk["key"],
            "file_name": datastore_file_name(data, disk["datastore"], entry["frozen"]),
            "path": str(chain.path(index)),
            "chain": [str(p) for p in chain.paths(index)],  # base first; one file when it is the only snapshot
            "datastore": disk["datastore"],
            "capacity_bytes": disk["capacity_bytes"],
            "change_id": entry["change_id"],
        })
    return SnapshotRef(vm=vm_moref, moref=snapshot["moref"], name=snapshot["name"], disks=disks)


def changed_areas(
    state: LabState, vm_moref: str, snapshot_moref: str, disk_key: int, since: str
) -> tuple[list[tuple[int, int]], str]:
    """Extents written between change id `since` and the snapshot ('*' = every extent in use)."""
    with state.locked():
        data = state.read()
        vm = get(data, "vms", vm_moref)
        snapshot = find(vm, vm_moref, snapshot_moref)
        disk = disk_of(vm, disk_key, vm_moref)
        entry = next(e for e in snapshot["disks"] if e["key"] == disk["key"])
        what = f"disk {disk['key']} of VM {vm['name']}"
        if since == "*":
            chain = chain_of(state, data, disk)
            return chain.allocated(chain.index_of(entry["frozen"])), entry["change_id"]
        if not vm["cbt_enabled"] or not entry["change_id"]:
            raise ChangeIdUnknown(
                f"Changed-block tracking was off for {what} when snapshot {snapshot['name']!r} was taken: "
                "a full read of the disk is needed."
            )
        extents = tracker_of(state, data, disk).changed_between(since, entry["change_id"], what)
        return ext.coalesce(extents), entry["change_id"]

"""LabConnector: the Connector interface over a lab folder, plus lab-only controls for demos and tests."""

from __future__ import annotations

import os
from pathlib import Path

from inventory.connectors.base import ConnectionParams, Connector, NewVmSpec, NotFound, SnapshotRef, Unreachable
from inventory.connectors.lab import attach, snapshots, vms
from inventory.connectors.lab.state import LabState, get, missing_root
from inventory.connectors.records import (
    ClusterRecord,
    DatacenterRecord,
    DatastoreRecord,
    DiskRecord,
    HostRecord,
    Inventory,
    NetworkRecord,
    ServerInfo,
    VmRecord,
)

PRODUCT = "VA Fleet lab"
VERSION = "1.0"


def default_root() -> Path:
    from django.conf import settings  # only when no root is given, so the lab also runs without Django

    return Path(settings.VAFLEET_LAB_ROOT)


class LabConnector(Connector):
    kind = "lab"
    label = "Lab (local demo hypervisor)"

    def __init__(self, params: ConnectionParams | None = None, *, root: str | os.PathLike | None = None):
        super().__init__(params or ConnectionParams())
        root = root or self.params.options.get("root") or default_root()
        self.state = LabState(Path(root).expanduser())

    @property
    def root(self) -> Path:
        return self.state.root

    # -- inventory ---------------------------------------------------------------------
    def test(self) -> ServerInfo:
        if not self.root.is_dir():
            raise missing_root(self.root)
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise Unreachable(
                f"The lab folder {self.root} is not readable and writable by this user; fix its permissions."
            )
        self.state.read()
        return ServerInfo(product=PRODUCT, version=VERSION)

    def fetch_inventory(self) -> Inventory:
        data = self.state.read()
        inv = Inventory(round_trips=1)
        inv.datacenters = [DatacenterRecord(m, d["name"]) for m, d in data["datacenters"].items()]
        inv.clusters = [ClusterRecord(m, c["name"], c["datacenter"]) for m, c in data["clusters"].items()]
        inv.hosts = [
            HostRecord(
                moref=m, name=h["name"], datacenter=h["datacenter"], cluster=h.get("cluster"),
                connection_state=h["connection_state"], power_state=h["power_state"], product=h["product"],
                cpu_cores=h["cpu_cores"], memory_bytes=h["memory_bytes"],
            )
            for m, h in data["hosts"].items()
        ]
        inv.datastores = [self._datastore_record(data, m, ds) for m, ds in data["datastores"].items()]
        inv.networks = [
            NetworkRecord(m, n["name"], n["datacenter"], kind=n["kind"], switch=n["switch"], vlan=n["vlan"],
                          hosts=list(n["hosts"]))
            for m, n in data["networks"].items()
        ]
        inv.vms = [self._vm_record(data, m, vm) for m, vm in data["vms"].items()]
        return inv

    def _datastore_record(self, data: dict, moref: str, ds: dict) -> DatastoreRecord:
        folder = self.root / ds["folder"]
        return DatastoreRecord(
            moref=moref, name=ds["name"], datacenter=ds["datacenter"], type=ds["type"], url=folder.as_uri() + "/",
            capacity_bytes=ds["capacity_bytes"], free_bytes=max(ds["capacity_bytes"] - _used_bytes(folder), 0),
            accessible=folder.is_dir(), hosts=list(ds["hosts"]),
        )

    def _vm_record(self, data: dict, moref: str, vm: dict) -> VmRecord:
        disks = [
            DiskRecord(
                key=d["key"], label=d["label"], capacity_bytes=d["capacity_bytes"], datastore=d["datastore"],
                file_name=vms.datastore_file_name(data, d["datastore"], d["chain"][-1]["file"]),
                thin=d["thin"], cbt_enabled=vm["cbt_enabled"],
            )
            for d in vm["disks"]
        ]
        disks += [
            DiskRecord(key=a["key"], label=f"Hot-added disk {a['key']}", file_name=a["file_name"],
                       capacity_bytes=_size(self.state.file_path(data, a["datastore"], a["file"])),
                       datastore=a["datastore"], disk_mode="independent_nonpersistent")
            for a in vm["attached"]
        ]
        return VmRecord(
            moref=moref, name=vm["name"], datacenter=vm["datacenter"], host=vm["host"], uuid=vm["uuid"],
            power_state=vm["power_state"], guest_os=vm["guest_os"], num_cpu=vm["num_cpu"],
            memory_mb=vm["memory_mb"], folder=vm["folder"], tags=list(vm["tags"]), cbt_enabled=vm["cbt_enabled"],
            datastores=sorted({vm["home"]["datastore"], *(d["datastore"] for d in vm["disks"])}),
            networks=list(vm["networks"]), disks=disks,
        )

    # -- operations used by backups and restores -------------------------------------
    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, memory: bool = False) -> SnapshotRef:
        return snapshots.create_snapshot(self.state, vm, name, quiesce=quiesce)

    def remove_snapshot(self, vm: str, snapshot: str) -> None:
        snapshots.remove_snapshot(self.state, vm, snapshot)

    def list_snapshots(self, vm: str) -> list[SnapshotRef]:
        return snapshots.list_snapshots(self.state, vm)

    def attach_disk(self, appliance_vm: str, file_name: str, *, writable: bool = False) -> int:
        # the lab decides by the file's owner: a powered-off VM's current disk is writable, a snapshot's is not
        return attach.attach_disk(self.state, appliance_vm, file_name)

    def detach_disk(self, appliance_vm: str, device_key: int) -> None:
        attach.detach_disk(self.state, appliance_vm, device_key)

    def create_vm(self, spec: NewVmSpec) -> str:
        with self.state.edit() as data:
            return vms.add_vm(self.state, data, spec)

    def changed_areas(self, vm: str, snapshot: str, disk_key: int, since: str) -> tuple[list[tuple[int, int]], str]:
        return snapshots.changed_areas(self.state, vm, snapshot, disk_key, since)

    def network_disk(self, vm: str, snapshot: SnapshotRef, disk: dict, appliance_address: str = ""):
        """Serve the snapshot disk over HTTPS where the appliance reaches this machine (lab/network.py)."""
        from inventory.connectors.lab import network

        return network.serve_snapshot_disk(self.state, vm, snapshot.moref, int(disk["key"]), appliance_address)

    def vm_disks(self, vm: str) -> list[dict]:
        data = self.state.read()
        return [{"key": d["key"], "datastore": d["datastore"], "capacity_bytes": d["capacity_bytes"],
                 "file_name": vms.datastore_file_name(data, d["datastore"], d["chain"][-1]["file"])}
                for d in get(data, "vms", vm)["disks"]]

    # -- lab-only controls (demos, tests, the local appliance) -------------------------
    def device(self, appliance_vm: str, device_key: int) -> dict:
        """Local file(s) of a disk attached to an appliance VM: {"path", "chain", "capacity_bytes", ...}."""
        return attach.device(self.state, appliance_vm, device_key)

    def devices(self, appliance_vm: str) -> list[dict]:
        """Every disk attached to an appliance VM (for cleanup after a crash)."""
        data = self.state.read()
        keys = [d["key"] for d in get(data, "vms", appliance_vm)["attached"]]
        return [attach.device(self.state, appliance_vm, key) for key in keys]

    def read_device(self, appliance_vm: str, device_key: int, offset: int, length: int) -> bytes:
        return attach.read_device(self.state, appliance_vm, device_key, offset, length)

    def write(self, vm: str, percent: float = 5.0, seed: int | str = 1) -> dict[int, list[tuple[int, int]]]:
        """Make the VM's guest change `percent` of each disk; returns the written extents per disk key."""
        return vms.write(self.state, vm, percent, seed)

    def write_at(self, vm: str, disk_key: int, offset: int, payload: bytes) -> None:
        vms.write_at(self.state, vm, disk_key, offset, payload)

    def read_disk(self, vm: str, disk_key: int, offset: int, length: int) -> bytes:
        """The VM's current view of a disk (base overlaid with its deltas)."""
        data = self.state.read()
        return vms.chain_of(self.state, data, vms.disk_of(get(data, "vms", vm), disk_key, vm)).read(offset, length)

    def disk_digest(self, vm: str, disk_key: int, snapshot: str | None = None) -> str:
        """SHA-256 of a disk as the VM sees it now, or as frozen by `snapshot`."""
        data = self.state.read()
        vm_data = get(data, "vms", vm)
        chain = vms.chain_of(self.state, data, vms.disk_of(vm_data, disk_key, vm))
        if snapshot is None:
            return chain.digest()
        entry = next(e for e in snapshots.find(vm_data, vm, snapshot)["disks"] if e["key"] == int(disk_key))
        return chain.digest(chain.index_of(entry["frozen"]))

    def set_power(self, vm: str, power_state: str) -> None:
        vms.set_power(self.state, vm, power_state)

    def set_cbt(self, vm: str, enabled: bool) -> None:
        vms.set_cbt(self.state, vm, enabled)

    def reset_cbt(self, vm: str) -> None:
        vms.reset_cbt(self.state, vm)

    def destroy_vm(self, vm: str) -> None:
        vms.destroy_vm(self.state, vm)

    def find_vm(self, name_or_moref: str) -> str:
        """A VM's moref from its name or moref; NotFound with a sentence otherwise."""
        data = self.state.read()
        if name_or_moref in data["vms"]:
            return name_or_moref
        for moref, vm in data["vms"].items():
            if vm["name"] == name_or_moref:
                return moref
        raise NotFound(f"The lab has no VM named or numbered {name_or_moref!r}; `manage.py lab status` lists them.")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _used_bytes(folder: Path) -> int:
    used = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                used += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:  # removed by a concurrent consolidation
                continue
    return used

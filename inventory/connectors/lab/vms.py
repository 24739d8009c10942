"""Lab VMs: creation, power, guest writes and changed-block tracking switches.

Functions take a LabState and change the inventory inside `state.edit()`, so they are safe
across processes. VM files live in a home folder on a datastore, named like VMware's:
`web-01/web-01.vmdk`, `web-01/web-01_1.vmdk`, deltas `web-01/web-01-000001.vmdk`.
"""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path

from inventory.connectors.base import ConnectorError, NewVmSpec, NotFound
from inventory.connectors.lab import extents as ext
from inventory.connectors.lab.cbt import ChangeTracker
from inventory.connectors.lab.content import ContentSource
from inventory.connectors.lab.disks import DiskChain, create_image
from inventory.connectors.lab.state import LabState, get, new_moref

GRAIN = 4096
FIRST_DISK_KEY = 2000
POWER_STATES = ("poweredOn", "poweredOff", "suspended")


# -- helpers shared by the lab modules ----------------------------------------------------
def chain_of(state: LabState, data: dict, disk: dict) -> DiskChain:
    return DiskChain(state.datastore_dir(data, disk["datastore"]), disk)


def tracker_of(state: LabState, data: dict, disk: dict) -> ChangeTracker:
    return ChangeTracker(state.file_path(data, disk["datastore"], disk["ctk"]))


def datastore_file_name(data: dict, datastore: str, relative: str) -> str:
    return f"[{data['datastores'][datastore]['name']}] {relative}"


def disk_of(vm: dict, key: int, vm_moref: str) -> dict:
    for disk in vm["disks"]:
        if disk["key"] == int(key):
            return disk
    raise NotFound(f"VM {vm['name']} ({vm_moref}) has no disk with key {key}; its disks are "
                   f"{', '.join(str(d['key']) for d in vm['disks']) or 'none'}.")


def folder_name(name: str) -> str:
    """A VM's home folder name: its name with path separators and odd punctuation replaced."""
    cleaned = re.sub(r"[^\w.\-]+", "_", name, flags=re.UNICODE).strip("._") or "vm"
    return cleaned[:80]


def check_mounted(data: dict, host: str, datastore: str) -> None:
    if host not in data["datastores"][datastore]["hosts"]:
        raise ConnectorError(
            f"Host {data['hosts'][host]['name']} does not mount datastore {data['datastores'][datastore]['name']}; "
            "pick a datastore this host can see."
        )


# -- creating and removing VMs ------------------------------------------------------------
def add_vm(state: LabState, data: dict, spec: NewVmSpec, *, extra: dict | None = None) -> str:
    """Add a powered-off VM to `data` (inside an edit) with empty sparse disks; `extra` overrides settings."""
    if spec.datacenter not in data["datacenters"]:
        raise NotFound(f"The lab has no datacenter {spec.datacenter!r}; its datacenters are "
                       f"{', '.join(data['datacenters'])}.")
    get(data, "hosts", spec.host)
    get(data, "datastores", spec.datastore)
    if spec.network:
        get(data, "networks", spec.network)
    check_mounted(data, spec.host, spec.datastore)
    for capacity in spec.disk_capacities:
        if capacity <= 0 or capacity % 512:
            raise ConnectorError(f"A disk of {capacity} bytes is not possible; use a positive multiple of 512 bytes.")
    moref = new_moref(data, "vm")
    home = _free_folder(state.datastore_dir(data, spec.datastore), folder_name(spec.name))
    disks = []
    for i, capacity in enumerate(spec.disk_capacities):
        stem = home if i == 0 else f"{home}_{i}"
        base = f"{home}/{stem}.vmdk"
        create_image(state.file_path(data, spec.datastore, base), capacity)
        disks.append({
            "key": FIRST_DISK_KEY + i,
            "label": f"Hard disk {i + 1}",
            "datastore": spec.datastore,
            "capacity_bytes": capacity,
            "thin": True,
            "stem": f"{home}/{stem}",
            "ctk": f"{home}/{stem}-ctk.json",
            "next_delta": 1,
            "chain": [{"file": base, "written": None}],
        })
    data["vms"][moref] = {
        "name": spec.name,
        "datacenter": spec.datacenter,
        "host": spec.host,
        "home": {"datastore": spec.datastore, "folder": home},
        "uuid": str(uuid.uuid4()),
        "power_state": "poweredOff",
        "guest_os": spec.guest_os,
        "num_cpu": spec.num_cpu,
        "memory_mb": spec.memory_mb,
        "folder": spec.folder,
        "tags": [],
        "cbt_enabled": False,
        "networks": [spec.network] if spec.network else [],
        "disks": disks,
        "snapshots": [],
        "attached": [],
        **(extra or {}),
    }
    if data["vms"][moref]["cbt_enabled"]:
        _reset_trackers(state, data, data["vms"][moref])
    return moref


def _free_folder(datastore_dir: Path, wanted: str) -> str:
    name, n = wanted, 1
    while (datastore_dir / name).exists():
        name = f"{wanted}_{n}"
        n += 1
    (datastore_dir / name).mkdir(parents=True)
    return name


def destroy_vm(state: LabState, vm_moref: str) -> None:
    """Delete a VM with its snapshots and files (refused while disks are attached to it or from it)."""
    stale: list[Path] = []
    with state.edit() as data:
        vm = get(data, "vms", vm_moref)
        if vm["attached"]:
            raise ConnectorError(f"VM {vm['name']} still has disks of other VMs attached; detach them first.")
        for other in data["vms"].values():
            if any(a["vm"] == vm_moref for a in other["attached"]):
                raise ConnectorError(f"A disk of VM {vm['name']} is attached to {other['name']}; detach it first.")
        for disk in vm["disks"]:
            stale.extend(chain_of(state, data, disk).paths())
            stale.append(state.file_path(data, disk["datastore"], disk["ctk"]))
        home = state.file_path(data, vm["home"]["datastore"], vm["home"]["folder"])
        del data["vms"][vm_moref]
    for path in stale:
        path.unlink(missing_ok=True)
    if home.is_dir() and not any(home.iterdir()):
        home.rmdir()


# -- power and tracking switches ----------------------------------------------------------
def set_power(state: LabState, vm_moref: str, power_state: str) -> None:
    if power_state not in POWER_STATES:
        raise ConnectorError(f"Power state {power_state!r} is not one of {', '.join(POWER_STATES)}.")
    with state.edit() as data:
        get(data, "vms", vm_moref)["power_state"] = power_state


def set_cbt(state: LabState, vm_moref: str, enabled: bool) -> None:
    """Turn changed-block tracking on or off; turning it on starts a new tracker (old ids become unknown)."""
    with state.edit() as data:
        vm = get(data, "vms", vm_moref)
        if enabled and not vm["cbt_enabled"]:
            _reset_trackers(state, data, vm)
        vm["cbt_enabled"] = bool(enabled)


def reset_cbt(state: LabState, vm_moref: str) -> None:
    """Forget all tracked changes, as vSphere does when a VM moves or a disk is resized."""
    with state.edit() as data:
        _reset_trackers(state, data, get(data, "vms", vm_moref))


def _reset_trackers(state: LabState, data: dict, vm: dict) -> None:
    for disk in vm["disks"]:
        tracker = tracker_of(state, data, disk)
        tracker.reset()
        tracker.save()


# -- guest writes -------------------------------------------------------------------------
def write_at(state: LabState, vm_moref: str, disk_key: int, offset: int, payload: bytes) -> None:
    """The guest writes `payload` at `offset` of one disk (into the newest delta while a snapshot exists)."""
    with state.edit() as data:
        vm = get(data, "vms", vm_moref)
        disk = disk_of(vm, disk_key, vm_moref)
        _write(state, data, vm, disk, [(offset, payload)])


def write(state: LabState, vm_moref: str, percent: float = 5.0, seed: int | str = 1) -> dict[int, list]:
    """A day of guest activity: change `percent` of each disk, a third into holes, the rest over data.

    Returns the written extents per disk key (what exact changed-block tracking must report).
    """
    if not 0 < percent <= 100:
        raise ConnectorError(f"Write percentage {percent} is out of range; use a number above 0 and up to 100.")
    written = {}
    with state.edit() as data:
        vm = get(data, "vms", vm_moref)
        for disk in vm["disks"]:
            chain = chain_of(state, data, disk)
            where = f"lab-write/{vm_moref}/{vm['name']}/{disk['key']}/{seed}"  # same lab, same seed: same writes
            rng, source = random.Random(where), ContentSource(where)
            plan = _plan_writes(rng, chain, int(chain.capacity * percent / 100))
            _write(state, data, vm, disk, [(o, source.make(source.pick_kind(), n)) for o, n in plan])
            written[disk["key"]] = ext.coalesce(plan)
    return written


def _plan_writes(rng: random.Random, chain: DiskChain, budget: int) -> list[ext.Extent]:
    grains = chain.capacity // GRAIN
    data_extents = chain.allocated()
    holes = _complement(data_extents, chain.capacity)
    plan, planned = [], 0
    while planned < budget and grains:
        left = -(-(budget - planned) // GRAIN) * GRAIN  # rounded up to whole grains
        length = min(rng.randint(1, 64) * GRAIN, left)
        pool = holes if (rng.random() < 1 / 3 and holes) or not data_extents else data_extents
        start, size = rng.choice(pool) if pool else (0, chain.capacity)
        offset = start + rng.randrange(max(size - length, 0) + 1) // GRAIN * GRAIN
        length = min(length, chain.capacity - offset)
        plan.append((offset, length))
        planned += length
    return plan


def _complement(extents: list[ext.Extent], size: int) -> list[ext.Extent]:
    out, pos = [], 0
    for offset, length in extents:
        if offset > pos:
            out.append((pos, offset - pos))
        pos = offset + length
    if pos < size:
        out.append((pos, size - pos))
    return out


def _write(state: LabState, data: dict, vm: dict, disk: dict, writes: list[tuple[int, bytes]]) -> None:
    chain = chain_of(state, data, disk)
    tracker = tracker_of(state, data, disk) if vm["cbt_enabled"] else None
    for offset, payload in writes:
        chain.write(offset, payload)
        if tracker:
            tracker.record(offset, len(payload))
    if tracker:
        tracker.save()

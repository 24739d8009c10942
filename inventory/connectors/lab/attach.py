"""Hot-add in the lab: a disk file of one VM attached to an appliance VM as a new device.

As on vSphere, the appliance's host must mount the disk's datastore, and a disk that a running
VM writes to cannot be attached (only a snapshot's frozen file, or a powered-off VM's disk,
which is how restores write into a new VM). The appliance finds the device's local file(s)
with `device()`.
"""

from __future__ import annotations

import os

from inventory.connectors.base import ConnectorError, NotFound
from inventory.connectors.lab.state import LabState, by_name, get, parse_file_name
from inventory.connectors.lab.vms import chain_of, datastore_file_name


def attach_disk(state: LabState, appliance_moref: str, file_name: str) -> int:
    datastore_name, relative = parse_file_name(file_name)
    with state.edit() as data:
        appliance = get(data, "vms", appliance_moref)
        found = by_name(data, "datastores", datastore_name)
        if found is None:
            raise NotFound(f"The lab has no datastore named {datastore_name!r} (from {file_name!r}).")
        datastore, store = found
        if appliance["host"] not in store["hosts"]:
            raise ConnectorError(
                f"{appliance['name']} runs on {data['hosts'][appliance['host']]['name']}, which does not mount "
                f"datastore {datastore_name}: hot-add is impossible there; read the disk over the network instead."
            )
        owner, disk_key, writable = _owner(data, datastore, relative, file_name)
        if not state.file_path(data, datastore, relative).is_file():
            raise NotFound(f"The disk file {file_name!r} does not exist on datastore {datastore_name}.")
        for vm in data["vms"].values():
            for device in vm["attached"]:
                if device["datastore"] == datastore and device["file"] == relative:
                    raise ConnectorError(
                        f"{file_name} is already attached to {vm['name']} (device {device['key']}); detach it first."
                    )
        used = [d["key"] for d in appliance["disks"]] + [d["key"] for d in appliance["attached"]]
        key = max(used, default=1999) + 1
        appliance["attached"].append({
            "key": key,
            "file_name": datastore_file_name(data, datastore, relative),
            "datastore": datastore,
            "file": relative,
            "vm": owner,
            "disk_key": disk_key,
            "writable": writable,
        })
        return key


def _owner(data: dict, datastore: str, relative: str, file_name: str) -> tuple[str | None, int | None, bool]:
    """Which VM disk the file belongs to, and whether the appliance may write it."""
    for moref, vm in data["vms"].items():
        for disk in vm["disks"]:
            if disk["datastore"] != datastore:
                continue
            files = [link["file"] for link in disk["chain"]]
            if relative not in files:
                continue
            index = files.index(relative)
            top = index == len(files) - 1
            if top and vm["power_state"] != "poweredOff":
                raise ConnectorError(
                    f"{file_name} is the running disk of VM {vm['name']}, which is powered on: attach the disk of "
                    "a snapshot instead, or power the VM off."
                )
            if top and index > 0:  # writes straight into a delta would bypass its record of written extents
                raise ConnectorError(
                    f"{file_name} is a snapshot delta of VM {vm['name']}: remove its snapshots before attaching "
                    "its current disk."
                )
            return moref, disk["key"], top
    return None, None, True


def detach_disk(state: LabState, appliance_moref: str, device_key: int) -> None:
    with state.edit() as data:
        appliance = get(data, "vms", appliance_moref)
        device = _device(appliance, appliance_moref, device_key)
        appliance["attached"].remove(device)


def device(state: LabState, appliance_moref: str, device_key: int) -> dict:
    """Where an attached disk is on this machine.

    `path` is the attached file; `chain` lists the files to overlay (base first): when it has
    one entry, `path` alone is the whole disk; otherwise read through `read_device()`.
    """
    data = state.read()
    appliance = get(data, "vms", appliance_moref)
    found = _device(appliance, appliance_moref, device_key)
    path = state.file_path(data, found["datastore"], found["file"])
    result = {
        "key": found["key"],
        "file_name": found["file_name"],
        "path": str(path),
        "chain": [str(path)],
        "capacity_bytes": path.stat().st_size,
        "writable": found["writable"],
        "vm": found["vm"],
        "disk_key": found["disk_key"],
    }
    if found["vm"] in data["vms"]:
        for disk in data["vms"][found["vm"]]["disks"]:
            if disk["key"] == found["disk_key"]:
                chain = chain_of(state, data, disk)
                index = chain.index_of(found["file"])
                result["chain"] = [str(p) for p in chain.paths(index)]
                result["capacity_bytes"] = chain.capacity
    return result


def read_device(state: LabState, appliance_moref: str, device_key: int, offset: int, length: int) -> bytes:
    """Bytes of an attached disk as the appliance sees them (the chain overlaid up to the attached file)."""
    data = state.read()
    found = _device(get(data, "vms", appliance_moref), appliance_moref, device_key)
    if found["vm"] in data["vms"]:
        for disk in data["vms"][found["vm"]]["disks"]:
            if disk["key"] == found["disk_key"]:
                chain = chain_of(state, data, disk)
                return chain.read(offset, length, chain.index_of(found["file"]))
    with open(state.file_path(data, found["datastore"], found["file"]), "rb") as f:
        return os.pread(f.fileno(), length, offset)


def _device(appliance: dict, appliance_moref: str, device_key: int) -> dict:
    for device in appliance["attached"]:
        if device["key"] == int(device_key):
            return device
    raise NotFound(
        f"{appliance['name']} ({appliance_moref}) has no attached disk with device key {device_key}; "
        "it may have been detached already."
    )

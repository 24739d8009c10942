"""Seed the lab: a datacenter, 4 hosts, shared and local datastores, 2 networks and demo VMs.

Deterministic (VM i always has the same name, settings and disk content) and idempotent:
objects are matched by name, existing VMs and their disks are kept, missing ones are added.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from inventory.connectors.base import NewVmSpec
from inventory.connectors.lab.content import fill_disk
from inventory.connectors.lab.state import LabState, by_name, new_moref
from inventory.connectors.lab.vms import add_vm

MIB = 1 << 20
GIB = 1 << 30
HOSTS = 4
SHARED = (("shared-vmfs-01", "VMFS", 4096 * GIB), ("shared-nfs-01", "NFS", 2048 * GIB))
LOCAL_CAPACITY = 900 * GIB

# (name pattern, guest OS, vCPUs, memory MiB, folder, tags, disks)
ROLES = (
    ("web-{n:02d}", "Ubuntu Linux (64-bit)", 2, 4096, "Production/Web", ["tier:web"], 1),
    ("db-{n:02d}", "Red Hat Enterprise Linux 9 (64-bit)", 8, 32768, "Production/Databases",
     ["tier:db", "backup:gold"], 2),
    ("app-{n:02d}", "Debian GNU/Linux 12 (64-bit)", 4, 8192, "Production/Apps", ["tier:app"], 1),
    ("mail-{n:02d}", "Microsoft Windows Server 2019 (64-bit)", 4, 16384, "Infrastructure/Mail", ["service:mail"], 2),
    ("dc-{n:02d}", "Microsoft Windows Server 2022 (64-bit)", 2, 8192, "Infrastructure/Directory",
     ["service:directory", "backup:gold"], 1),
    ("file-{n:02d}", "Microsoft Windows Server 2022 (64-bit)", 2, 8192, "Infrastructure/Files", ["service:files"], 2),
    ("proxy-{n:02d}", "Ubuntu Linux (64-bit)", 2, 2048, "DMZ", ["tier:edge"], 1),
    ("ci-runner-{n:02d}", "Ubuntu Linux (64-bit)", 8, 16384, "Development/Build", [], 1),
    ("mon-{n:02d}", "Rocky Linux 9 (64-bit)", 2, 4096, "Infrastructure/Monitoring", ["service:monitoring"], 1),
    ("erp-{n:02d}", "SUSE Linux Enterprise 15 (64-bit)", 8, 65536, "Production/ERP", ["tier:app", "backup:gold"], 2),
    ("vdi-{n:02d}", "Microsoft Windows 11 (64-bit)", 2, 8192, "Desktops", [], 1),
    ("finance reports (été) #{n}", "Microsoft Windows Server 2016 (64-bit)", 2, 4096, "Production/Legacy",
     ["owner:finance"], 1),
)
ENVIRONMENTS = {"Production": "env:prod", "Development": "env:dev", "DMZ": "env:prod", "Desktops": "env:office"}


@dataclass
class SeedResult:
    created: int
    kept: int
    bytes_written: int
    seconds: float


def vm_plan(index: int) -> dict:
    """Settings of demo VM number `index` (0-based); the same index always gives the same VM."""
    pattern, guest, cpus, memory, folder, tags, disks = ROLES[index % len(ROLES)]
    env = ENVIRONMENTS.get(folder.split("/")[0], "env:infra")
    return {
        "name": pattern.format(n=index // len(ROLES) + 1),
        "guest_os": guest,
        "num_cpu": cpus,
        "memory_mb": memory,
        "folder": folder,
        "tags": sorted({env, *tags}),
        "disks": disks,
        "host": index % HOSTS,
        "local": index % 3 == 0,
        "shared": index % 2,
        "powered_on": index % 7 != 3,
        "cbt": index % 8 != 5,
        "fill": 0.15 + (index * 7 % 11) / 50,  # 15 % to 35 % of each disk written, 25 % on average
        "distributed": folder.startswith("Production"),
    }


def seed(root: str | Path, *, vms: int = 32, disk_size: int = 64 * MIB, fill: float | None = None) -> SeedResult:
    """Create what is missing of the demo lab under `root`; existing objects are left as they are.

    `fill` (0-1) sets the written share of every new disk; by default it varies from 15 % to 35 %.
    """
    if vms < 0 or vms > 10_000:
        raise ValueError(f"{vms} VMs is out of range; seed between 0 and 10000.")
    if disk_size < MIB or disk_size % MIB:
        raise ValueError(f"A disk size of {disk_size} bytes is not possible; use whole MiB, at least 1M.")
    if fill is not None and not 0 <= fill <= 1:
        raise ValueError(f"A fill of {fill} is out of range; use a share between 0 and 1, e.g. 0.25.")
    started = time.monotonic()
    state = LabState(root)
    created = kept = 0
    fills: list[tuple[Path, int, str, float]] = []
    with state.edit(create=True) as data:
        dc = _ensure(data, "datacenters", "datacenter", "Lab", {})
        cluster = _ensure(data, "clusters", "domain-c", "Lab Cluster", {"datacenter": dc})
        hosts = [
            _ensure(data, "hosts", "host", f"esx-{i + 1:02d}.lab.local", {
                "datacenter": dc, "cluster": cluster, "cpu_cores": 32, "memory_bytes": 512 * GIB,
                "product": "VA Fleet lab ESXi 8.0", "connection_state": "connected", "power_state": "poweredOn",
            })
            for i in range(HOSTS)
        ]
        shared = [_datastore(state, data, dc, name, kind, capacity, hosts) for name, kind, capacity in SHARED]
        local = [
            _datastore(state, data, dc, f"local-esx-{i + 1:02d}", "VMFS", LOCAL_CAPACITY, [host])
            for i, host in enumerate(hosts)
        ]
        networks = [
            _ensure(data, "networks", "network", "VM Network",
                    {"datacenter": dc, "kind": "standard", "switch": "vSwitch0", "vlan": "0", "hosts": hosts}),
            _ensure(data, "networks", "dvportgroup", "dvPG-Production",
                    {"datacenter": dc, "kind": "distributed", "switch": "dvs-lab-01", "vlan": "120", "hosts": hosts}),
        ]
        data["next_id"] = max(data["next_id"], 101)  # VM ids start at vm-101, as on a fresh vCenter
        for index in range(vms):
            plan = vm_plan(index)
            if by_name(data, "vms", plan["name"]):
                kept += 1
                continue
            datastore = local[plan["host"]] if plan["local"] else shared[plan["shared"]]
            spec = NewVmSpec(
                name=plan["name"], datacenter=dc, host=hosts[plan["host"]], datastore=datastore,
                network=networks[1 if plan["distributed"] else 0], num_cpu=plan["num_cpu"],
                memory_mb=plan["memory_mb"], guest_os=plan["guest_os"], folder=plan["folder"],
                disk_capacities=[disk_size] * plan["disks"],
            )
            extra = {
                "power_state": "poweredOn" if plan["powered_on"] else "poweredOff",
                "tags": plan["tags"],
                "cbt_enabled": plan["cbt"],
                "seed_index": index,
            }
            vm = data["vms"][add_vm(state, data, spec, extra=extra)]
            created += 1
            for i, disk in enumerate(vm["disks"]):
                path = state.file_path(data, disk["datastore"], disk["chain"][0]["file"])
                fills.append((path, disk["capacity_bytes"], f"{index}/{i}", plan["fill"] if fill is None else fill))
        # content generation and page-cache writes both release the GIL for most of their time
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            written = sum(pool.map(lambda job: fill_disk(*job), fills))
    return SeedResult(created, kept, written, time.monotonic() - started)


def _ensure(data: dict, kind: str, prefix: str, name: str, values: dict) -> str:
    found = by_name(data, kind, name)
    if found:
        return found[0]
    moref = new_moref(data, prefix) if prefix != "domain-c" else f"domain-c{_take(data)}"
    data[kind][moref] = {"name": name, **values}
    return moref


def _take(data: dict) -> int:
    number = data["next_id"]
    data["next_id"] = number + 1
    return number


def _datastore(state: LabState, data: dict, dc: str, name: str, kind: str, capacity: int, hosts: list[str]) -> str:
    moref = _ensure(data, "datastores", "datastore", name, {
        "datacenter": dc, "type": kind, "capacity_bytes": capacity, "folder": f"datastores/{name}", "hosts": hosts,
    })
    (state.root / data["datastores"][moref]["folder"]).mkdir(parents=True, exist_ok=True)
    return moref

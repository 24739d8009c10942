"""Read a whole vSphere inventory in a few paged PropertyCollector calls and turn it into records."""

from __future__ import annotations

import re

from pyVmomi import vim

from inventory.connectors.records import (
    ClusterRecord,
    DatacenterRecord,
    DatastoreRecord,
    DiskRecord,
    HostRecord,
    Inventory,
    NetworkRecord,
    VmRecord,
)
from inventory.connectors.vsphere.collector import PC, Collector, view_filter

ENTITY_PATHS = ["name", "parent"]
PATHS: dict[type, list[str]] = {
    vim.Datacenter: ENTITY_PATHS,
    vim.Folder: ENTITY_PATHS,
    vim.ComputeResource: ENTITY_PATHS,
    vim.ClusterComputeResource: ENTITY_PATHS,
    vim.HostSystem: [
        *ENTITY_PATHS, "runtime.connectionState", "runtime.powerState", "runtime.inMaintenanceMode",
        "config.product.fullName", "hardware.cpuInfo.numCpuCores", "hardware.memorySize", "network",
        "config.network.portgroup",
    ],
    vim.Datastore: [
        *ENTITY_PATHS, "summary.type", "summary.url", "summary.capacity", "summary.freeSpace",
        "summary.accessible", "host",
    ],
    vim.Network: [*ENTITY_PATHS, "host"],
    vim.OpaqueNetwork: [*ENTITY_PATHS, "host"],
    vim.dvs.DistributedVirtualPortgroup: [
        *ENTITY_PATHS, "host", "tag", "config.distributedVirtualSwitch", "config.defaultPortConfig",
    ],
    vim.DistributedVirtualSwitch: ["name", "config.uplinkPortgroup"],
    vim.VirtualMachine: [
        *ENTITY_PATHS, "runtime.host", "runtime.powerState", "config.instanceUuid", "config.guestFullName",
        "config.guestId", "config.hardware.numCPU", "config.hardware.memoryMB", "config.template",
        "config.changeTrackingEnabled", "config.hardware.device", "datastore", "network", "customValue",
    ],
}

UPLINK_TAG = "SYSTEM/DVS.UPLINKPG"

# vSphere stores '%', '/' and '\' in entity names escaped.
_ESCAPED = re.compile(r"%(25|2[fF]|5[cC])")
_UNESCAPE = {"25": "%", "2f": "/", "5c": "\\"}


def entity_name(raw: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(1).lower()], raw or "")


def escape_name(name: str) -> str:
    """The escaped form vSphere stores, so a name like 'db/01 50%' never reads as a path."""
    return name.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def fetch(collector: Collector) -> Inventory:
    """Everything in one filter: the container view's objects plus custom field names (for tags)."""
    view = collector.container_view(
        [vim.Datacenter, vim.Folder, vim.ComputeResource, vim.HostSystem, vim.Datastore, vim.Network,
         vim.DistributedVirtualSwitch, vim.VirtualMachine]
    )
    try:
        spec = view_filter(view, PATHS)
        fields_manager = collector.content.customFieldsManager  # absent on a standalone ESXi
        if fields_manager is not None:
            spec.objectSet.append(PC.ObjectSpec(obj=fields_manager, skip=False))
            spec.propSet.append(PC.PropertySpec(type=vim.CustomFieldsManager, pathSet=["field"]))
        found = collector.retrieve(spec)
    finally:
        collector.destroy(view)
    inventory = Builder(found).build()
    inventory.round_trips = collector.round_trips
    return inventory


class Builder:
    """Turns (object, properties) pairs into records; parents are resolved through the `parent` chain."""

    def __init__(self, found: list[tuple]):
        self.props: dict[str, dict] = {}
        self.kinds: dict[str, type] = {}
        self.field_names: dict[int, str] = {}
        for obj, props in found:
            if isinstance(obj, vim.CustomFieldsManager):
                self.field_names = {f.key: f.name for f in props.get("field") or []}
                continue
            self.props[obj._moId] = props
            self.kinds[obj._moId] = type(obj)

    def of(self, kind: type) -> list[tuple[str, dict]]:
        return [(moref, p) for moref, p in self.props.items() if issubclass(self.kinds[moref], kind)]

    def datacenter_of(self, moref: str | None) -> str | None:
        seen = set()
        while moref and moref not in seen:
            seen.add(moref)
            if self.kinds.get(moref) is vim.Datacenter:
                return moref
            parent = self.props.get(moref, {}).get("parent")
            moref = parent._moId if parent is not None else None
        return None

    def folder_path(self, vm_props: dict) -> str:
        """Folder names between the datacenter's VM folder and the VM."""
        names = []
        parent = vm_props.get("parent")
        while parent is not None and self.kinds.get(parent._moId) is vim.Folder:
            props = self.props[parent._moId]
            grandparent = props.get("parent")
            if grandparent is None or self.kinds.get(grandparent._moId) is vim.Datacenter:
                break  # the datacenter's own vm folder is not part of the path
            names.append(entity_name(props.get("name", "")))
            parent = grandparent
        return "/".join(reversed(names))

    def build(self) -> Inventory:
        inv = Inventory()
        inv.datacenters = [DatacenterRecord(m, entity_name(p.get("name", ""))) for m, p in self.of(vim.Datacenter)]
        known_dcs = {d.moref for d in inv.datacenters}
        inv.clusters = [
            ClusterRecord(m, entity_name(p.get("name", "")), dc)
            for m, p in self.of(vim.ClusterComputeResource)
            if (dc := self.datacenter_of(m)) in known_dcs
        ]
        inv.hosts = self.hosts(known_dcs)
        host_dc = {h.moref: h.datacenter for h in inv.hosts}
        inv.datastores = self.datastores(known_dcs, host_dc)
        inv.networks = self.networks(known_dcs, host_dc)
        inv.vms = self.vms(known_dcs, host_dc)
        return inv

    def hosts(self, known_dcs: set[str]) -> list[HostRecord]:
        records = []
        for moref, p in self.of(vim.HostSystem):
            dc = self.datacenter_of(moref)
            if dc not in known_dcs:
                continue
            parent = p.get("parent")
            cluster = parent._moId if isinstance(parent, vim.ClusterComputeResource) else None
            records.append(HostRecord(
                moref=moref, name=entity_name(p.get("name", "")), datacenter=dc, cluster=cluster,
                connection_state=str(p.get("runtime.connectionState") or ""),
                power_state=str(p.get("runtime.powerState") or ""),
                in_maintenance=bool(p.get("runtime.inMaintenanceMode")),
                product=p.get("config.product.fullName") or "",
                cpu_cores=int(p.get("hardware.cpuInfo.numCpuCores") or 0),
                memory_bytes=int(p.get("hardware.memorySize") or 0),
            ))
        return records

    def datastores(self, known_dcs: set[str], host_dc: dict[str, str]) -> list[DatastoreRecord]:
        records = []
        for moref, p in self.of(vim.Datastore):
            mounts = [
                m.key._moId for m in p.get("host") or []
                if m.mountInfo is None or m.mountInfo.mounted is not False
            ]
            dc = self.datacenter_of(moref) or next((host_dc[h] for h in mounts if h in host_dc), None)
            if dc not in known_dcs:
                continue
            records.append(DatastoreRecord(
                moref=moref, name=entity_name(p.get("name", "")), datacenter=dc,
                type=p.get("summary.type") or "", url=p.get("summary.url") or "",
                capacity_bytes=int(p.get("summary.capacity") or 0),
                free_bytes=max(0, int(p.get("summary.freeSpace") or 0)),
                accessible=p.get("summary.accessible") is not False, hosts=sorted(set(mounts)),
            ))
        return records

    def networks(self, known_dcs: set[str], host_dc: dict[str, str]) -> list[NetworkRecord]:
        switches = {m: p for m, p in self.of(vim.DistributedVirtualSwitch)}
        uplinks = {pg._moId for p in switches.values() for pg in p.get("config.uplinkPortgroup") or []}
        uplinks |= {m for m, p in self.of(vim.dvs.DistributedVirtualPortgroup)
                    if any(t.key == UPLINK_TAG for t in p.get("tag") or [])}
        # Standard port groups list no hosts on some servers: hosts list their networks instead.
        hosts_of: dict[str, set[str]] = {}
        vlans: dict[str, str] = {}
        for host, p in self.of(vim.HostSystem):
            for net in p.get("network") or []:
                hosts_of.setdefault(net._moId, set()).add(host)
            for pg in p.get("config.network.portgroup") or []:
                if pg.spec and pg.spec.vlanId is not None:
                    vlans.setdefault(pg.spec.name, str(pg.spec.vlanId))
        records = []
        for moref, p in self.of(vim.Network):
            if moref in uplinks:
                continue  # uplink port groups carry no VM traffic
            hosts = hosts_of.get(moref, set()) | {h._moId for h in p.get("host") or []}
            dc = self.datacenter_of(moref) or next((host_dc[h] for h in hosts if h in host_dc), None)
            if dc not in known_dcs:
                continue
            name = entity_name(p.get("name", ""))
            record = NetworkRecord(moref=moref, name=name, datacenter=dc, hosts=sorted(hosts), vlan=vlans.get(name, ""))
            kind = self.kinds[moref]
            if issubclass(kind, vim.dvs.DistributedVirtualPortgroup):
                record.kind = "distributed"
                switch = p.get("config.distributedVirtualSwitch")
                record.switch = entity_name(switches.get(switch._moId, {}).get("name", "")) if switch else ""
                record.vlan = _dvpg_vlan(p.get("config.defaultPortConfig"))
            elif issubclass(kind, vim.OpaqueNetwork):
                record.kind = "opaque"
            records.append(record)
        return records

    def vms(self, known_dcs: set[str], host_dc: dict[str, str]) -> list[VmRecord]:
        records = []
        for moref, p in self.of(vim.VirtualMachine):
            host = p.get("runtime.host")
            host = host._moId if host is not None else None
            dc = self.datacenter_of(moref) or host_dc.get(host)
            if dc not in known_dcs:
                continue
            cbt = bool(p.get("config.changeTrackingEnabled"))
            devices = p.get("config.hardware.device") or []
            records.append(VmRecord(
                moref=moref, name=entity_name(p.get("name", "")), datacenter=dc, host=host,
                uuid=p.get("config.instanceUuid") or "",
                power_state=str(p.get("runtime.powerState") or ""),
                guest_os=p.get("config.guestFullName") or p.get("config.guestId") or "",
                num_cpu=int(p.get("config.hardware.numCPU") or 0),
                memory_mb=int(p.get("config.hardware.memoryMB") or 0),
                folder=self.folder_path(p),
                tags=self.custom_values(p.get("customValue") or []),
                is_template=bool(p.get("config.template")), cbt_enabled=cbt,
                datastores=[d._moId for d in p.get("datastore") or []],
                networks=[n._moId for n in p.get("network") or []],
                disks=[disk_record(d, cbt) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)],
            ))
        return records

    def custom_values(self, values: list) -> list[str]:
        tags = []
        for value in values:
            text = getattr(value, "value", None)
            if text:
                tags.append(f"{self.field_names.get(value.key, value.key)}={text}")
        return sorted(tags)


def disk_record(disk: vim.vm.device.VirtualDisk, vm_cbt: bool) -> DiskRecord:
    backing = disk.backing
    capacity = disk.capacityInBytes or (disk.capacityInKB or 0) * 1024
    datastore = getattr(backing, "datastore", None)
    return DiskRecord(
        key=disk.key,
        label=(disk.deviceInfo.label if disk.deviceInfo else "") or f"Disk {disk.key}",
        file_name=getattr(backing, "fileName", "") or "",
        capacity_bytes=int(capacity),
        datastore=datastore._moId if datastore is not None else None,
        thin=bool(getattr(backing, "thinProvisioned", False)),
        cbt_enabled=vm_cbt or bool(getattr(backing, "changeId", None)),
        disk_mode=getattr(backing, "diskMode", "") or "",
    )


def _dvpg_vlan(port_config) -> str:
    vlan = getattr(port_config, "vlan", None)
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec):
        return str(vlan.vlanId)
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.TrunkVlanSpec):
        return ",".join(f"{r.start}-{r.end}" for r in vlan.vlanId or [])
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.PvlanSpec):
        return f"pvlan {vlan.pvlanId}"
    return ""

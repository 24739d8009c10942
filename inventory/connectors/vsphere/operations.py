"""What backups and restores ask of vSphere: snapshots, hot-add of disks, changed blocks, VMs for restores."""

from __future__ import annotations

from pyVmomi import vim, vmodl

from inventory.connectors.base import ChangeIdUnknown, NewVmSpec, NotFound, SnapshotRef
from inventory.connectors.vsphere.collector import Collector
from inventory.connectors.vsphere.inventory import disk_record, entity_name, escape_name

KIB = 1024
# SCSI unit 7 is the controller itself; a controller has units 0-15.
SCSI_UNITS = [u for u in range(16) if u != 7]


def _stub(collector: Collector):
    return collector.si._stub


def vm_ref(collector: Collector, moref: str) -> vim.VirtualMachine:
    return vim.VirtualMachine(moref, _stub(collector))


def snapshot_disks(collector: Collector, snapshot: vim.vm.Snapshot) -> list[dict]:
    devices = collector.properties(snapshot, ["config.hardware.device"]).get("config.hardware.device") or []
    return _disk_files(devices)


def vm_disks(collector: Collector, vm: str) -> list[dict]:
    """The VM's current disks, which restores write."""
    return _disk_files(_devices(collector, vm))


def _disk_files(devices: list) -> list[dict]:
    disks = [disk_record(d, False) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    return [
        {"key": d.key, "file_name": d.file_name, "datastore": d.datastore, "capacity_bytes": d.capacity_bytes}
        for d in disks
    ]


def create_snapshot(collector: Collector, vm: str, name: str, quiesce: bool, memory: bool) -> SnapshotRef:
    task = vm_ref(collector, vm).CreateSnapshot_Task(
        name=name, description="Created by VA Fleet for a backup", memory=memory, quiesce=quiesce
    )
    snapshot = collector.wait(task)
    return SnapshotRef(vm=vm, moref=snapshot._moId, name=name, disks=snapshot_disks(collector, snapshot))


def remove_snapshot(collector: Collector, vm: str, snapshot: str) -> None:
    if snapshot not in {s.moref for s in list_snapshots(collector, vm)}:
        raise NotFound(f"VM {vm} has no snapshot {snapshot} (already removed?).")
    task = vim.vm.Snapshot(snapshot, _stub(collector)).RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    collector.wait(task)


def list_snapshots(collector: Collector, vm: str) -> list[SnapshotRef]:
    info = collector.properties(vm_ref(collector, vm), ["snapshot"]).get("snapshot")
    found: list[SnapshotRef] = []
    pending = list(info.rootSnapshotList) if info else []
    while pending:
        tree = pending.pop(0)
        found.append(SnapshotRef(vm=vm, moref=tree.snapshot._moId, name=entity_name(tree.name)))
        pending.extend(tree.childSnapshotList or [])
    return found


def _devices(collector: Collector, vm: str) -> list:
    return collector.properties(vm_ref(collector, vm), ["config.hardware.device"]).get("config.hardware.device") or []


def attach_disk(collector: Collector, appliance_vm: str, file_name: str, writable: bool = False) -> int:
    """Hot-add an existing disk file: independent non-persistent, so the appliance never changes it, or
    `writable` (independent persistent: a restore's writes land in the file itself)."""
    devices = _devices(collector, appliance_vm)
    controller, unit = _free_scsi_slot(devices)
    if controller is None:
        raise NotFound(f"Appliance VM {appliance_vm} has no SCSI controller with a free slot: add one or detach disks.")
    disk = vim.vm.device.VirtualDisk(
        key=-100,
        controllerKey=controller.key,
        unitNumber=unit,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=file_name, diskMode="independent_persistent" if writable else "independent_nonpersistent"),
    )
    change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=disk)
    collector.wait(vm_ref(collector, appliance_vm).ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))
    for device in _devices(collector, appliance_vm):
        if (
            isinstance(device, vim.vm.device.VirtualDisk)
            and getattr(device.backing, "fileName", None) == file_name
            and device.controllerKey == controller.key
            and device.unitNumber == unit
        ):
            return device.key
    raise NotFound(f"The disk {file_name} did not appear on appliance VM {appliance_vm} after hot-add.")


def _free_scsi_slot(devices: list):
    used = {(d.controllerKey, d.unitNumber) for d in devices if getattr(d, "controllerKey", None) is not None}
    for controller in devices:
        if isinstance(controller, vim.vm.device.VirtualSCSIController):
            for unit in SCSI_UNITS:
                if (controller.key, unit) not in used:
                    return controller, unit
    return None, None


def device(collector: Collector, appliance_vm: str, device_key: int) -> dict:
    """How the appliance's guest finds a hot-added disk: its backing UUID (with disk.EnableUUID=TRUE, udev's
    /dev/disk/by-id/wwn-0x<hex>) and its SCSI slot (the controller's bus, the disk's unit)."""
    devices = _devices(collector, appliance_vm)
    disk = next((d for d in devices if d.key == device_key and isinstance(d, vim.vm.device.VirtualDisk)), None)
    if disk is None:
        raise NotFound(f"Appliance VM {appliance_vm} has no disk with key {device_key} (already detached?).")
    controller = next((d for d in devices if d.key == disk.controllerKey), None)
    if not isinstance(controller, vim.vm.device.VirtualSCSIController):
        raise NotFound(f"Disk {device_key} of appliance VM {appliance_vm} is not on a SCSI controller: the appliance "
                       "finds hot-added disks on SCSI controllers only; detach it.")
    return {
        "key": disk.key,
        "file_name": getattr(disk.backing, "fileName", "") or "",
        "uuid": getattr(disk.backing, "uuid", None) or "",
        "bus": controller.busNumber,
        "unit": disk.unitNumber,
        "capacity_bytes": int(disk.capacityInBytes or (disk.capacityInKB or 0) * KIB),
    }


def detach_disk(collector: Collector, appliance_vm: str, device_key: int) -> None:
    """Remove the disk from the appliance; the file itself belongs to the source VM and stays."""
    device = next((d for d in _devices(collector, appliance_vm) if d.key == device_key), None)
    if device is None:
        raise NotFound(f"Appliance VM {appliance_vm} has no disk with key {device_key} (already detached?).")
    change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=device)
    collector.wait(vm_ref(collector, appliance_vm).ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))


def create_vm(collector: Collector, spec: NewVmSpec) -> str:
    stub = _stub(collector)
    datacenter = vim.Datacenter(spec.datacenter, stub)
    host = vim.HostSystem(spec.host, stub)
    dc_props = collector.properties(datacenter, ["name", "vmFolder"])
    if not dc_props:
        raise NotFound(f"Datacenter {spec.datacenter} does not exist: sync the inventory and retry.")
    folder = dc_props["vmFolder"]
    if spec.folder:
        path = "/".join([dc_props["name"], "vm", *(escape_name(p) for p in spec.folder.strip("/").split("/"))])
        folder = collector.content.searchIndex.FindByInventoryPath(path)
        collector.round_trips += 1
        if folder is None:
            raise NotFound(f"The VM folder {spec.folder!r} does not exist in datacenter {dc_props['name']}.")
    parent = collector.properties(host, ["parent"]).get("parent")
    if parent is None:
        raise NotFound(f"Host {spec.host} does not exist: sync the inventory and retry.")
    pool = collector.properties(parent, ["resourcePool"])["resourcePool"]
    ds_name = collector.properties(vim.Datastore(spec.datastore, stub), ["name"]).get("name")
    if not ds_name:
        raise NotFound(f"Datastore {spec.datastore} does not exist: sync the inventory and retry.")
    config = vim.vm.ConfigSpec(
        name=escape_name(spec.name), guestId=spec.guest_os, numCPUs=spec.num_cpu, memoryMB=spec.memory_mb,
        files=vim.vm.FileInfo(vmPathName=f"[{ds_name}]"), deviceChange=_new_devices(collector, spec, ds_name),
    )
    task = folder.CreateVM_Task(config=config, pool=pool, host=host)
    return collector.wait(task)._moId


def _new_devices(collector: Collector, spec: NewVmSpec, ds_name: str) -> list:
    add = vim.vm.device.VirtualDeviceSpec.Operation.add
    scsi = vim.vm.device.ParaVirtualSCSIController(
        key=-1, busNumber=0, sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing
    )
    changes = [vim.vm.device.VirtualDeviceSpec(operation=add, device=scsi)]
    for index, capacity in enumerate(spec.disk_capacities):
        disk = vim.vm.device.VirtualDisk(
            key=-10 - index, controllerKey=-1, unitNumber=SCSI_UNITS[index],
            capacityInKB=capacity // KIB, capacityInBytes=capacity,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=f"[{ds_name}]", diskMode="persistent", thinProvisioned=True
            ),
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation=add, fileOperation=vim.vm.device.VirtualDeviceSpec.FileOperation.create, device=disk
        ))
    if spec.network:
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=add, device=_nic(collector, spec.network)))
    return changes


def _nic(collector: Collector, network: str) -> vim.vm.device.VirtualEthernetCard:
    stub = _stub(collector)
    if network.startswith("dvportgroup-"):
        # vCenter names distributed port groups dvportgroup-N; they attach through their switch's port
        pg = collector.properties(
            vim.dvs.DistributedVirtualPortgroup(network, stub), ["key", "config.distributedVirtualSwitch"]
        )
        switch = collector.properties(pg["config.distributedVirtualSwitch"], ["uuid"])
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey=pg["key"], switchUuid=switch["uuid"])
        )
    else:
        name = collector.properties(vim.Network(network, stub), ["name"]).get("name", "")
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            network=vim.Network(network, stub), deviceName=name
        )
    return vim.vm.device.VirtualVmxnet3(
        key=-50, backing=backing,
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, allowGuestControl=True),
    )


def changed_areas(
    collector: Collector, vm: str, snapshot: str, disk_key: int, since: str
) -> tuple[list[tuple[int, int]], str]:
    """QueryChangedDiskAreas over the whole disk (the server answers a window at a time)."""
    snap = vim.vm.Snapshot(snapshot, _stub(collector))
    devices = collector.properties(snap, ["config.hardware.device"]).get("config.hardware.device") or []
    disk = next((d for d in devices if isinstance(d, vim.vm.device.VirtualDisk) and d.key == disk_key), None)
    if disk is None:
        raise NotFound(f"Snapshot {snapshot} of VM {vm} has no disk with key {disk_key}.")
    change_id = getattr(disk.backing, "changeId", None)
    if not change_id:
        raise ChangeIdUnknown(
            f"Changed block tracking is off for disk {disk_key} of VM {vm}: the whole disk is read; "
            "enable CBT on the VM for incremental backups."
        )
    capacity = disk.capacityInBytes or (disk.capacityInKB or 0) * KIB
    extents: list[tuple[int, int]] = []
    start = 0
    target = vm_ref(collector, vm)
    while start < capacity:
        try:
            info = target.QueryChangedDiskAreas(snapshot=snap, deviceKey=disk_key, startOffset=start, changeId=since)
        except (vim.fault.FileFault, vmodl.fault.InvalidArgument) as exc:
            raise ChangeIdUnknown(
                f"vCenter cannot tell what changed on disk {disk_key} of VM {vm} since change id {since!r} "
                f"({exc.msg or type(exc).__name__}): the whole disk is read this time."
            ) from exc
        collector.round_trips += 1
        extents.extend((area.start, area.length) for area in info.changedArea or [])
        if info.length <= 0:
            break
        start = info.startOffset + info.length
    return extents, change_id

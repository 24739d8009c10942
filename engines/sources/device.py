"""A hot-added disk, found on the appliance by how the hypervisor names it, then read like a block device.

vSphere names a hot-added disk by its backing UUID and its SCSI slot (controller bus, unit). With
`disk.EnableUUID=TRUE` on the appliance VM, the guest's udev links the UUID as
`/dev/disk/by-id/wwn-0x<hex>` and `scsi-3<hex>` (the UUID's 32 hex digits, lower case, no dashes).
The slot is the SCSI address H:0:<unit>:0, H being the host of the bus-th SCSI controller in PCI
order; `/sys/class/scsi_device/H:0:<unit>:0/device/block/` names its block device.

The roots are read from the environment when a device is looked up, so tests can give fake trees:
VAFLEET_DEVICE_ROOT (default /dev) and VAFLEET_SYSFS_ROOT (default /sys).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engines.contract import DeviceSpec
from engines.errors import SourceNotFound
from engines.sources.file import FileSource

DEVICE_ROOT_ENV = "VAFLEET_DEVICE_ROOT"
SYSFS_ROOT_ENV = "VAFLEET_SYSFS_ROOT"
POLL_SECONDS = 0.2
# Linux drivers of vSphere's SCSI controllers (PVSCSI, LSI Logic parallel and SAS, BusLogic).
SCSI_DRIVERS = frozenset({"vmw_pvscsi", "mptspi", "mptsas", "BusLogic"})


def device_root() -> Path:
    return Path(os.environ.get(DEVICE_ROOT_ENV) or "/dev")


def sysfs_root() -> Path:
    return Path(os.environ.get(SYSFS_ROOT_ENV) or "/sys")


def describe(device: DeviceSpec) -> str:
    """'uuid 6000c29..., SCSI 0:2' as the error sentences and logs name the disk."""
    parts = [f"uuid {device.uuid}"] if device.uuid else []
    if device.bus is not None:
        parts.append(f"SCSI {device.bus}:{device.unit}")
    return ", ".join(parts)


def by_id_links(device: DeviceSpec) -> list[Path]:
    if not device.uuid:
        return []
    folder = device_root() / "disk" / "by-id"
    return [folder / f"wwn-0x{device.uuid}", folder / f"scsi-3{device.uuid}"]


def rescan_scsi_hosts() -> None:
    """Ask every SCSI host to look for new disks; a host that refuses (no permission, read-only) is skipped."""
    for scan in sorted((sysfs_root() / "class" / "scsi_host").glob("host*/scan")):
        try:
            scan.write_text("- - -")
        except OSError:
            pass


def vsphere_scsi_hosts() -> list[int]:
    """Host numbers of the SCSI controllers, in PCI order (vSphere gives bus 0 the first slot)."""
    found = []
    for entry in (sysfs_root() / "class" / "scsi_host").glob("host*"):
        try:
            number = int(entry.name.removeprefix("host"))
            driver = (entry / "proc_name").read_text().strip()
        except (ValueError, OSError):
            continue
        if driver in SCSI_DRIVERS:
            pci = Path(os.path.realpath(entry)).parent.parent.parent  # .../<pci address>/hostN/scsi_host/hostN
            found.append((str(pci), number))
    return [number for _, number in sorted(found)]


def by_slot(device: DeviceSpec) -> Path | None:
    """The block device at the disk's SCSI slot, None while the kernel has not found it."""
    if device.bus is None:
        return None
    hosts = vsphere_scsi_hosts()
    if device.bus >= len(hosts):
        return None
    block = sysfs_root() / "class" / "scsi_device" / f"{hosts[device.bus]}:0:{device.unit}:0" / "device" / "block"
    try:
        names = sorted(p.name for p in block.iterdir())
    except OSError:
        return None
    path = device_root() / names[0] if names else None
    return path if path is not None and path.exists() else None


def find_device(device: DeviceSpec, timeout: float | None = None) -> tuple[Path, str]:
    """Rescan, then wait for the disk to appear; returns its path and how it was found."""
    timeout = device.timeout if timeout is None else timeout
    rescan_scsi_hosts()
    deadline = time.monotonic() + timeout
    while True:
        for link in by_id_links(device):
            if link.exists():
                return link, f"{link} -> {os.path.normpath(link.parent / os.readlink(link))}"
        path = by_slot(device)
        if path is not None:
            return path, f"{path} at SCSI {device.bus}:{device.unit}"
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    places = [str(link) for link in by_id_links(device)]
    if device.bus is not None:
        places.append(f"{sysfs_root()}/class/scsi_device/<host of SCSI bus {device.bus}>:0:{device.unit}:0")
    raise SourceNotFound(
        f"The hot-added disk ({describe(device)}) did not appear on this appliance within {timeout:g} s: "
        f"looked for {' and '.join(places)}; check that the disk is still attached to this appliance VM "
        "and that the VM has disk.EnableUUID=TRUE."
    )


class DeviceSource(FileSource):
    """Finds the hot-added disk (`find_device`), then reads its block device as FileSource does."""

    def __init__(self, device: DeviceSpec | dict, changed_extents: Iterable[Any] | None = None):
        self.device = device if isinstance(device, DeviceSpec) else DeviceSpec.from_dict(device, "")
        path, self.found_as = find_device(self.device)
        super().__init__(path, changed_extents)

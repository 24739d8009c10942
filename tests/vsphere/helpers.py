"""Shapes and small helpers shared by the simulator tests."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from pyVmomi import vim

from appliances.actions import current_bundle
from appliances.connect import ENGINE_DIR, python_for, transport_for
from appliances.injection import ensure_engine, install_va_side
from appliances.models import Appliance
from inventory.connectors.base import ConnectionParams
from inventory.connectors.vsphere import VSphereConnector
from inventory.connectors.vsphere.network import parse_file_name
from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from jobs.models import Task
from tests.harness import vcsim

# At least 4 hosts / 30 VMs; shared and host-local datastores; standard and distributed port groups.
STANDARD = vcsim.Shape(clusters=1, cluster_hosts=3, standalone_hosts=1, vms=32, shared_datastores=2,
                       standard_portgroups=2, distributed_portgroups=2, folders=2)
LARGE = vcsim.Shape(clusters=2, cluster_hosts=9, standalone_hosts=2, vms=500)  # 20 hosts


def params_for(simulator: vcsim.Simulator, **overrides) -> ConnectionParams:
    return ConnectionParams(**{"timeout": 10.0, **simulator.connection_fields(**overrides)})


def connection_for(simulator: vcsim.Simulator, name: str = "vcsim", **overrides) -> Connection:
    return Connection.objects.create(name=name, kind="vsphere", **simulator.connection_fields(**overrides))


def stand_in_appliance(vcenter, source: VirtualMachine) -> Appliance:
    """An appliance on this machine standing in for a VA deployed on the source VM's host.

    Its VM record is another simulator VM on that host; it serves every host of the connection.
    Bootstrapped as a local deployment is: the VA side installed, then the current engine."""
    host = source.host
    vm = (VirtualMachine.objects.filter(connection=vcenter, host=host).exclude(pk=source.pk).order_by("name").first()
          or VirtualMachine.objects.filter(connection=vcenter).exclude(pk=source.pk).order_by("name").first())
    appliance = Appliance.objects.create(
        name="va-vcsim", hostname="va-vcsim", connection=vcenter, host=host,
        datastore=Datastore.objects.filter(hosts=host).order_by("-free_bytes").first(),
        network=Network.objects.filter(hosts=host).order_by("name").first(),
        root_password="Root-Pass-1", user_password="User-Pass-1", vcpus=2,
        transport=Appliance.Transport.LOCAL, state=Appliance.State.READY, vm_moref=vm.moref)
    appliance.served_hosts.set(Host.objects.filter(connection=vcenter))
    with transport_for(appliance) as transport:
        install_va_side(transport, ENGINE_DIR)
        result = ensure_engine(transport, current_bundle(), ENGINE_DIR, python_for(appliance))
    Appliance.objects.filter(pk=appliance.pk).update(engine_version=result.version)
    appliance.refresh_from_db()
    return appliance


def flat_file(vm: VirtualMachine, disk_key: int) -> Path:
    """The simulator's stored flat file of a disk (its datastores are folders of this machine)."""
    disk = vm.disks.get(key=disk_key)
    _, relative = parse_file_name(disk.file_name)
    return Path(disk.datastore.url) / (relative.removesuffix(".vmdk") + "-flat.vmdk")


def snapshots(simulator, vm: str) -> list:
    with VSphereConnector(params_for(simulator)) as connector:
        return connector.list_snapshots(vm)


def messages(task: Task) -> str:
    return "\n".join(str(data.get("message", "")) for data in task.events.values_list("data", flat=True))


def vm_devices(connector: VSphereConnector, moref: str) -> list:
    collector = connector._connect()
    vm = vim.VirtualMachine(moref, collector.si._stub)
    return collector.properties(vm, ["config.hardware.device"]).get("config.hardware.device") or []


def appliance_disk_files(simulator, appliance_vm: str) -> list[str]:
    with VSphereConnector(params_for(simulator)) as connector:
        return sorted(d.backing.fileName for d in vm_devices(connector, appliance_vm)
                      if isinstance(d, vim.vm.device.VirtualDisk))


class GuestDevices(threading.Thread):
    """What the appliance's kernel and udev do when vSphere hot-adds a disk, driven by the simulator's own view.

    It watches the appliance VM's devices through the vSphere API; for each disk that appears it makes the
    SCSI address `/sys/class/scsi_device/H:0:<unit>:0` (H: the host of the disk's controller) name a new
    `/dev/sdX`, a link to the simulator's flat file of that disk, and the `by-id` link when the disk has a
    backing UUID; when the disk goes, so do they (the simulator gives the next disk the same key and slot).
    `plugged` records (bus, unit, uuid, file name) of each disk it saw, `modes` each file's disk mode as
    attached."""

    def __init__(self, simulator, appliance_vm: str, datastores: dict[str, str], root: Path):
        super().__init__(daemon=True)
        self.simulator, self.appliance_vm, self.datastores = simulator, appliance_vm, datastores
        self.dev, self.sys = root / "dev", root / "sys"
        self.plugged: list[tuple[int, int, str, str]] = []
        self.modes: dict[str, str] = {}
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        with VSphereConnector(params_for(simulator)) as connector:
            devices = vm_devices(connector, self.appliance_vm)
        # (device key, file name) -> what plugging it made; the appliance's own disks made nothing
        self.known: dict[tuple[int, str], list[Path]] = {
            (d.key, d.backing.fileName): [] for d in devices if isinstance(d, vim.vm.device.VirtualDisk)}
        controllers = sorted((d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)),
                             key=lambda c: c.busNumber)
        (self.dev / "disk" / "by-id").mkdir(parents=True)
        self.hosts = {}
        for number, controller in enumerate(controllers, start=2):  # hosts 0-1: the guest's ATA ports
            folder = self.sys / "devices" / "pci0000:00" / f"0000:{3 + number:02x}:00.0" / f"host{number}"
            (folder / "scsi_host" / f"host{number}").mkdir(parents=True)
            (folder / "scsi_host" / f"host{number}" / "proc_name").write_text("vmw_pvscsi\n")
            (self.sys / "class" / "scsi_host").mkdir(parents=True, exist_ok=True)
            (self.sys / "class" / "scsi_host" / f"host{number}").symlink_to(folder / "scsi_host" / f"host{number}")
            self.hosts[controller.key] = (number, controller.busNumber)

    def run(self) -> None:
        try:
            with VSphereConnector(params_for(self.simulator)) as connector:
                while not self.stop.wait(0.1):
                    disks = {(d.key, d.backing.fileName): d for d in vm_devices(connector, self.appliance_vm)
                             if isinstance(d, vim.vm.device.VirtualDisk)}
                    for gone in set(self.known) - set(disks):
                        for made in self.known.pop(gone):  # what the kernel and udev remove on hot-remove
                            if made.is_symlink():
                                made.unlink()
                            else:
                                shutil.rmtree(made)
                    for seen, disk in disks.items():
                        if seen not in self.known:
                            self.known[seen] = self._plug(disk)
        except BaseException as exc:  # noqa: B036 - reported by the test
            self.failure = exc

    def _plug(self, disk) -> list[Path]:
        host, bus = self.hosts[disk.controllerKey]
        name = f"sd{chr(ord('a') + len(self.plugged) + 1)}"
        datastore, relative = parse_file_name(disk.backing.fileName)
        flat = Path(self.datastores[datastore]) / (relative.removesuffix(".vmdk") + "-flat.vmdk")
        slot = self.sys / "class" / "scsi_device" / f"{host}:0:{disk.unitNumber}:0"
        made = [self.dev / name, slot]
        made[0].symlink_to(flat)
        (slot / "device" / "block" / name).mkdir(parents=True)
        uuid = (disk.backing.uuid or "").replace("-", "").lower()
        if uuid:
            made.append(self.dev / "disk" / "by-id" / f"wwn-0x{uuid}")
            made[-1].symlink_to(f"../../{name}")
        self.plugged.append((bus, disk.unitNumber, uuid, disk.backing.fileName))
        self.modes[disk.backing.fileName] = disk.backing.diskMode
        return made

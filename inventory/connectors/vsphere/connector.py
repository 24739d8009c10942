"""The vSphere connector: one vCenter or standalone ESXi, reached with pyvmomi."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pyVmomi import vim

from inventory.connectors.base import ConnectionParams, Connector, ConnectorError, NewVmSpec, SnapshotRef
from inventory.connectors.records import Inventory, ServerInfo
from inventory.connectors.vsphere import inventory, operations, ovf, session
from inventory.connectors.vsphere.collector import Collector

T = TypeVar("T")


class VSphereConnector(Connector):
    """Options: `page_size` (objects per PropertyCollector page, default 500)."""

    kind = "vsphere"
    label = "VMware vCenter / ESXi"

    def __init__(self, params: ConnectionParams):
        super().__init__(params)
        self._si: vim.ServiceInstance | None = None
        self._collector: Collector | None = None
        self._thumbprint = ""

    # -- session -----------------------------------------------------------------------
    def _connect(self) -> Collector:
        if self._collector is None:
            self._thumbprint = session.probe_certificate(self.params)
            self._si = session.login(self.params, self._thumbprint)
            page_size = int(self.params.options.get("page_size") or 500)
            self._collector = self._call("reading the service content", lambda: Collector(self._si, page_size))
        return self._collector

    def _call(self, action: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except ConnectorError:
            raise
        except Exception as exc:
            raise session.fault_sentence(self.params, action, exc) from exc

    def close(self) -> None:
        session.logout(self._si)
        self._si = None
        self._collector = None

    # -- inventory ---------------------------------------------------------------------
    def test(self) -> ServerInfo:
        collector = self._connect()
        about = collector.content.about
        return ServerInfo(product=about.fullName or about.name or "", version=about.version or "",
                          thumbprint=self._thumbprint)

    def fetch_inventory(self) -> Inventory:
        collector = self._connect()
        collector.round_trips = 0
        return self._call("reading the inventory", lambda: inventory.fetch(collector))

    # -- operations used by backups and restores -------------------------------------
    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, memory: bool = False) -> SnapshotRef:
        collector = self._connect()
        return self._call(f"creating a snapshot of VM {vm}",
                          lambda: operations.create_snapshot(collector, vm, name, quiesce, memory))

    def remove_snapshot(self, vm: str, snapshot: str) -> None:
        collector = self._connect()
        self._call(f"removing snapshot {snapshot} of VM {vm}",
                   lambda: operations.remove_snapshot(collector, vm, snapshot))

    def list_snapshots(self, vm: str) -> list[SnapshotRef]:
        collector = self._connect()
        return self._call(f"listing the snapshots of VM {vm}", lambda: operations.list_snapshots(collector, vm))

    def attach_disk(self, appliance_vm: str, file_name: str, *, writable: bool = False) -> int:
        collector = self._connect()
        return self._call(f"attaching {file_name} to appliance VM {appliance_vm}",
                          lambda: operations.attach_disk(collector, appliance_vm, file_name, writable))

    def vm_disks(self, vm: str) -> list[dict]:
        collector = self._connect()
        return self._call(f"listing the disks of VM {vm}", lambda: operations.vm_disks(collector, vm))

    def device(self, appliance_vm: str, device_key: int) -> dict:
        """A hot-added disk as the appliance finds it: {"key", "file_name", "uuid", "bus", "unit", ...}; "uuid" is
        the backing UUID ("" when the server gives none), bus and unit its SCSI slot. No "path": the engine
        resolves the device on the appliance (engines/sources/device.py)."""
        collector = self._connect()
        return self._call(f"reading disk {device_key} of appliance VM {appliance_vm}",
                          lambda: operations.device(collector, appliance_vm, device_key))

    def detach_disk(self, appliance_vm: str, device_key: int) -> None:
        collector = self._connect()
        self._call(f"detaching disk {device_key} from appliance VM {appliance_vm}",
                   lambda: operations.detach_disk(collector, appliance_vm, device_key))

    def create_vm(self, spec: NewVmSpec) -> str:
        collector = self._connect()
        return self._call(f"creating VM {spec.name!r}", lambda: operations.create_vm(collector, spec))

    def changed_areas(self, vm: str, snapshot: str, disk_key: int, since: str) -> tuple[list[tuple[int, int]], str]:
        collector = self._connect()
        return self._call(f"querying changed blocks of disk {disk_key} of VM {vm}",
                          lambda: operations.changed_areas(collector, vm, snapshot, disk_key, since))

    def network_disk(self, vm: str, snapshot: SnapshotRef, disk: dict, appliance_address: str = ""):
        """The snapshot disk's datastore URL with this session's cookie and trust (vsphere/network.py).

        `appliance_address` is not needed: the appliance reaches the connection's endpoint itself."""
        from inventory.connectors.vsphere import network

        collector = self._connect()
        source = self._call(f"locating disk {disk.get('file_name')} of VM {vm} for a read over the network",
                            lambda: network.datastore_source(collector, self.params, self._thumbprint, snapshot, disk))
        return network.held(source)

    # -- appliances: OVF import and lifecycle ----------------------------------------------
    def deploy_ovf(self, spec: ovf.OvfImport, phase: ovf.Phase | None = None) -> tuple[str, list[str]]:
        """Import an OVF package as a new, powered-off VM; returns its moref and vCenter's warnings."""
        collector = self._connect()
        report = phase or (lambda sentence, percent: None)
        return self._call(f"importing VM {spec.name!r}",
                          lambda: ovf.deploy(collector, self.params, self._thumbprint, spec, report))

    def power_on(self, vm: str) -> None:
        collector = self._connect()
        self._call(f"powering on VM {vm}", lambda: ovf.power_on(collector, vm))

    def destroy_vm(self, vm: str) -> None:
        """Power off and delete a VM; NotFound when it is already gone."""
        collector = self._connect()
        self._call(f"deleting VM {vm}", lambda: ovf.destroy(collector, vm))

    def vapp_properties(self, vm: str, keys: list[str] | None = None) -> dict[str, str]:
        collector = self._connect()
        return self._call(f"reading the vApp properties of VM {vm}", lambda: ovf.vapp_properties(collector, vm, keys))

    def guest_address(self, vm: str) -> str:
        collector = self._connect()
        return self._call(f"reading the guest address of VM {vm}", lambda: ovf.guest_address(collector, vm))

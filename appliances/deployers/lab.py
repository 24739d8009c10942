"""Deploying appliances in the lab: a VM record in the lab hypervisor, and a real lab host for SSH.

The VM record makes the appliance part of the lab's inventory, so hot-add of other VMs' disks to
it works as on vSphere (same host must mount the disk's datastore). With the `ssh` transport the
appliance itself is a fleet-owned `LabHost` (network namespace, veth, its own sshd, host key, host
name and users), which outlives the process that made it; `ensure_running()` brings it back after
this machine rebooted. With the `local` transport the appliance is this machine: only the VM
record is made.

The lab gives each VA a /30 of 10.231.0.0/16 whose .1 is this machine, so the spec's prefix,
gateway and DNS servers are not used; a static address must follow `labnet.ADDRESS_RULE`.
"""

from __future__ import annotations

import contextlib

from appliances import labnet
from appliances.deployers.base import ApplianceSpec, Deployer, DeployError, Progress, Provisioned
from appliances.labhost import HOSTNAME_RE, USER_RE, LabHost, LabHostError, require_root
from inventory.connectors.base import ConnectorError, NewVmSpec, NotFound
from inventory.connectors.lab import LabConnector

MIB = 1 << 20
SYSTEM_DISK_MIB = 16  # the VM record's disk (sparse); the engine disk of a lab host is `disk_mib`
GUEST_OS = "otherLinux64Guest"
TRANSPORTS = ("ssh", "local")


class LabDeployer(Deployer):
    kind = "lab"

    def supports_transport(self, transport: str) -> bool:
        return transport in TRANSPORTS

    def connector(self) -> LabConnector:
        return LabConnector(self.params)

    # -- deploying ------------------------------------------------------------------------
    def provision(self, spec: ApplianceSpec, progress: Progress) -> Provisioned:
        address = self._validate(spec)
        progress("Checking the lab", 5)
        connector = self.connector()
        vm_moref, host = "", None
        try:
            connector.test()
            progress(f"Creating the appliance VM {spec.name}", 15)
            vm_moref = connector.create_vm(NewVmSpec(
                name=spec.name, datacenter=spec.datacenter, host=spec.host, datastore=spec.datastore,
                network=spec.network or None, num_cpu=spec.vcpus, memory_mb=spec.memory_mb, guest_os=GUEST_OS,
                disk_capacities=[(spec.disk_mib or SYSTEM_DISK_MIB) * MIB]))
            progress("Powering on the appliance VM", 30)
            connector.set_power(vm_moref, "poweredOn")
            if spec.transport == "local":
                progress("Appliance ready (this machine)", 100)
                return Provisioned(vm_moref, "", 22, handle={"transport": "local"})
            progress("Starting the appliance: network, users, SSH service", 45)
            host = LabHost.create(spec.hostname, spec.root_password, spec.user_password, spec.vcpus,
                                  user=spec.user_name, disk_mib=spec.disk_mib, address=address, persistent=True)
            progress(f"Appliance ready at {host.info.address}", 100)
            return Provisioned(vm_moref, host.info.address, host.info.port, host_key=host.info.host_key,
                               handle={"labhost": host.info.id, "transport": "ssh"})
        except BaseException as exc:
            self._undo(connector, vm_moref, host)
            if isinstance(exc, DeployError) or not isinstance(exc, Exception):
                raise
            raise DeployError(f"Deploying {spec.name} in the lab failed, nothing was left behind: {exc}") from exc

    def _validate(self, spec: ApplianceSpec) -> str | None:
        """Refuse what cannot work before anything is made; returns the static address (None = automatic)."""
        if not self.supports_transport(spec.transport):
            raise DeployError(f"The lab cannot deploy an appliance with the {spec.transport!r} transport; "
                              f"use one of {', '.join(TRANSPORTS)}.")
        if not spec.name.strip():
            raise DeployError("The appliance needs a VM name.")
        missing = [label for label, value in (("datacenter", spec.datacenter), ("host", spec.host),
                                              ("datastore", spec.datastore)) if not value]
        if missing:
            raise DeployError(f"Pick the appliance's {', '.join(missing)} from the lab connection's inventory.")
        if spec.vcpus < 1 or spec.memory_mb < 1:
            raise DeployError(f"An appliance needs at least one vCPU and some memory (got {spec.vcpus} vCPUs, "
                              f"{spec.memory_mb} MB).")
        if spec.disk_mib is not None and spec.disk_mib < 1:
            raise DeployError(f"An engine disk of {spec.disk_mib} MiB is not possible; use at least 1 MiB.")
        if spec.addressing not in ("static", "dhcp"):
            raise DeployError(f"Addressing {spec.addressing!r} is not one of static, dhcp.")
        if spec.transport == "local":
            return None
        if not HOSTNAME_RE.match(spec.hostname):
            raise DeployError(f"Host name {spec.hostname!r} is not valid: use letters, digits and hyphens "
                              "(1-63 characters).")
        if not USER_RE.match(spec.user_name) or spec.user_name == "root":
            raise DeployError(f"User name {spec.user_name!r} is not valid: use lower-case letters, digits, "
                              "'_' or '-' (not root).")
        if not spec.root_password or not spec.user_password:
            raise DeployError("The appliance needs a root password and a user password.")
        try:
            require_root()
            if spec.addressing == "static":
                if not spec.address:
                    raise DeployError("Static addressing needs an address, e.g. 10.231.0.6.")
                labnet.slot_of(spec.address)
                return spec.address
        except LabHostError as exc:
            raise DeployError(str(exc)) from exc
        return None

    @staticmethod
    def _undo(connector: LabConnector, vm_moref: str, host: LabHost | None) -> None:
        if host is not None:
            with contextlib.suppress(Exception):
                host.destroy()
        if vm_moref:
            with contextlib.suppress(Exception):
                connector.destroy_vm(vm_moref)

    # -- removing and health --------------------------------------------------------------
    def remove(self, vm_moref: str, handle: dict) -> None:
        """Destroy the lab host (if any) and the VM record; what is already gone is fine."""
        host = LabHost.find(handle.get("labhost", "")) if handle else None
        try:
            if host is not None:
                host.destroy()
            if vm_moref:
                connector = self.connector()
                with contextlib.suppress(NotFound):
                    connector.set_power(vm_moref, "poweredOff")
                    connector.destroy_vm(vm_moref)
        except (LabHostError, ConnectorError, OSError) as exc:
            raise DeployError(f"Removing the lab appliance {vm_moref or '(no VM)'} failed: {exc}") from exc

    def ensure_running(self, handle: dict) -> bool:
        """Bring a lab appliance back after a reboot or a dead sshd; True if it had to be restarted.

        An appliance on the local transport is this machine: nothing to do."""
        ident = (handle or {}).get("labhost")
        if not ident:
            return False
        host = LabHost.find(ident)
        if host is None:
            raise DeployError(f"Lab appliance {ident} no longer exists on this machine (its files are gone): "
                              "redeploy the appliance.")
        try:
            return host.ensure_running()
        except (LabHostError, OSError) as exc:
            raise DeployError(f"Could not restart lab appliance {ident}: {exc}") from exc

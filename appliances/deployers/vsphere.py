"""Deploying an appliance on vSphere from the project's OVF package.

The ApplianceSpec becomes vApp property values (passwords as SHA-512 crypt hashes only), the
package is imported onto the chosen host, datastore and port group, the VM is powered on, and
the appliance configures itself on first boot (`appliances/ovf/firstboot.sh`).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time

from appliances.deployers.base import ApplianceSpec, Deployer, DeployError, Progress, Provisioned
from appliances.ovf import NETWORK_NAME, build_package
from inventory.connectors.base import ConnectorError, NotFound
from inventory.connectors.vsphere import VSphereConnector
from inventory.connectors.vsphere.ovf import OvfImport

HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$", re.IGNORECASE)
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def password_hash(password: str) -> str:
    """SHA-512 crypt ($6$...) of a password, salted by openssl."""
    if not password or "\n" in password or "\r" in password:
        raise DeployError("Passwords must be non-empty and on one line.")
    result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode() + b"\n",
                            capture_output=True, timeout=30, check=False)
    hashed = result.stdout.decode().strip()
    if result.returncode != 0 or not hashed.startswith("$6$"):
        raise DeployError(f"Hashing the appliance password failed ({result.stderr.decode().strip()}).")
    return hashed


def _check(spec: ApplianceSpec) -> None:
    if not HOSTNAME_RE.match(spec.hostname):
        raise DeployError(f"Host name {spec.hostname!r} is not valid: use letters, digits and hyphens (1-63).")
    if not USER_RE.match(spec.user_name) or spec.user_name == "root":
        raise DeployError(f"User name {spec.user_name!r} is not valid: use lower-case letters, digits, '_' or '-'.")
    if spec.addressing not in ("static", "dhcp"):
        raise DeployError(f"Addressing must be 'static' or 'dhcp', not {spec.addressing!r}.")
    try:
        for server in spec.dns:
            ipaddress.ip_address(server)
        if spec.addressing == "static":
            if spec.prefix is None or not 0 < spec.prefix <= 32:
                raise DeployError("A static address needs a prefix length between 1 and 32.")
            network = ipaddress.ip_interface(f"{spec.address}/{spec.prefix}").network
            if spec.gateway and ipaddress.ip_address(spec.gateway) not in network:
                raise DeployError(f"The gateway {spec.gateway} is not in {network}: check address and prefix.")
    except ValueError as exc:
        raise DeployError(f"The network settings are not valid ({exc}).") from exc
    for kind, value in (("host", spec.host), ("datastore", spec.datastore), ("network", spec.network)):
        if not value:
            raise DeployError(f"Choose a {kind} for the appliance.")


def property_values(spec: ApplianceSpec) -> dict[str, str]:
    """The vApp properties of an appliance; no plaintext password among them."""
    static = spec.addressing == "static"
    return {
        "vafleet.hostname": spec.hostname,
        "vafleet.addressing": spec.addressing,
        "vafleet.address": spec.address if static else "",
        "vafleet.prefix": str(spec.prefix) if static and spec.prefix is not None else "",
        "vafleet.gateway": spec.gateway if static else "",
        "vafleet.dns": ",".join(spec.dns),
        "vafleet.root_password_hash": password_hash(spec.root_password),
        "vafleet.user_name": spec.user_name,
        "vafleet.user_password_hash": password_hash(spec.user_password),
        "vafleet.ssh_enable": "true",
    }


class VSphereDeployer(Deployer):
    """Options: `guest_address_timeout` (seconds to wait for a DHCP appliance's address, default 180)."""

    kind = "vsphere"
    poll_interval = 2.0

    @property
    def guest_address_timeout(self) -> float:
        return float(self.params.options.get("guest_address_timeout", 180))

    def provision(self, spec: ApplianceSpec, progress: Progress) -> Provisioned:
        _check(spec)
        if spec.transport != "ssh":
            raise DeployError(f"A vSphere appliance is reached over SSH, not {spec.transport!r}.")
        progress("Building the appliance package", 1)
        package = build_package()
        values = property_values(spec)
        request = OvfImport(
            name=spec.name, host=spec.host, datastore=spec.datastore, network=spec.network,
            descriptor=package.descriptor, files=package.files(), properties=values, network_name=NETWORK_NAME,
            num_cpu=spec.vcpus, memory_mb=spec.memory_mb,
        )

        def phase(sentence: str, percent: int) -> None:
            progress(sentence, 5 + percent * 80 // 100)

        vm = ""
        try:
            with VSphereConnector(self.params) as connector:
                vm, warnings = connector.deploy_ovf(request, phase)
                for warning in warnings:
                    progress(f"vCenter warns: {warning}", 85)
                progress("Powering on the appliance", 88)
                connector.power_on(vm)
                address = spec.address if spec.addressing == "static" else self._dhcp_address(connector, vm, progress)
        except ConnectorError as exc:
            if vm:
                self._discard(vm)
            raise DeployError(f"Deploying appliance {spec.name!r} failed: {exc}") from exc
        progress("Appliance deployed", 100)
        return Provisioned(vm_moref=vm, address=address, port=22, host_key="", handle={})

    def _dhcp_address(self, connector: VSphereConnector, vm: str, progress: Progress) -> str:
        progress("Waiting for the appliance's DHCP address (VMware Tools)", 92)
        deadline = time.monotonic() + self.guest_address_timeout
        while True:
            address = connector.guest_address(vm)
            if address or time.monotonic() >= deadline:
                return address
            time.sleep(self.poll_interval)

    def _discard(self, vm: str) -> None:
        try:
            self.remove(vm, {})
        except DeployError:
            pass  # the original failure is what the user needs to read

    def remove(self, vm_moref: str, handle: dict) -> None:
        try:
            with VSphereConnector(self.params) as connector:
                connector.destroy_vm(vm_moref)
        except NotFound:
            return
        except ConnectorError as exc:
            raise DeployError(f"Removing appliance VM {vm_moref} failed: {exc}") from exc

"""What a deployer does: put an appliance VM on a host, configured, and say how to reach it.

A deployer works from plain values (no Django models), like the connectors, so it can run in a
worker, a test or a benchmark. The server then reaches the VA over its transport, pins its host
key, bootstraps the fleet key and injects the engine (`appliances.services`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import ActionableError
from inventory.connectors.base import ConnectionParams

# progress(phase sentence, percent 0-100 of this deployment)
Progress = Callable[[str, int], None]


class DeployError(ActionableError):
    """Deployment failed; str() says why and what to do. Nothing half-made is left behind."""

    code = "deploy_failed"


@dataclass
class ApplianceSpec:
    """An appliance's configuration as the deployer needs it (morefs of the connection's objects)."""

    name: str  # VM name on the hypervisor
    hostname: str
    addressing: str  # "static" or "dhcp"
    root_password: str = field(repr=False)
    user_password: str = field(repr=False)
    user_name: str = "vauser"
    address: str = ""  # static only
    prefix: int | None = None
    gateway: str = ""
    dns: list[str] = field(default_factory=list)
    vcpus: int = 2
    memory_mb: int = 2048
    datacenter: str = ""
    host: str = ""
    datastore: str = ""
    network: str = ""
    transport: str = "ssh"  # "ssh", or "local" for an appliance that is this machine
    disk_mib: int | None = None  # lab only: size of the VA's engine disk (tests of a full disk)


@dataclass
class Provisioned:
    """Where the new appliance is and how to reach it."""

    vm_moref: str  # the appliance VM on the hypervisor
    address: str = ""  # where its sshd listens ('' for the local transport)
    port: int = 22
    host_key: str = ""  # 'type base64' when the deployer knows it; otherwise read on first contact
    handle: dict = field(default_factory=dict)  # deployer-specific, stored on the Appliance


class Deployer(ABC):
    """Deploys appliances through one kind of connection."""

    kind: str = ""

    def __init__(self, params: ConnectionParams):
        self.params = params

    @abstractmethod
    def provision(self, spec: ApplianceSpec, progress: Progress) -> Provisioned:
        """Create, configure and power on the appliance VM; on failure remove what was made and raise DeployError."""

    @abstractmethod
    def remove(self, vm_moref: str, handle: dict) -> None:
        """Power off and delete the appliance VM; an appliance already gone is not an error."""

    def supports_transport(self, transport: str) -> bool:
        return transport == "ssh"

"""The connector interface every hypervisor plugin implements.

A connector is built from plain parameters (not the Django model), so it can also run in
a worker or a script. Errors that reach users are ConnectorError sentences.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from core.errors import ActionableError
from inventory.connectors.records import Inventory, ServerInfo


class ConnectorError(ActionableError):
    """A failure an operator can act on; str() is the sentence to show."""

    code = "connector_error"


class AuthenticationFailed(ConnectorError):
    code = "authentication_failed"


class Unreachable(ConnectorError):
    code = "unreachable"


class CertificateMismatch(ConnectorError):
    code = "certificate_mismatch"

    def __init__(self, message: str, thumbprint: str = ""):
        super().__init__(message)
        self.thumbprint = thumbprint


class UntrustedCertificate(CertificateMismatch):
    """No thumbprint pinned yet and verification is off or failed: the user must confirm it."""

    code = "untrusted_certificate"


class NotFound(ConnectorError):
    code = "not_found"


class ChangeIdUnknown(ConnectorError):
    """Changed-block tracking cannot answer for this change id (reset, off, other disk): read the whole disk."""

    code = "change_id_unknown"


SHA256_THUMBPRINT = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){31}$")


def canonical_thumbprint(value: str) -> str:
    """'aa:bb..', 'AABB..' or 'aa bb ..' -> 'AA:BB:..' ('' stays ''); ValueError when it is not SHA-256."""
    digits = re.sub(r"[\s:]", "", value or "").upper()
    if not digits:
        return ""
    canonical = ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))
    if not SHA256_THUMBPRINT.match(canonical):
        raise ValueError(f"{value!r} is not a SHA-256 thumbprint")
    return canonical


@dataclass
class ConnectionParams:
    host: str = ""
    port: int = 443
    username: str = ""
    password: str = field(default="", repr=False)
    tls_verify: bool = False
    tls_thumbprint: str = ""
    timeout: float = 10.0
    options: dict = field(default_factory=dict)


@dataclass
class SnapshotRef:
    vm: str  # VM moref
    moref: str  # snapshot moref
    name: str
    disks: list[dict] = field(default_factory=list)  # {"key", "file_name", "datastore", "capacity_bytes"}


@dataclass
class NewVmSpec:
    name: str
    datacenter: str
    host: str
    datastore: str
    network: str | None = None
    num_cpu: int = 1
    memory_mb: int = 1024
    guest_os: str = "otherGuest64"
    disk_capacities: list[int] = field(default_factory=list)
    folder: str = ""


class Connector(ABC):
    """One hypervisor endpoint (vCenter, ESXi or the lab)."""

    kind: str = ""
    label: str = ""

    def __init__(self, params: ConnectionParams):
        self.params = params

    # -- inventory ---------------------------------------------------------------------
    @abstractmethod
    def test(self) -> ServerInfo:
        """Connect and authenticate; raise ConnectorError with a sentence on failure."""

    @abstractmethod
    def fetch_inventory(self) -> Inventory:
        """Read the whole inventory; nothing is saved here."""

    # -- operations used by backups and restores -------------------------------------
    @abstractmethod
    def create_snapshot(self, vm: str, name: str, *, quiesce: bool = False, memory: bool = False) -> SnapshotRef: ...

    @abstractmethod
    def remove_snapshot(self, vm: str, snapshot: str) -> None: ...

    @abstractmethod
    def list_snapshots(self, vm: str) -> list[SnapshotRef]: ...

    @abstractmethod
    def attach_disk(self, appliance_vm: str, file_name: str, *, writable: bool = False) -> int:
        """Hot-add a disk file to an appliance VM; returns the new device key. `writable` for restores: the
        appliance's writes go into the file (a backup's attach never changes it)."""

    @abstractmethod
    def detach_disk(self, appliance_vm: str, device_key: int) -> None: ...

    @abstractmethod
    def create_vm(self, spec: NewVmSpec) -> str:
        """Create an empty VM (for restores); returns its moref."""

    @abstractmethod
    def changed_areas(self, vm: str, snapshot: str, disk_key: int, since: str) -> tuple[list[tuple[int, int]], str]:
        """Extents (offset, length) changed since change id `since` ('*' = all in use), and the new change id."""

    def vm_disks(self, vm: str) -> list[dict]:
        """The VM's current disks: [{"key", "file_name", "datastore", "capacity_bytes"}] (restores write these)."""
        raise ConnectorError(f"The {self.label or self.kind} connector cannot list a VM's disk files.")

    def network_disk(self, vm: str, snapshot: SnapshotRef, disk: dict, appliance_address: str = ""):
        """Network mode: a context manager giving how an appliance reads this snapshot disk over HTTPS.

        It yields the engine's disk source as `{"path": "https://...", "options": {...}}` (options: cookie or
        auth, thumbprint or verify; see engines/sources/http.py), valid until the context exits.
        `appliance_address` is where the appliance connects from (the lab serves the file on the side of
        this machine that the appliance reaches)."""
        raise ConnectorError(f"The {self.label or self.kind} connector cannot read disks over the network.")

    def close(self) -> None:  # noqa: B027 - optional hook: not every connector holds a session
        """Release the session."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""What a connector reports: plain records, independent of Django, keyed by moref."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DatacenterRecord:
    moref: str
    name: str


@dataclass
class ClusterRecord:
    moref: str
    name: str
    datacenter: str


@dataclass
class HostRecord:
    moref: str
    name: str
    datacenter: str
    cluster: str | None = None
    connection_state: str = "connected"
    power_state: str = "poweredOn"
    in_maintenance: bool = False
    product: str = ""
    cpu_cores: int = 0
    memory_bytes: int = 0


@dataclass
class DatastoreRecord:
    moref: str
    name: str
    datacenter: str
    type: str = ""
    url: str = ""
    capacity_bytes: int = 0
    free_bytes: int = 0
    accessible: bool = True
    hosts: list[str] = field(default_factory=list)  # host morefs that mount it


@dataclass
class NetworkRecord:
    moref: str
    name: str
    datacenter: str
    kind: str = "standard"  # standard | distributed | opaque
    switch: str = ""
    vlan: str = ""
    hosts: list[str] = field(default_factory=list)


@dataclass
class DiskRecord:
    key: int
    label: str
    file_name: str
    capacity_bytes: int
    datastore: str | None = None  # datastore moref
    thin: bool = False
    cbt_enabled: bool = False
    disk_mode: str = "persistent"


@dataclass
class VmRecord:
    moref: str
    name: str
    datacenter: str
    host: str | None = None
    uuid: str = ""
    power_state: str = "poweredOff"
    guest_os: str = ""
    num_cpu: int = 1
    memory_mb: int = 0
    folder: str = ""
    tags: list[str] = field(default_factory=list)
    is_template: bool = False
    cbt_enabled: bool = False
    datastores: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    disks: list[DiskRecord] = field(default_factory=list)


@dataclass
class Inventory:
    """A complete, consistent picture of one connection, fetched before anything is saved."""

    datacenters: list[DatacenterRecord] = field(default_factory=list)
    clusters: list[ClusterRecord] = field(default_factory=list)
    hosts: list[HostRecord] = field(default_factory=list)
    datastores: list[DatastoreRecord] = field(default_factory=list)
    networks: list[NetworkRecord] = field(default_factory=list)
    vms: list[VmRecord] = field(default_factory=list)
    round_trips: int = 0  # API calls it took (for the benchmark)


@dataclass
class ServerInfo:
    product: str
    version: str = ""
    thumbprint: str = ""  # SHA-256 of the server certificate, "AA:BB:..."

"""An inventory built through the ORM (no connector needed) and logged-in portal clients per role."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from django.test import Client

from inventory.models import (
    Cluster,
    Connection,
    Datacenter,
    Datastore,
    Host,
    Network,
    VirtualDisk,
    VirtualMachine,
)
from jobs.models import Repository
from tests.conftest import PASSWORD

STORED_PASSWORD = "Vc-Secret-Pass-91"
GIB = 1024**3


@dataclass
class Lab:
    connection: Connection
    datacenter: Datacenter
    hosts: list[Host] = field(default_factory=list)
    shared: Datastore | None = None
    locals: list[Datastore] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
    vms: list[VirtualMachine] = field(default_factory=list)


def add_vms(lab: Lab, count: int, *, start: int = 0) -> None:
    """Adds `count` VMs with one disk each, spread over the hosts, datastores and networks."""
    vms = []
    for i in range(start, start + count):
        host = lab.hosts[i % len(lab.hosts)]
        vms.append(
            VirtualMachine(
                connection=lab.connection,
                datacenter=lab.datacenter,
                host=host,
                moref=f"vm-{i}",
                name=f"vm-{i:04d}",
                uuid=f"5000{i:08d}-aaaa-bbbb-cccc-000000000000",
                power_state=VirtualMachine.PowerState.ON if i % 3 else VirtualMachine.PowerState.OFF,
                guest_os="Ubuntu Linux (64-bit)" if i % 2 else "Microsoft Windows Server 2022 (64-bit)",
                num_cpu=1 + i % 4,
                memory_mb=1024 * (1 + i % 8),
                folder="prod" if i % 5 else "test",
                tags=["gold"] if i % 7 == 0 else [],
                cbt_enabled=i % 2 == 0,
                provisioned_bytes=(i + 1) * GIB,
            )
        )
    VirtualMachine.objects.bulk_create(vms, batch_size=500)
    created = list(VirtualMachine.objects.filter(connection=lab.connection, moref__in=[v.moref for v in vms]))
    disks, ds_links, net_links = [], [], []
    for vm in created:
        index = int(vm.moref.split("-")[1])
        datastore = lab.shared if index % 2 else lab.locals[index % len(lab.locals)]
        disks.append(
            VirtualDisk(
                vm=vm, key=2000, label="Hard disk 1", file_name=f"[{datastore.name}] {vm.name}/{vm.name}.vmdk",
                datastore=datastore, capacity_bytes=vm.provisioned_bytes, thin=index % 2 == 1,
                cbt_enabled=vm.cbt_enabled, disk_mode="persistent",
            )
        )
        ds_links.append(VirtualMachine.datastores.through(virtualmachine=vm, datastore=datastore))
        net_links.append(VirtualMachine.networks.through(virtualmachine=vm, network=lab.networks[index % 2]))
    VirtualDisk.objects.bulk_create(disks, batch_size=500)
    VirtualMachine.datastores.through.objects.bulk_create(ds_links, batch_size=500)
    VirtualMachine.networks.through.objects.bulk_create(net_links, batch_size=500)
    lab.vms.extend(created)


def closed_port() -> int:
    """A loopback port nothing listens on: tests that connect get a quick, real refusal."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_lab(vm_count: int = 30, name: str = "Lab A") -> Lab:
    connection = Connection.objects.create(
        name=name, kind="vsphere", host="127.0.0.1", port=closed_port(), username="administrator@vsphere.local",
        password=STORED_PASSWORD, status=Connection.Status.OK, status_message="Synced: everything.",
    )
    dc = Datacenter.objects.create(connection=connection, moref="dc-1", name="DC1")
    cluster = Cluster.objects.create(connection=connection, moref="c-1", name="Cluster 1", datacenter=dc)
    lab = Lab(connection=connection, datacenter=dc)
    for i in range(4):
        lab.hosts.append(
            Host.objects.create(
                connection=connection, moref=f"host-{i}", name=f"esx-{i}.example.test", datacenter=dc,
                cluster=cluster, connection_state="connected", power_state="poweredOn", product="VMware ESXi 8.0",
                cpu_cores=16, memory_bytes=128 * GIB,
            )
        )
    lab.shared = Datastore.objects.create(
        connection=connection, moref="ds-shared", name="shared-ds", datacenter=dc, type="VMFS",
        capacity_bytes=10 * 1024 * GIB, free_bytes=4 * 1024 * GIB,
    )
    lab.shared.hosts.set(lab.hosts)
    for i, host in enumerate(lab.hosts):
        local = Datastore.objects.create(
            connection=connection, moref=f"ds-local-{i}", name=f"local-{i}", datacenter=dc, type="VMFS",
            capacity_bytes=500 * GIB, free_bytes=400 * GIB,
        )
        local.hosts.set([host])
        lab.locals.append(local)
    for i, kind in enumerate((Network.Kind.STANDARD, Network.Kind.DISTRIBUTED)):
        network = Network.objects.create(
            connection=connection, moref=f"net-{i}", name=f"VM Network {i}", datacenter=dc, kind=kind, vlan=str(10 + i)
        )
        network.hosts.set(lab.hosts)
        lab.networks.append(network)
    add_vms(lab, vm_count)
    return lab


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Many logins per test module: the default hasher is deliberately slow."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def lab(db) -> Lab:
    return build_lab()


@pytest.fixture
def repo(db) -> Repository:
    return Repository.objects.create(name="nas", kind="local", path="/srv/vafleet/repo",
                                     passphrase="Repo-Passphrase-5150")


@pytest.fixture
def portal_client(make_user):
    """A test client logged in (through the login form's backend) as a new user of the given role."""

    def make(role: str | None) -> Client:
        user = make_user(role)
        client = Client()
        assert client.login(username=user.username, password=PASSWORD)
        client.user = user
        return client

    return make


@pytest.fixture
def admin(portal_client) -> Client:
    return portal_client("administrator")


@pytest.fixture
def operator(portal_client) -> Client:
    return portal_client("operator")


@pytest.fixture
def viewer(portal_client) -> Client:
    return portal_client("viewer")

"""Fixtures shared by the API, RBAC, admin and security tests: connections and a synced inventory.

The inventory is saved by the real sync code (`apply_inventory`) from connector records, the
way a sync of a hypervisor writes it.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from inventory.connectors.records import (
    ClusterRecord,
    DatacenterRecord,
    DatastoreRecord,
    DiskRecord,
    HostRecord,
    Inventory,
    NetworkRecord,
    VmRecord,
)
from inventory.models import Connection
from inventory.sync import apply_inventory

HYPERVISOR_PASSWORD = "Vc-Pa55word!unique-4729"
GiB = 1024**3


def build_inventory(vms: int = 30, hosts: int = 4) -> Inventory:
    """One datacenter and cluster, `hosts` hosts, a shared datastore plus one local per host, 2 networks."""
    inv = Inventory(datacenters=[DatacenterRecord("datacenter-1", "DC1")])
    inv.clusters = [ClusterRecord("domain-c1", "Cluster A", "datacenter-1")]
    host_ids = [f"host-{i}" for i in range(1, hosts + 1)]
    inv.hosts = [
        HostRecord(h, f"esx{i}.lab.local", "datacenter-1", "domain-c1", cpu_cores=16, memory_bytes=128 * GiB)
        for i, h in enumerate(host_ids, 1)
    ]
    inv.datastores = [DatastoreRecord("datastore-shared", "shared-nfs", "datacenter-1", "NFS", hosts=host_ids)]
    inv.datastores += [
        DatastoreRecord(f"datastore-local-{i}", f"local-{i}", "datacenter-1", "VMFS", hosts=[h])
        for i, h in enumerate(host_ids, 1)
    ]
    inv.networks = [
        NetworkRecord("network-1", "VM Network", "datacenter-1", hosts=host_ids),
        NetworkRecord("dvportgroup-1", "Backup DPG", "datacenter-1", kind="distributed", switch="dvs-1", vlan="20"),
    ]
    for n in range(1, vms + 1):
        host = host_ids[n % hosts]
        local = f"datastore-local-{n % hosts + 1}"
        name = f"vm-{n:04d}" if n != 1 else "Finance & <Reports> ünï"  # odd characters survive the round trip
        disks = [
            DiskRecord(
                2000, "Hard disk 1", f"[shared-nfs] vm-{n}/vm-{n}.vmdk", 16 * GiB, "datastore-shared", thin=True
            ),
            DiskRecord(2001, "Hard disk 2", f"[local] vm-{n}/vm-{n}_1.vmdk", 3 * 1024 * GiB, local, cbt_enabled=True),
        ]
        inv.vms.append(
            VmRecord(
                f"vm-{n}", name, "datacenter-1", host, uuid=f"5000-{n:08d}",
                power_state="poweredOn" if n % 3 else "poweredOff",
                guest_os="ubuntu64Guest" if n % 2 else "windows2019srv_64Guest",
                num_cpu=2, memory_mb=4096, folder="prod" if n % 2 else "test", tags=["gold"] if n % 5 == 0 else [],
                cbt_enabled=n % 2 == 0, datastores=["datastore-shared", local],
                networks=["network-1"] if n % 4 else ["network-1", "dvportgroup-1"], disks=disks,
            )
        )
    return inv


def closed_loopback_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_connection(name: str = "vcenter-1", **fields) -> Connection:
    values = {
        "kind": "vsphere", "host": "127.0.0.1", "port": closed_loopback_port(),
        "username": "administrator@vsphere.local", "password": HYPERVISOR_PASSWORD,
    }
    values.update(fields)
    return Connection.objects.create(name=name, **values)


@pytest.fixture
def connection(db) -> Connection:
    return make_connection()


@pytest.fixture
def synced(connection) -> Connection:
    """A connection with a 30-VM inventory saved."""
    apply_inventory(connection, build_inventory())
    return connection


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Users are created per test: a fast hasher keeps the role matrix quick (hash strength is not tested here)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def unique_name(prefix: str) -> str:
    """A connection name no other test worker uses (task names derive from it; Redis queues may be shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def take_queued(task_name: str) -> list[dict]:
    """Remove the queued tasks with this name from django-q2's broker (ORM or Redis) and return them.

    Only these tasks are touched: test workers running in parallel may share one Redis queue.
    """
    from django_q.brokers import get_broker
    from django_q.brokers.redis_broker import Redis
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    broker = get_broker()
    taken = []
    if isinstance(broker, Redis):
        for payload in broker.connection.lrange(broker.list_key, 0, -1):
            task = SignedPackage.loads(payload)
            if task["name"] == task_name and broker.connection.lrem(broker.list_key, 1, payload):
                taken.append(task)
        return taken
    for row in OrmQ.objects.filter(key=broker.list_key):
        task = SignedPackage.loads(row.payload)
        if task["name"] == task_name:
            row.delete()
            taken.append(task)
    return taken

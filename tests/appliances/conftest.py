"""Lab appliances as real hosts (network namespaces + their own sshd) and the signed engine bundle.

Every appliance a test creates is destroyed afterwards; tests that need root skip loudly without it.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliances import REPO_DIR
from appliances.bundle import build_bundle
from appliances.labhost import LabHost
from inventory.models import Connection, Datacenter, Datastore, Host, Network

ROOT_PASSWORD = "Lab-Root-Pass-7"
USER_PASSWORD = "Lab-User-Pass-7"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/sbin/sshd").exists(),
    reason="LAB APPLIANCE TESTS SKIPPED: they need root, iproute2 and openssh-server "
           "(network namespaces + their own sshd). Run the suite as root to exercise them.")


def create_lab(count: int, **options) -> list[LabHost]:
    """Create `count` lab appliances at once; on any failure, destroy the ones made."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(LabHost.create, f"lab-va-{n}", ROOT_PASSWORD, USER_PASSWORD, n + 1, **options)
                   for n in range(count)]
    hosts, errors = [], []
    for future in futures:
        try:
            hosts.append(future.result())
        except Exception as exc:  # noqa: BLE001 - collected, re-raised after cleanup
            errors.append(exc)
    if errors:
        for host in hosts:
            host.destroy()
        raise errors[0]
    return hosts


@pytest.fixture(scope="module")
def fleet():
    hosts = create_lab(3)
    yield hosts
    for host in hosts:
        host.destroy()


@pytest.fixture
def lab_va():
    (host,) = create_lab(1)
    yield host
    host.destroy()


@pytest.fixture(scope="session")
def bundle():
    return build_bundle()


@pytest.fixture
def make_changed_bundle(tmp_path):
    """Bundles of copies of the engine whose content differs by one line each."""

    def make(tag: str = "a"):
        copy = tmp_path / f"engines-{tag}" / "engines"
        shutil.copytree(REPO_DIR / "engines", copy, ignore=shutil.ignore_patterns("__pycache__"))
        with open(copy / "errors.py", "a") as fh:
            fh.write(f"\n# changed for a re-injection test ({tmp_path.name}, {tag})\n")
        return build_bundle(copy, tmp_path / f"bundles-{tag}")

    return make


@pytest.fixture
def changed_bundle(make_changed_bundle):
    return make_changed_bundle("a")


# -- an inventory to place appliances in (database rows only) ------------------------------------
GIB = 1 << 30
GOOD = "Strong-Pass-42x"


@pytest.fixture
def place(db):
    connection = Connection.objects.create(name="vc", kind="vsphere", host="vc.example.test")
    dc = Datacenter.objects.create(connection=connection, moref="dc-1", name="DC")
    host, other = (Host.objects.create(connection=connection, moref=f"host-{n}", name=f"esx{n}", datacenter=dc)
                   for n in (1, 2))
    big = Datastore.objects.create(connection=connection, moref="ds-1", name="big", datacenter=dc,
                                   capacity_bytes=500 * GIB, free_bytes=200 * GIB)
    big.hosts.set([host])
    small = Datastore.objects.create(connection=connection, moref="ds-2", name="small", datacenter=dc,
                                     capacity_bytes=10 * GIB, free_bytes=1 * GIB)
    small.hosts.set([host])
    elsewhere = Datastore.objects.create(connection=connection, moref="ds-3", name="elsewhere", datacenter=dc,
                                         capacity_bytes=500 * GIB, free_bytes=200 * GIB)
    elsewhere.hosts.set([other])
    network = Network.objects.create(connection=connection, moref="net-1", name="VM Network", datacenter=dc)
    network.hosts.set([host])
    dvpg = Network.objects.create(connection=connection, moref="dvpg-1", name="DR", datacenter=dc, kind="distributed")
    dvpg.hosts.set([other])
    return {"connection": connection, "host": host, "big": big, "small": small, "elsewhere": elsewhere,
            "network": network, "dvpg": dvpg}


def values(place, **changes) -> dict:
    base = {"name": "va-1", "hostname": "va-1", "connection": place["connection"], "host": place["host"],
            "datastore": place["big"], "network": place["network"], "addressing": "static",
            "address": "192.0.2.10", "prefix": 24, "gateway": "192.0.2.1", "dns": "192.0.2.53, 192.0.2.54",
            "root_password": GOOD, "user_name": "vauser", "user_password": GOOD + "u", "vcpus": 2,
            "memory_mb": 2048, "transport": "ssh"}
    return {**base, **changes}

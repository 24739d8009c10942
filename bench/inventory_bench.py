"""Inventory benchmark: vCenter sync of 500 VMs / 20 hosts, and the VM list (portal and API) with 5,000 VMs.

Run: .venv/bin/python bench/inventory_bench.py [--vms 500] [--list-vms 5000] [--requests 50]
It sets up Django on a temporary VAFLEET_VAR_DIR (fresh SQLite database), starts the vCenter
simulator through the test harness, and prints figures; it never passes or fails on time.
Targets: full sync of 500 VMs <= 5 s; VM list p95 <= 150 ms with a constant number of queries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def setup_django(var_dir: str) -> None:
    os.environ["VAFLEET_VAR_DIR"] = var_dir
    Path(var_dir, "static").mkdir()  # collected static files would live here; keeps whitenoise quiet
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vaproject.settings")
    os.environ.setdefault("VAFLEET_LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# -- sync ------------------------------------------------------------------------------
def bench_sync(vms: int, hosts: int) -> list[tuple[str, str]]:
    from inventory.connectors import connector_for
    from inventory.connectors.base import NewVmSpec
    from inventory.models import Connection, VirtualMachine
    from inventory.sync import sync_connection
    from tests.harness import vcsim

    clusters, standalone = 2, 2
    shape = vcsim.Shape(clusters=clusters, cluster_hosts=(hosts - standalone) // clusters,
                        standalone_hosts=standalone, vms=vms)
    rows = []
    started = time.perf_counter()
    with vcsim.running(shape) as simulator:
        rows.append(("simulator start (built binary)", f"{time.perf_counter() - started:.2f} s"))
        connection = Connection.objects.create(name="bench-vcenter", kind="vsphere",
                                               **simulator.connection_fields())
        with connector_for(connection) as connector:
            connector.test()
            started = time.perf_counter()
            inventory = connector.fetch_inventory()
            fetch_seconds = time.perf_counter() - started
        rows.append((f"fetch only ({len(inventory.vms)} VMs, {len(inventory.hosts)} hosts)",
                     f"{fetch_seconds:.2f} s, {inventory.round_trips} round trips"))

        full = sync_connection(connection.pk)
        assert full.ok, full.message
        rows.append((f"full sync, {vms} VMs / {hosts} hosts (target <= 5 s)",
                     f"{full.seconds:.2f} s, {full.round_trips} round trips"))
        again = sync_connection(connection.pk)
        assert again.ok, again.message
        rows.append(("re-sync, nothing changed", f"{again.seconds:.2f} s, {again.round_trips} round trips"))

        with connector_for(connection) as connector:
            inventory = connector.fetch_inventory()
            host = inventory.hosts[0]
            datastore = next(d for d in inventory.datastores if host.moref in d.hosts)
            for i in range(10):
                connector.create_vm(NewVmSpec(name=f"bench-new-{i}", datacenter=inventory.datacenters[0].moref,
                                              host=host.moref, datastore=datastore.moref, disk_capacities=[1 << 30]))
        changed = sync_connection(connection.pk)
        assert changed.ok, changed.message
        total = VirtualMachine.objects.filter(connection=connection).count()
        rows.append((f"re-sync after 10 new VMs ({total} VMs)",
                     f"{changed.seconds:.2f} s, {changed.round_trips} round trips"))
    return rows


# -- VM list ---------------------------------------------------------------------------
def populate(count: int) -> None:
    """Bulk-insert `count` VMs with disks, datastores and networks, as a big sync would leave them."""
    from inventory.models import Connection, Datacenter, Datastore, Host, Network, VirtualDisk, VirtualMachine

    connection = Connection.objects.create(name="bench-bulk", kind="vsphere", host="127.0.0.1")
    dc = Datacenter.objects.create(connection=connection, moref="datacenter-1", name="DC-bulk")
    hosts = Host.objects.bulk_create(
        Host(connection=connection, moref=f"host-{i}", name=f"esx{i:02d}.bulk", datacenter=dc, cpu_cores=32,
             memory_bytes=512 << 30) for i in range(40)
    )
    datastores = Datastore.objects.bulk_create(
        Datastore(connection=connection, moref=f"datastore-{i}", name=f"ds{i:02d}", datacenter=dc,
                  capacity_bytes=8 << 40) for i in range(20)
    )
    networks = Network.objects.bulk_create(
        Network(connection=connection, moref=f"network-{i}", name=f"vlan{i}", datacenter=dc) for i in range(10)
    )
    hosts = list(Host.objects.filter(connection=connection))
    datastores = list(Datastore.objects.filter(connection=connection))
    networks = list(Network.objects.filter(connection=connection))
    states = ["poweredOn", "poweredOn", "poweredOff", "suspended"]
    VirtualMachine.objects.bulk_create(
        (VirtualMachine(
            connection=connection, moref=f"vm-{i}", name=f"app{i % 97:02d}-vm{i:05d}", datacenter=dc,
            host=hosts[i % len(hosts)], power_state=states[i % 4], guest_os=["Ubuntu Linux (64-bit)",
            "Microsoft Windows Server 2022 (64-bit)"][i % 2], num_cpu=1 + i % 8, memory_mb=1024 * (1 + i % 16),
            folder=f"Team{i % 12}/Prod", tags=[f"backup-policy={['gold', 'silver'][i % 2]}"],
            provisioned_bytes=(40 + i % 200) << 30, uuid=f"{i:032x}",
        ) for i in range(count)),
        batch_size=1000,
    )
    vms = list(VirtualMachine.objects.filter(connection=connection).values_list("pk", flat=True))
    VirtualMachine.datastores.through.objects.bulk_create(
        (VirtualMachine.datastores.through(virtualmachine_id=pk, datastore_id=datastores[n % 20].pk)
         for n, pk in enumerate(vms)), batch_size=2000,
    )
    VirtualMachine.networks.through.objects.bulk_create(
        (VirtualMachine.networks.through(virtualmachine_id=pk, network_id=networks[n % 10].pk)
         for n, pk in enumerate(vms)), batch_size=2000,
    )
    VirtualDisk.objects.bulk_create(
        (VirtualDisk(vm_id=pk, key=2000, label="Hard disk 1", file_name=f"[ds{n % 20:02d}] vm{n}/vm{n}.vmdk",
                     datastore=datastores[n % 20], capacity_bytes=(40 + n % 200) << 30)
         for n, pk in enumerate(vms)), batch_size=2000,
    )


PORTAL_VARIATIONS = [
    "", "?page=2", "?page=50", "?page=100", "?sort=-memory", "?sort=host&page=3", "?sort=size", "?sort=-cpu",
    "?q=app42", "?q=vm0499", "?q=Windows", "?power_state=poweredOn", "?power_state=suspended&sort=guest",
    "?per_page=100", "?per_page=200&page=7", "?q=Team3&sort=-name", "?cbt_enabled=false&page=4",
]
API_VARIATIONS = [
    "", "?offset=50", "?offset=2500", "?offset=4950", "?ordering=-memory_mb", "?ordering=host__name&offset=100",
    "?ordering=provisioned_bytes", "?ordering=-num_cpu", "?search=app42", "?search=vm0499", "?search=Windows",
    "?power_state=poweredOn", "?power_state=suspended&ordering=guest_os", "?limit=100", "?limit=200&offset=1400",
    "?search=Team3&ordering=-name", "?cbt_enabled=false&offset=200",
]


def measure(client, base: str, variations: list[str], requests: int, **headers) -> str | tuple:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import Resolver404, resolve

    try:
        resolve(base)
    except Resolver404:
        return "not available (no such URL yet)"
    try:
        warm = client.get(base, **headers)
    except Exception as exc:  # a page being written elsewhere may not import yet
        return f"not available ({type(exc).__name__}: {exc})"
    if warm.status_code != 200:
        return f"not available (HTTP {warm.status_code})"
    timings, queries = [], {}
    for n in range(requests):
        url = base + variations[n % len(variations)]
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, **headers)
            timings.append(((time.perf_counter() - started) * 1000, url))
        if response.status_code != 200:
            return f"not available ({url} answered HTTP {response.status_code})"
        queries[url] = len(captured.captured_queries)
    timings.sort()
    latencies = [ms for ms, _ in timings]
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    return p50, p95, min(queries.values()), max(queries.values()), timings[-1]


def bench_list(count: int, requests: int) -> list[tuple[str, str]]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    started = time.perf_counter()
    populate(count)
    rows = [(f"bulk insert of {count} VMs (+ disks, links)", f"{time.perf_counter() - started:.2f} s")]
    viewer = get_user_model().objects.create_user("bench-viewer", password="Bench-Viewer-1")
    viewer.groups.add(Group.objects.get(name="viewer"))
    client = Client()
    client.force_login(viewer)
    for label, base, variations, headers in (
        ("portal /inventory/vms/", "/inventory/vms/", PORTAL_VARIATIONS, {}),
        ("API /api/inventory/vms/", "/api/inventory/vms/", API_VARIATIONS, {"HTTP_ACCEPT": "application/json"}),
    ):
        result = measure(client, base, variations, requests, **headers)
        if isinstance(result, str):
            rows.append((f"{label} with {count} VMs", result))
            continue
        p50, p95, q_min, q_max, (slowest_ms, slowest_url) = result
        constant = "constant" if q_min == q_max else f"varies {q_min}-{q_max}"
        rows.append((f"{label}: {requests} requests, p50 / p95 (target p95 <= 150 ms)",
                     f"{p50:.1f} ms / {p95:.1f} ms"))
        rows.append((f"{label}: slowest request", f"{slowest_ms:.1f} ms {slowest_url}"))
        rows.append((f"{label}: queries per request", f"{q_min}-{q_max} ({constant})"))
    return rows


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  result")
    print(f"{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500, help="VMs in the simulated vCenter")
    parser.add_argument("--hosts", type=int, default=20, help="hosts in the simulated vCenter")
    parser.add_argument("--list-vms", type=int, default=5000, help="VMs bulk-inserted for the list benchmark")
    parser.add_argument("--requests", type=int, default=50, help="requests per list benchmark")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vafleet-bench-") as var_dir:
        setup_django(var_dir)
        rows = bench_sync(args.vms, args.hosts)
        rows += bench_list(args.list_vms, args.requests)
    print_table(rows)


if __name__ == "__main__":
    main()

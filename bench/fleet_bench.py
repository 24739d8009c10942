"""Fleet benchmark: deploy lab VAs through the server's fleet operation, then re-check versions concurrently.

Run as root:  .venv/bin/python bench/fleet_bench.py [--vas 4] [--checks 50]
Uses a private var directory (database, lab, keys); every VA it deploys is removed at the end.
Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PASSWORD = "Bench-Root-Pass-1"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def setup(var: Path, hosts: int):
    os.environ["VAFLEET_VAR_DIR"] = str(var)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vaproject.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from inventory.connectors.lab import seed
    from inventory.models import Connection
    from inventory.sync import sync_connection

    call_command("migrate", verbosity=0)
    seed(var / "lab", vms=hosts * 2, disk_size=1 << 20)
    connection = Connection.objects.create(name="Bench lab", kind="lab", options={"root": str(var / "lab")})
    assert sync_connection(connection.pk).ok
    return connection


def make_appliances(connection, count: int) -> list:
    from appliances.models import Appliance
    from inventory.models import Datastore, Host, Network

    made = []
    hosts = list(Host.objects.filter(connection=connection).order_by("name"))
    for n in range(count):
        host = hosts[n % len(hosts)]
        appliance = Appliance.objects.create(
            name=f"bench-va-{n}", hostname=f"bench-va-{n}", connection=connection, host=host,
            datastore=Datastore.objects.filter(hosts=host).order_by("-free_bytes").first(),
            network=Network.objects.filter(hosts=host).first(), addressing="dhcp", root_password=PASSWORD,
            user_password=PASSWORD, vcpus=2, memory_mb=1024)
        appliance.served_hosts.set([host])
        made.append(appliance)
    return made


def check_once(appliance) -> tuple[float, float]:
    """The 'before every job' check on a fresh connection: (connect s, version round trip s)."""
    from appliances.connect import transport_for
    from appliances.injection import engine_version

    transport, connect = timed(transport_for, appliance)
    with transport:
        _, check = timed(engine_version, transport)
    return connect, check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vas", type=int, default=4)
    parser.add_argument("--checks", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("fleet_bench needs root (lab VAs are network namespaces with their own sshd).", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vafleet-fleet-bench-") as tmp:
        connection = setup(Path(tmp), args.vas)
        from appliances import services
        from appliances.actions import current_bundle
        from appliances.models import FleetOperation
        from appliances.operations import run_operation

        bundle, build_s = timed(current_bundle)
        appliances = make_appliances(connection, args.vas)
        left, remove_s = [], 0.0
        try:
            deploy, deploy_s = timed(run_operation, services.start_deploy(appliances, queue=False).pk)
            items = list(deploy.items.all())
            if deploy.state != FleetOperation.State.SUCCEEDED:
                print("deployment failed:", [i.message for i in items], file=sys.stderr)
                return 1
            sent = sum(i.bytes_sent for i in items)
            for a in appliances:
                a.refresh_from_db()
            with ThreadPoolExecutor(args.checks) as pool:
                start = time.perf_counter()
                checks = list(pool.map(lambda n: check_once(appliances[n % len(appliances)]), range(args.checks)))
                checks_s = time.perf_counter() - start
            upgrade, upgrade_s = timed(run_operation, services.start_upgrade(queue=False).pk)
            upgrade_sent = sum(i.bytes_sent for i in upgrade.items.all())
            health, health_s = timed(run_operation, services.start_health_round(queue=False).pk)
        finally:
            from appliances.models import Appliance

            left = list(Appliance.objects.all())
            if left:
                _, remove_s = timed(lambda: [run_operation(services.start_remove(a, queue=False).pk) for a in left])
    connects, rounds = [c for c, _ in checks], [r for _, r in checks]
    print(f"bundle: {bundle.version}, {bundle.size / 1e6:.1f} MB (build or cache hit {build_s:.2f} s)")
    print(f"deploy {args.vas} lab VAs as one fleet operation (VM, namespace + sshd, key pinned, bootstrap, engine): "
          f"{deploy_s:.2f} s wall, {sent / 1e6:.1f} MB sent ({sent / 1e6 / deploy_s:.0f} MB/s aggregate)")
    print(f"{args.checks} concurrent version checks, fresh connection each: {checks_s:.2f} s wall; connect p50 "
          f"{statistics.median(connects) * 1e3:.0f} ms, version round trip p50 {statistics.median(rounds) * 1e3:.0f}"
          f" ms / max {max(rounds) * 1e3:.0f} ms")
    print(f"fleet upgrade with nothing to send: {upgrade_s:.2f} s, {upgrade_sent} bytes sent ({upgrade.state})")
    print(f"health round over {args.vas} VAs: {health_s:.2f} s ({health.state})")
    print(f"remove {len(left)} VAs: {remove_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet backup benchmark: many lab VMs backed up by (a) 4 VAs one-to-one and (b) 1 VA one-to-many.

Run as root:  .venv/bin/python bench/fleet_backup_bench.py [--vms 30] [--size 1G] [--workdir /var/tmp/...]

Seeds a lab of `--vms` VMs on 4 hosts in a private var directory, then puts a deterministic synthetic image
(../shared/bench/mkimage.py, a different seed per disk, cached in --workdir on local disk) in place of every
VM disk (`cp --sparse=always`, so the holes stay holes). Deploys 4 lab VAs (2 vCPUs each), then runs two
full backups of every VM to a local-folder repository on this machine's disk:
  (a) one-to-one: each VA serves its own host (every disk by hot-add);
  (b) one-to-many: one VA serves all 4 hosts (hot-add where its host mounts the VM's datastores, network
      mode over the lab's HTTPS server otherwise); the other VAs serve nothing.
Prints, per pass: aggregate MB/s (logical disk bytes / wall time of the run), the server's SSH bytes per
GiB protected (kernel TCP_INFO counts of every connection to the VAs), the time from start_run to the first
progress event stored, modes, and the ratio (a)/(b). All VAs share this machine's cores. Every VA it
deploys is removed at the end; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MKIMAGE = ROOT.parent / "shared" / "bench" / "mkimage.py"
PASSWORD = "Bench-Root-Pass-2"
PASSPHRASE = "Bench-Passphrase-2"
HOSTS = 4
MIB, GIB = 1 << 20, 1 << 30


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def image(cache: Path, size: int, seed: int) -> Path:
    """The cached mkimage image of `size` bytes for `seed`, made once."""
    path = cache / f"disk-{size // MIB}M-seed{seed}.img"
    if not path.exists():
        partial = path.with_suffix(".partial")
        subprocess.run([sys.executable, str(MKIMAGE), str(partial), "--size", str(size), "--seed", str(seed)],
                       check=True, stdout=subprocess.DEVNULL)
        partial.rename(path)
    return path


def setup(var: Path, vms: int, size: int, cache: Path):
    os.environ["VAFLEET_VAR_DIR"] = str(var)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vaproject.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from inventory.connectors.lab import seed
    from inventory.connectors.lab.state import LabState
    from inventory.models import Connection
    from inventory.sync import sync_connection

    call_command("migrate", verbosity=0)
    seed(var / "lab", vms=vms, disk_size=size, fill=0)
    state = LabState(var / "lab")
    data = state.read()
    disks = [state.file_path(data, d["datastore"], d["chain"][0]["file"])
             for vm in data["vms"].values() for d in vm["disks"]]
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # two cores: two images at a time
        images = list(pool.map(lambda n: image(cache, size, 100 + n), range(len(disks))))
    made = time.perf_counter() - started
    for source, disk in zip(images, disks, strict=True):
        subprocess.run(["cp", "--sparse=always", str(source), str(disk)], check=True)
    connection = Connection.objects.create(name="Bench lab", kind="lab", options={"root": str(var / "lab")})
    assert sync_connection(connection.pk).ok
    print(f"lab: {vms} VMs on {HOSTS} hosts, {len(disks)} disks of {size / MIB:.0f} MiB "
          f"(mkimage seeds 100-{99 + len(disks)}, images ready in {made:.1f} s, cached in {cache})")
    return connection


def make_appliances(connection) -> list:
    from appliances.models import Appliance
    from inventory.models import Datastore, Host, Network

    made = []
    for n, host in enumerate(Host.objects.filter(connection=connection).order_by("name")):
        appliance = Appliance.objects.create(
            name=f"bench-va-{n}", hostname=f"bench-va-{n}", connection=connection, host=host,
            datastore=Datastore.objects.filter(hosts=host).order_by("-free_bytes").first(),
            network=Network.objects.filter(hosts=host).first(), root_password=PASSWORD,
            user_password=PASSWORD, vcpus=2)
        appliance.served_hosts.set([host])
        made.append(appliance)
    return made


def backup_pass(label: str, connection, folder: Path) -> dict:
    from appliances.transports import ssh as ssh_transport
    from inventory.connectors.lab import LabConnector
    from inventory.models import VirtualMachine
    from jobs import services
    from jobs.models import BackupJob, Repository, TaskEvent
    from jobs.runs import execute_run

    repository = Repository.objects.create(name=label, kind="local", path=str(folder), passphrase=PASSPHRASE)
    job = BackupJob.objects.create(name=label, repository=repository, max_parallel=8, keep_last=0, keep_daily=0,
                                   keep_weekly=0, keep_monthly=0)
    vms = list(VirtualMachine.objects.filter(connection=connection).exclude(name__startswith="bench-va-"))
    job.vms.set(vms)
    traffic = ssh_transport.TRAFFIC.sent + ssh_transport.TRAFFIC.received
    started = time.perf_counter()
    start_wall = time.time()
    run = execute_run(services.start_run(job, queue=False).pk)
    wall = time.perf_counter() - started
    server_bytes = ssh_transport.TRAFFIC.sent + ssh_transport.TRAFFIC.received - traffic
    tasks = list(run.tasks.select_related("restore_point"))
    failed = [(t.vm_name, t.message) for t in tasks if t.state != "succeeded"]
    protected = sum(d["size"] for t in tasks if t.restore_point for d in t.restore_point.disks)
    stored = sum(t.restore_point.stored_bytes for t in tasks if t.restore_point)
    first = TaskEvent.objects.filter(task__run=run, type="progress").order_by("time").first()
    connector = LabConnector(root=connection.options["root"])
    snapshots_left = sum(len(connector.list_snapshots(vm.moref)) for vm in vms)
    return {
        "label": label, "state": run.state, "failed": failed, "wall": wall, "protected": protected,
        "stored": stored, "server_bytes": server_bytes, "vms": len(tasks),
        "first_progress": first.time.timestamp() - start_wall if first else float("nan"),
        "appliances": Counter(t.appliance_name for t in tasks), "modes": Counter(t.mode for t in tasks),
        "snapshots_left": snapshots_left,
    }


def report(r: dict) -> None:
    mbps = r["protected"] / 1e6 / r["wall"]
    per_gib = r["server_bytes"] / (r["protected"] / GIB) / 1024 if r["protected"] else float("nan")
    print(f"{r['label']}: {r['state']}, {r['vms']} VMs, {r['protected'] / GIB:.1f} GiB of disks in {r['wall']:.1f} s "
          f"= {mbps:.0f} MB/s aggregate; {r['stored'] / GIB:.2f} GiB new in the repository; server SSH traffic "
          f"{r['server_bytes'] / 1024:.0f} KiB = {per_gib:.1f} KiB per GiB protected; first progress event "
          f"{r['first_progress']:.2f} s after start_run")
    print(f"  tasks per VA {dict(sorted(r['appliances'].items()))}, modes {dict(r['modes'])}, "
          f"snapshots left {r['snapshots_left']}")
    if r["failed"]:
        print(f"  FAILED: {r['failed'][:5]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=30)
    parser.add_argument("--size", default="1G", help="size of every VM disk (a multiple of 4 MiB)")
    parser.add_argument("--workdir", default="/var/tmp/vafleet-fleet-backup-bench",
                        help="image cache and scratch space (local disk, not tmpfs)")
    args = parser.parse_args()
    size = parse_size(args.size)
    if os.geteuid() != 0:
        print("fleet_backup_bench needs root (lab VAs are network namespaces with their own sshd).", file=sys.stderr)
        return 2
    if size < 4 * MIB or size % (4 * MIB):
        print("--size must be a multiple of 4 MiB.", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    (workdir / "images").mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="run-", dir=workdir) as tmp:
        var = Path(tmp)
        connection = setup(var, args.vms, size, workdir / "images")
        from appliances import services as fleet
        from appliances.labhost import LabHost
        from appliances.models import Appliance
        from appliances.operations import run_operation
        from inventory.models import Host

        appliances = make_appliances(connection)
        try:
            started = time.perf_counter()
            deploy = run_operation(fleet.start_deploy(appliances, queue=False).pk)
            if deploy.state != "succeeded":
                print("deployment failed:", [i.message for i in deploy.items.all()], file=sys.stderr)
                return 1
            print(f"deployed {len(appliances)} lab VAs (2 vCPUs each) in {time.perf_counter() - started:.1f} s; "
                  f"this machine has {os.cpu_count()} cores for all of them")
            results.append(backup_pass("(a) 4 VAs one-to-one", connection, var / "repo-a"))
            report(results[-1])
            shutil.rmtree(var / "repo-a", ignore_errors=True)  # disk space for the second pass
            hub = appliances[0]
            hub.served_hosts.set(Host.objects.filter(connection=connection))
            for other in appliances[1:]:
                other.served_hosts.clear()
            results.append(backup_pass("(b) 1 VA one-to-many", connection, var / "repo-b"))
            report(results[-1])
        finally:
            for appliance in Appliance.objects.all():
                ident = (appliance.deploy_handle or {}).get("labhost")
                host = LabHost.find(ident) if ident else None
                if host is not None:
                    host.destroy()
    a, b = results
    ratio = (a["protected"] / a["wall"]) / (b["protected"] / b["wall"])
    print(f"ratio (a)/(b): {ratio:.2f}x (4 VAs x 2 vCPUs against 1 VA x 2 vCPUs, all on {os.cpu_count()} cores)")
    return 0 if not a["failed"] and not b["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())

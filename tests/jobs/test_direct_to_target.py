"""Backups go from the appliances straight to the target: the server only sees metadata.

Real lab appliances (network namespaces with their own sshd) back up lab VMs by hot-add to a real SFTP
server; the kernel's own byte counts of the server's SSH connections to the appliances (TCP_INFO) must
stay at metadata size (<= 1 MiB per GiB protected) while the target received the data. A second test
kills an appliance in the middle of a backup: the task moves to another appliance, the snapshot is
removed and the repository verifies.
"""

from __future__ import annotations

import threading
import time

import pytest

from appliances import services as fleet
from appliances.labhost import LabHost
from appliances.models import Appliance
from appliances.operations import run_operation
from appliances.transports import ssh as ssh_transport
from engines import api as engine_api
from engines.targets.base import TargetSpec
from inventory.connectors.lab import LabConnector, seed
from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from inventory.sync import sync_connection
from jobs import services
from jobs.models import BackupJob, JobRun, Repository, Task
from jobs.runs import execute_run
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, needs_root
from tests.harness.storage.sshd import PASSWORD as SFTP_PASSWORD
from tests.harness.storage.sshd import start_sshd

pytestmark = [needs_root, pytest.mark.appliance, pytest.mark.storage]
PASSPHRASE = "Repo-Passphrase-2"
MIB, GIB = 1 << 20, 1 << 30


@pytest.fixture
def lab(tmp_path, transactional_db):
    seed(tmp_path / "lab", vms=4, disk_size=192 * MIB, fill=0.3)
    connection = Connection.objects.create(name="Lab", kind="lab", options={"root": str(tmp_path / "lab")})
    assert sync_connection(connection.pk).ok
    return connection


@pytest.fixture
def fleet_of_two(lab):
    """Two lab appliances, each on a host that mounts the shared datastores, together serving every host."""
    hosts = list(Host.objects.filter(connection=lab).order_by("name"))
    made = []
    for n, host in enumerate(hosts[:2]):
        appliance = Appliance.objects.create(
            name=f"va-{n}", hostname=f"va-{n}", connection=lab, host=host,
            datastore=Datastore.objects.filter(hosts=host).order_by("-free_bytes").first(),
            network=Network.objects.filter(hosts=host).first(), root_password=ROOT_PASSWORD,
            user_password=USER_PASSWORD, vcpus=2)
        appliance.served_hosts.set(hosts[n::2])  # one-to-many: each serves half the hosts
        made.append(appliance)
    try:
        operation = run_operation(fleet.start_deploy(made, queue=False).pk)
        assert operation.state == "succeeded", [i.message for i in operation.items.all()]
        for appliance in made:
            appliance.refresh_from_db()
        yield made
    finally:
        for appliance in Appliance.objects.all():
            ident = (appliance.deploy_handle or {}).get("labhost")
            host = LabHost.find(ident) if ident else None
            if host is not None:
                host.destroy()


@pytest.fixture
def sftp_repository(fleet_of_two):
    """A real SFTP server listening where the appliances reach this machine (and on loopback)."""
    addresses = tuple(LabHost.find(a.deploy_handle["labhost"]).info.host_address for a in fleet_of_two)
    server = start_sshd(listen=addresses)
    try:
        repository = Repository.objects.create(
            name="sftp repo", kind="sftp", host=addresses[0], port=server.port, path=str(server.data_dir / "repo"),
            username=server.username, password=SFTP_PASSWORD, passphrase=PASSPHRASE)
        yield repository, server
    finally:
        server.stop()


def job_for(repository, vms) -> BackupJob:
    job = BackupJob.objects.create(name="direct", repository=repository, mode="hotadd", max_parallel=4)
    job.vms.set(vms)
    return job


def test_the_data_goes_straight_to_the_target(lab, fleet_of_two, sftp_repository):
    repository, server = sftp_repository
    vms = [vm for vm in VirtualMachine.objects.filter(connection=lab).order_by("name")
           if any(o.mode == "hotadd" for o in fleet.protection_for_vm(vm))]
    assert len(vms) >= 2
    before = (ssh_transport.TRAFFIC.sent, ssh_transport.TRAFFIC.received)

    run = execute_run(services.start_run(job_for(repository, vms), queue=False).pk)

    tasks = list(run.tasks.all())
    assert run.state == JobRun.State.SUCCEEDED, [(t.vm_name, t.message) for t in tasks if t.state != "succeeded"]
    assert len({t.appliance_name for t in tasks}) == len({o.appliance.name for vm in vms
                                                          for o in fleet.protection_for_vm(vm) if o.mode == "hotadd"})
    assert {t.mode for t in tasks} == {"hotadd"}
    protected = sum(d["size"] for t in tasks for d in t.restore_point.disks)
    written = sum(t.restore_point.stored_bytes for t in tasks)
    server_bytes = (ssh_transport.TRAFFIC.sent - before[0]) + (ssh_transport.TRAFFIC.received - before[1])
    on_target = sum(p.stat().st_size for p in (server.data_dir / "repo").rglob("*") if p.is_file())
    print(f"protected {protected / GIB:.2f} GiB, stored {written / MIB:.1f} MiB on the target "
          f"({on_target / MIB:.1f} MiB of files), server SSH traffic {server_bytes / 1024:.1f} KiB "
          f"= {server_bytes / (protected / GIB) / 1024:.1f} KiB per GiB")
    assert written > 50 * MIB and on_target >= written  # the data reached the target
    assert server_bytes > 0  # the counters are live (events did cross)
    assert server_bytes <= MIB * protected / GIB  # metadata only: <= 1 MiB per GiB protected
    spec = TargetSpec(type="sftp", path=repository.path, host="127.0.0.1", port=server.port,
                      username=repository.username, password=SFTP_PASSWORD)
    assert engine_api.verify(spec, PASSPHRASE)["ok"]


def test_an_appliance_killed_mid_backup_hands_the_vm_to_another(lab, fleet_of_two, sftp_repository):
    repository, server = sftp_repository
    survivor, doomed = fleet_of_two  # the repository is reached at va-0's side of the lab: keep va-0
    survivor.served_hosts.add(*doomed.served_hosts.all())  # the survivor can take any VM
    vm = VirtualMachine.objects.filter(connection=lab, host__in=doomed.served_hosts.all()).order_by("name").first()
    doomed.served_hosts.set([vm.host])
    survivor.served_hosts.remove(vm.host)  # first dispatch goes to the doomed appliance
    run = services.start_run(job_for(repository, [vm]), queue=False)

    def kill_when_backing_up() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task = Task.objects.filter(run=run).first()
            if task and task.appliance_id == doomed.pk and task.phase == "backup":
                survivor.served_hosts.add(vm.host)
                LabHost.find(doomed.deploy_handle["labhost"]).destroy()  # the appliance dies
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_backing_up)
    killer.start()
    run = execute_run(run.pk)
    killer.join()

    task = run.tasks.get()
    assert task.state == Task.State.SUCCEEDED, task.message
    assert task.appliance_name == survivor.name
    logs = " ".join(str(e.data.get("message", "")) for e in task.events.filter(type="log"))
    assert "Lost contact with appliance va-1" in logs
    assert LabConnector(root=lab.options["root"]).list_snapshots(vm.moref) == []  # released on every path
    doomed.refresh_from_db()
    assert doomed.state == Appliance.State.UNREACHABLE
    spec = TargetSpec(type="sftp", path=repository.path, host="127.0.0.1", port=server.port,
                      username=repository.username, password=SFTP_PASSWORD)
    assert engine_api.verify(spec, PASSPHRASE)["ok"]


def test_an_appliance_lost_between_connecting_and_running_is_marked_unreachable(
        lab, fleet_of_two, sftp_repository, monkeypatch):
    """The engine check passed, then the appliance died: the next channel fails to open (a lost contact),
    and the appliance must be recorded unreachable so the dispatcher stops choosing it."""
    from contextlib import contextmanager

    from jobs import backup

    repository, _server = sftp_repository
    survivor, doomed = fleet_of_two
    vm = VirtualMachine.objects.filter(connection=lab, host__in=doomed.served_hosts.all()).order_by("name").first()
    doomed.served_hosts.set([vm.host])
    survivor.served_hosts.remove(vm.host)
    real = backup.engine_ready_transport

    @contextmanager
    def dies_once_connected(appliance):
        with real(appliance) as transport:
            if appliance.pk == doomed.pk:
                survivor.served_hosts.add(vm.host)
                LabHost.find(doomed.deploy_handle["labhost"]).destroy()
            yield transport

    monkeypatch.setattr(backup, "engine_ready_transport", dies_once_connected)
    run = execute_run(services.start_run(job_for(repository, [vm]), queue=False).pk)

    task = run.tasks.get()
    assert task.state == Task.State.SUCCEEDED, task.message
    assert task.appliance_name == survivor.name
    doomed.refresh_from_db()
    assert doomed.state == Appliance.State.UNREACHABLE, doomed.state_message

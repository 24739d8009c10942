"""The fleet backs up many VMs: 32 lab VMs on 4 hosts, with 4 appliances one-to-one, then 1 one-to-many.

Real lab appliances (network namespaces with their own sshd) run the engine, which writes to a local-folder
repository (a folder on the appliances: the lab appliances share this machine's file system, like
appliances mounting one NAS share). SFTP would cost a key exchange and encryption for every task on this
machine's two shared cores and doubled the test's time; the SFTP path is measured in
test_direct_to_target.py.

First pass: one appliance on each host, serving that host only, so every VM is read by hot-add and every
appliance takes tasks. Second pass: one appliance serves all four hosts; the VMs on another host's local
datastore are read in network mode (the lab serves their snapshot disks over HTTPS on the appliance's
side), every other VM by hot-add. After each pass: every task succeeded, 32 full restore points, no
snapshot left on any VM, and the repository verifies.

The dispatch limits stay at their defaults (4 per host, 4 per datastore, 8 per repository): 4 appliances
of 2 vCPUs give 8 slots, which these limits hardly throttle (a third of the VMs on each shared datastore, a
quarter on each host), and the test keeps the production limits honest at this scale. Retention is off
(every keep setting 0): each pass writes a fresh repository. No timing is asserted.
"""

from __future__ import annotations

import pytest

from appliances import services as fleet
from appliances.labhost import LabHost
from appliances.models import Appliance
from appliances.operations import run_operation
from engines import api as engine_api
from engines.targets.base import TargetSpec
from inventory.connectors.lab import LabConnector, seed
from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from inventory.sync import sync_connection
from jobs import services
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task
from jobs.runs import execute_run
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, needs_root

pytestmark = [needs_root, pytest.mark.appliance, pytest.mark.storage]
PASSPHRASE = "Repo-Passphrase-3"
MIB = 1 << 20
VMS, HOSTS = 32, 4


@pytest.fixture
def lab(tmp_path, transactional_db):
    seed(tmp_path / "lab", vms=VMS, disk_size=4 * MIB, fill=0.5)
    connection = Connection.objects.create(name="Lab", kind="lab", options={"root": str(tmp_path / "lab")})
    assert sync_connection(connection.pk).ok
    return connection


@pytest.fixture
def fleet_of_four(lab):
    """One lab appliance on each host, serving that host only (one-to-one)."""
    hosts = list(Host.objects.filter(connection=lab).order_by("name"))
    assert len(hosts) == HOSTS
    made = []
    for n, host in enumerate(hosts):
        appliance = Appliance.objects.create(
            name=f"va-{n}", hostname=f"va-{n}", connection=lab, host=host,
            datastore=Datastore.objects.filter(hosts=host).order_by("-free_bytes").first(),
            network=Network.objects.filter(hosts=host).first(), root_password=ROOT_PASSWORD,
            user_password=USER_PASSWORD, vcpus=2)
        appliance.served_hosts.set([host])
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


def repository_for(tmp_path, folder: str) -> Repository:
    return Repository.objects.create(name=folder, kind="local", path=str(tmp_path / folder), passphrase=PASSPHRASE)


def back_up_all(repository: Repository, vms: list) -> JobRun:
    job = BackupJob.objects.create(name=f"all to {repository.name}", repository=repository, mode="auto",
                                   max_parallel=8, verify=True, keep_last=0, keep_daily=0, keep_weekly=0,
                                   keep_monthly=0)
    job.vms.set(vms)
    return execute_run(services.start_run(job, queue=False).pk)


def expected_mode(vm, appliance: Appliance) -> str:
    mounted = set(appliance.host.datastores.values_list("pk", flat=True))
    return "hotadd" if set(vm.datastores.values_list("pk", flat=True)) <= mounted else "network"


def check_pass(run: JobRun, lab: Connection, vms: list, repository: Repository) -> list[Task]:
    tasks = list(run.tasks.select_related("vm", "restore_point").order_by("vm_name"))
    failed = [(t.vm_name, t.appliance_name, t.message) for t in tasks if t.state != Task.State.SUCCEEDED]
    assert run.state == JobRun.State.SUCCEEDED and not failed, failed
    assert len(tasks) == VMS and {t.vm_id for t in tasks} == {vm.pk for vm in vms}
    assert all(t.restore_point is not None and t.restore_point.kind == "full" for t in tasks)
    assert RestorePoint.objects.filter(repository=repository).count() == VMS
    assert all(t.snapshot == "" and t.attached == [] for t in tasks)  # released, as recorded on the task
    connector = LabConnector(root=lab.options["root"])
    left = {vm.name: connector.list_snapshots(vm.moref) for vm in vms}
    assert not any(left.values()), {name: snaps for name, snaps in left.items() if snaps}
    spec = TargetSpec(type="local", path=repository.path)
    assert engine_api.verify(spec, PASSPHRASE)["ok"]
    return tasks


def test_many_vms_one_to_one_then_one_to_many(tmp_path, lab, fleet_of_four):
    vms = list(VirtualMachine.objects.filter(connection=lab).prefetch_related("datastores").order_by("name"))
    assert len(vms) == VMS and len({vm.host_id for vm in vms}) == HOSTS
    local_elsewhere = [vm for vm in vms if vm.host_id != fleet_of_four[0].host_id
                       and expected_mode(vm, fleet_of_four[0]) == "network"]
    assert local_elsewhere  # the seeded lab has VMs on other hosts' local datastores

    # One-to-one: each appliance reads the VMs of its own host, all by hot-add.
    repository = repository_for(tmp_path, "one-to-one")
    run = back_up_all(repository, vms)
    tasks = check_pass(run, lab, vms, repository)
    by_appliance = {a.name: a for a in fleet_of_four}
    assert {t.appliance_name for t in tasks} == set(by_appliance)  # every appliance took tasks
    for task in tasks:
        assert by_appliance[task.appliance_name].host_id == task.vm.host_id, task.vm_name
        assert task.mode == "hotadd" and task.mode_reason.startswith(f"Hot-add on {task.appliance_name}:")

    # One-to-many: va-0 serves every host; the others serve none.
    hub = fleet_of_four[0]
    hub.served_hosts.set(Host.objects.filter(connection=lab))
    for other in fleet_of_four[1:]:
        other.served_hosts.clear()
    repository = repository_for(tmp_path, "one-to-many")
    run = back_up_all(repository, vms)
    tasks = check_pass(run, lab, vms, repository)
    assert {t.appliance_name for t in tasks} == {hub.name}
    modes = {t.vm_name: t.mode for t in tasks}
    assert modes == {vm.name: expected_mode(vm, hub) for vm in vms}
    assert {vm.name for vm in local_elsewhere} == {name for name, mode in modes.items() if mode == "network"}
    for task in tasks:
        if task.mode == "network":
            assert task.mode_reason.startswith(f"Network mode on {hub.name}.")
            assert "does not mount local-esx-" in task.mode_reason
            logs = " ".join(str(e.data.get("message", "")) for e in task.events.filter(type="log"))
            assert "read over the network" in logs
        else:
            assert task.mode_reason.startswith(f"Hot-add on {hub.name}:")

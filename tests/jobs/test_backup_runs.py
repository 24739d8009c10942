"""Backup runs end to end in the lab through the built-in local appliance (no root needed):
snapshot, hot-add or network mode, the engine writing to the repository, catalog, CBT incrementals."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from inventory.connectors.lab import LabConnector
from inventory.models import VirtualMachine
from jobs import services
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task
from jobs.runs import execute_run
from tests.jobs.conftest import job_for


def test_a_run_backs_up_every_vm_and_records_restore_points(lab, repository):
    vms = list(VirtualMachine.objects.filter(connection=lab).order_by("name")[:3])
    job = job_for(repository, vms)

    run = execute_run(services.start_run(job, queue=False).pk)

    tasks = list(run.tasks.order_by("vm_name"))
    assert run.state == JobRun.State.SUCCEEDED, [(t.vm_name, t.message) for t in tasks]
    assert len(tasks) == 3 and all(t.appliance_name == "local-appliance" for t in tasks)
    for task in tasks:
        assert task.restore_point is not None and task.restore_point.kind == "full"
        assert task.mode in ("hotadd", "network") and task.mode_reason
        assert task.snapshot == "" and task.attached == []  # released
        assert task.events.filter(type="result").count() == 1
        assert list(task.events.values_list("seq", flat=True)) == list(range(1, task.last_seq + 1))
    connector = LabConnector(root=lab.options["root"])
    for vm in vms:
        assert connector.list_snapshots(vm.moref) == []
    assert RestorePoint.objects.filter(repository=repository).count() == 3

    # Second run after the VMs wrote: changed-block tracking gives incrementals.
    for vm in vms:
        connector.write(vm.moref, percent=5, seed=vm.moref)
    second = execute_run(services.start_run(job, queue=False).pk)
    assert second.state == JobRun.State.SUCCEEDED, [t.message for t in second.tasks.all()]
    kinds = set(second.tasks.values_list("restore_point__kind", flat=True))
    assert kinds == {"incremental-cbt"}, kinds


def test_an_unserved_vm_fails_with_a_sentence_and_the_others_go_on(lab, repository):
    from appliances.models import Appliance

    vms = list(VirtualMachine.objects.filter(connection=lab).order_by("name")[:2])
    local = Appliance.objects.get(name="local-appliance")
    local.served_hosts.remove(vms[0].host)
    job = job_for(repository, vms)
    run = execute_run(services.start_run(job, queue=False).pk)
    states = {t.vm_name: (t.state, t.message, t.error_code) for t in run.tasks.all()}
    unserved = states[vms[0].name]
    assert unserved[0] == Task.State.FAILED and unserved[2] == "no_appliance"
    assert "No appliance serves host" in unserved[1]
    if vms[1].host_id != vms[0].host_id:
        assert states[vms[1].name][0] == Task.State.SUCCEEDED
        assert run.state == JobRun.State.PARTIAL


def test_a_job_with_no_vm_is_refused(lab, repository):
    job = job_for(repository, [])
    with pytest.raises(services.NothingToDo, match="selects no VM"):
        services.start_run(job)


def test_restore_as_a_new_vm_and_into_a_folder_match_the_backup(lab, repository, tmp_path):
    from inventory.models import Datastore
    from jobs.runs import execute_restore

    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    run = execute_run(services.start_run(job_for(repository, [vm]), queue=False).pk)
    point = run.tasks.get().restore_point
    assert point is not None, run.tasks.get().message
    connector = LabConnector(root=lab.options["root"])
    source_digests = [connector.disk_digest(vm.moref, d["key"]) for d in connector.vm_disks(vm.moref)]

    datastore = Datastore.objects.filter(hosts=vm.host).order_by("-free_bytes").first()
    task = execute_restore(services.start_restore(point, {
        "mode": "new_vm", "name": f"{vm.name}-restored", "host": vm.host_id, "datastore": datastore.pk,
    }, queue=False).pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    new_vm = connector.find_vm(f"{vm.name}-restored")
    restored = [connector.disk_digest(new_vm, d["key"]) for d in connector.vm_disks(new_vm)]
    assert restored == source_digests  # the VM has not written since the backup
    assert connector.vm_disks(task.appliance.vm_moref) is not None
    assert task.events.filter(type="result").exists()

    folder = tmp_path / "images"
    image_task = execute_restore(services.start_restore(point, {"mode": "folder", "folder": str(folder)},
                                                        queue=False).pk)
    assert image_task.state == Task.State.SUCCEEDED, image_task.message
    images = sorted(folder.glob("*.img"))
    assert len(images) == len(point.disks)


def test_restore_refuses_an_incomplete_destination(lab, repository):
    from jobs.restore import RestoreRefused

    vm = VirtualMachine.objects.filter(connection=lab).first()
    run = execute_run(services.start_run(job_for(repository, [vm]), queue=False).pk)
    point = run.tasks.get().restore_point
    with pytest.raises(RestoreRefused, match="needs: host, datastore"):
        services.start_restore(point, {"mode": "new_vm", "name": "x"})
    with pytest.raises(RestoreRefused, match="absolute path"):
        services.start_restore(point, {"mode": "folder", "folder": "relative"})


def test_the_embedded_default_gets_a_local_repository_and_a_demo_job(lab, capsys, settings):
    call_command("jobs", "local", "--connection", "Lab")
    call_command("jobs", "local", "--connection", "Lab")  # idempotent
    out = capsys.readouterr().out
    assert out.count("passphrase (shown once") == 1
    repository = Repository.objects.get(name="Local repository")
    assert repository.kind == "local" and repository.path == str(settings.VAR_DIR / "repository")
    job = BackupJob.objects.get(name="Lab demo")
    assert job.vms.count() == 3 and not job.schedule
    call_command("jobs", "run", "Lab demo")
    assert job.runs.get().state == JobRun.State.SUCCEEDED
    assert RestorePoint.objects.filter(repository=repository).count() == 3


def test_the_read_limit_is_frozen_in_the_run_and_reaches_the_engine(lab, repository):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    job = job_for(repository, [vm], throttle_mbps=8)
    run = execute_run(services.start_run(job, queue=False).pk)
    task = run.tasks.get()
    assert run.state == JobRun.State.SUCCEEDED, task.message
    assert run.config["throttle_mbps"] == 8
    stats = task.result["stats"]
    assert stats["throttle_mbps"] == 8 and stats["throttled_seconds"] > 0  # the engine's own account of its waits
    logs = [e.data["message"] for e in task.events.filter(type="log")]
    assert [m for m in logs if "limited to 8 MB/s" in m] == ["Reads limited to 8 MB/s for this VM."]

    job.throttle_mbps = None
    job.save()
    run.refresh_from_db()
    assert run.config["throttle_mbps"] == 8  # editing the job never rewrites a past run
    unlimited = execute_run(services.start_run(job, queue=False).pk)
    assert unlimited.config["throttle_mbps"] is None
    assert "throttle_mbps" not in unlimited.tasks.get().result["stats"]

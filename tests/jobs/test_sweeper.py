"""The sweeper in the lab: a crashed task's snapshot and hot-added disk are released and the task fails as
interrupted; a task within its lifetime is never touched; orphan `vafleet-task-<id>` snapshots and
orphan hot-added snapshot disks are removed; a second round finds nothing left."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from appliances.models import Appliance
from inventory.connectors.lab import LabConnector
from inventory.models import VirtualMachine
from jobs import services, sweeper
from jobs.models import JobRun, Task
from jobs.runs import execute_run
from tests.jobs.conftest import job_for

LONG_AGO = timedelta(seconds=settings.Q_CLUSTER["timeout"] + 600)


@pytest.fixture
def connector(lab):
    return LabConnector(root=lab.options["root"])


@pytest.fixture
def appliance(lab):
    return Appliance.objects.get(name="local-appliance")


def shared_vms(lab, connector) -> list[VirtualMachine]:
    """VMs whose every disk is on a datastore all lab hosts mount (hot-add works from the local appliance)."""
    data = connector.state.read()
    shared = {m for m, ds in data["datastores"].items() if len(ds["hosts"]) > 1}
    return [vm for vm in VirtualMachine.objects.filter(connection=lab).order_by("name")
            if all(d["datastore"] in shared for d in data["vms"][vm.moref]["disks"])]


def started_task(job, vm, appliance, *, started, run_started=None) -> Task:
    """A run's task as the dispatcher leaves it: running on the appliance since `started`."""
    run = services.start_run(job, queue=False)
    JobRun.objects.filter(pk=run.pk).update(state=JobRun.State.RUNNING, started=run_started or started)
    task = run.tasks.get(vm=vm)
    run.tasks.exclude(pk=task.pk).delete()
    task.state, task.started, task.appliance, task.appliance_name, task.mode = (
        Task.State.RUNNING, started, appliance, appliance.name, Task.Mode.HOTADD)
    task.save()
    return task


def hold(task, connector, appliance, *, attach: bool = True) -> tuple[str, int | None]:
    """Do what run_backup does before the engine starts: snapshot, hot-add, recorded on the task."""
    snapshot = connector.create_snapshot(task.vm.moref, f"vafleet-task-{task.pk}")
    key = connector.attach_disk(appliance.vm_moref, snapshot.disks[0]["file_name"]) if attach else None
    task.snapshot, task.attached = snapshot.moref, [key] if key else []
    task.save(update_fields=["snapshot", "attached"])
    return snapshot.moref, key


def attached_keys(connector, appliance) -> set[int]:
    return {d["key"] for d in connector.devices(appliance.vm_moref)}


def test_a_crashed_task_is_released_and_failed_and_a_live_one_is_untouched(lab, repository, connector, appliance):
    crashed_vm, live_vm = shared_vms(lab, connector)[:2]
    job = job_for(repository, [crashed_vm, live_vm])
    crashed = started_task(job, crashed_vm, appliance, started=timezone.now() - LONG_AGO)
    live = started_task(job, live_vm, appliance, started=timezone.now() - timedelta(minutes=5))
    crashed_snapshot, crashed_key = hold(crashed, connector, appliance)
    live_snapshot, live_key = hold(live, connector, appliance)
    assert {crashed_key, live_key} <= attached_keys(connector, appliance)

    report = sweeper.sweep()

    assert report.problems == []
    assert (report.interrupted, report.released) == (1, 1)
    crashed.refresh_from_db()
    assert crashed.state == Task.State.FAILED and crashed.error_code == "interrupted"
    assert crashed.message.startswith("Interrupted:") and crashed.finished is not None
    assert (crashed.snapshot, crashed.attached) == ("", [])
    assert crashed.events.filter(type="log", data__message__startswith="Interrupted:").count() == 1
    assert connector.list_snapshots(crashed_vm.moref) == []
    assert crashed_key not in attached_keys(connector, appliance)
    run = JobRun.objects.get(pk=crashed.run_id)
    assert run.state == JobRun.State.FAILED and "Interrupted" in run.message  # its worker is gone too

    live.refresh_from_db()
    assert live.state == Task.State.RUNNING and (live.snapshot, live.attached) == (live_snapshot, [live_key])
    assert [s.moref for s in connector.list_snapshots(live_vm.moref)] == [live_snapshot]
    assert live_key in attached_keys(connector, appliance)
    assert JobRun.objects.get(pk=live.run_id).state == JobRun.State.RUNNING

    again = sweeper.sweep()  # idempotent: nothing left to do
    assert again.as_dict() == sweeper.Report().as_dict()
    live.refresh_from_db()
    assert live.state == Task.State.RUNNING and live.snapshot == live_snapshot


def test_a_running_task_of_an_ended_run_is_swept_and_an_ended_task_still_holding_is_released(
        lab, repository, connector, appliance):
    vm, other_vm = shared_vms(lab, connector)[:2]
    job = job_for(repository, [vm, other_vm])
    task = started_task(job, vm, appliance, started=timezone.now() - timedelta(minutes=1))
    JobRun.objects.filter(pk=task.run_id).update(state=JobRun.State.PARTIAL, finished=timezone.now())
    hold(task, connector, appliance)
    ended = started_task(job, other_vm, appliance, started=timezone.now() - timedelta(minutes=1))
    hold(ended, connector, appliance, attach=False)
    Task.objects.filter(pk=ended.pk).update(state=Task.State.SUCCEEDED, finished=timezone.now())
    JobRun.objects.filter(pk=ended.run_id).update(state=JobRun.State.SUCCEEDED, finished=timezone.now())

    report = sweeper.sweep()

    assert report.problems == [] and report.interrupted == 1 and report.released == 2
    task.refresh_from_db()
    assert task.state == Task.State.FAILED and (task.snapshot, task.attached) == ("", [])
    ended.refresh_from_db()
    assert ended.state == Task.State.SUCCEEDED and ended.snapshot == ""  # released, its outcome kept
    assert connector.list_snapshots(vm.moref) == [] and connector.list_snapshots(other_vm.moref) == []
    assert attached_keys(connector, appliance) == set()


def test_orphan_task_snapshots_are_removed_but_not_those_of_running_tasks(lab, repository, connector, appliance):
    vms = shared_vms(lab, connector)
    failed_vm, job_vm, live_vm = vms[0], vms[1], vms[2]
    job = job_for(repository, [failed_vm, job_vm, live_vm])
    assert not Task.objects.filter(pk=999).exists()
    # A VM whose last backup failed, with a snapshot its task never recorded (taken just before a crash).
    failed = started_task(job, failed_vm, appliance, started=timezone.now() - timedelta(minutes=30))
    Task.objects.filter(pk=failed.pk).update(state=Task.State.FAILED, finished=timezone.now())
    orphan = connector.create_snapshot(failed_vm.moref, "vafleet-task-999")
    mine = connector.create_snapshot(failed_vm.moref, "before upgrade")  # not ours: stays
    # A VM no task touched lately: only the daily full look finds its orphan.
    quiet_orphan = connector.create_snapshot(job_vm.moref, "vafleet-task-998")
    # A running task's snapshot is never an orphan.
    live = started_task(job, live_vm, appliance, started=timezone.now())
    live_snapshot, _ = hold(live, connector, appliance, attach=False)
    Task.objects.create(run=live.run, vm=live_vm, vm_name=live_vm.name, connection=lab, repository=repository,
                        state=Task.State.FAILED)  # makes live_vm a suspect too

    report = sweeper.sweep()
    assert report.orphan_snapshots == 1 and report.problems == []
    assert [s.name for s in connector.list_snapshots(failed_vm.moref)] == ["before upgrade"]
    assert orphan.moref not in {s.moref for s in connector.list_snapshots(failed_vm.moref)}
    assert mine.moref in {s.moref for s in connector.list_snapshots(failed_vm.moref)}
    assert [s.moref for s in connector.list_snapshots(job_vm.moref)] == [quiet_orphan.moref]
    assert [s.moref for s in connector.list_snapshots(live_vm.moref)] == [live_snapshot]

    full = sweeper.sweep(full=True)
    assert full.orphan_snapshots == 1
    assert connector.list_snapshots(job_vm.moref) == []
    assert [s.moref for s in connector.list_snapshots(live_vm.moref)] == [live_snapshot]
    live.refresh_from_db()
    assert live.state == Task.State.RUNNING


def test_an_unrecorded_hot_added_snapshot_disk_is_detached_when_the_appliance_is_idle(lab, repository, connector,
                                                                                      appliance):
    vm = shared_vms(lab, connector)[0]
    snapshot = connector.create_snapshot(vm.moref, "vafleet-task-997")
    key = connector.attach_disk(appliance.vm_moref, snapshot.disks[0]["file_name"])
    job = job_for(repository, [vm])
    live = started_task(job, vm, appliance, started=timezone.now())

    assert sweeper.sweep().orphan_disks == 0  # a task runs on the appliance: hands off
    assert key in attached_keys(connector, appliance)

    Task.objects.filter(pk=live.pk).update(state=Task.State.FAILED, finished=timezone.now())
    report = sweeper.sweep()
    assert report.orphan_disks == 1 and report.orphan_snapshots == 1 and report.problems == []
    assert attached_keys(connector, appliance) == set()
    assert connector.list_snapshots(vm.moref) == []


def test_the_round_is_scheduled_every_five_minutes_and_skips_while_one_runs(lab):
    import fcntl

    from django_q.models import Schedule

    from appliances import var_dir
    from jobs.tasks import sweep_task

    schedule = Schedule.objects.get(name="job sweeper")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("jobs.tasks.sweep_task", Schedule.MINUTES, 5)

    result = sweep_task()
    assert result["interrupted_tasks"] == 0 and result["full"] is True
    assert sweep_task()["full"] is False  # the full look is daily
    with open(var_dir() / "job-sweeper.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert sweep_task() == {"skipped_round": True, "reason": "The previous sweep is still running."}
        fcntl.flock(lock, fcntl.LOCK_UN)


def drop_from_broker(q2_task: str) -> bool:
    """Remove one q2 task from django-q2's broker (ORM or Redis), as a crashed worker or a flushed broker does.

    Only that task is touched: test workers running in parallel may share one Redis queue."""
    from django_q.brokers import get_broker
    from django_q.brokers.redis_broker import Redis
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    broker = get_broker()
    if isinstance(broker, Redis):
        for payload in broker.connection.lrange(broker.list_key, 0, -1):
            if SignedPackage.loads(payload)["id"] == q2_task:
                return bool(broker.connection.lrem(broker.list_key, 1, payload))
        return False
    for row in OrmQ.objects.filter(key=broker.list_key):
        if row.task_id() == q2_task:
            row.delete()
            return True
    return False


@pytest.fixture
def queued_runs(lab):
    """Runs queued for real (their q2 task in the broker); what is left of their tasks is dropped at the end."""
    yield
    for config in JobRun.objects.values_list("config", flat=True):
        if config.get("q2_task"):
            drop_from_broker(config["q2_task"])
    for spec in Task.objects.filter(kind=Task.Kind.RESTORE).values_list("spec", flat=True):
        if spec.get("q2_task"):
            drop_from_broker(spec["q2_task"])


def test_a_queued_run_whose_task_was_lost_is_queued_again_once_then_failed(lab, repository, queued_runs):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    run = services.start_run(job_for(repository, [vm]))
    run.refresh_from_db()
    first = run.config["q2_task"]
    aged = timezone.now() - sweeper.QUEUED_GRACE - timedelta(minutes=1)
    JobRun.objects.filter(pk=run.pk).update(created=aged)

    report = sweeper.sweep()  # its task still waits in the broker: left alone
    assert (report.requeued_runs, report.lost_runs, report.problems) == (0, 0, [])
    assert JobRun.objects.get(pk=run.pk).state == JobRun.State.QUEUED

    young = services.start_run(job_for(repository, [vm], name="hourly"))
    young.refresh_from_db()
    assert drop_from_broker(young.config["q2_task"])  # lost too, but within the grace period
    assert drop_from_broker(first)

    report = sweeper.sweep()
    assert (report.requeued_runs, report.lost_runs, report.problems) == (1, 0, [])
    run.refresh_from_db()
    second = run.config["q2_task"]
    assert run.state == JobRun.State.QUEUED and second and second != first
    assert run.config["q2_requeued"] == [first] and run.config["name"] == "nightly"  # the frozen settings stay
    assert run.message.startswith("Queued again at ") and "task was lost" in run.message
    task = run.tasks.get()
    assert task.events.filter(type="log", data__message__startswith="Queued again at ").count() == 1
    young.refresh_from_db()
    assert young.state == JobRun.State.QUEUED and "q2_requeued" not in young.config

    assert sweeper.sweep().requeued_runs == 0  # its new task waits in the broker

    assert drop_from_broker(second)
    report = sweeper.sweep()
    assert (report.requeued_runs, report.lost_runs, report.problems) == (0, 1, [])
    run.refresh_from_db()
    assert run.state == JobRun.State.FAILED and run.finished is not None
    assert "no worker started this run, even after the sweeper queued it again" in run.message
    assert "qcluster" in run.message
    task.refresh_from_db()
    assert task.state == Task.State.FAILED and task.error_code == "lost" and task.finished is not None

    again = sweeper.sweep()
    assert (again.requeued_runs, again.lost_runs) == (0, 0)


def test_a_queued_restore_whose_task_was_lost_is_queued_again_once_then_failed(lab, repository, queued_runs,
                                                                               tmp_path):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    run = execute_run(services.start_run(job_for(repository, [vm]), queue=False).pk)
    point = run.tasks.get().restore_point
    restore = services.start_restore(point, {"mode": "folder", "folder": str(tmp_path / "images")})
    restore.refresh_from_db()
    first = restore.spec["q2_task"]
    assert restore.state == Task.State.QUEUED and restore.spec["folder"] == str(tmp_path / "images")
    aged = timezone.now() - sweeper.QUEUED_GRACE - timedelta(minutes=1)
    Task.objects.filter(pk=restore.pk).update(created=aged)

    report = sweeper.sweep()  # its task still waits in the broker: left alone
    assert (report.requeued_restores, report.lost_restores, report.problems) == (0, 0, [])

    assert drop_from_broker(first)
    report = sweeper.sweep()
    assert (report.requeued_restores, report.lost_restores, report.problems) == (1, 0, [])
    restore.refresh_from_db()
    second = restore.spec["q2_task"]
    assert restore.state == Task.State.QUEUED and second and second != first
    assert restore.spec["q2_requeued"] == [first] and restore.spec["mode"] == "folder"  # the destination stays
    assert restore.events.filter(type="log", data__message__startswith="Queued again at ").count() == 1
    assert sweeper.sweep().requeued_restores == 0  # its new task waits in the broker

    assert drop_from_broker(second)
    report = sweeper.sweep()
    assert (report.requeued_restores, report.lost_restores, report.problems) == (0, 1, [])
    restore.refresh_from_db()
    assert restore.state == Task.State.FAILED and restore.error_code == "lost" and restore.finished is not None
    assert "no worker started this restore, even after the sweeper queued it again" in restore.message
    assert not (tmp_path / "images").exists()  # nothing was written
    assert sweeper.sweep().lost_restores == 0

"""Retention after each run, in the lab through the built-in local appliance: the engine's prune on the
repository, the catalog following it, and a failed prune that leaves the run's backups standing."""

from __future__ import annotations

import pytest

from appliances.actions import engine_ready_transport
from appliances.models import Appliance
from inventory.models import VirtualMachine
from jobs import retention, services
from jobs.backup import vm_key
from jobs.engine import EngineFailed, run_engine_operation
from jobs.models import JobRun, RestorePoint
from jobs.runs import execute_run
from jobs.targets import target_spec
from tests.jobs.conftest import job_for


def repository_points(repository) -> dict[str, list[str]]:
    """Restore point ids per VM as the repository itself lists them (the engine's `list`)."""
    appliance = Appliance.objects.get(name="local-appliance")
    spec = {"operation": "list", "target": target_spec(repository), "passphrase": repository.passphrase}
    with engine_ready_transport(appliance) as transport:
        result, _ = run_engine_operation(transport, appliance, spec, timeout=60)
    found: dict[str, list[str]] = {}
    for point in result["restore_points"]:
        found.setdefault(point["vm"], []).append(point["id"])
    return found


def test_keep_last_one_leaves_one_restore_point_per_vm_in_the_repository_and_the_catalog(lab, repository):
    vms = list(VirtualMachine.objects.filter(connection=lab).order_by("name")[:2])
    job = job_for(repository, vms, keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)

    runs = [execute_run(services.start_run(job, queue=False).pk) for _ in range(3)]

    for run in runs:
        assert run.state == JobRun.State.SUCCEEDED, [t.message for t in run.tasks.all()]
        assert run.message.startswith("2 of 2 VM(s) backed up. Retention (last 1, daily 0, weekly 0, monthly 0)")
    assert "0 restore point(s) forgotten, 2 kept" in runs[0].message
    assert "2 restore point(s) forgotten, 2 kept" in runs[2].message
    assert JobRun.objects.get(pk=runs[2].pk).message == runs[2].message  # stored, not only on the instance

    newest = {t.vm_name: t.restore_point.rp_id for t in runs[2].tasks.select_related("restore_point")}
    in_repository = repository_points(repository)
    assert in_repository == {vm_key(vm): [newest[vm.name]] for vm in vms}
    catalog = sorted(RestorePoint.objects.filter(repository=repository).values_list("rp_id", flat=True))
    assert catalog == sorted(newest.values())
    # The tasks of the older runs keep their rows; their restore point is gone from the catalog.
    assert all(t.restore_point_id is None for t in runs[0].tasks.all())


def test_a_failed_prune_never_fails_the_runs_backups(lab, repository, monkeypatch):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    job = job_for(repository, [vm], keep_last=1)

    def broken(*args, **kwargs):
        raise EngineFailed("Restore point 2024 of VM x has a damaged manifest.", "manifest_corrupt")

    monkeypatch.setattr(retention, "prune_repository", broken)
    run = execute_run(services.start_run(job, queue=False).pk)
    assert run.state == JobRun.State.SUCCEEDED
    assert run.message == ("1 of 1 VM(s) backed up. Retention failed: Restore point 2024 of VM x has a damaged "
                           "manifest. The backups of this run are not affected.")
    assert RestorePoint.objects.filter(repository=repository).count() == 1


def test_no_prune_after_a_run_without_a_new_restore_point(lab, repository, monkeypatch):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    Appliance.objects.get(name="local-appliance").served_hosts.remove(vm.host)
    job = job_for(repository, [vm], keep_last=1)
    called = []
    monkeypatch.setattr(retention, "prune_repository", lambda *a, **k: called.append(a))
    run = execute_run(services.start_run(job, queue=False).pk)
    assert run.state == JobRun.State.FAILED
    assert run.message.endswith("Retention not applied: the run made no new restore point.")
    assert called == []


@pytest.mark.django_db
def test_a_shared_repository_gets_the_most_generous_retention_of_its_jobs():
    from jobs.models import BackupJob, Repository

    repo = Repository.objects.create(name="shared", kind="sftp", host="backup.example", path="/b", passphrase="p")
    mine = BackupJob.objects.create(name="a", repository=repo, keep_last=1, keep_daily=0, keep_weekly=0,
                                    keep_monthly=0)
    BackupJob.objects.create(name="b", repository=repo, keep_last=3, keep_daily=2, keep_weekly=0, keep_monthly=0)
    other_repo = Repository.objects.create(name="other", kind="sftp", host="b2", path="/c", passphrase="p")
    BackupJob.objects.create(name="c", repository=other_repo, keep_last=30, keep_monthly=24)
    policy = {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    assert retention.repository_policy(repo, policy, mine.pk) == {"keep_last": 3, "keep_daily": 2, "keep_weekly": 0,
                                                                  "keep_monthly": 0}

"""Backup job schedules: a q2 cron Schedule follows the job; a scheduled run never overlaps another run."""

from __future__ import annotations

from datetime import datetime

import pytest
from croniter import croniter
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_q.models import Schedule

from inventory.models import VirtualMachine
from jobs import schedules
from jobs.models import BackupJob, JobRun, Repository, Task
from jobs.tasks import scheduled_run
from tests.api import fixtures as api_fixtures

# Shared fixtures, bound here under their own names so pytest finds them.
connection, synced = api_fixtures.connection, api_fixtures.synced
fast_password_hashing = api_fixtures.fast_password_hashing


@pytest.fixture
def repository(db):
    return Repository.objects.create(name="repo", kind="local", path="/srv/repo", passphrase="Repo-Passphrase-1")


def make_job(repository, vms=(), **fields) -> BackupJob:
    job = BackupJob.objects.create(name=fields.pop("name", "nightly"), repository=repository, **fields)
    job.vms.set(vms)
    return job


def schedule_of(job) -> Schedule | None:
    return Schedule.objects.filter(name=f"backup job {job.pk}").first()


def test_a_scheduled_job_gets_a_cron_schedule_that_follows_it(repository):
    job = make_job(repository, schedule="30 22 * * *")
    schedule = schedule_of(job)
    assert schedule is not None
    assert (schedule.schedule_type, schedule.cron, schedule.func) == (Schedule.CRON, "30 22 * * *",
                                                                       "jobs.tasks.scheduled_run")
    assert schedule.args == repr(job.pk) and schedule.repeats == -1
    expected = croniter("30 22 * * *", timezone.localtime()).get_next(datetime)
    assert schedule.next_run == expected  # the next cron time, not "now"
    assert schedule.next_run > timezone.now()

    job.schedule = "0 3 * * 1"
    job.save()
    schedule = schedule_of(job)
    assert schedule.cron == "0 3 * * 1"
    assert timezone.localtime(schedule.next_run).weekday() == 0 and timezone.localtime(schedule.next_run).hour == 3
    assert Schedule.objects.filter(func="jobs.tasks.scheduled_run").count() == 1

    next_run = schedule.next_run
    job.keep_last = 3
    job.save()  # an unrelated change keeps the schedule as it is
    assert schedule_of(job).next_run == next_run


def test_disabling_clearing_or_deleting_the_job_removes_its_schedule(repository):
    job = make_job(repository, schedule="*/15 * * * *")
    other = make_job(repository, name="weekly", schedule="0 1 * * 0")
    assert schedule_of(job) and schedule_of(other)

    job.enabled = False
    job.save()
    assert schedule_of(job) is None
    job.enabled = True
    job.save()
    assert schedule_of(job).cron == "*/15 * * * *"

    job.schedule = ""
    job.save()
    assert schedule_of(job) is None

    other_pk = other.pk
    other.delete()
    assert not Schedule.objects.filter(name=f"backup job {other_pk}").exists()
    assert not Schedule.objects.filter(func="jobs.tasks.scheduled_run").exists()


def test_a_job_without_a_schedule_has_none_and_a_bad_cron_is_refused(repository):
    job = make_job(repository)
    assert schedule_of(job) is None
    with pytest.raises(ValidationError, match="not a cron expression"):
        schedules.validate_cron("every night")
    schedules.validate_cron("30 22 * * *")
    job.schedule = "61 * * * *"
    job.save()  # saving never fails on a bad expression: the job is just not scheduled
    assert schedule_of(job) is None


def test_sync_all_removes_schedules_of_jobs_that_are_gone(repository):
    job = make_job(repository, schedule="0 2 * * *")
    Schedule.objects.create(name="backup job 99999", func="jobs.tasks.scheduled_run", args="99999",
                            schedule_type=Schedule.CRON, cron="0 2 * * *")
    Schedule.objects.filter(name=f"backup job {job.pk}").delete()
    assert schedules.sync_all() == {"scheduled": 1, "removed": 1}
    assert schedule_of(job).cron == "0 2 * * *"
    assert not Schedule.objects.filter(name="backup job 99999").exists()


def test_scheduled_run_starts_a_run_and_refuses_an_overlap(synced, repository):
    vms = list(VirtualMachine.objects.filter(connection=synced).order_by("name")[:2])
    job = make_job(repository, vms, schedule="0 * * * *")

    outcome = scheduled_run(job.pk)
    run = JobRun.objects.get(pk=outcome["run"])
    assert run.job == job and run.trigger == "schedule" and run.state == JobRun.State.QUEUED
    assert run.tasks.count() == 2 and run.created_by is None

    again = scheduled_run(job.pk)  # the first run is still queued
    assert "still queued" in again["skipped"] and again["run"] == run.pk
    assert job.runs.count() == 1

    JobRun.objects.filter(pk=run.pk).update(state=JobRun.State.RUNNING)
    assert "still running" in scheduled_run(job.pk)["skipped"]
    assert job.runs.count() == 1

    JobRun.objects.filter(pk=run.pk).update(state=JobRun.State.SUCCEEDED, finished=timezone.now())
    run.tasks.update(state=Task.State.SUCCEEDED)
    second = scheduled_run(job.pk)
    assert second.get("run") not in (None, run.pk)
    assert job.runs.count() == 2


def test_scheduled_run_skips_a_disabled_a_deleted_and_an_empty_job(synced, repository):
    vm = VirtualMachine.objects.filter(connection=synced).first()
    job = make_job(repository, [vm], schedule="0 * * * *", enabled=False)
    assert "disabled" in scheduled_run(job.pk)["skipped"]
    assert not job.runs.exists()

    empty = make_job(repository, name="empty", schedule="0 * * * *")
    assert "selects no VM" in scheduled_run(empty.pk)["skipped"]
    assert not empty.runs.exists()

    assert "no longer exists" in scheduled_run(987654)["skipped"]

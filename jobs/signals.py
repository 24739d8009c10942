"""Keep each backup job's q2 schedule in step with the job (connected in JobsConfig.ready)."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from jobs.models import BackupJob


def job_saved(sender, instance: BackupJob, raw: bool = False, **kwargs) -> None:
    if raw:  # loaddata: the fixture carries its own schedules, if any
        return
    from jobs.schedules import sync_schedule

    sync_schedule(instance)


def job_deleted(sender, instance: BackupJob, **kwargs) -> None:
    from jobs.schedules import remove_schedule

    remove_schedule(instance.pk)


def connect() -> None:
    post_save.connect(job_saved, sender=BackupJob, dispatch_uid="jobs.schedule.saved")
    post_delete.connect(job_deleted, sender=BackupJob, dispatch_uid="jobs.schedule.deleted")

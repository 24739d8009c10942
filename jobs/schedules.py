"""Backup job schedules: one django-q2 cron `Schedule` per enabled job that has a cron expression.

The job is the source of truth: saving it creates, updates or removes its schedule (signals in
jobs/signals.py), deleting it removes the schedule. Each schedule calls `jobs.tasks.scheduled_run`
with the job's id, which starts a run unless one of the job is still queued or running. Cron
expressions are read in the server's time zone (VAFLEET_TIME_ZONE).
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError

from jobs.models import BackupJob

log = logging.getLogger(__name__)

FUNC = "jobs.tasks.scheduled_run"


def schedule_name(job_id: int) -> str:
    return f"backup job {job_id}"


def cron_problem(expression: str) -> str:
    """Why a cron expression is unusable ('' when it is fine); the sentence a form can show."""
    from croniter import croniter

    expression = (expression or "").strip()
    if not expression:
        return ""
    try:
        croniter.expand(expression)
    except (ValueError, KeyError) as exc:
        return (f"{expression!r} is not a cron expression ({exc}): use five fields, minute hour day-of-month month "
                "day-of-week, e.g. '30 22 * * *' for every night at 22:30.")
    return ""


def validate_cron(expression: str) -> None:
    """A form/serializer validator for BackupJob.schedule."""
    problem = cron_problem(expression)
    if problem:
        raise ValidationError(problem, code="bad_cron")


def sync_schedule(job: BackupJob):
    """Make the job's q2 schedule match the job; returns the Schedule, or None when the job has none."""
    from django_q.models import Schedule

    name = schedule_name(job.pk)
    expression = (job.schedule or "").strip()
    if not job.enabled or not expression:
        remove_schedule(job.pk)
        return None
    problem = cron_problem(expression)
    if problem:
        log.warning("Backup job %s (#%s) is not scheduled: %s", job.name, job.pk, problem)
        remove_schedule(job.pk)
        return None
    schedule = Schedule.objects.filter(name=name).first()
    if schedule is None:
        schedule = Schedule(name=name)
    elif (schedule.schedule_type == Schedule.CRON and schedule.cron == expression and schedule.func == FUNC
          and schedule.args == repr(job.pk) and schedule.repeats == -1):
        return schedule  # unchanged: keep its next run
    schedule.func, schedule.args, schedule.kwargs = FUNC, repr(job.pk), None
    schedule.schedule_type, schedule.cron, schedule.repeats = Schedule.CRON, expression, -1
    schedule.next_run = schedule.calculate_next_run()  # the next cron time from now, never "at once"
    schedule.save()
    return schedule


def remove_schedule(job_id: int) -> int:
    from django_q.models import Schedule

    deleted, _ = Schedule.objects.filter(name=schedule_name(job_id)).delete()
    return deleted


def sync_all() -> dict:
    """Every job's schedule, and no schedule left for a job that is gone (e.g. after a restore of the database)."""
    from django_q.models import Schedule

    scheduled = sum(sync_schedule(job) is not None for job in BackupJob.objects.all())
    known = {schedule_name(pk) for pk in BackupJob.objects.values_list("pk", flat=True)}
    stale = Schedule.objects.filter(func=FUNC).exclude(name__in=known)
    removed, _ = stale.delete()
    return {"scheduled": scheduled, "removed": removed}

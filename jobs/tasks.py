"""Background work of the jobs app, run by django-q2 workers."""

from __future__ import annotations


def run_job_task(run_id: int) -> dict:
    from jobs.runs import execute_run

    run = execute_run(run_id)
    return {"state": run.state, "message": run.message}


def run_restore_task(task_id: int) -> dict:
    from jobs.runs import execute_restore

    task = execute_restore(task_id)
    return {"state": task.state, "message": task.message}


def scheduled_run(job_id: int) -> dict:
    """A job's cron schedule fired: start a run (trigger "schedule") unless the job is disabled, gone, or
    still has a run queued or running (one run of a job at a time)."""
    import logging

    from django.db import transaction

    from jobs.models import BackupJob, JobRun
    from jobs.services import NothingToDo, start_run

    log = logging.getLogger("jobs.schedules")
    with transaction.atomic():
        job = BackupJob.objects.select_for_update().select_related("repository").filter(pk=job_id).first()
        if job is None:
            log.info("Scheduled run skipped: backup job #%s no longer exists.", job_id)
            return {"skipped": "The job no longer exists."}
        if not job.enabled:
            log.info("Scheduled run of backup job %s skipped: the job is disabled.", job.name)
            return {"skipped": f"Job {job.name} is disabled."}
        busy = job.runs.filter(state__in=(JobRun.State.QUEUED, JobRun.State.RUNNING)).order_by("created").first()
        if busy is not None:
            log.warning("Scheduled run of backup job %s skipped: %s is still %s.", job.name, busy,
                        busy.get_state_display().lower())
            return {"skipped": f"{busy} is still {busy.get_state_display().lower()}.", "run": busy.pk}
        try:
            run = start_run(job, None, "schedule")
        except NothingToDo as exc:
            log.warning("Scheduled run of backup job %s skipped: %s", job.name, exc)
            return {"skipped": str(exc)}
    return {"run": run.pk}


def daily_summary_task() -> dict:
    """The daily summary e-mails (jobs migration 0004, every day at 07:00 server time)."""
    from jobs.notifications import daily_summary

    return {"sent": daily_summary()}


def sweep_task() -> dict:
    """The scheduled sweep of what crashed tasks left behind (jobs migration 0002)."""
    from jobs.sweeper import sweep_round

    return sweep_round()

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

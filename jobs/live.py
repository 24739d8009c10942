"""Live progress of runs and tasks: what changed is sent to channel groups once the change is committed.

Groups: `run_group(id)` hears its run's state and every event and state of its tasks, `task_group(id)`
one task's events and state, `RUNS` every run's state and totals. Messages are
`{"type": "jobs.message", "event": "task.event" | "task.state" | "run.state", "data": {...}}`.
Events carry their per-task `seq`: a browser that reconnects asks `jobs.consumers` for the events after
the last seq it saw. A failed publish never fails the work that called it.
"""

from __future__ import annotations

import logging
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import Count, Sum

log = logging.getLogger(__name__)

RUNS = "jobs.runs"
MESSAGE = "jobs.message"
RUN_TOTALS_EVERY = 1.0  # seconds between progress-driven run states of one run

_last_totals: dict[int, float] = {}
_totals_lock = threading.Lock()


def run_group(run_id: int) -> str:
    return f"jobs.run.{run_id}"


def task_group(task_id: int) -> str:
    return f"jobs.task.{task_id}"


def percent(done: int, total: int, succeeded: bool = False) -> int | None:
    if succeeded:
        return 100
    return min(100, 100 * done // total) if total else None


def task_state(task) -> dict:
    succeeded = task.state == task.State.SUCCEEDED
    return {"id": task.pk, "run": task.run_id, "kind": task.kind, "vm_name": task.vm_name, "state": task.state,
            "state_label": task.get_state_display(), "active": task.active, "phase": task.phase,
            "bytes_done": task.bytes_done, "bytes_total": task.bytes_total,
            "percent": percent(task.bytes_done, task.bytes_total, succeeded), "rate": task.rate, "eta": task.eta,
            "appliance_name": task.appliance_name, "mode": task.mode, "mode_label": task.get_mode_display(),
            "mode_reason": task.mode_reason, "message": task.message, "error_code": task.error_code,
            "cancel_requested": task.cancel_requested, "last_seq": task.last_seq}


def run_state(run) -> dict:
    from jobs.models import JobRun, Task

    counts = {state: 0 for state in Task.State.values}
    counts.update(run.tasks.order_by().values_list("state").annotate(n=Count("pk")))
    totals = run.tasks.order_by().aggregate(done=Sum("bytes_done"), total=Sum("bytes_total"))
    done, total = totals["done"] or 0, totals["total"] or 0
    return {"id": run.pk, "job": run.job_id, "job_name": run.job_name, "state": run.state,
            "state_label": run.get_state_display(), "active": run.state in (JobRun.State.QUEUED, JobRun.State.RUNNING),
            "counts": counts, "tasks": sum(counts.values()), "bytes_done": done, "bytes_total": total,
            "percent": percent(done, total), "message": run.message, "cancel_requested": run.cancel_requested}


def event_message(event_row, run_id: int | None, engine_time: float | None = None) -> dict:
    """A stored event as sent live and on replay; `engine_time` (epoch seconds) is known live only."""
    return {"task": event_row.task_id, "run": run_id, "seq": event_row.seq, "kind": event_row.type,
            "data": event_row.data, "time": event_row.time.isoformat() if event_row.time else None,
            "engine_time": engine_time if isinstance(engine_time, int | float) else None}


def publish_event(task, event_row, engine_time: float | None = None) -> None:
    """One stored event of `task`, to its group and its run's group."""
    data = event_message(event_row, task.run_id, engine_time)
    _after_commit(lambda: _send(_groups_of(task), "task.event", data))


def publish_task(task, *, with_run: bool = True) -> None:
    """The task's state (as on the object), then its run's counts and totals."""
    _after_commit(lambda: _send(_groups_of(task), "task.state", task_state(task)))
    if with_run and task.run_id:
        publish_run(task.run_id)


def publish_run(run) -> None:
    """The run's state and totals, read when the transaction commits (`run` is a JobRun or its id)."""
    _after_commit(lambda: _send_run(run))


def publish_run_totals(run_id: int) -> None:
    """The run's state after a progress save, at most once a second per run (the next one carries it)."""
    now = time.monotonic()
    with _totals_lock:
        if now - _last_totals.get(run_id, 0.0) < RUN_TOTALS_EVERY:
            return
        _last_totals[run_id] = now
    publish_run(run_id)


def _send_run(run) -> None:
    from jobs.models import JobRun

    try:
        run = JobRun.objects.get(pk=run if isinstance(run, int) else run.pk)
        data = run_state(run)
    except Exception:  # a live update is a convenience
        log.warning("Could not read run %s to publish it", run, exc_info=True)
        return
    if not data["active"]:
        with _totals_lock:
            _last_totals.pop(run.pk, None)
    _send([run_group(run.pk), RUNS], "run.state", data)


def _groups_of(task) -> list[str]:
    return [task_group(task.pk)] + ([run_group(task.run_id)] if task.run_id else [])


def _after_commit(send) -> None:
    try:
        transaction.on_commit(send)
    except Exception:
        log.warning("Could not schedule a live update", exc_info=True)


def _send(groups: list[str], kind: str, data: dict) -> None:
    message = {"type": MESSAGE, "event": kind, "data": data}

    async def send_all() -> None:
        layer = get_channel_layer()
        for group in groups:
            await layer.group_send(group, message)

    try:
        async_to_sync(send_all)()
    except Exception:  # a live update is a convenience
        log.warning("Could not publish %s", kind, exc_info=True)

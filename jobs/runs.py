"""Drive a job run: dispatch its tasks to appliances as slots free up, run each in a thread, finish the run.

One django-q2 task drives one run (its timeout is set above the longest run, see settings). A task
whose appliance was lost is dispatched once more to another appliance; cancelling a run stops the
engines of its running tasks and cancels the queued ones.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from django.db import close_old_connections, connection
from django.utils import timezone

from appliances.actions import LOST_CONTACT, SENTENCE_ERRORS
from appliances.models import Appliance
from inventory.connectors.base import ConnectorError
from jobs import live, notifications
from jobs.backup import Cancelled, run_backup
from jobs.dispatch import Load, NoAppliance, choose
from jobs.events import EventLog
from jobs.models import JobRun, Task
from jobs.retention import finish_with_retention

log = logging.getLogger(__name__)
ERRORS = (*SENTENCE_ERRORS, ConnectorError)
RETRIES = 1  # another appliance after a lost one
POLL = 0.5


def execute_run(run_id: int) -> JobRun:
    claimed = JobRun.objects.filter(pk=run_id, state=JobRun.State.QUEUED).update(
        state=JobRun.State.RUNNING, started=timezone.now())
    run = JobRun.objects.get(pk=run_id)
    if not claimed:
        return run
    live.publish_run(run)
    config = run.config
    pending = deque(run.tasks.filter(state=Task.State.QUEUED).select_related("vm", "vm__host", "repository",
                                                                             "connection"))
    attempts: dict[int, int] = {}
    running: dict = {}
    with ThreadPoolExecutor(max(1, int(config.get("max_parallel", 4)))) as pool:
        while pending or running:
            if _cancel_requested(run):
                for task in pending:
                    _finish(task, Task.State.CANCELLED, "Cancelled before it started.")
                pending.clear()
            _dispatch(run, pending, running, pool, config)
            if running:
                done, _ = wait(running, timeout=POLL, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    if future.result() != "retry":
                        continue
                    task.refresh_from_db()
                    if attempts.get(task.pk, 0) < RETRIES:
                        attempts[task.pk] = attempts.get(task.pk, 0) + 1
                        pending.append(task)
                    else:
                        _finish(task, Task.State.FAILED, "Lost contact with its appliance again; no appliance "
                                "could finish this backup.", "appliance_lost")
            elif pending:
                time.sleep(POLL)  # every slot is taken by other runs' tasks
    run = finish_with_retention(run, _finish_run)  # retention while the run still runs, then its end
    live.publish_run(run)
    return run


def _dispatch(run: JobRun, pending: deque, running: dict, pool, config: dict) -> None:
    limit = int(config.get("max_parallel", 4))
    load = Load.now()
    cancelled = set(Task.objects.filter(pk__in=[t.pk for t in pending], cancel_requested=True)
                    .values_list("pk", flat=True))
    for task in list(pending):
        if task.pk in cancelled:
            pending.remove(task)
            _finish(task, Task.State.CANCELLED, "Cancelled before it started.", "cancelled")
            continue
        if len(running) >= limit:
            return
        try:
            choice = choose(task, config.get("mode", "auto"), load)
        except NoAppliance as exc:
            pending.remove(task)
            _finish(task, Task.State.FAILED, str(exc), exc.code)
            continue
        if choice is None:
            continue
        pending.remove(task)
        task.appliance, task.appliance_name = choice.appliance, choice.appliance.name
        task.mode, task.mode_reason = choice.mode, choice.reason[:300]
        task.state, task.started, task.message, task.error_code = Task.State.RUNNING, timezone.now(), "", ""
        task.save(update_fields=["appliance", "appliance_name", "mode", "mode_reason", "state", "started",
                                 "message", "error_code"])
        live.publish_task(task)
        load.add(task)
        running[pool.submit(contextvars.copy_context().run, _task_thread, task.pk, config)] = task


def _task_thread(task_id: int, config: dict) -> str:
    try:
        return run_task(Task.objects.select_related("vm", "vm__host", "appliance", "repository", "connection", "run")
                        .get(pk=task_id), config)
    finally:
        close_old_connections()
        connection.close()


def run_task(task: Task, config: dict) -> str:
    """Run one backup task to its end; returns its state, or "retry" when its appliance was lost."""
    events = EventLog(task)
    events.log(task.mode_reason)
    try:
        point = run_backup(task, events, config, _cancel_check(task))
    except Cancelled as exc:
        return _finish(task, Task.State.CANCELLED, str(exc), exc.code, events)
    except LOST_CONTACT as exc:
        # The engine check records its own lost contact; a channel that failed to open after it did not.
        if task.appliance is not None and task.appliance.state != Appliance.State.UNREACHABLE:
            _appliance_lost(task)
        return _requeue(task, str(exc), events)
    except ERRORS as exc:
        if _appliance_lost(task):  # the engine's stream broke because the appliance went away
            return _requeue(task, str(exc), events)
        return _finish(task, Task.State.FAILED, str(exc), getattr(exc, "code", "error"), events)
    except Exception as exc:  # a broken connection (the appliance died), else a bug: logged with its traceback
        if _appliance_lost(task):
            return _requeue(task, f"{type(exc).__name__}: {exc}.", events)
        log.exception("Backup task %s failed", task.pk)
        return _finish(task, Task.State.FAILED, f"Unexpected error ({type(exc).__name__}: {exc}); see the server log.",
                       "internal_error", events)
    size = sum(d.get("size", 0) for d in point.disks) / 2**30
    message = (f"Restore point {point.rp_id} ({point.kind}, {size:.2f} GiB of disks, "
               f"{point.stored_bytes / 2**20:.1f} MiB new in the repository).")
    return _finish(task, Task.State.SUCCEEDED, message, events=events)


def _appliance_lost(task: Task) -> bool:
    """Is the task's appliance unreachable now? (A health check marks it so for the dispatcher.)"""
    from appliances.health import check_appliance

    return task.appliance is not None and not check_appliance(task.appliance).reachable


def _requeue(task: Task, reason: str, events: EventLog) -> str:
    """The appliance was lost: the task goes back to the queue, for another appliance."""
    events.log(f"Lost contact with appliance {task.appliance_name}: {reason} The VM goes to another appliance.",
               "warning")
    task.state, task.appliance, task.phase = Task.State.QUEUED, None, ""
    task.save(update_fields=["state", "appliance", "phase"])
    live.publish_task(task)
    return "retry"


def _finish(task: Task, state: str, message: str, code: str = "", events: EventLog | None = None) -> str:
    task.state, task.message, task.error_code, task.finished = state, message[:1000], code[:60], timezone.now()
    task.save(update_fields=["state", "message", "error_code", "finished"])
    live.publish_task(task)
    if events is not None:
        (events.log if state == Task.State.SUCCEEDED else lambda m: events.log(m, "error"))(message)
    return state


def _cancel_check(task: Task):
    """A cheap callable the engine loop polls: True once the task or its run is to be cancelled."""
    last = [0.0, False]

    def cancelled() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= 1.0:
            last[0] = now
            last[1] = Task.objects.filter(pk=task.pk, cancel_requested=True).exists() or (
                task.run_id is not None and JobRun.objects.filter(pk=task.run_id, cancel_requested=True).exists())
        return last[1]

    return cancelled


def _cancel_requested(run: JobRun) -> bool:
    return JobRun.objects.filter(pk=run.pk, cancel_requested=True).exists()


def _finish_run(run: JobRun, sentence: str = "") -> JobRun:
    """End the run: its state from its tasks, its message (with `sentence` after the count), then the e-mail."""
    states = list(run.tasks.values_list("state", flat=True))
    ok = states.count(Task.State.SUCCEEDED)
    if run.cancel_requested or JobRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        run.state = JobRun.State.CANCELLED
    elif ok == len(states):
        run.state = JobRun.State.SUCCEEDED
    else:
        run.state = JobRun.State.FAILED if ok == 0 else JobRun.State.PARTIAL
    run.message = f"{ok} of {len(states)} VM(s) backed up. {sentence}".strip()[:500]
    run.finished = timezone.now()
    run.save(update_fields=["state", "message", "finished"])
    notifications.run_finished(run)  # every end, the cancelled and the swept too; a mail failure is only logged
    return run


def execute_restore(task_id: int) -> Task:
    from jobs.restore import run_restore

    claimed = Task.objects.filter(pk=task_id, state=Task.State.QUEUED).update(state=Task.State.RUNNING,
                                                                            started=timezone.now())
    task = Task.objects.select_related("appliance", "restore_point", "restore_point__repository").get(pk=task_id)
    if not claimed:
        return task
    live.publish_task(task)
    events = EventLog(task)
    try:
        message = run_restore(task, events, _cancel_check(task))
    except Cancelled as exc:
        _finish(task, Task.State.CANCELLED, str(exc), exc.code, events)
    except ERRORS as exc:
        _finish(task, Task.State.FAILED, str(exc), getattr(exc, "code", "error"), events)
    except Exception as exc:
        log.exception("Restore task %s failed", task.pk)
        _finish(task, Task.State.FAILED, f"Unexpected error ({type(exc).__name__}: {exc}); see the server log.",
                "internal_error", events)
    else:
        _finish(task, Task.State.SUCCEEDED, message, events=events)
    return task

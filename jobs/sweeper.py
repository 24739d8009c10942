"""The sweeper: releases what crashed tasks left behind on the hypervisor, every few minutes (migration 0002).

A backup task records on its row what it holds while it runs: the snapshot of its VM (`snapshot`)
and the disks hot-added to its appliance (`attached`). When the worker that ran it dies (server
restart, out of memory, q2 timeout), the row stays `running` and the hypervisor keeps both. A round:

1. Dead tasks: a task still `running` whose worker is gone for sure is failed as interrupted and what
   it holds is released through its connection's connector (disks detached from the appliance VM,
   then the snapshot removed). Gone for sure means: the task, or its run, started longer ago than the
   q2 task timeout (`Q_CLUSTER["timeout"]`, which stops every worker task) plus a minute, or its run
   has ended. A task within its lifetime is never touched, whatever its age looks like.
2. Ended tasks that still hold something (a release that failed, e.g. the vCenter was briefly away)
   are released again.
3. Runs still `running` past the timeout are ended: their queued tasks fail as interrupted.
4. Orphan snapshots: snapshots named `vafleet-task-<id>` whose task is not running (or no longer
   exists) are removed, e.g. one taken just before a crash and never recorded. The VMs looked at are
   those of recent backup tasks that did not succeed or still record a snapshot, and once a day every
   VM a backup job selects.
5. Orphan hot-added disks (connectors that list an appliance's devices, such as the lab): a
   snapshot's disk still attached to an appliance that runs no task is detached.
6. Lost runs: a run still `queued` after a grace period whose django-q2 task (its id is kept in
   `config["q2_task"]`) is no longer in the broker (a worker that crashed before taking it, a flushed
   broker) is queued again once; lost a second time, it fails with a sentence. Queued restores
   (`spec["q2_task"]`) are treated the same way.
7. Run e-mails that could not reach the mail server are sent again (`jobs.notifications.retry_unsent`).

Every step is idempotent ("already removed" counts as released) and a failure is reported and
retried next round. `sweep_round()` is the django-q2 entry point; a round still running makes the
next one a no-op.
"""

from __future__ import annotations

import fcntl
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from inventory.connectors import connector_class, connector_for
from inventory.connectors.base import ConnectorError, NotFound
from jobs import live
from jobs.models import JobRun, Task

log = logging.getLogger(__name__)

SCHEDULE_NAME = "job sweeper"
SNAPSHOT_NAME = re.compile(r"^vafleet-task-(\d+)$")
ENDED_RUNS = (JobRun.State.SUCCEEDED, JobRun.State.PARTIAL, JobRun.State.FAILED, JobRun.State.CANCELLED)
INTERRUPTED = ("Interrupted: the worker that ran this task stopped (server restart, crash or time limit) before it "
               "finished, so no restore point was recorded.")
FULL_SCAN_EVERY = 24 * 3600  # seconds between looks at every VM a job selects
QUEUED_GRACE = timedelta(minutes=10)  # a queued run younger than this is never judged lost
RUN_TASK = "jobs.tasks.run_job_task"
RESTORE_TASK = "jobs.tasks.run_restore_task"


def lifetime() -> timedelta:
    """How long a worker task can possibly live: q2 stops it at its timeout; one minute of margin."""
    return timedelta(seconds=int(settings.Q_CLUSTER.get("timeout") or 86400) + 60)


def orphan_days() -> int:
    return int(getattr(settings, "VAFLEET_SWEEP_ORPHAN_DAYS", 7))


@dataclass
class Report:
    interrupted: int = 0
    released: int = 0  # tasks whose holdings are all released now
    runs_ended: int = 0
    orphan_snapshots: int = 0
    orphan_disks: int = 0
    requeued_runs: int = 0
    lost_runs: int = 0  # failed: lost after being queued again
    requeued_restores: int = 0
    lost_restores: int = 0
    run_mails_sent: int = 0  # run e-mails sent again after the mail server was away
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"interrupted_tasks": self.interrupted, "released_tasks": self.released,
                "ended_runs": self.runs_ended, "orphan_snapshots": self.orphan_snapshots,
                "orphan_disks": self.orphan_disks, "requeued_runs": self.requeued_runs,
                "lost_runs": self.lost_runs, "requeued_restores": self.requeued_restores,
                "lost_restores": self.lost_restores, "run_mails_sent": self.run_mails_sent, "problems": self.problems}


def dead_tasks():
    """Running tasks whose worker is gone for sure (see the module's docstring)."""
    cutoff = timezone.now() - lifetime()
    return Task.objects.filter(state=Task.State.RUNNING).filter(
        Q(started__lt=cutoff) | Q(started__isnull=True, created__lt=cutoff) | Q(run__started__lt=cutoff)
        | Q(run__state__in=ENDED_RUNS))


def _alive_running() -> Q:
    """Running tasks that are not dead: everything the sweeper must leave alone."""
    return Q(state=Task.State.RUNNING) & ~Q(pk__in=dead_tasks().values("pk"))


def release_held(task: Task, connector, report: Report) -> bool:
    """Detach the task's hot-added disks, then remove its snapshot; True once nothing is held."""
    appliance, vm = task.appliance, task.vm
    attached = list(task.attached or [])
    for key in list(attached):
        if appliance is None or not appliance.vm_moref:
            report.problems.append(f"{task}: disk {key} is still recorded as hot-added, but its appliance is gone "
                                   "from this server: detach it from the appliance VM by hand.")
            continue
        if _held_by_alive(appliance, key, task):
            attached.remove(key)  # the key was reused by a live task: this task's disk is gone already
            continue
        try:
            if hasattr(connector, "device") and vm is not None:
                device = connector.device(appliance.vm_moref, key)
                if device.get("vm") not in (None, vm.moref):
                    attached.remove(key)  # another disk now has this key: ours was detached already
                    continue
            connector.detach_disk(appliance.vm_moref, key)
        except NotFound:
            pass  # detached already
        except ConnectorError as exc:
            report.problems.append(f"{task}: could not detach disk {key} from {appliance.name}: {exc}")
            continue
        attached.remove(key)
    snapshot = task.snapshot
    if snapshot and not attached:  # a snapshot whose disk is still attached cannot be removed
        if vm is None:
            report.problems.append(f"{task}: snapshot {snapshot} is still recorded, but the VM is gone from the "
                                   "inventory: remove the snapshot by hand if the VM still exists.")
        else:
            try:
                connector.remove_snapshot(vm.moref, snapshot)
                snapshot = ""
            except NotFound:
                snapshot = ""  # removed already
            except ConnectorError as exc:
                report.problems.append(f"{task}: could not remove snapshot {snapshot} of {vm.name}: {exc}")
    Task.objects.filter(pk=task.pk).update(attached=attached, snapshot=snapshot)
    task.attached, task.snapshot = attached, snapshot
    return not attached and not snapshot


def _held_by_alive(appliance, key: int, task: Task) -> bool:
    return any(key in (other or []) for other in Task.objects.filter(_alive_running(), appliance=appliance)
               .exclude(pk=task.pk).values_list("attached", flat=True))


def _connection_groups(tasks) -> dict:
    groups: dict = {}
    for task in tasks:
        groups.setdefault(task.connection, []).append(task)
    return groups


def _with_connector(connection, report: Report, what: str):
    try:
        return connector_for(connection)
    except ConnectorError as exc:
        report.problems.append(f"Cannot reach connection {connection} to {what}: {exc}")
        return None


def _release_all(tasks, report: Report) -> None:
    for connection, group in _connection_groups(tasks).items():
        if connection is None:
            report.problems.extend(f"{t}: its connection is gone from this server; release its snapshot and disks "
                                   "by hand." for t in group)
            continue
        connector = _with_connector(connection, report, "release what crashed tasks hold")
        if connector is None:
            continue
        try:
            for task in group:
                try:
                    report.released += release_held(task, connector, report)
                except ConnectorError as exc:  # e.g. the session dropped: the next round retries
                    report.problems.append(f"{task}: {exc}")
        finally:
            connector.close()


def sweep_dead_tasks(report: Report) -> list[Task]:
    from jobs.events import EventLog

    interrupted = []
    for task in dead_tasks().select_related("vm", "appliance", "connection", "run"):
        failed = Task.objects.filter(pk=task.pk, state=Task.State.RUNNING).update(
            state=Task.State.FAILED, message=INTERRUPTED, error_code="interrupted", finished=timezone.now())
        if not failed:
            continue  # it ended meanwhile
        task.state, task.message, task.error_code = Task.State.FAILED, INTERRUPTED, "interrupted"
        live.publish_task(task)
        EventLog(task).log(INTERRUPTED, "error")
        interrupted.append(task)
        report.interrupted += 1
        log.warning("%s was interrupted; releasing what it held.", task)
    _release_all([t for t in interrupted if t.snapshot or t.attached], report)
    return interrupted


def sweep_ended_holders(report: Report, tried=()) -> None:
    """Tasks that ended but still record a snapshot or disks (their release failed): try again."""
    held = (Task.objects.exclude(state=Task.State.RUNNING).filter(~Q(snapshot="") | ~Q(attached=[]))
            .exclude(pk__in=[t.pk for t in tried]).select_related("vm", "appliance", "connection"))
    _release_all(list(held), report)


def _end_run(run: JobRun, code: str, task_message: str, run_sentence: str) -> JobRun:
    """Fail the run's queued tasks, end the run, add `run_sentence` to its message, push both live."""
    from jobs.runs import _finish_run

    run.tasks.filter(state=Task.State.QUEUED).update(
        state=Task.State.FAILED, error_code=code, finished=timezone.now(), message=task_message)
    run = _finish_run(run, run_sentence)
    for task in run.tasks.filter(error_code=code):
        live.publish_task(task, with_run=False)
    live.publish_run(run)
    return run


def sweep_stuck_runs(report: Report) -> None:
    cutoff = timezone.now() - lifetime()
    for run in JobRun.objects.filter(state=JobRun.State.RUNNING, started__lt=cutoff):
        if run.tasks.filter(state=Task.State.RUNNING).exists():
            continue  # a dead task not swept (e.g. it ended meanwhile): the next round
        _end_run(run, "interrupted", "Interrupted: the run's worker stopped before this VM's turn.",
                 "Interrupted: the run's worker stopped before the run finished.")
        report.runs_ended += 1


@dataclass
class Waiting:
    """What django-q2's broker still holds: q2 task ids, and the run and restore task ids they carry."""

    ids: set[str] = field(default_factory=set)
    runs: set[int] = field(default_factory=set)
    restores: set[int] = field(default_factory=set)


def queued_in_broker() -> Waiting | None:
    """What still waits in django-q2's broker, or was taken by a cluster and is not finished; None when the
    broker cannot tell (a Redis cluster holds tasks it took but has not started: ids unseen)."""
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.brokers.redis_broker import Redis
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage
    from django_q.status import Stat

    broker = get_broker()
    if isinstance(broker, ORM):  # a taken task keeps its row, locked, until it finishes
        payloads = list(OrmQ.objects.filter(key=broker.list_key).values_list("payload", flat=True))
    elif isinstance(broker, Redis):  # a taken task leaves the list at once
        if any(getattr(stat, "task_q_size", 0) for stat in Stat.get_all(broker)):
            return None
        payloads = broker.connection.lrange(broker.list_key, 0, -1)
    else:
        return None
    waiting = Waiting()
    for payload in payloads:
        try:
            package = SignedPackage.loads(payload)
        except Exception:  # noqa: BLE001 - another installation's or a damaged package: not ours
            continue
        waiting.ids.add(package.get("id"))
        args = package.get("args") or ()
        if len(args) == 1 and package.get("func") in (RUN_TASK, RESTORE_TASK):
            (waiting.runs if package["func"] == RUN_TASK else waiting.restores).add(args[0])
    return waiting


def _lost_sentence(q2_task: str, what: str = "run") -> str:
    from django_q.models import Failure

    failure = Failure.objects.filter(id=q2_task or "").first()
    if failure is not None:
        return f"its background task failed before it started the {what} ({str(failure.result)[:120]})"
    return "its background task was lost before a worker started it (a worker stopped, or the task queue was emptied)"


def sweep_lost_runs(report: Report) -> None:
    """Queued runs whose q2 task is gone: queued again once, failed the second time."""
    from jobs.events import EventLog
    from jobs.services import enqueue_run

    old = list(JobRun.objects.filter(state=JobRun.State.QUEUED, created__lt=timezone.now() - QUEUED_GRACE))
    waiting = _waiting(old, report, "runs")
    if waiting is None:
        return
    for run in old:
        config = run.config or {}
        if config.get("q2_task") in waiting.ids or run.pk in waiting.runs:
            continue
        why = _lost_sentence(config.get("q2_task", ""))
        if config.get("q2_requeued"):
            if not JobRun.objects.filter(pk=run.pk, state=JobRun.State.QUEUED).update(
                    state=JobRun.State.RUNNING, started=timezone.now()):
                continue  # a worker took it meanwhile
            message = _lost_twice("run", why, "start the job again")
            run = _end_run(run, "lost", message, message)
            report.lost_runs += 1
            log.warning("%s: %s", run, message)
            continue
        message = f"Queued again at {timezone.now():%Y-%m-%d %H:%M} UTC by the sweeper: {why}."
        config = {**config, "q2_requeued": [config.get("q2_task", "")]}
        if not JobRun.objects.filter(pk=run.pk, state=JobRun.State.QUEUED).update(config=config,
                                                                                  message=message[:500]):
            continue
        run.config = config
        for task in run.tasks.filter(state=Task.State.QUEUED):
            EventLog(task).log(message, "warning")
        report.requeued_runs += _queue_again(run, enqueue_run, message, report)


def _lost_twice(what: str, why: str, then: str) -> str:
    return (f"Failed: no worker started this {what}, even after the sweeper queued it again ({why}). Check that "
            f"the background workers (qcluster) are running, then {then}.")


def _queue_again(item, enqueue, message: str, report: Report) -> bool:
    """Hand a lost run or restore to the broker again; False (and a problem reported) when that fails."""
    try:
        enqueue(item)
    except Exception as exc:  # noqa: BLE001 - the next round finds it lost again and fails it with a sentence
        report.problems.append(f"{item}: could not queue it again: {exc}")
        return False
    log.warning("%s: %s", item, message)
    return True


def _waiting(old: list, report: Report, what: str) -> Waiting | None:
    """The broker's view when there is something old to judge; None (and a problem reported) otherwise."""
    if not old:
        return None
    try:
        return queued_in_broker()
    except Exception as exc:  # noqa: BLE001 - a broker that does not answer: the next round retries
        report.problems.append(f"Cannot look into the task queue for {what} whose task was lost: {exc}")
        return None


def sweep_lost_restores(report: Report) -> None:
    """Queued restores whose q2 task is gone: queued again once, failed the second time."""
    from jobs.events import EventLog
    from jobs.runs import _finish
    from jobs.services import enqueue_restore

    old = list(Task.objects.filter(kind=Task.Kind.RESTORE, state=Task.State.QUEUED,
                                   created__lt=timezone.now() - QUEUED_GRACE))
    waiting = _waiting(old, report, "restores")
    if waiting is None:
        return
    for task in old:
        spec = task.spec or {}
        if spec.get("q2_task") in waiting.ids or task.pk in waiting.restores:
            continue
        why = _lost_sentence(spec.get("q2_task", ""), "restore")
        if spec.get("q2_requeued"):
            if not Task.objects.filter(pk=task.pk, state=Task.State.QUEUED).update(state=Task.State.RUNNING):
                continue  # a worker took it meanwhile
            message = _lost_twice("restore", why, "start the restore again")
            _finish(task, Task.State.FAILED, message, "lost", EventLog(task))
            report.lost_restores += 1
            log.warning("%s: %s", task, message)
            continue
        spec = {**spec, "q2_requeued": [spec.get("q2_task", "")]}
        if not Task.objects.filter(pk=task.pk, state=Task.State.QUEUED).update(spec=spec):
            continue
        task.spec = spec
        message = f"Queued again at {timezone.now():%Y-%m-%d %H:%M} UTC by the sweeper: {why}."
        EventLog(task).log(message, "warning")
        report.requeued_restores += _queue_again(task, enqueue_restore, message, report)


def retry_run_mails(report: Report) -> None:
    from jobs.notifications import retry_unsent

    try:
        report.run_mails_sent += retry_unsent()
    except Exception as exc:  # noqa: BLE001 - the next round tries again
        report.problems.append(f"Cannot send the run e-mails that wait for the mail server: {exc}")


def _suspect_vms(extra: list[Task]) -> set[int]:
    since = timezone.now() - timedelta(days=orphan_days())
    recent = Task.objects.filter(kind=Task.Kind.BACKUP, created__gte=since).exclude(vm=None)
    suspects = set(recent.filter(Q(state__in=(Task.State.FAILED, Task.State.CANCELLED)) | ~Q(snapshot=""))
                   .values_list("vm_id", flat=True))
    return suspects | {t.vm_id for t in extra if t.vm_id}


def _all_job_vms() -> set[int]:
    from jobs.models import BackupJob
    from jobs.selection import vms_of

    found: set[int] = set()
    for job in BackupJob.objects.all():
        found.update(vm.pk for vm in vms_of(job))
    return found


def sweep_orphan_snapshots(vm_ids, report: Report) -> None:
    """Remove `vafleet-task-<id>` snapshots of these VMs whose task is not running."""
    from inventory.models import VirtualMachine

    vms = VirtualMachine.objects.filter(pk__in=list(vm_ids)).select_related("connection")
    groups: dict = {}
    for vm in vms:
        groups.setdefault(vm.connection, []).append(vm)
    for connection, group in groups.items():
        connector = _with_connector(connection, report, "look for orphan snapshots")
        if connector is None:
            continue
        try:
            for vm in group:
                _orphans_of(connector, vm, report)
        finally:
            connector.close()


def _orphans_of(connector, vm, report: Report) -> None:
    try:
        snapshots = connector.list_snapshots(vm.moref)
    except NotFound:
        return  # the VM is gone
    except ConnectorError as exc:
        report.problems.append(f"Could not list the snapshots of VM {vm.name}: {exc}")
        return
    for snapshot in snapshots:
        match = SNAPSHOT_NAME.match(snapshot.name or "")
        if not match:
            continue
        task_id = int(match.group(1))
        if Task.objects.filter(_alive_running(), pk=task_id).exists():
            continue  # its task is running: it releases the snapshot itself
        if Task.objects.filter(pk=task_id, state=Task.State.RUNNING).exists():
            continue  # dead but not failed yet (e.g. it ended meanwhile): the next round
        try:
            connector.remove_snapshot(vm.moref, snapshot.moref)
        except NotFound:
            pass
        except ConnectorError as exc:
            report.problems.append(f"Could not remove orphan snapshot {snapshot.name} of VM {vm.name}: {exc}")
            continue
        Task.objects.filter(pk=task_id, snapshot=snapshot.moref).update(snapshot="")
        report.orphan_snapshots += 1
        log.warning("Removed orphan snapshot %s (%s) of VM %s.", snapshot.name, snapshot.moref, vm.name)


def sweep_orphan_disks(report: Report) -> None:
    """Detach snapshot disks still hot-added to appliances that run no task (connectors that list devices)."""
    from appliances.models import Appliance

    for appliance in Appliance.objects.exclude(vm_moref="").select_related("connection"):
        try:
            if not hasattr(connector_class(appliance.connection.kind), "devices"):
                continue  # this hypervisor type cannot list an appliance's disks
        except ConnectorError:
            continue
        connector = _with_connector(appliance.connection, report, "look for orphan hot-added disks")
        if connector is None:
            continue
        try:
            try:
                devices = connector.devices(appliance.vm_moref)
            except NotFound:
                continue
            except ConnectorError as exc:
                report.problems.append(f"Could not list the disks of appliance {appliance.name}: {exc}")
                continue
            # Listed first, checked after: a disk a task attaches later is not in this list.
            if Task.objects.filter(appliance=appliance, state=Task.State.RUNNING).exists():
                continue
            for device in devices:
                if device.get("writable", True):
                    continue  # a restore's target disk, never a backup's snapshot disk
                try:
                    connector.detach_disk(appliance.vm_moref, device["key"])
                except NotFound:
                    continue
                except ConnectorError as exc:
                    report.problems.append(f"Could not detach orphan disk {device.get('file_name')} from "
                                           f"{appliance.name}: {exc}")
                    continue
                report.orphan_disks += 1
                log.warning("Detached orphan disk %s from appliance %s.", device.get("file_name"), appliance.name)
        finally:
            connector.close()


def sweep(*, full: bool = False) -> Report:
    """One pass; `full` also looks at every VM a backup job selects for orphan snapshots."""
    report = Report()
    interrupted = sweep_dead_tasks(report)
    sweep_ended_holders(report, tried=interrupted)  # those just interrupted were tried a moment ago
    sweep_stuck_runs(report)
    sweep_lost_runs(report)
    sweep_lost_restores(report)
    retry_run_mails(report)
    sweep_orphan_disks(report)
    vm_ids = _suspect_vms(interrupted) | (_all_job_vms() if full else set())
    sweep_orphan_snapshots(vm_ids, report)
    for problem in report.problems:
        log.warning("Sweeper: %s", problem)
    return report


def sweep_round() -> dict:
    """The scheduled sweep: one at a time on this server; every VM of every job once a day."""
    from appliances import var_dir

    folder = var_dir()
    with open(folder / "job-sweeper.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"skipped_round": True, "reason": "The previous sweep is still running."}
        try:
            marker = folder / "job-sweeper.full"
            full = not marker.exists() or time.time() - marker.stat().st_mtime >= FULL_SCAN_EVERY
            report = sweep(full=full)
            if full:
                marker.touch()
            return {**report.as_dict(), "full": full}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

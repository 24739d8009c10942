"""Job actions shared by the portal, the API, the admin and schedules: run, cancel, restore."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from core.errors import ActionableError
from jobs import live
from jobs.models import BackupJob, JobRun, Task
from jobs.selection import vms_of

FROZEN = ("mode", "use_cbt", "verify", "compression_level", "max_parallel", "throttle_mbps", "keep_last",
          "keep_daily", "keep_weekly", "keep_monthly")


class NothingToDo(ActionableError):
    code = "nothing_to_do"
    http_status = 409


def job_config(job: BackupJob) -> dict:
    """The job's settings as a run keeps them (editing the job later never changes this run)."""
    return {name: getattr(job, name) for name in FROZEN} | {"repository": job.repository_id, "name": job.name}


def enqueue_run(run: JobRun) -> str:
    """Hand the run to a django-q2 worker; the q2 task id is kept in the run's config (the sweeper looks for it)."""
    from django_q.tasks import async_task

    q2_task = async_task("jobs.tasks.run_job_task", run.pk, task_name=f"job {run.job_name} run #{run.pk}")
    run.config = {**run.config, "q2_task": q2_task}
    JobRun.objects.filter(pk=run.pk).update(config=run.config)
    return q2_task


def start_run(job: BackupJob, user=None, trigger: str = "manual", *, queue: bool = True) -> JobRun:
    """Create a run with one queued task per VM of the job; a worker drives it once committed."""
    vms = list(vms_of(job))
    if not vms:
        raise NothingToDo(f"Job {job.name} selects no VM (check its VMs and rules).")
    with transaction.atomic():
        run = JobRun.objects.create(job=job, job_name=job.name, config=job_config(job), trigger=trigger,
                                    created_by=user if getattr(user, "pk", None) else None)
        Task.objects.bulk_create(
            Task(run=run, vm=vm, vm_name=vm.name, connection_id=vm.connection_id, repository=job.repository,
                 created_by=run.created_by) for vm in vms)
        live.publish_run(run)
        if queue:
            transaction.on_commit(lambda: enqueue_run(run))
    return run


def cancel_run(run: JobRun) -> None:
    if run.state not in (JobRun.State.QUEUED, JobRun.State.RUNNING):
        raise NothingToDo(f"{run} has already ended ({run.get_state_display().lower()}).")
    JobRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    if run.state == JobRun.State.QUEUED:  # no worker has it yet: it will end as soon as one does
        run.tasks.filter(state=Task.State.QUEUED).update(state=Task.State.CANCELLED, finished=timezone.now(),
                                                         message="Cancelled before it started.")
        for task in run.tasks.filter(state=Task.State.CANCELLED):
            live.publish_task(task, with_run=False)
    live.publish_run(run)


def cancel_task(task: Task) -> None:
    if not task.active:
        raise NothingToDo(f"{task} has already ended ({task.get_state_display().lower()}).")
    Task.objects.filter(pk=task.pk).update(cancel_requested=True)
    task.cancel_requested = True
    live.publish_task(task, with_run=False)


def start_restore(point, destination: dict, user=None, *, queue: bool = True) -> Task:
    """Queue a restore of `point`: {"mode": "new_vm", "name", "host", "datastore", "network"},
    {"mode": "folder", "folder"} (a folder on the appliance), {"mode": "original", "confirm": true} (over the
    powered-off VM's own disks) or {"mode": "disk", "disk", "vm", "target_disk_key", "confirm": true} (one
    disk into a powered-off VM's disk at least as large); optional "appliance" (id)."""
    from jobs.restore import IN_PLACE, RestoreRefused, in_place_plan, restore_appliance

    mode = destination.get("mode")
    if mode not in ("new_vm", "folder", *IN_PLACE):
        raise RestoreRefused("Choose how to restore: as a new VM, disk images into a folder, over the VM's own "
                             "disks, or one disk into another VM's disk.")
    target_vm, datastores = point.vm, None
    if mode == "new_vm":
        missing = [k for k in ("name", "host", "datastore") if not destination.get(k)]
        if missing:
            raise RestoreRefused(f"A restore as a new VM needs: {', '.join(missing)}.")
    elif mode == "folder":
        if not str(destination.get("folder", "")).startswith("/"):
            raise RestoreRefused("Give the folder on the appliance as an absolute path, e.g. /srv/restores.")
    else:
        plan = in_place_plan(point, destination)
        target_vm, datastores = plan.vm, plan.datastores()
    appliance = restore_appliance(point, destination, datastores)
    with transaction.atomic():
        task = Task.objects.create(
            kind=Task.Kind.RESTORE, restore_point=point, spec=destination, vm=target_vm,
            vm_name=(target_vm.name if mode in IN_PLACE else
                     (point.vm_config or {}).get("name") or point.vm_name),
            connection=appliance.connection, repository=point.repository, appliance=appliance,
            appliance_name=appliance.name, mode="" if mode == "folder" else Task.Mode.HOTADD,
            created_by=user if getattr(user, "pk", None) else None)
        if queue:
            transaction.on_commit(lambda: enqueue_restore(task))
    return task


def enqueue_restore(task: Task) -> str:
    """Hand the restore to a django-q2 worker; the q2 task id is kept in the task's spec (the sweeper looks for it)."""
    from django_q.tasks import async_task

    q2_task = async_task("jobs.tasks.run_restore_task", task.pk, task_name=f"restore #{task.pk}")
    task.spec = {**task.spec, "q2_task": q2_task}
    Task.objects.filter(pk=task.pk, state=Task.State.QUEUED).update(spec=task.spec)  # not once a worker has it
    return q2_task

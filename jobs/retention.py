"""Retention after each run: the engine's `prune` on the job's repository, then the catalog follows.

When a run's tasks have ended and it made at least one restore point, one ready appliance (the one
that did most of the run's backups, else any ready one) runs the engine's `prune` with the run's
retention (keep_last / keep_daily / keep_weekly / keep_monthly, frozen when the run started). Prune
applies one policy to every VM of the repository, so when several jobs share a repository it gets
the most generous setting of each kind among them: no job loses a restore point its own settings
keep. The catalog rows (RestorePoint) of the restore points prune forgot are then deleted.

Prune takes the repository's exclusive lock, so it is postponed when another backup writes to the
same repository at that moment (the next run prunes). A prune failure never changes the outcome of
the run's backups: the run's message says that retention failed and why.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from django.conf import settings
from django.utils import timezone

from appliances.actions import SENTENCE_ERRORS, engine_ready_transport
from appliances.models import Appliance
from jobs.engine import EngineFailed, run_engine_operation
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task
from jobs.targets import target_spec

log = logging.getLogger(__name__)

KEEP = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")
DEFAULTS = {"keep_last": 7, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6}


class RetentionSkipped(Exception):
    """Nothing to prune now; the message says why."""


def prune_timeout() -> float:
    return float(getattr(settings, "VAFLEET_PRUNE_SECONDS", 3600))


def run_policy(run: JobRun) -> dict:
    """The retention the run was started with."""
    config = run.config or {}
    return {name: max(0, int(config.get(name, DEFAULTS[name]) or 0)) for name in KEEP}


def repository_policy(repository: Repository, policy: dict, job_id: int | None = None) -> dict:
    """`policy`, raised to the most generous setting of each kind among the other jobs on the repository."""
    merged = dict(policy)
    for other in BackupJob.objects.filter(repository=repository).exclude(pk=job_id).values(*KEEP):
        for name in KEEP:
            merged[name] = max(merged[name], int(other[name] or 0))
    return merged


def describe_policy(policy: dict) -> str:
    return ", ".join(f"{name.removeprefix('keep_')} {policy[name]}" for name in KEEP)


def prune_appliance(run: JobRun, repository: Repository) -> Appliance:
    """The appliance that did most of the run's backups if it is ready, else any ready one."""
    ready = Appliance.objects.filter(state=Appliance.State.READY)
    used = Counter(run.tasks.filter(state=Task.State.SUCCEEDED).exclude(appliance=None)
                   .values_list("appliance_id", flat=True))
    for pk, _ in used.most_common():
        appliance = ready.filter(pk=pk).first()
        if appliance is not None:
            return appliance
    if repository.kind == Repository.Kind.LOCAL:
        raise RetentionSkipped("the appliance that holds this local repository is not ready")
    appliance = (ready.exclude(transport=Appliance.Transport.LOCAL).order_by("name").first()
                 or ready.order_by("name").first())
    if appliance is None:
        raise RetentionSkipped("no appliance is ready to run it")
    return appliance


def _cancel_check(run: JobRun) -> Callable[[], bool]:
    last = [0.0, False]

    def cancelled() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= 1.0:
            last[0] = now
            last[1] = JobRun.objects.filter(pk=run.pk, cancel_requested=True).exists()
        return last[1]

    return cancelled


def prune_repository(repository: Repository, policy: dict, appliance: Appliance, *,
                     cancelled: Callable[[], bool] | None = None) -> dict:
    """Run the engine's prune, then delete the catalog rows of the restore points it forgot.

    Returns the prune result with "catalog_removed" (rows deleted). Raises the engine's or the
    appliance's error (a sentence).
    """
    started = timezone.now()
    spec = {"operation": "prune", "target": target_spec(repository), "passphrase": repository.passphrase or "",
            "options": {"retention": policy}}
    grace = getattr(settings, "VAFLEET_PRUNE_GRACE_SECONDS", None)
    if grace is not None:
        spec["options"]["grace_seconds"] = float(grace)
    with engine_ready_transport(appliance) as transport:
        result, _ = run_engine_operation(transport, appliance, spec, timeout=prune_timeout(), cancelled=cancelled)
        forgotten = result.get("forgotten")
        if forgotten is not None:
            gone = RestorePoint.objects.filter(repository=repository,
                                               rp_id__in=[f["restore_point"] for f in forgotten])
        else:  # an engine that does not name what it forgot: keep the rows of what the repository still has
            listed, _ = run_engine_operation(transport, appliance, {
                "operation": "list", "target": spec["target"], "passphrase": spec["passphrase"]},
                timeout=prune_timeout())
            present = {p.get("restore_point") or p.get("id") for p in listed.get("restore_points") or []}
            gone = RestorePoint.objects.filter(repository=repository, created__lt=started).exclude(rp_id__in=present)
    removed, _details = gone.delete()
    return {**result, "catalog_removed": removed}


def summary(policy: dict, result: dict) -> str:
    forgotten = result.get("forgotten")
    count = len(forgotten) if forgotten is not None else result.get("catalog_removed", 0)
    freed = int(result.get("freed_bytes") or 0)
    sentence = (f"Retention ({describe_policy(policy)}): {count} restore point(s) forgotten, "
                f"{result.get('kept', '?')} kept; {result.get('deleted_files', 0)} unreferenced file(s) deleted "
                f"({freed / 2**20:.1f} MiB freed)")
    pending = int(result.get("pending_files") or 0)
    if pending:
        sentence += f", {pending} more once their grace period has passed"
    return sentence + "."


def apply_retention(run: JobRun) -> str:
    """Prune the run's repository with its retention; returns the sentence for the run. Never raises."""
    try:
        repository = Repository.objects.get(pk=(run.config or {}).get("repository") or run.job.repository_id)
        if JobRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
            raise RetentionSkipped("the run was cancelled")
        if not run.tasks.filter(state=Task.State.SUCCEEDED, restore_point__isnull=False).exists():
            raise RetentionSkipped("the run made no new restore point")
        policy = run_policy(run)
        if not any(policy.values()):
            raise RetentionSkipped("every keep setting of the job is 0, so every restore point is kept")
        busy = (Task.objects.filter(repository=repository, state=Task.State.RUNNING, kind=Task.Kind.BACKUP)
                .exclude(run=run).count())
        if busy:
            raise RetentionSkipped(f"{busy} other backup(s) are writing to repository {repository} now; the next "
                                   "run prunes")
        policy = repository_policy(repository, policy, run.job_id)
        appliance = prune_appliance(run, repository)
        result = prune_repository(repository, policy, appliance, cancelled=_cancel_check(run))
    except RetentionSkipped as exc:
        return f"Retention not applied: {exc}."
    except EngineFailed as exc:
        if exc.code == "repository_locked":
            return f"Retention postponed: {exc} The next run prunes."
        return f"Retention failed: {exc} The backups of this run are not affected."
    except (*SENTENCE_ERRORS, Repository.DoesNotExist, BackupJob.DoesNotExist) as exc:
        return f"Retention failed: {exc} The backups of this run are not affected."
    except Exception as exc:  # a bug: logged with its traceback; the run's backups stand
        log.exception("Retention after %s failed", run)
        return (f"Retention failed (unexpected error {type(exc).__name__}: {exc}; see the server log). The backups "
                "of this run are not affected.")
    log.info("%s: %s", run, summary(policy, result))
    return summary(policy, result)


def finish_with_retention(run: JobRun, finish: Callable[[JobRun, str], JobRun]) -> JobRun:
    """Apply retention while the run is still running, then end the run with `finish`, giving it the
    retention sentence for the run's message."""
    return finish(run, apply_retention(run) or "")

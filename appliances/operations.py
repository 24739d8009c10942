"""Run a FleetOperation: its items concurrently, each a deploy, redeploy, remove, upgrade or health check.

An item's failure is recorded on that item (and its appliance) as a sentence; the others go on.
"""

from __future__ import annotations

import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connection
from django.utils import timezone

from appliances import live
from appliances.models import FleetOperation, FleetOperationItem
from core.errors import ActionableError

log = logging.getLogger(__name__)
MAX_PARALLEL = 8
CHANGES_INVENTORY = (FleetOperation.Kind.DEPLOY, FleetOperation.Kind.REDEPLOY, FleetOperation.Kind.REMOVE)


class ItemProgress:
    """Phase and percent of one item, saved and published at most every half second (and on phase change)."""

    def __init__(self, item: FleetOperationItem):
        self.item = item
        self._last = 0.0

    def __call__(self, phase: str, percent: int) -> None:
        item = self.item
        now = time.monotonic()
        changed = phase != item.phase
        item.phase, item.percent = phase[:120], max(0, min(100, int(percent)))
        if changed or now - self._last >= 0.5:
            self._last = now
            item.save(update_fields=["phase", "percent", "bytes_sent"])
            live.publish_item(item)


def run_operation(operation_id: int, parallel: bool = True) -> FleetOperation:
    """Run a queued operation to its end; `parallel=False` runs the items one after another in this thread."""
    claimed = FleetOperation.objects.filter(pk=operation_id, state=FleetOperation.State.QUEUED).update(
        state=FleetOperation.State.RUNNING, started=timezone.now())
    operation = FleetOperation.objects.get(pk=operation_id)
    if not claimed:  # already run (or running) elsewhere
        return operation
    live.publish_operation(operation)
    items = list(operation.items.select_related("appliance"))
    workers = max(1, min(MAX_PARALLEL, len(items)))
    if workers == 1 or not parallel:
        for item in items:
            _run_item(operation.kind, item)
    else:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(contextvars.copy_context().run, _run_in_thread, operation.kind, item)
                       for item in items]
            for future in futures:
                future.result()
    failed = sum(1 for item in items if item.state == FleetOperationItem.State.FAILED)
    operation.state = (FleetOperation.State.SUCCEEDED if not failed else
                       FleetOperation.State.FAILED if failed == len(items) else FleetOperation.State.PARTIAL)
    operation.message = (f"{len(items) - failed} of {len(items)} succeeded." if failed else
                         f"All {len(items)} succeeded.")
    operation.finished = timezone.now()
    operation.save(update_fields=["state", "message", "finished"])
    live.publish_operation(operation)
    if operation.kind in CHANGES_INVENTORY:
        _resync({item.appliance.connection for item in items if item.appliance is not None}
                | {c for c in (getattr(item, "_connection", None) for item in items) if c is not None})
    return operation


def _resync(connections) -> None:
    """Appliance VMs were made or removed: sync their connections so the inventory shows it."""
    from inventory.tasks import request_sync

    for hypervisor in connections:
        request_sync(hypervisor)


def _run_in_thread(kind: str, item: FleetOperationItem) -> None:
    try:
        _run_item(kind, item)
    finally:
        close_old_connections()
        connection.close()


def _run_item(kind: str, item: FleetOperationItem) -> None:
    from appliances import actions

    item.state, item.started = FleetOperationItem.State.RUNNING, timezone.now()
    item.save(update_fields=["state", "started"])
    live.publish_item(item)
    progress = ItemProgress(item)
    appliance = item.appliance
    try:
        if appliance is None:
            raise ActionableError(f"Appliance {item.appliance_name} was deleted before this operation ran.")
        message = getattr(actions, kind)(appliance, progress, item)
        item.state, item.percent = FleetOperationItem.State.SUCCEEDED, 100
        item.message = (message or "Done.")[:500]
    except actions.SENTENCE_ERRORS as exc:
        item.state, item.message = FleetOperationItem.State.FAILED, str(exc)[:500]
    except Exception as exc:  # a bug: logged with its traceback, the item still ends with a sentence
        log.exception("Fleet %s of %s failed", kind, item.appliance_name)
        item.state = FleetOperationItem.State.FAILED
        item.message = f"Unexpected error ({type(exc).__name__}: {exc}); see the server log."[:500]
    item.finished = timezone.now()
    if appliance is not None and appliance.pk is None:  # removed: the item keeps its name only
        item._connection = appliance.connection
        item.appliance = appliance = None
    item.save(update_fields=["state", "percent", "message", "finished", "phase", "bytes_sent"])
    live.publish_item(item)
    if appliance is not None:
        appliance.refresh_from_db()
        live.publish_appliance(appliance)


def sweep_interrupted(now=None) -> int:
    """End operations whose worker died (running longer than a task may live): open items failed with a
    sentence, appliances left deploying or removing marked failed. Returns how many were ended.

    Queued operations are left alone: they wait for a free worker, however long that takes."""
    from datetime import timedelta

    from django.conf import settings
    from django.db import transaction

    from appliances.models import Appliance

    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.Q_CLUSTER["timeout"] + 60)
    stale = FleetOperation.objects.filter(state=FleetOperation.State.RUNNING, started__lt=limit)
    ended = 0
    for operation in stale:
        sentence = ("This operation was interrupted (its worker stopped or the task was lost); nothing more will "
                    "happen: check the appliance and start the action again.")
        with transaction.atomic():
            open_items = operation.items.filter(state__in=(FleetOperationItem.State.QUEUED,
                                                           FleetOperationItem.State.RUNNING))
            appliance_ids = list(open_items.values_list("appliance_id", flat=True))
            open_items.update(state=FleetOperationItem.State.FAILED, message=sentence, finished=now)
            for appliance in Appliance.objects.filter(pk__in=appliance_ids, state__in=(
                    Appliance.State.DEPLOYING, Appliance.State.REMOVING)):
                appliance.state, appliance.state_message = Appliance.State.FAILED, sentence
                appliance.save(update_fields=["state", "state_message", "updated"])
            operation.state, operation.message, operation.finished = FleetOperation.State.FAILED, sentence, now
            operation.save(update_fields=["state", "message", "finished"])
        live.publish_operation(operation)
        ended += 1
    return ended

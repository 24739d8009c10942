"""Live fleet progress for the portal: what changed is sent to the `appliances.fleet` channel group.

Workers call these after their change has been saved; every open fleet page redraws the operation,
the item or the appliance. A failed publish never fails the work that called it.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

GROUP = "appliances.fleet"


def _send(kind: str, payload: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(GROUP, {"type": "fleet.event", "event": kind, "data": payload})
    except Exception:  # a live update is a convenience
        log.warning("Could not publish %s", kind, exc_info=True)


def operation_state(operation) -> dict:
    return {"id": operation.pk, "kind": operation.kind, "state": operation.state,
            "state_label": operation.get_state_display(), "message": operation.message}


def item_state(item) -> dict:
    return {"id": item.pk, "operation": item.operation_id, "appliance": item.appliance_id,
            "appliance_name": item.appliance_name, "state": item.state, "state_label": item.get_state_display(),
            "phase": item.phase, "percent": item.percent, "message": item.message, "bytes_sent": item.bytes_sent}


def appliance_state(appliance) -> dict:
    return {"id": appliance.pk, "name": appliance.name, "state": appliance.state,
            "state_label": appliance.get_state_display(), "state_message": appliance.state_message,
            "engine_version": appliance.engine_version, "address": appliance.address,
            "last_seen": appliance.last_seen.isoformat() if appliance.last_seen else None}


def publish_operation(operation) -> None:
    _send("fleet.operation", operation_state(operation))


def publish_item(item) -> None:
    _send("fleet.item", item_state(item))


def publish_appliance(appliance) -> None:
    _send("fleet.appliance", appliance_state(appliance))

"""Live connection status for the portal: a websocket that hears every sync start and finish.

Sync code (in a django-q2 worker or the web process) calls `publish_status` once its change
has committed; every open page in the `inventory.connections` group gets the new status.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.consumers import FORBIDDEN, GroupPushConsumer
from inventory.models import Connection

log = logging.getLogger(__name__)

GROUP = "inventory.connections"
__all__ = ["FORBIDDEN", "GROUP", "ConnectionStatusConsumer", "publish_status", "status_of"]


class ConnectionStatusConsumer(GroupPushConsumer):
    """Pushes `{"event": "connection.status", "connection": {...}}` to viewers and above."""

    group = GROUP

    async def connection_status(self, event: dict) -> None:
        await self.send_json({"event": "connection.status", "connection": event["connection"]})


def status_of(connection_id: int) -> dict | None:
    """What the browser needs to redraw one connection's status."""
    row = (
        Connection.objects.filter(pk=connection_id)
        .values("id", "name", "status", "status_message", "last_sync_finished", "last_sync_seconds")
        .first()
    )
    if row is None:
        return None
    finished = row["last_sync_finished"]
    return {
        **row,
        "status_label": Connection.Status(row["status"]).label,
        "last_sync_finished": finished.isoformat() if finished else None,
    }


def publish_status(connection_id: int) -> None:
    """Tell every open portal page about a connection's current status; never fails the caller."""
    try:
        status = status_of(connection_id)
        if status is None:
            return
        async_to_sync(get_channel_layer().group_send)(GROUP, {"type": "connection.status", "connection": status})
    except Exception:  # a live update is a convenience: a sync must not fail because of it
        log.warning("Could not publish the status of connection %s", connection_id, exc_info=True)

"""Live connection status for the portal: a websocket that hears every sync start and finish.

Sync code (in a django-q2 worker or the web process) calls `publish_status` once its change
has committed; every open page in the `inventory.connections` group gets the new status.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

from core.rbac import VIEW, can
from inventory.models import Connection

log = logging.getLogger(__name__)

GROUP = "inventory.connections"
# Close code sent to a socket whose user may not see the inventory (4000-4999: application codes).
FORBIDDEN = 4403


class ConnectionStatusConsumer(AsyncJsonWebsocketConsumer):
    """Pushes `{"event": "connection.status", "connection": {...}}` to viewers and above."""

    joined = False

    async def connect(self) -> None:
        # Accept first: a close before accept is a bare HTTP 403 and the browser never sees the code.
        await self.accept()
        if not await database_sync_to_async(can)(self.scope.get("user"), VIEW):
            await self.close(code=FORBIDDEN)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """The socket only pushes; anything the browser sends is ignored."""

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

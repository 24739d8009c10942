"""Live fleet progress for the portal: a websocket that forwards what `appliances.live` publishes.

Every message of the `appliances.fleet` group reaches the browser as `{"event": ..., "data": ...}`
(`fleet.operation`, `fleet.item` or `fleet.appliance`); viewers and above may listen.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from appliances.live import GROUP
from core.rbac import VIEW, can
from inventory.consumers import FORBIDDEN


class FleetConsumer(AsyncJsonWebsocketConsumer):
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

    async def fleet_event(self, event: dict) -> None:
        await self.send_json({"event": event["event"], "data": event["data"]})

"""A websocket that only pushes one channel group's messages to viewers and above."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.rbac import VIEW, can

# Close code sent to a socket whose user may not see the portal (4000-4999: application codes).
FORBIDDEN = 4403


class GroupPushConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses name `group` and add a handler for the message types sent to it."""

    group = ""
    joined = False

    async def connect(self) -> None:
        # Accept first: a close before accept is a bare HTTP 403 and the browser never sees the code.
        await self.accept()
        if not await database_sync_to_async(can)(self.scope.get("user"), VIEW):
            await self.close(code=FORBIDDEN)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """The socket only pushes; anything the browser sends is ignored."""

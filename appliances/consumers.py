"""Live fleet progress for the portal: a websocket that forwards what `appliances.live` publishes.

Every message of the `appliances.fleet` group reaches the browser as `{"event": ..., "data": ...}`
(`fleet.operation`, `fleet.item` or `fleet.appliance`); viewers and above may listen.
"""

from __future__ import annotations

from appliances.live import GROUP
from core.consumers import GroupPushConsumer


class FleetConsumer(GroupPushConsumer):
    group = GROUP

    async def fleet_event(self, event: dict) -> None:
        await self.send_json({"event": event["event"], "data": event["data"]})

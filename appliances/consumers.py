"""Live fleet progress for the portal: a websocket that forwards what `appliances.live` publishes.

Every message of the `appliances.fleet` group reaches the browser as `{"event": ..., "data": ...}`
(`fleet.operation`, `fleet.item` or `fleet.appliance`); viewers and above may listen. Once joined, the
socket first sends the states of the operations still running or ended in the last minutes, with their
items: what changed between the page's rendering and the join (a quick deploy may end then) is not lost.
"""

from __future__ import annotations

from datetime import timedelta

from channels.db import database_sync_to_async
from django.db.models import Q
from django.utils import timezone

from appliances.live import GROUP, item_state, operation_state
from appliances.models import FleetOperation
from core.consumers import GroupPushConsumer

RECENT = timedelta(minutes=10)  # ended operations whose states a joining page may have missed
RECENT_MAX = 20


class FleetConsumer(GroupPushConsumer):
    group = GROUP

    async def connect(self) -> None:
        await super().connect()
        if self.joined:
            for event, data in await database_sync_to_async(_current_states)():
                await self.send_json({"event": event, "data": data})

    async def fleet_event(self, event: dict) -> None:
        await self.send_json({"event": event["event"], "data": event["data"]})


def _current_states() -> list[tuple[str, dict]]:
    active = Q(state__in=(FleetOperation.State.QUEUED, FleetOperation.State.RUNNING))
    recent = Q(finished__gte=timezone.now() - RECENT)
    operations = FleetOperation.objects.filter(active | recent).order_by("-pk").prefetch_related("items")[:RECENT_MAX]
    states: list[tuple[str, dict]] = []
    for operation in operations:
        states += [("fleet.item", item_state(item)) for item in operation.items.all()]
        states.append(("fleet.operation", operation_state(operation)))
    return states

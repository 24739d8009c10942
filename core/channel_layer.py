"""Embedded channel layer: messages and group memberships in database tables.

The web server and the django-q2 workers run in separate processes; without Redis they still
need to talk (a worker finishes a sync, the browser hears of it). A send is one INSERT; each
process runs one poller that moves the rows addressed to it into memory and deletes them.
All database work runs in one dedicated thread per process, which keeps its own connection
open, so polling every 50 ms costs one indexed query and no reconnect.

Works on SQLite in WAL mode (readers never block the writer) and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.db import DatabaseError, connections
from django.db.models import Count

log = logging.getLogger(__name__)

# How many rows one poll takes at most; the poller loops without sleeping while it gets full batches.
BATCH = 200
# How often (seconds) expired messages and memberships are deleted.
CLEANUP_EVERY = 10.0


class DatabaseChannelLayer(BaseChannelLayer):
    """A Channels layer for one machine with no service: the database carries the messages."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict | None = None,
        poll_interval: float = 0.05,
        database: str = "default",
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.group_expiry = group_expiry
        self.poll_interval = poll_interval
        self.database = database
        self.client_prefix = uuid.uuid4().hex
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._buffers: dict[str, deque[tuple[float, dict]]] = {}
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._poller: asyncio.Task | None = None
        self._next_cleanup = 0.0

    # Sending

    async def send(self, channel: str, message: dict) -> None:
        """Queue a message on a channel; raises ChannelFull when it already holds `capacity` messages."""
        self._check_message(message)
        self.require_valid_channel_name(channel)
        payload = msgpack.packb(message, use_bin_type=True)
        sent = await self._db(self._insert_if_room, channel, payload)
        if not sent:
            raise ChannelFull(f"Channel {channel} already holds {self.get_capacity(channel)} undelivered messages.")

    async def group_send(self, group: str, message: dict) -> None:
        """Send a message to every member of a group; members that are full are skipped."""
        self._check_message(message)
        self.require_valid_group_name(group)
        payload = msgpack.packb(message, use_bin_type=True)
        await self._db(self._insert_for_group, group, payload)

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    # Groups

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._db(self._add_member, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._db(self._discard_member, group, channel)

    # Receiving

    async def receive(self, channel: str) -> dict:
        """Wait for the next message on a channel (process-specific or shared)."""
        self.require_valid_channel_name(channel)
        loop = asyncio.get_running_loop()
        while True:
            message = self._pop(channel)
            if message is not None:
                return message
            waiter = loop.create_future()
            self._waiters.setdefault(channel, set()).add(waiter)
            self._ensure_poller(loop)
            try:
                await waiter
            finally:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[channel]

    def _pop(self, channel: str) -> dict | None:
        buffer = self._buffers.get(channel)
        now = time.time()
        while buffer:
            expires, message = buffer.popleft()
            if expires > now:
                return message
        self._buffers.pop(channel, None)
        return None

    def _ensure_poller(self, loop: asyncio.AbstractEventLoop) -> None:
        poller = self._poller
        if poller is None or poller.done() or poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll())

    async def _poll(self) -> None:
        """Move messages for the channels someone waits on from the database into memory."""
        while self._prune_waiters():
            inboxes = sorted({self.non_local_name(channel) for channel in self._waiters})
            rows = []
            try:
                rows = await self._db(self._take, inboxes)
                for channel, expires, payload in rows:
                    self._buffers.setdefault(channel, deque()).append((expires, msgpack.unpackb(payload, raw=False)))
                    for waiter in self._waiters.get(channel, ()):
                        if not waiter.done():
                            waiter.set_result(None)
                if time.monotonic() >= self._next_cleanup:
                    self._next_cleanup = time.monotonic() + CLEANUP_EVERY
                    self._drop_stale_buffers()
                    await self._db(self._clean_expired)
            except Exception:  # the poller serves every receiver of this process: it must outlive any error
                log.warning("Channel layer poll failed; retrying.", exc_info=True)
            if len(rows) < BATCH:
                await asyncio.sleep(self.poll_interval)

    def _prune_waiters(self) -> bool:
        """Forget receivers whose event loop has closed; True while anyone still waits."""
        for channel, waiters in list(self._waiters.items()):
            waiters.difference_update([w for w in waiters if w.get_loop().is_closed()])
            if not waiters:
                del self._waiters[channel]
        return bool(self._waiters)

    def _drop_stale_buffers(self) -> None:
        """Forget expired messages of channels nobody receives on any more (their consumer left)."""
        now = time.time()
        for channel in [c for c in self._buffers if c not in self._waiters]:
            buffer = self._buffers[channel]
            while buffer and buffer[0][0] <= now:
                buffer.popleft()
            if not buffer:
                del self._buffers[channel]

    # Maintenance

    async def flush(self) -> None:
        """Drop every message and membership (tests and resets)."""
        await self._db(self._delete_all)
        self._buffers.clear()

    async def clean_expired(self) -> None:
        await self._db(self._clean_expired)

    async def close(self) -> None:
        """Stop polling and close this layer's database connection."""
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
        self._poller = None
        if self._executor is not None and self._executor_pid == os.getpid():
            await self._db(lambda: connections[self.database].close())

    # Database work, always in the layer's own thread

    async def _db(self, work: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None or self._executor_pid != os.getpid():
            # A forked worker inherits no threads: give it its own.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="channel-layer")
            self._executor_pid = os.getpid()
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, work, args)

    def _guarded(self, work: Callable[..., Any], args: tuple) -> Any:
        try:
            return work(*args)
        except DatabaseError:
            # The next call reconnects (server restart, dropped connection).
            connections[self.database].close()
            raise

    def _insert_if_room(self, channel: str, payload: bytes) -> bool:
        from core.models import ChannelMessage

        now = time.time()
        waiting = ChannelMessage.objects.using(self.database).filter(channel=channel, expires__gt=now).count()
        if waiting >= self.get_capacity(channel):
            return False
        ChannelMessage.objects.using(self.database).create(
            channel=channel, inbox=self.non_local_name(channel), payload=payload, expires=now + self.expiry
        )
        return True

    def _insert_for_group(self, group: str, payload: bytes) -> None:
        from core.models import ChannelGroupMember, ChannelMessage

        now = time.time()
        members = list(
            ChannelGroupMember.objects.using(self.database)
            .filter(group=group, expires__gt=now)
            .values_list("channel", flat=True)
        )
        if not members:
            return
        waiting = dict(
            ChannelMessage.objects.using(self.database)
            .filter(channel__in=members, expires__gt=now)
            .values("channel")
            .annotate(n=Count("id"))
            .values_list("channel", "n")
        )
        rows = [
            ChannelMessage(channel=c, inbox=self.non_local_name(c), payload=payload, expires=now + self.expiry)
            for c in members
            if waiting.get(c, 0) < self.get_capacity(c)
        ]
        ChannelMessage.objects.using(self.database).bulk_create(rows)

    def _take(self, inboxes: list[str]) -> list[tuple[str, float, bytes]]:
        """Claim the oldest live messages of these inboxes: read, then delete what was read."""
        from core.models import ChannelMessage

        messages = ChannelMessage.objects.using(self.database)
        rows = list(
            messages.filter(inbox__in=inboxes, expires__gt=time.time())
            .order_by("id")
            .values_list("id", "channel", "expires", "payload")[:BATCH]
        )
        # Only this process reads its specific inbox; a shared channel may have other readers,
        # so each of its messages belongs to whoever deletes it.
        own = [row[0] for row in rows if "!" in row[1]]
        if own:
            self._delete(messages.filter(id__in=own))
        taken = []
        for pk, channel, expires, payload in rows:
            if "!" in channel or self._delete(messages.filter(id=pk)):
                taken.append((channel, expires, bytes(payload)))
        return taken

    def _add_member(self, group: str, channel: str) -> None:
        from core.models import ChannelGroupMember

        ChannelGroupMember.objects.using(self.database).update_or_create(
            group=group, channel=channel, defaults={"expires": time.time() + self.group_expiry}
        )

    def _discard_member(self, group: str, channel: str) -> None:
        from core.models import ChannelGroupMember

        self._delete(ChannelGroupMember.objects.using(self.database).filter(group=group, channel=channel))

    def _clean_expired(self) -> None:
        from core.models import ChannelGroupMember, ChannelMessage

        now = time.time()
        expired = ChannelMessage.objects.using(self.database).filter(expires__lte=now)
        # A channel that let a message expire unread has gone away (its process died): drop it from groups.
        dead = {c for c in expired.values_list("channel", flat=True).distinct() if "!" in c}
        self._delete(expired)
        members = ChannelGroupMember.objects.using(self.database)
        self._delete(members.filter(expires__lte=now))
        if dead:
            self._delete(members.filter(channel__in=list(dead)))

    def _delete_all(self) -> None:
        from core.models import ChannelGroupMember, ChannelMessage

        self._delete(ChannelMessage.objects.using(self.database).all())
        self._delete(ChannelGroupMember.objects.using(self.database).all())

    def _delete(self, queryset) -> int:
        """DELETE in one statement: QuerySet.delete() would load each row to send delete signals."""
        connection = connections[self.database]
        table = connection.ops.quote_name(queryset.model._meta.db_table)
        select, params = queryset.values("pk").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({select})", params)
            return cursor.rowcount

    @staticmethod
    def _check_message(message: dict) -> None:
        if not isinstance(message, dict):
            raise TypeError(f"A channel message must be a dict, not {type(message).__name__}.")
        if "type" not in message:
            raise ValueError("A channel message needs a 'type' key naming the handler that receives it.")

"""The embedded channel layer: delivery, groups, expiry and capacity, within and across processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull

from core.models import ChannelGroupMember, ChannelMessage
from tests.infra.conftest import run_worker

# Committed data (other processes must see it); the roles that migrations create come back each test.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


async def nothing_arrives(layer, channel: str, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), wait)
    except TimeoutError:
        return True
    return False


def test_messages_arrive_in_order_and_leave_the_table(make_layer):
    layer = make_layer()

    async def scenario():
        channel = await layer.new_channel()
        for n in range(3):
            await layer.send(channel, {"type": "test.message", "n": n, "blob": bytes([n])})
        return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]

    received = async_to_sync(scenario)()
    assert [m["n"] for m in received] == [0, 1, 2]
    assert received[2]["blob"] == b"\x02"
    assert ChannelMessage.objects.count() == 0


def test_a_message_on_a_shared_channel_goes_to_one_receiver(make_layer):
    first, second = make_layer(), make_layer()

    async def scenario():
        await first.send("jobs.work", {"type": "work", "n": 1})
        one = asyncio.ensure_future(first.receive("jobs.work"))
        two = asyncio.ensure_future(second.receive("jobs.work"))
        done, pending = await asyncio.wait({one, two}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.3)  # give the other receiver time to (wrongly) get a copy
        delivered = [task.result() for task in (one, two) if task.done()]
        for task in (one, two):
            task.cancel()
        return delivered

    assert async_to_sync(scenario)() == [{"type": "work", "n": 1}]


def test_message_from_another_process_reaches_a_group_member(make_layer):
    layer = make_layer()

    async def join():
        channel = await layer.new_channel()
        await layer.group_add("cross-process", channel)
        return channel

    async def receive(channel):
        return await asyncio.wait_for(layer.receive(channel), 10)

    channel = async_to_sync(join)()
    sender = run_worker("group-send", "cross-process", database_layer=True)
    message = async_to_sync(receive)(channel)
    assert message["text"] == "hello from another process"
    assert message["pid"] == sender["pid"] != os.getpid()


def test_message_from_another_process_reaches_a_specific_channel(make_layer):
    layer = make_layer()
    channel = async_to_sync(layer.new_channel)()
    sender = run_worker("send", channel, database_layer=True)

    async def receive():
        return await asyncio.wait_for(layer.receive(channel), 10)

    assert async_to_sync(receive)()["pid"] == sender["pid"]


def test_group_send_reaches_current_members_only(make_layer):
    layer = make_layer()

    async def scenario():
        member, left, outsider = [await layer.new_channel() for _ in range(3)]
        await layer.group_add("watchers", member)
        await layer.group_add("watchers", left)
        await layer.group_discard("watchers", left)
        await layer.group_send("watchers", {"type": "status", "value": "ok"})
        got = await asyncio.wait_for(layer.receive(member), 5)
        return got, await nothing_arrives(layer, left), await nothing_arrives(layer, outsider)

    got, left_heard_nothing, outsider_heard_nothing = async_to_sync(scenario)()
    assert got == {"type": "status", "value": "ok"}
    assert left_heard_nothing and outsider_heard_nothing


def test_expired_messages_are_never_delivered_and_get_cleaned(make_layer):
    layer = make_layer(expiry=1)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("gone", channel)
        await layer.send(channel, {"type": "stale"})
        time.sleep(1.2)
        silent = await nothing_arrives(layer, channel)
        await layer.clean_expired()
        return silent

    assert async_to_sync(scenario)()
    assert ChannelMessage.objects.count() == 0
    # A channel that let a message expire unread has gone away: it leaves its groups too.
    assert ChannelGroupMember.objects.count() == 0


def test_group_membership_expires(make_layer):
    layer = make_layer(group_expiry=1)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("short", channel)
        time.sleep(1.2)
        await layer.group_send("short", {"type": "late"})
        return await nothing_arrives(layer, channel)

    assert async_to_sync(scenario)()


def test_a_full_channel_refuses_direct_sends_and_is_skipped_by_groups(make_layer):
    layer = make_layer(capacity=2)

    async def scenario():
        full, free = await layer.new_channel(), await layer.new_channel()
        for channel in (full, free):
            await layer.group_add("crowd", channel)
        await layer.send(full, {"type": "one"})
        await layer.send(full, {"type": "two"})
        with pytest.raises(ChannelFull, match="already holds 2 undelivered messages"):
            await layer.send(full, {"type": "three"})
        await layer.group_send("crowd", {"type": "news"})
        return [await asyncio.wait_for(layer.receive(full), 5) for _ in range(2)], await layer.receive(free)

    full_got, free_got = async_to_sync(scenario)()
    assert [m["type"] for m in full_got] == ["one", "two"]
    assert free_got == {"type": "news"}
    assert ChannelMessage.objects.count() == 0


def test_bad_input_is_refused_with_a_clear_error(make_layer):
    layer = make_layer()

    async def scenario():
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="must be a dict"):
            await layer.send(channel, ["not", "a", "dict"])
        with pytest.raises(ValueError, match="needs a 'type' key"):
            await layer.send(channel, {"text": "no type"})
        with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
            await layer.send("bad name with spaces", {"type": "x"})
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_add("bad/group", channel)

    async_to_sync(scenario)()
    assert ChannelMessage.objects.count() == 0

"""The connection status websocket through the whole ASGI stack (origin check, session auth, roles)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from inventory.consumers import FORBIDDEN, publish_status
from inventory.models import Connection
from tests.infra.conftest import worker_command
from vaproject.asgi import application

# Committed data (other processes must see it); the roles that migrations create come back each test.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PATH = "/ws/inventory/connections/"


def socket_for(user=None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, PATH, headers=headers)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_connection(name: str) -> Connection:
    return Connection.objects.create(
        name=name, kind="vsphere", host="127.0.0.1", port=closed_port(), username="backup", password="wrong"
    )


async def statuses_of(ws: WebsocketCommunicator, name: str, until: str, timeout: float = 30) -> list[dict]:
    """Status events of one connection, up to the first with status `until`."""
    seen = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1]["status"] != until:
            event = await ws.receive_json_from(timeout=timeout)
            assert event["event"] == "connection.status"
            if event["connection"]["name"] == name:
                seen.append(event["connection"])
    return seen


@pytest.mark.parametrize("role", [None, "nobody"])
def test_sockets_without_a_role_are_closed_with_4403(role, make_user):
    user = make_user(None) if role == "nobody" else None
    ws = socket_for(user)

    async def scenario():
        connected, _ = await ws.connect()
        closing = await ws.receive_output(timeout=5)
        await ws.wait()
        return connected, closing

    connected, closing = async_to_sync(scenario)()
    assert connected
    assert closing == {"type": "websocket.close", "code": FORBIDDEN}


def test_a_foreign_origin_is_refused(viewer_user):
    ws = socket_for(viewer_user)
    ws.scope["headers"] = [(b"origin", b"http://evil.example")] + [h for h in ws.scope["headers"] if h[0] != b"origin"]
    connected, _ = async_to_sync(ws.connect)()
    assert not connected


def test_viewer_hears_a_status_change_published_in_this_process(viewer_user):
    connection = unreachable_connection("Local change")
    ws = socket_for(viewer_user)

    async def scenario():
        connected, _ = await ws.connect()
        assert connected
        await database_sync_to_async(Connection.objects.filter(pk=connection.pk).update)(
            status=Connection.Status.ERROR, status_message="Host is down."
        )
        await database_sync_to_async(publish_status)(connection.pk)
        events = await statuses_of(ws, "Local change", until="error", timeout=10)
        await ws.disconnect()
        return events

    events = async_to_sync(scenario)()
    assert events[-1]["status_message"] == "Host is down."
    assert events[-1]["status_label"] == "Error"


def sync_in_worker_and_listen(user, name: str, prefix: str) -> list[dict]:
    """Open a viewer socket, sync an unreachable connection in another process, collect its events."""
    connection = unreachable_connection(name)
    ws = socket_for(user)

    async def scenario():
        connected, _ = await ws.connect()
        assert connected
        worker = await asyncio.create_subprocess_exec(
            *worker_command("sync", str(connection.pk), prefix=prefix),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        events = await statuses_of(ws, name, until="error")
        out, err = await worker.communicate()
        assert worker.returncode == 0, err.decode()
        await ws.disconnect()
        return events

    return async_to_sync(scenario)()


def test_viewer_hears_a_sync_that_a_worker_process_runs(viewer_user, channel_layer_prefix):
    events = sync_in_worker_and_listen(viewer_user, "Unreachable vCenter", channel_layer_prefix)
    assert [e["status"] for e in events] == ["syncing", "error"]
    assert events[-1]["status_message"], "the error event must say what failed"
    assert events[-1]["last_sync_finished"]


@pytest.mark.scaleout
def test_viewer_hears_a_worker_sync_through_redis(viewer_user, channel_layer_prefix, settings):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert channel_layer_prefix, "Redis runs must use a per-worker prefix"
    events = sync_in_worker_and_listen(viewer_user, "Unreachable vCenter via Redis", channel_layer_prefix)
    assert [e["status"] for e in events] == ["syncing", "error"]


@pytest.mark.scaleout
def test_a_slow_redis_does_not_break_a_waiting_socket(channel_layer_prefix, settings):
    """channels_redis waits for messages with a 5 s BZPOPMIN: on a loaded machine its empty reply comes
    a little later. The layer must not time that read out (redis-py 8 would at 5 s), or idle websockets drop."""
    from urllib.parse import urlparse

    from channels_redis.core import RedisChannelLayer

    from tests.harness.slowproxy import slow_proxy

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    redis = config["hosts"][0] if isinstance(config["hosts"][0], dict) else {"address": config["hosts"][0]}
    address = urlparse(redis["address"])
    with slow_proxy(address.hostname, address.port or 6379) as proxy:
        proxied = address._replace(netloc="{}:{}".format(*proxy.address)).geturl()
        listener = RedisChannelLayer(hosts=[{**redis, "address": proxied}], prefix=channel_layer_prefix)
        sender = RedisChannelLayer(hosts=config["hosts"], prefix=channel_layer_prefix)

        async def scenario():
            channel = await listener.new_channel()
            await listener.group_add("slow", channel)  # connected before the replies slow down
            proxy.delay = 1.0
            waiting = asyncio.ensure_future(listener.receive(channel))
            await asyncio.sleep(listener.brpop_timeout + 3)  # one whole blocking wait, answered late
            await sender.send(channel, {"type": "late.news"})
            try:
                return await asyncio.wait_for(waiting, 15)
            finally:
                proxy.delay = 0
                await listener.flush()
                await sender.close_pools()
                await listener.close_pools()

        assert async_to_sync(scenario)() == {"type": "late.news"}

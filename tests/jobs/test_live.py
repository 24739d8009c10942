"""Live progress of runs and tasks through the whole ASGI stack and the configured channel layer:
events stored by EventLog reach run and task sockets, resume replays what was missed, states are pushed."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from core.consumers import FORBIDDEN
from engines.contract import log_event, progress_event
from inventory.models import VirtualMachine
from jobs import services
from jobs.consumers import NOT_FOUND
from jobs.events import EventLog
from jobs.models import JobRun, Task
from jobs.runs import _finish, execute_run
from tests.jobs.conftest import job_for
from vaproject.asgi import application

# Committed data: the consumers read it from other threads (and the database layer carries messages).
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WAIT = 15  # seconds for one message


def socket_for(path: str, user=None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


def run_with_tasks(*names: str) -> tuple[JobRun, list[Task]]:
    run = JobRun.objects.create(job_name="nightly", state=JobRun.State.RUNNING)
    return run, [Task.objects.create(run=run, vm_name=name, state=Task.State.RUNNING) for name in names]


async def until(ws: WebsocketCommunicator, done, timeout: float = WAIT) -> list[dict]:
    """Messages up to and including the first for which `done(message)` is true."""
    seen = []
    async with asyncio.timeout(timeout * 4):
        while not seen or not done(seen[-1]):
            seen.append(await ws.receive_json_from(timeout=timeout))
    return seen


def events_of(messages: list[dict]) -> list[tuple[int, int, str]]:
    return [(m["data"]["task"], m["data"]["seq"], m["data"]["kind"]) for m in messages if m["event"] == "task.event"]


async def connected(ws: WebsocketCommunicator) -> WebsocketCommunicator:
    ok, _ = await ws.connect()
    assert ok
    return ws


def test_stored_events_reach_run_and_task_sockets_with_seq_kind_and_engine_time(viewer_user):
    run, (task,) = run_with_tasks("web-01")
    log = EventLog(task)
    progress = progress_event("backup", 1 << 20, 4 << 20, 2 << 20, 1.5)
    line = log_event("info", "Reading disk-0")

    run_ws, task_ws = socket_for(f"/ws/jobs/runs/{run.pk}/", viewer_user), socket_for(f"/ws/jobs/tasks/{task.pk}/",
                                                                                        viewer_user)

    async def scenario():
        await connected(run_ws)
        await connected(task_ws)
        await database_sync_to_async(log.engine)(progress)
        await database_sync_to_async(log.engine)(line)
        heard = []
        for ws in (run_ws, task_ws):
            messages = await until(ws, lambda m: m["event"] == "task.event" and m["data"]["kind"] == "log")
            heard.append([m["data"] for m in messages if m["event"] == "task.event"])
            await ws.disconnect()
        return heard

    for events in async_to_sync(scenario)():
        assert [(e["task"], e["run"], e["seq"], e["kind"]) for e in events] == [
            (task.pk, run.pk, 1, "progress"), (task.pk, run.pk, 2, "log")]
        assert events[0]["engine_time"] == progress["time"] and events[1]["engine_time"] == line["time"]
        assert events[0]["data"]["done"] == 1 << 20 and events[0]["data"]["total"] == 4 << 20
        assert events[1]["data"]["message"] == "Reading disk-0" and events[1]["time"]


def test_resume_replays_exactly_the_missed_events_in_order(viewer_user):
    run, (first, second) = run_with_tasks("web-01", "db-01")
    first_log, second_log = EventLog(first), EventLog(second)
    for n in range(1, 4):
        first_log.log(f"first {n}")
        second_log.log(f"second {n}")

    ws, single = socket_for(f"/ws/jobs/runs/{run.pk}/", viewer_user), socket_for(f"/ws/jobs/tasks/{first.pk}/?after=2",
                                                                                   viewer_user)

    async def scenario():
        await connected(ws)
        await ws.send_json_to({"resume": {str(first.pk): 1, str(second.pk): 2}})
        replayed = await until(ws, lambda m: m["event"] == "run.state")
        await ws.disconnect()
        await connected(single)
        replayed_one = await until(single, lambda m: m["event"] == "task.state")
        await single.disconnect()
        return replayed, replayed_one

    replayed, replayed_one = async_to_sync(scenario)()
    # Stored order across tasks, each task's seqs after the one given.
    assert events_of(replayed) == [(first.pk, 2, "log"), (first.pk, 3, "log"), (second.pk, 3, "log")]
    assert [m["data"]["data"]["message"] for m in replayed if m["event"] == "task.event"] == [
        "first 2", "first 3", "second 3"]
    states = {m["data"]["id"]: m["data"] for m in replayed if m["event"] == "task.state"}
    assert states[first.pk]["last_seq"] == 3 and states[second.pk]["vm_name"] == "db-01"
    assert replayed[-1]["data"]["counts"]["running"] == 2
    assert events_of(replayed_one) == [(first.pk, 3, "log")]


def test_task_and_run_state_changes_are_pushed(viewer_user):
    run, (task, other) = run_with_tasks("web-01", "db-01")

    ws, runs_ws = socket_for(f"/ws/jobs/runs/{run.pk}/", viewer_user), socket_for("/ws/jobs/runs/", viewer_user)

    async def scenario():
        await connected(ws)
        await connected(runs_ws)
        await until(runs_ws, lambda m: m["event"] == "run.state" and m["data"]["id"] == run.pk)  # active on connect
        await database_sync_to_async(_finish)(task, Task.State.SUCCEEDED, "Restore point rp-1 (full).")
        finished = await until(ws, lambda m: m["event"] == "run.state")
        await database_sync_to_async(services.cancel_run)(run)
        cancelling = await until(runs_ws, lambda m: m["event"] == "run.state" and m["data"]["cancel_requested"])
        await ws.disconnect()
        await runs_ws.disconnect()
        return finished, cancelling

    finished, cancelling = async_to_sync(scenario)()
    state = next(m["data"] for m in finished if m["event"] == "task.state")
    assert (state["id"], state["state"], state["state_label"], state["percent"]) == (
        task.pk, "succeeded", "Succeeded", 100)
    assert state["message"] == "Restore point rp-1 (full)." and not state["active"]
    assert finished[-1]["data"]["counts"]["succeeded"] == 1 and finished[-1]["data"]["counts"]["running"] == 1
    assert cancelling[-1]["data"]["id"] == run.pk and cancelling[-1]["data"]["state"] == "running"


@pytest.mark.parametrize("role", [None, "nobody"])
def test_sockets_without_a_role_are_closed_with_4403(role, make_user):
    run, (task,) = run_with_tasks("web-01")
    user = make_user(None) if role == "nobody" else None

    async def closing_of(ws: WebsocketCommunicator) -> dict:
        ok, _ = await ws.connect()
        assert ok
        closing = await ws.receive_output(timeout=WAIT)
        await ws.wait()
        return closing

    for path in (f"/ws/jobs/runs/{run.pk}/", f"/ws/jobs/tasks/{task.pk}/", "/ws/jobs/runs/"):
        assert async_to_sync(closing_of)(socket_for(path, user)) == {"type": "websocket.close", "code": FORBIDDEN}


def test_a_missing_run_closes_with_4404(viewer_user):
    ws = socket_for("/ws/jobs/runs/999999/", viewer_user)

    async def scenario():
        await connected(ws)
        closing = await ws.receive_output(timeout=WAIT)
        await ws.wait()
        return closing

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": NOT_FOUND}


def test_messages_from_the_browser_do_nothing(operator_user):
    run, (task,) = run_with_tasks("web-01")

    ws = socket_for(f"/ws/jobs/runs/{run.pk}/", operator_user)

    async def scenario():
        await connected(ws)
        answers = []
        for message in ({"cancel": True}, {"type": "jobs.message", "event": "run.state", "data": {}},
                        {"resume": {str(task.pk): -1}}, {"resume": {"web-01": 1}}):
            await ws.send_json_to(message)
            answers.append(await ws.receive_json_from(timeout=WAIT))
        await ws.send_to(text_data="not json")
        answers.append(await ws.receive_json_from(timeout=WAIT))
        # The socket still works: a later event arrives.
        await database_sync_to_async(EventLog(task).log)("still here")
        heard = await until(ws, lambda m: m["event"] == "task.event")
        await ws.disconnect()
        return answers, heard

    answers, heard = async_to_sync(scenario)()
    assert all(a["event"] == "error" and "Only" in a["data"]["message"] for a in answers)
    assert heard[-1]["data"]["data"]["message"] == "still here"
    run.refresh_from_db()
    task.refresh_from_db()
    assert not run.cancel_requested and run.state == JobRun.State.RUNNING
    assert not task.cancel_requested and task.state == Task.State.RUNNING


def test_a_lab_run_pushes_progress_before_each_final_state(lab, repository, viewer_user):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    # 1 MB/s: the backup lasts a few seconds, so the engine reports progress several times.
    run = services.start_run(job_for(repository, [vm], throttle_mbps=1), queue=False)
    task = run.tasks.get()
    outcome = {}

    def drive():
        try:
            outcome["run"] = execute_run(run.pk)
        finally:
            from django.db import connection

            connection.close()

    ws = socket_for(f"/ws/jobs/runs/{run.pk}/", viewer_user)

    async def scenario():
        await connected(ws)
        worker = threading.Thread(target=drive)
        worker.start()
        messages = await until(ws, lambda m: m["event"] == "run.state" and not m["data"]["active"], timeout=120)
        await asyncio.to_thread(worker.join, 60)
        await ws.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert outcome["run"].state == JobRun.State.SUCCEEDED, outcome["run"].message
    final = next(i for i, m in enumerate(messages)
                 if m["event"] == "task.state" and m["data"]["id"] == task.pk and not m["data"]["active"])
    done = [m["data"]["data"]["done"] for m in messages[:final]
            if m["event"] == "task.event" and m["data"]["kind"] == "progress"]
    assert len(set(done)) >= 2, done
    assert done == sorted(done)
    seqs = [m["data"]["seq"] for m in messages if m["event"] == "task.event"]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert messages[final]["data"]["state"] == "succeeded"
    assert messages[-1]["data"]["counts"]["succeeded"] == 1

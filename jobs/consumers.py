"""Live progress of runs and tasks: websockets that forward what `jobs.live` publishes, with replay.

A socket joins its group first, then replays: the browser sends `{"resume": {"<task id>": <last seq
seen>, ...}}` (a task socket also takes `?after=<seq>`) and gets the stored events of the tasks it
names after those seqs (0: all), in order, then the current states. An event may so arrive twice;
the browser drops a seq it has seen.
Viewers and above may listen; `resume` is the only message accepted, so nobody acts over a socket.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.db.models import Q

from core.consumers import GroupPushConsumer
from jobs import live
from jobs.models import JobRun, Task, TaskEvent

NOT_FOUND = 4404  # the run or task does not exist
REPLAY_BATCH = 500
RESUME_CHUNK = 200  # tasks per query: SQLite limits how deeply one WHERE clause may nest
ONLY_RESUME = ('Only {"resume": {"<task id>": <last seq seen>}} is accepted on this socket; runs and tasks are '
               "cancelled from their pages.")


class JobsConsumer(GroupPushConsumer):
    """Forwards `jobs.message`s as `{"event": ..., "data": ...}`; subclasses name the group and what to replay."""

    async def close_missing(self) -> None:
        """The run or task does not exist: leave its group and close with NOT_FOUND."""
        await self.channel_layer.group_discard(self.group, self.channel_name)
        self.joined = False
        await self.close(code=NOT_FOUND)

    async def jobs_message(self, message: dict) -> None:
        await self.send_json({"event": message["event"], "data": message["data"]})

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return json.loads(text_data)
        except ValueError:
            return None

    async def receive_json(self, content, **kwargs) -> None:
        resume = content.get("resume") if isinstance(content, dict) and len(content) == 1 else None
        seqs = _seqs(resume)
        if seqs is None:
            await self.send_json({"event": "error", "data": {"message": ONLY_RESUME}})
            return
        await self.replay(seqs)

    async def replay(self, seqs: dict[int, int]) -> None:
        """Send the stored events after `seqs` ({task id: last seq seen}), then the current states."""

    async def send_events(self, tasks: Q, seqs: dict[int, int]) -> None:
        """The events after each seq of `seqs` ({task id: seq}) of those tasks matching `tasks`, in stored order."""
        items = list(seqs.items())
        wheres = [tasks & Q(*(Q(task_id=pk, seq__gt=seq) for pk, seq in items[i:i + RESUME_CHUNK]), _connector=Q.OR)
                  for i in range(0, len(items), RESUME_CHUNK)]
        last, more = 0, bool(wheres)
        while more:
            rows, more = await database_sync_to_async(_events_after)(wheres, last)
            for row in rows:
                await self.send_json({"event": "task.event", "data": live.event_message(row, row.task.run_id)})
            if rows:
                last = rows[-1].pk


class RunConsumer(JobsConsumer):
    """`ws/jobs/runs/<id>/`: the run's state, its tasks' states and events."""

    async def connect(self) -> None:
        self.run_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.group = live.run_group(self.run_id)
        await super().connect()
        if self.joined and not await database_sync_to_async(JobRun.objects.filter(pk=self.run_id).exists)():
            await self.close_missing()

    async def replay(self, seqs: dict[int, int]) -> None:
        await self.send_events(Q(task__run_id=self.run_id), seqs)
        run, tasks = await database_sync_to_async(_run_and_tasks)(self.run_id)
        for task in tasks:
            await self.send_json({"event": "task.state", "data": task})
        if run is not None:
            await self.send_json({"event": "run.state", "data": run})


class TaskConsumer(JobsConsumer):
    """`ws/jobs/tasks/<id>/`: one task's state and events (`?after=<seq>` replays at once)."""

    async def connect(self) -> None:
        self.task_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.group = live.task_group(self.task_id)
        await super().connect()
        if not self.joined:
            return
        if not await database_sync_to_async(Task.objects.filter(pk=self.task_id).exists)():
            await self.close_missing()
            return
        after = parse_qs(self.scope.get("query_string", b"").decode()).get("after")
        if after:
            seqs = _seqs({str(self.task_id): after[-1]})
            if seqs is None:
                await self.send_json({"event": "error", "data": {"message": "?after= takes the last seq seen, a "
                                                                            "whole number such as ?after=42."}})
                return
            await self.replay(seqs)

    async def replay(self, seqs: dict[int, int]) -> None:
        await self.send_events(Q(task_id=self.task_id), {pk: seq for pk, seq in seqs.items() if pk == self.task_id})
        task = await database_sync_to_async(_task)(self.task_id)
        if task is not None:
            await self.send_json({"event": "task.state", "data": task})


class RunsConsumer(JobsConsumer):
    """`ws/jobs/runs/`: every run's state and totals; on connect, the states of the runs still active."""

    group = live.RUNS

    async def connect(self) -> None:
        await super().connect()
        if self.joined:
            await self.replay({})

    async def replay(self, seqs: dict[int, int]) -> None:
        for run in await database_sync_to_async(_active_runs)():
            await self.send_json({"event": "run.state", "data": run})


def _seqs(resume) -> dict[int, int] | None:
    """{"<task id>": <seq>} as {task id: seq}; None when it is not that."""
    if not isinstance(resume, dict):
        return None
    try:
        seqs = {int(pk): int(seq) for pk, seq in resume.items()}
    except (TypeError, ValueError):
        return None
    return seqs if all(seq >= 0 for seq in seqs.values()) else None


def _events_after(wheres: list[Q], last: int) -> tuple[list[TaskEvent], bool]:
    """The next events (by pk, after `last`) matching any of `wheres`, and whether more may follow."""
    rows, cutoff = [], None
    for where in wheres:
        found = list(TaskEvent.objects.filter(where, pk__gt=last).order_by("pk").select_related("task")
                     .only("task_id", "seq", "type", "data", "time", "task__run_id")[:REPLAY_BATCH])
        if len(found) == REPLAY_BATCH:  # this query has more: nothing past its last row is certain yet
            cutoff = found[-1].pk if cutoff is None else min(cutoff, found[-1].pk)
        rows += found
    rows.sort(key=lambda row: row.pk)
    if cutoff is None:
        return rows, False
    return [row for row in rows if row.pk <= cutoff], True


def _run_and_tasks(run_id: int) -> tuple[dict | None, list[dict]]:
    run = JobRun.objects.filter(pk=run_id).first()
    if run is None:
        return None, []
    return live.run_state(run), [live.task_state(t) for t in run.tasks.order_by("vm_name", "pk")]


def _task(task_id: int) -> dict | None:
    task = Task.objects.filter(pk=task_id).first()
    return live.task_state(task) if task else None


def _active_runs() -> list[dict]:
    return [live.run_state(run) for run in JobRun.objects.filter(state__in=(JobRun.State.QUEUED,
                                                                            JobRun.State.RUNNING))]

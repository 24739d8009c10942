"""A task's events: every engine event and orchestration step, numbered per task, with progress on the task.

Progress events are stored about once a second (the engine sends them about that often; bursts are
thinned), logs, phases, results and errors always. The task row carries the latest phase, bytes,
rate and ETA so lists need no event query. Every stored event is published live (`jobs.live`) once
committed, with the engine's own event time so the delay to the browser can be measured.
"""

from __future__ import annotations

import time

from django.db import transaction
from django.db.models import F

from jobs import live
from jobs.models import Task, TaskEvent

# Seconds between stored progress events of one task: a little under the engine's 1 s tick, so timing jitter
# does not drop every fifth tick.
PROGRESS_EVERY = 0.9


class EventLog:
    def __init__(self, task: Task):
        self.task = task
        self._last_progress = 0.0

    def _store(self, kind: str, data: dict, engine_time: float | None = None) -> None:
        with transaction.atomic():
            Task.objects.filter(pk=self.task.pk).update(last_seq=F("last_seq") + 1)
            seq = Task.objects.values_list("last_seq", flat=True).get(pk=self.task.pk)
            row = TaskEvent.objects.create(task_id=self.task.pk, seq=seq, type=kind, data=data)
            live.publish_event(self.task, row, engine_time)
        self.task.last_seq = seq

    def phase(self, phase: str, message: str = "") -> None:
        self.task.phase = phase[:60]
        self.task.save(update_fields=["phase"])
        live.publish_task(self.task, with_run=False)
        self._store("phase", {"phase": phase, "message": message})

    def log(self, message: str, level: str = "info") -> None:
        self._store("log", {"level": level, "message": message})

    def engine(self, event: dict) -> None:
        """One JSON event from the engine."""
        kind = event.get("type", "log")
        if kind == "progress":
            task = self.task
            task.bytes_done, task.bytes_total = int(event.get("done") or 0), int(event.get("total") or 0)
            task.rate, task.eta = int(event.get("rate") or 0), event.get("eta")
            now = time.monotonic()
            if now - self._last_progress < PROGRESS_EVERY:
                return
            self._last_progress = now
            task.save(update_fields=["bytes_done", "bytes_total", "rate", "eta"])
        self._store(kind if kind in ("progress", "log", "result", "error") else "log",
                    {k: v for k, v in event.items() if k not in ("type", "time")}, event.get("time"))
        if kind == "progress" and self.task.run_id:
            live.publish_run_totals(self.task.run_id)

"""Progress events: the first one comes early, and the rate follows the current speed, not the average."""

from __future__ import annotations

import threading

from engines import progress as progress_mod
from engines.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_measured_over_the_last_seconds(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    progress = Progress(None, "backup", total=10_000)
    for _ in range(10):  # a slow start: 10 bytes a second for 10 s
        clock.now += 1
        progress.add(10)
        progress.snapshot()
    assert progress.snapshot()["rate"] == 10
    for _ in range(6):  # then 500 bytes a second
        clock.now += 1
        progress.add(500)
        event = progress.snapshot()
    assert event["rate"] == 500  # the average since the start would say about 190
    assert event["done"] == 3100 and event["eta"] == (10_000 - 3100) / 500


def test_the_first_event_comes_a_quarter_second_after_the_start():
    events: list[dict] = []
    first = threading.Event()

    def emit(event: dict) -> None:
        events.append(event)
        first.set()

    with Progress(emit, "restore", total=100, interval=60) as progress:  # the steady tick: a minute
        progress.add(40)
        assert first.wait(20), "the first progress event waited for the steady tick"
    assert events[0]["done"] == 40 and events[0]["total"] == 100
    assert events[-1]["done"] == 40  # the closing event

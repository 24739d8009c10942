"""Progress reporting: a ticker thread turns counters into `progress` events about once a second, the first
one a quarter of a second after the work starts (so a browser sees the bar move early).

The rate is measured over the last few seconds (RATE_WINDOW), not since the start: a slow start (opening
the repository, waiting for a lock) does not drag it down for the rest of the disk, and the ETA follows
the current speed."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from engines.contract import progress_event

Emit = Callable[[dict], None]


FIRST_TICK = 0.25  # seconds
RATE_WINDOW = 5.0  # seconds of samples the rate is measured over


class Progress:
    def __init__(self, emit: Emit | None, phase: str, total: int, interval: float = 1.0):
        self.emit = emit
        self.phase = phase
        self.total = total
        self.done = 0
        self.interval = interval
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])  # (time, done), oldest first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n

    def snapshot(self) -> dict:
        now, done = time.monotonic(), self.done
        while len(self._samples) > 1 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()  # keep one sample at least RATE_WINDOW old, when there is one
        since, done_then = self._samples[0]
        self._samples.append((now, done))
        rate = (done - done_then) / max(now - since, 1e-6)
        remaining = max(self.total - done, 0)
        eta = remaining / rate if rate > 0 else None
        return progress_event(self.phase, done, self.total, rate, eta)

    def _tick(self) -> None:
        wait = min(FIRST_TICK, self.interval)
        while not self._stop.wait(wait):
            self.emit(self.snapshot())
            wait = self.interval

    def __enter__(self) -> Progress:
        if self.emit is not None:
            self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if exc[0] is None:
                self.emit(self.snapshot())

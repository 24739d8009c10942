"""A small thread pool: each worker pulls items from one shared iterator and keeps its own scratch; a
token bucket that limits how fast the workers read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from engines.contract import BadJobSpec


def run_parallel(threads: int, work: Iterator, handle: Callable[[object, dict], None], cancel: threading.Event) -> None:
    """Run `handle(item, scratch)` over `work` in threads; the first failure stops the rest."""
    lock = threading.Lock()
    failure: list[BaseException] = []

    def worker() -> None:
        scratch: dict = {}
        while True:
            with lock:
                if failure or cancel.is_set():
                    return
                item = next(work, None)
            if item is None:
                return
            try:
                handle(item, scratch)
            except BaseException as exc:  # noqa: B036 - re-raised in the calling thread
                with lock:
                    failure.append(exc)
                return

    pool = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(max(1, threads))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failure:
        raise failure[0]


MB = 10**6  # read limits are in MB/s, like the benchmarks' figures


class Throttle:
    """A token bucket over bytes, shared by threads: `take(n)` returns once `n` more bytes fit the rate.

    The bucket starts empty and may go into debt, so a chunk larger than the burst still passes and the
    average over a run is the rate. Readers pay after each read, so a backup's first chunks (one per
    reader) are not held back and its first progress comes at once. Waits end early when `cancel` is set.
    """

    def __init__(self, rate: float, *, cancel: threading.Event | None = None, burst: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] | None = None):
        self.rate = float(rate)  # bytes per second
        self.capacity = self.rate * burst  # what an idle spell may save up
        self.cancel = cancel or threading.Event()
        self.clock = clock
        self.sleep = sleep or self.cancel.wait
        self.slept = 0.0  # seconds spent waiting, summed over threads
        self.taken = 0
        self._tokens = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate) - n
            self._last = now
            self.taken += n
            pause = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.slept += pause
        if pause > 0 and not self.cancel.is_set():
            self.sleep(pause)


def read_limit(mbps: object) -> float | None:
    """The option `throttle_mbps` (MB/s) as bytes per second; None for no limit (absent or 0)."""
    if mbps is None or mbps == "":
        return None
    try:
        value = float(mbps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(mbps, bool) or not 0 <= value < float("inf"):
        raise BadJobSpec(f"options.throttle_mbps must be a positive number of MB/s per VM (got {mbps!r}); leave "
                         "it out or set 0 for no limit.")
    return value * MB if value else None

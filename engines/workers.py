"""A small thread pool: each worker pulls items from one shared iterator and keeps its own scratch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator


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

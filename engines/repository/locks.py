"""Repository locks: backups hold shared locks, prune holds the exclusive one.

A lock is a small JSON file under `locks/`, refreshed while its holder runs. A lock is stale
when its holder stopped refreshing it (crashed engine, lost appliance) or, on the same
host, when its process no longer exists; stale locks are removed by whoever finds them.
A backup that finds prune's lock waits for it (retrying with backoff, up to a limit) instead of
failing at once; prune still fails at once and leaves the repository to the backups.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from engines.errors import EngineError, TargetNotFound
from engines.repository import format as fmt
from engines.targets.base import Target

EXCLUSIVE = f"{fmt.LOCKS_DIR}/exclusive"
STALE_AFTER = 15 * 60  # seconds without a refresh
REFRESH_EVERY = 60
BACKUP_LOCK_WAIT = 30 * 60  # seconds a backup waits for prune's lock before it fails
BACKOFF = (0.5, 5.0)  # first and longest pause between two tries, seconds


class RepositoryLocked(EngineError):
    code = "repository_locked"


def _duration(seconds: float) -> str:
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _holder(info: dict) -> str:
    since = ""
    if info.get("created"):
        since = " since " + datetime.fromtimestamp(float(info["created"]), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{info.get('purpose', 'another job')} on {info.get('host', '?')}{since}"


def _busy(holder: dict, waited: float) -> str:
    if waited <= 0:
        return f"The repository is locked by {_holder(holder)}: wait for it to finish, then try again."
    return (f"The repository is still locked by {_holder(holder)} after waiting {_duration(waited)}: wait for it "
            "to finish, then try again.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: dict, stale_after: float = STALE_AFTER) -> bool:
    if time.time() - float(info.get("refreshed", 0)) > stale_after:
        return True
    return info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", 0)))


class RepositoryLock:
    """`wait` > 0 makes acquire retry with backoff while another job holds the lock, up to `wait` seconds;
    `on_wait` hears once that it waits; `cancel` ends the wait with the engine's Cancelled error."""

    def __init__(self, target: Target, kind: str, purpose: str, *, stale_after: float = STALE_AFTER,
                 refresh_every: float = REFRESH_EVERY, wait: float = 0, backoff: tuple[float, float] = BACKOFF,
                 cancel: threading.Event | None = None, on_wait: Callable[[str], None] | None = None):
        self.target = target
        self.kind = kind
        self.purpose = purpose
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.wait = max(0.0, wait)
        self.backoff = backoff
        self.cancel = cancel or threading.Event()
        self.on_wait = on_wait
        self.waited = 0.0  # seconds acquire spent waiting for another holder
        self.path = EXCLUSIVE if kind == "exclusive" else f"{fmt.LOCKS_DIR}/shared-{secrets.token_hex(8)}"
        self.created = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"kind": self.kind, "purpose": self.purpose, "host": socket.gethostname(),
                           "pid": os.getpid(), "created": self.created, "refreshed": time.time()}).encode()

    def _read(self, path: str) -> dict | None:
        try:
            return json.loads(self.target.get(path))
        except TargetNotFound:
            return None
        except ValueError:
            return {"refreshed": 0}  # unreadable: a holder that died mid-write

    def _others(self, prefix: str) -> list[tuple[str, dict]]:
        found = []
        for entry in self.target.list(fmt.LOCKS_DIR):
            path = f"{fmt.LOCKS_DIR}/{entry.name}"
            if entry.is_dir or not entry.name.startswith(prefix) or path == self.path or ".tmp-" in entry.name:
                continue
            info = self._read(path)
            if info is None:
                continue
            if is_stale(info, self.stale_after):
                self.target.delete(path)
                continue
            found.append((path, info))
        return found

    def _try(self) -> dict | None:
        """Take the lock once; returns None when taken, else the live holder that blocks it."""
        if self.kind == "exclusive":
            if not self.target.put_new(self.path, self._body()):
                holder = self._read(self.path)
                if holder is not None and not is_stale(holder, self.stale_after):
                    return holder
                self.target.delete(self.path)
                if not self.target.put_new(self.path, self._body()):
                    return self._read(self.path) or {"purpose": "another job"}  # taken at the same moment
            busy = self._others("shared-")
        else:
            self.target.put(self.path, self._body())
            busy = self._others("exclusive")
        if busy:
            self.target.delete(self.path)
            return busy[0][1]
        return None

    def acquire(self) -> RepositoryLock:
        self.target.makedirs(fmt.LOCKS_DIR)
        started = time.monotonic()
        delay, longest = self.backoff
        announced = False
        while (holder := self._try()) is not None:
            self.waited = time.monotonic() - started
            if self.waited >= self.wait:
                raise RepositoryLocked(_busy(holder, self.waited if self.wait else 0))
            if self.on_wait is not None and not announced:
                announced = True
                self.on_wait(f"Waiting for the repository lock held by {_holder(holder)} (up to "
                             f"{_duration(self.wait)})...")
            if self.cancel.wait(min(delay, self.wait - self.waited)):
                from engines.backup import Cancelled  # engines.backup imports this module

                raise Cancelled(f"The {self.purpose} was cancelled while it waited for the repository lock held "
                                f"by {_holder(holder)}; nothing was written.")
            delay = min(delay * 2, longest)
        self.waited = time.monotonic() - started
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_every):
            try:
                self.target.put(self.path, self._body())
            except EngineError:
                pass  # the next refresh retries; staleness needs many misses

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.target.delete(self.path)

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""Repository locks: backups hold shared locks, prune holds the exclusive one.

A lock is a small JSON file under `locks/`, refreshed while its holder runs. A lock is stale
when its holder stopped refreshing it (crashed engine, lost appliance) or, on the same
host, when its process no longer exists; stale locks are removed by whoever finds them.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time

from engines.errors import EngineError, TargetNotFound
from engines.repository import format as fmt
from engines.targets.base import Target

EXCLUSIVE = f"{fmt.LOCKS_DIR}/exclusive"
STALE_AFTER = 15 * 60  # seconds without a refresh
REFRESH_EVERY = 60


class RepositoryLocked(EngineError):
    code = "repository_locked"


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
    def __init__(self, target: Target, kind: str, purpose: str, *, stale_after: float = STALE_AFTER,
                 refresh_every: float = REFRESH_EVERY):
        self.target = target
        self.kind = kind
        self.purpose = purpose
        self.stale_after = stale_after
        self.refresh_every = refresh_every
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

    def acquire(self) -> RepositoryLock:
        self.target.makedirs(fmt.LOCKS_DIR)
        if self.kind == "exclusive":
            if not self.target.put_new(self.path, self._body()):
                holder = self._read(self.path)
                if holder is not None and not is_stale(holder, self.stale_after):
                    raise RepositoryLocked(f"The repository is locked by {holder.get('purpose', 'another job')} on "
                                           f"{holder.get('host', '?')}: wait for it to finish, then try again.")
                self.target.delete(self.path)
                if not self.target.put_new(self.path, self._body()):
                    raise RepositoryLocked("Another job took the repository lock at the same moment: try again.")
            busy = self._others("shared-")
        else:
            self.target.put(self.path, self._body())
            busy = self._others("exclusive")
        if busy:
            self.target.delete(self.path)
            info = busy[0][1]
            raise RepositoryLocked(f"The repository is busy with {info.get('purpose', 'another job')} on "
                                   f"{info.get('host', '?')}: wait for it to finish, then try again.")
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

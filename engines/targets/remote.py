"""What the network targets share: one connection per thread, temporary names for atomic puts,
and repository-relative paths joined under the target's base folder."""

from __future__ import annotations

import posixpath
import threading
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from engines.errors import TargetError

Conn = TypeVar("Conn")

TEMP_MARK = ".vaf-tmp-"  # written by put() before the rename; hidden from list()


def write_in_blocks(write: Callable[[memoryview], object], data: bytes | memoryview, block: int) -> None:
    """Hand `data` to a file handle's `write` in `block`-sized slices, copying nothing."""
    view = memoryview(data).cast("B")
    for offset in range(0, len(view), block):
        write(view[offset:offset + block])


def temp_name(path: str) -> str:
    """A unique sibling of `path`, so the final rename stays within one directory."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}{TEMP_MARK}{uuid.uuid4().hex[:12]}")


def is_temp(name: str) -> bool:
    return name.startswith(".") and TEMP_MARK in name


def clean_relative(path: str) -> str:
    """Normalise a repository path; refuse ones that would leave the repository folder."""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise TargetError(f"The path {path!r} leaves the repository folder; use a path inside it.")
    return "/".join(parts)


def join(base: str, path: str) -> str:
    rel = clean_relative(path)
    if not rel:
        return base or "."
    return f"{base.rstrip('/')}/{rel}" if base else rel


class PerThread(Generic[Conn]):
    """One connection per thread, opened on first use; every one is closed by close_all()."""

    def __init__(self, connect: Callable[[], Conn], disconnect: Callable[[Conn], None],
                 alive: Callable[[Conn], bool] | None = None):
        self._connect = connect
        self._disconnect = disconnect
        self._alive = alive  # a cheap local check: a connection the server closed is replaced
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Conn] = []

    def get(self) -> Conn:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._alive is not None and not self._alive(conn):
            self.discard()
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def fresh(self) -> bool:
        """True when this thread has no connection yet (the next get() opens one)."""
        return getattr(self._local, "conn", None) is None

    def discard(self) -> None:
        """Forget this thread's connection after a drop; the next call reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            self._quiet_close(conn)

    def close_all(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            self._quiet_close(conn)
        self._local = threading.local()

    def _quiet_close(self, conn: Conn) -> None:
        try:
            self._disconnect(conn)
        except Exception:  # noqa: S110 - closing a dead connection may fail in any way
            pass

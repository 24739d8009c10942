"""The lab's inventory file: JSON written atomically (temp + rename) under an fcntl lock.

Several processes (web server, workers, appliances, tests) use one lab at a time; every change
is a read-modify-write inside `LabState.edit()`, which holds an exclusive lock on a separate
lock file, so no update is lost. Readers need no lock: a rename is atomic.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inventory.connectors.base import NotFound, Unreachable

FORMAT = 1
INVENTORY = "inventory.json"
LOCK = ".lock"


class LabState:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / INVENTORY
        self._local = threading.local()

    # -- reading and writing ---------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> dict:
        if getattr(self._local, "data", None) is not None:  # inside edit(): see our own changes
            return self._local.data
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise Unreachable(
                f"The lab at {self.root} has no inventory ({INVENTORY} is missing): run `manage.py lab seed`."
            ) from None
        except (OSError, ValueError) as exc:
            raise Unreachable(f"Cannot read the lab inventory {self.path}: {exc}.") from exc

    @contextmanager
    def locked(self, *, create: bool = False) -> Iterator[None]:
        """Exclusive lock on the lab; re-entrant within a thread. Only `create` makes the folder."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        if not create and not self.root.is_dir():
            raise missing_root(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise Unreachable(f"Cannot use the lab folder {self.root}: {exc.strerror}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
        finally:
            os.close(fd)  # closing releases the lock

    @contextmanager
    def edit(self, *, create: bool = False) -> Iterator[dict]:
        """Lock, load, let the caller change the dict, then save it; an exception saves nothing."""
        with self.locked(create=create):
            outer = getattr(self._local, "data", None)
            if outer is not None:
                yield outer
                return
            data = empty() if create and not self.exists() else self.read()
            self._local.data = data
            try:
                yield data
                self._save(data)
            finally:
                self._local.data = None

    def _save(self, data: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".inventory-", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- paths -----------------------------------------------------------------------
    def datastore_dir(self, data: dict, datastore: str) -> Path:
        return self.root / data["datastores"][datastore]["folder"]

    def file_path(self, data: dict, datastore: str, relative: str) -> Path:
        return self.datastore_dir(data, datastore) / relative


def missing_root(root: Path) -> Unreachable:
    return Unreachable(f"The lab folder {root} does not exist: run `manage.py lab seed --root {root}`.")


def empty() -> dict:
    return {
        "format": FORMAT,
        "next_id": 1,
        "datacenters": {},
        "clusters": {},
        "hosts": {},
        "datastores": {},
        "networks": {},
        "vms": {},
    }


def new_moref(data: dict, prefix: str) -> str:
    """VMware-style id from one counter for all kinds: host-12, datastore-21, vm-101, snapshot-3."""
    number = data["next_id"]
    data["next_id"] = number + 1
    return f"{prefix}-{number}"


def get(data: dict, kind: str, moref: str) -> dict:
    """One object by moref, or NotFound with a sentence."""
    try:
        return data[kind][moref]
    except KeyError:
        noun = {"vms": "VM", "hosts": "host", "datastores": "datastore", "networks": "network"}.get(kind, kind)
        raise NotFound(f"The lab has no {noun} {moref!r}: sync the connection and pick one that exists.") from None


def by_name(data: dict, kind: str, name: str) -> tuple[str, dict] | None:
    for moref, obj in data[kind].items():
        if obj["name"] == name:
            return moref, obj
    return None


def parse_file_name(file_name: str) -> tuple[str, str]:
    """'[datastore] folder/file.vmdk' -> ('datastore', 'folder/file.vmdk')."""
    text = file_name.strip()
    if not text.startswith("[") or "]" not in text:
        raise NotFound(f"{file_name!r} is not a datastore path; expected the form '[datastore] folder/disk.vmdk'.")
    name, _, relative = text[1:].partition("]")
    relative = relative.strip()
    if not relative or relative.startswith("/") or ".." in Path(relative).parts:
        raise NotFound(f"{file_name!r} does not name a file inside the datastore.")
    return name, relative

"""The lab's changed-block tracking, kept per disk in a `-ctk.json` file beside the disk (like VMware's).

Writes are recorded as extents under the current epoch. A snapshot takes a change id
"<tracker id>/<epoch>" and starts a new epoch, so the changes between two snapshots are the
extents of the epochs in between. Resetting (or turning tracking off and on) gives a new
tracker id: older change ids are then unknown and the caller must read the whole disk.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

from inventory.connectors.base import ChangeIdUnknown
from inventory.connectors.lab import extents as ext

KEEP_EPOCHS = 64


class ChangeTracker:
    """Only used while the lab lock is held."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.data = _fresh()

    @property
    def change_id(self) -> str:
        return f"{self.data['id']}/{self.data['epoch']}"

    def record(self, offset: int, length: int) -> None:
        epochs = self.data["epochs"]
        key = str(self.data["epoch"])
        epochs[key] = ext.add([tuple(e) for e in epochs.get(key, [])], offset, length)

    def checkpoint(self) -> str:
        """The change id covering every write so far; later writes belong to the next one."""
        current = self.change_id
        self.data["epoch"] += 1
        oldest = self.data["epoch"] - KEEP_EPOCHS
        if oldest > self.data["oldest"]:
            for key in [k for k in self.data["epochs"] if int(k) < oldest]:
                del self.data["epochs"][key]
            self.data["oldest"] = oldest
        return current

    def reset(self) -> None:
        self.data = _fresh()

    def changed_between(self, since: str, until: str, what: str) -> list[ext.Extent]:
        """Extents written after change id `since` up to and including `until`."""
        tracker, epoch = _parse(since)
        last = _parse(until)[1] if until else -1
        if tracker != self.data["id"] or epoch is None or not (self.data["oldest"] - 1 <= epoch <= last):
            raise ChangeIdUnknown(
                f"Change id {since!r} is not known to the changed-block tracking of {what} (it was reset or "
                "the id is from another disk): a full read of the disk is needed."
            )
        found = []
        for key, extents in self.data["epochs"].items():
            if epoch < int(key) <= last:
                found.extend(tuple(e) for e in extents)
        return ext.coalesce(found)

    def save(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".ctk-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _fresh() -> dict:
    return {"id": uuid.uuid4().hex, "epoch": 1, "oldest": 1, "epochs": {}}


def _parse(change_id: str) -> tuple[str, int | None]:
    tracker, _, epoch = (change_id or "").partition("/")
    return tracker, int(epoch) if epoch.isdigit() else None

"""What every storage server fixture offers the tests: where its files live on this machine,
how to build a TargetSpec for it, and start/stop/kill of the real daemon."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from engines.targets.base import TargetSpec
from tests.harness.storage.process import HOST, Daemon, unmount


@dataclass
class StorageServer:
    type: str
    root: Path  # the harness's own scratch folder for this server (config, logs, data)
    data_dir: Path  # the folder the target's paths resolve into, on this machine
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    small_dir: Path | None = None  # an 8 MiB tmpfs reachable through the server, for disk-full tests
    daemon: Daemon | None = None
    mounts: list[Path] = field(default_factory=list)

    def spec(self, folder: str, **options) -> TargetSpec:
        """A spec for the repository folder `folder` inside the server's data area."""
        raise NotImplementedError

    def small_spec(self, folder: str, **options) -> TargetSpec:
        """A spec for a folder on the small tmpfs (TargetFull tests)."""
        raise NotImplementedError

    def local(self, folder: str) -> Path:
        return self.data_dir / folder

    @property
    def host(self) -> str:
        return HOST

    def start(self) -> None:
        self.daemon.start()

    def kill(self) -> None:
        self.daemon.kill()

    def restart(self) -> None:
        self.daemon.stop()
        self.daemon.start()

    def stop(self) -> None:
        try:
            if self.daemon:
                self.daemon.stop()
        finally:
            for folder in self.mounts:
                unmount(folder)
            shutil.rmtree(self.root, ignore_errors=True)

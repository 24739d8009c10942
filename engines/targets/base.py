"""The target interface: where a repository lives (local folder, SFTP, FTP/FTPS, SMB, NFS).

Paths are relative to the repository root and use "/". A target must be safe to call from
several threads at once (implementations keep one connection per thread or a small pool).
Every write is atomic for readers: `put` writes a temporary name, then renames it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class TargetSpec:
    """How to reach a target, as the server sends it in the job spec."""

    type: str  # registry key: local, sftp, ftp, ftps, smb, nfs
    path: str = ""  # repository folder on the target
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    options: dict = field(default_factory=dict)  # type-specific: private key, share, TLS, timeouts...


@dataclass
class Entry:
    name: str
    size: int
    is_dir: bool


class Target(ABC):
    type: str = ""

    def __init__(self, spec: TargetSpec):
        self.spec = spec

    @abstractmethod
    def put(self, path: str, data: bytes | memoryview) -> None:
        """Write a whole file atomically (temporary name, then rename over `path`)."""

    @abstractmethod
    def put_new(self, path: str, data: bytes) -> bool:
        """Create `path` only if it does not exist (for locks); False if it already exists."""

    @abstractmethod
    def get(self, path: str) -> bytes:
        """Read a whole file; TargetNotFound if missing."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def list(self, folder: str) -> Iterator[Entry]:
        """Entries directly in `folder` (empty if the folder does not exist)."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove a file; no error if it is already gone."""

    @abstractmethod
    def makedirs(self, folder: str) -> None: ...

    def free_space(self) -> int | None:
        """Bytes free for the repository, or None when the protocol cannot tell."""
        return None

    def sync(self) -> None:
        """Make every completed write durable, where the protocol can (a restore point's chunks before its manifest)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: the local target holds no connection
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""The small interface every transport implements: run a command, stream its output, upload a file."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar, NamedTuple

# Prints the shell's pid (= the command's pid after exec) so a caller can signal the command later.
PID_WRAPPER = ["sh", "-c", 'echo "$$"; exec "$@"', "sh"]


class TransportError(Exception):
    """A command or upload could not be done; the message says what failed and what to do."""


class UnreachableError(TransportError):
    pass


class AuthenticationError(TransportError):
    pass


class HostKeyMismatchError(TransportError):
    pass


class CommandTimeoutError(TransportError):
    pass


class UploadError(TransportError):
    pass


class CommandResult(NamedTuple):
    exit: int
    stdout: bytes
    stderr: bytes


class Stream(ABC):
    """A running command: iterate its stdout lines, `terminate()` to cancel, `wait()` for the exit code."""

    pid: int | None = None

    @abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @abstractmethod
    def terminate(self) -> None:
        """Send SIGTERM to the command (the engine then stops cleanly at the next chunk)."""

    @abstractmethod
    def kill(self) -> None:
        """Send SIGKILL to the command."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int: ...

    @property
    @abstractmethod
    def stderr(self) -> bytes: ...


class Transport(ABC):
    """How the server reaches one appliance; paths are relative to the login's home directory."""

    name: ClassVar[str]
    label: str = "the appliance"

    @abstractmethod
    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult: ...

    @abstractmethod
    def stream(self, argv: list[str], stdin: bytes | None = None) -> Stream: ...

    @abstractmethod
    def put_file(self, local: str, remote: str) -> int:
        """Upload `local` to `remote` (temp name + rename: never a half file); returns bytes sent."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

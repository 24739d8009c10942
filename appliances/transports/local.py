"""The `local` transport: the appliance is this machine, commands are subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from appliances.transports.base import CommandResult, CommandTimeoutError, Stream, Transport, UploadError


class LocalStream(Stream):
    def __init__(self, proc: subprocess.Popen, stdin: bytes | None):
        self.proc, self.pid = proc, proc.pid
        self._err = bytearray()
        self._drain = threading.Thread(target=lambda: self._err.extend(proc.stderr.read()), daemon=True)
        self._drain.start()
        if stdin:
            proc.stdin.write(stdin)
        proc.stdin.close()

    def __iter__(self) -> Iterator[str]:
        for line in self.proc.stdout:
            yield line.decode(errors="replace").rstrip("\n")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._drain.join(5)
        return code

    @property
    def stderr(self) -> bytes:
        return bytes(self._err)


class LocalTransport(Transport):
    name = "local"

    def __init__(self, home: str | os.PathLike | None = None, label: str = "the local appliance"):
        self.home = Path(home or Path.home())
        self.home.mkdir(parents=True, exist_ok=True)
        self.label = label

    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        try:
            proc = subprocess.run(argv, input=stdin or b"", capture_output=True, timeout=timeout, cwd=self.home)
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeoutError(f"`{argv[0]}` on {self.label} did not finish within {timeout:g} s "
                                      "and was stopped: check the appliance's load and try again.") from exc
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def stream(self, argv: list[str], stdin: bytes | None = None) -> Stream:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=self.home)
        return LocalStream(proc, stdin)

    def put_file(self, local: str, remote: str) -> int:
        target = self.home / remote
        part = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")  # callers may race
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, part)
            part.replace(target)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise UploadError(f"Copying {local} to {target} failed ({exc.strerror or exc}): free space on the "
                              "appliance's disk and try again; nothing was installed.") from exc
        return target.stat().st_size

    def close(self) -> None:
        pass

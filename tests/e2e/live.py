"""The whole system as real processes for browser tests: daphne (HTTP + websockets) and a qcluster.

Each run gets its own VAFLEET_VAR_DIR (database, secrets key, lab), is migrated, gets an
administrator, and is stopped (both processes, their process groups) afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
USERNAME = "e2e-admin"
PASSWORD = "E2e-Browser-Pass-42"


class ServerFailed(RuntimeError):
    """A server process could not start; the message carries its log."""


@dataclass
class LiveSystem:
    url: str
    var_dir: Path
    env: dict = field(repr=False)
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def manage(self, *args: str, timeout: float = 300) -> str:
        """Runs a management command against this system's database; returns its output."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ServerFailed(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(system: LiveSystem, name: str, args: list[str]) -> subprocess.Popen:
    log = open(system.var_dir / f"{name}.log", "wb")  # closed by _stop
    process = subprocess.Popen(
        args, cwd=REPO, env=system.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: qcluster's workers stop with it
    )
    process.log_file = log
    system.processes.append(process)
    return process


def _wait_until_serving(system: LiveSystem, daphne: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daphne.poll() is not None:
            raise ServerFailed(f"daphne exited with status {daphne.returncode}:\n{system.log('daphne')}")
        try:
            with urllib.request.urlopen(f"{system.url}/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise ServerFailed(f"daphne did not answer within {timeout:g} s:\n{system.log('daphne')}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    process.log_file.close()


@contextmanager
def running_system() -> Iterator[LiveSystem]:
    var_dir = Path(tempfile.mkdtemp(prefix="vafleet-e2e-"))
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vaproject.settings",
        "VAFLEET_VAR_DIR": str(var_dir),
        "VAFLEET_LAB_ROOT": str(var_dir / "lab"),
        "VAFLEET_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "VAFLEET_WORKERS": "1",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("VAFLEET_DATABASE_URL", "VAFLEET_REDIS_URL", "VAFLEET_TASKS_SYNC"):
        env.pop(name, None)  # the embedded default, whatever the calling shell configured
    system = LiveSystem(url=f"http://127.0.0.1:{port}", var_dir=var_dir, env=env)
    try:
        system.manage("migrate", "--noinput")
        system.manage("createsuperuser", "--noinput", "--username", USERNAME, "--email", "e2e@example.test")
        daphne = _start(
            system, "daphne",
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vaproject.asgi:application"],
        )
        _start(system, "qcluster", [sys.executable, "manage.py", "qcluster"])
        _wait_until_serving(system, daphne)
        yield system
    finally:
        for process in reversed(system.processes):
            _stop(process)
        shutil.rmtree(var_dir, ignore_errors=True)

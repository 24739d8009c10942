"""The whole system as real processes for browser tests: daphne (HTTP + websockets) and a qcluster.

Each run gets its own VAFLEET_VAR_DIR (database, secrets key, lab), is migrated, gets an
administrator, and is stopped (both processes, their process groups) afterwards.

The configuration follows the calling test run: the embedded default, or, when the run has
VAFLEET_DATABASE_URL and VAFLEET_REDIS_URL (the scale-out pass), PostgreSQL and Redis — a database
of the system's own on that server and a Redis key prefix of its own, both removed afterwards.
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
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

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
    configuration: str = "embedded"
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

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


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
    """SIGTERM to the leader only (qcluster stops its own workers in a few seconds; a SIGTERM to its whole
    group kills them under it and it waits for them forever), then SIGKILL to whatever is left of the group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=5)
    process.log_file.close()


def _admin_dsn(url: str, database: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{database}"))


@contextmanager
def _scaleout_namespace(env: dict) -> Iterator[None]:
    """A PostgreSQL database and a Redis key prefix of this system's own, removed afterwards."""
    import psycopg
    import redis

    name = f"vafleet_e2e_{uuid.uuid4().hex[:12]}"
    base_url, redis_url = env["VAFLEET_DATABASE_URL"], env["VAFLEET_REDIS_URL"]
    with psycopg.connect(_admin_dsn(base_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env["VAFLEET_DATABASE_URL"] = _admin_dsn(base_url, name)
    env["VAFLEET_REDIS_PREFIX"] = name
    try:
        yield
    finally:
        with psycopg.connect(_admin_dsn(base_url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(redis_url)
        for pattern in (f"{name}*", f"django_q:{name}*"):
            for key in client.scan_iter(match=pattern, count=500):
                client.delete(key)
        client.close()


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
    scaleout = all(os.environ.get(name) for name in ("VAFLEET_DATABASE_URL", "VAFLEET_REDIS_URL"))
    names = ("VAFLEET_TASKS_SYNC", "VAFLEET_REDIS_PREFIX") if scaleout else (
        "VAFLEET_DATABASE_URL", "VAFLEET_REDIS_URL", "VAFLEET_TASKS_SYNC", "VAFLEET_REDIS_PREFIX")
    for name in names:
        env.pop(name, None)
    system = LiveSystem(url=f"http://127.0.0.1:{port}", var_dir=var_dir, env=env,
                        configuration="scale-out" if scaleout else "embedded")
    with ExitStack() as namespace:
        if scaleout:
            namespace.enter_context(_scaleout_namespace(env))
        yield from _run(system, port)


def _run(system: LiveSystem, port: int) -> Iterator[LiveSystem]:
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
        shutil.rmtree(system.var_dir, ignore_errors=True)

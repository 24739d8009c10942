"""Shared plumbing for the storage servers: free loopback ports, system users, a started
daemon that is always stopped, and readiness waits that report the server's own log."""

from __future__ import annotations

import ctypes
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it


def _die_with_parent() -> None:
    # A test process killed by a timeout must not leave servers (and their ports) behind.
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
INSTALL_HINT = "run scripts/install-storage-servers.sh as root"


class ServerUnavailable(RuntimeError):
    """A storage server cannot be installed-checked, configured or started; the message says why."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise ServerUnavailable("The storage servers need root (system users, ports, tmpfs); run the tests as root.")


def require_binary(path: str, package: str) -> str:
    if not (os.path.exists(path) or shutil.which(path)):
        raise ServerUnavailable(f"{path} is missing (Debian package {package}); {INSTALL_HINT}.")
    return path


SCRATCH_PREFIX = "vafleet-storage-"
OWNER_FILE = "owner.pid"


def scratch_dir(name: str) -> Path:
    """A fresh folder the server's own user can traverse (pytest's tmp folders are 0700)."""
    sweep_stale()
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{name}-"))
    os.chmod(folder, 0o755)
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    return folder


def sweep_stale() -> None:
    """Remove what a killed test process left behind: tmpfs mounts and scratch folders whose
    owner is gone (its servers died with it, see _die_with_parent)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
            os.kill(owner, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge
        for mount in (folder / "small", folder / "data" / "small"):
            if os.path.ismount(mount):
                unmount(mount)
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_port_range(count: int) -> tuple[int, int]:
    """A run of `count` consecutive free ports (FTP passive data connections need a range)."""
    for _ in range(200):
        first = random.randint(20000, 60000 - count)
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((HOST, port))
            return first, first + count - 1
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise ServerUnavailable(f"No run of {count} free ports found on {HOST}.")


def ensure_user(name: str, password: str | None = None, login_shell: str = "/usr/sbin/nologin",
                home: str = "/") -> pwd.struct_passwd:
    """Create the system user once; set its password each time (tests may run in a fresh container).
    The home must exist (vsftpd changes into it before local_root); "/" always does."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        added = subprocess.run(["useradd", "-M", "-d", home, "-s", login_shell, name], capture_output=True, text=True)
        if added.returncode and added.returncode != 9:  # 9: created meanwhile by a parallel test worker
            raise ServerUnavailable(f"useradd {name} failed: {added.stderr.strip()}") from None
    if password is None:
        # '*' instead of useradd's '!': sshd refuses even key logins for a locked account.
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    else:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
    return pwd.getpwnam(name)


def mount_tmpfs(folder: Path, size: str, uid: int = 0, gid: int = 0) -> bool:
    """A small filesystem for disk-full tests; False when this machine does not allow mounts."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755,uid={uid},gid={gid}"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (sshd and vsftpd put each connection in a new session,
    out of reach of a process-group signal)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Daemon:
    """A server process in its own process group, so stopping it never touches the caller."""

    name: str
    args: list[str]
    log: Path
    port: int
    new_session: bool = True  # False for smbd, which calls setsid() itself (and fails if already a leader)
    process: subprocess.Popen | None = None
    cleanups: list = field(default_factory=list)

    def start(self, timeout: float = 15.0) -> None:
        with open(self.log, "ab") as log:
            # start_new_session: smbd signals its whole process group on exit, sshd/vsftpd fork
            # per connection; a group of its own lets stop() reach the children and nothing else.
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=self.new_session,
                                            preexec_fn=_die_with_parent)  # noqa: PLW1509
        self.wait_listening(timeout)

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"{self.name} exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ServerUnavailable(f"{self.name} did not listen on {HOST}:{self.port} within {timeout:.0f} s: "
                                f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal_group(self, sig: int) -> None:
        pid = self.process.pid
        try:
            # Only ever signal the group this daemon leads, never the caller's own group.
            if os.getpgid(pid) == pid and pid != os.getpgrp():
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and every connection it forked (a crash, for failure tests)."""
        if self.process and self.process.poll() is None:
            _signal_all(process_tree(self.process.pid), signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            tree = process_tree(self.process.pid)
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(5)
            # Per-connection children in sessions of their own may outlive the leader.
            _signal_all(tree[1:], signal.SIGKILL)
        while self.cleanups:
            self.cleanups.pop()()

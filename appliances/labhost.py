"""A lab appliance as a real host: a network namespace, a veth pair and its own sshd.

Each lab VA gets a /30 from 10.231.0.0/16 on its own veth (traffic only between this machine and
the namespace), its own host key and sshd config, and its own `root` and non-root user. The users
live in a private mount namespace of the VA's sshd (its own /etc/passwd, /etc/shadow, /etc/group
bind-mounted over the real ones), so the machine's real accounts are never touched. State is kept
under `<var>/lab-appliances/<id>/`. A VA made for a test belongs to its creating process: once
that process died it is a leftover that `cleanup_leftovers()` (also run by every `create`)
removes. A VA made with `persistent=True` belongs to the fleet: it outlives its creator, is never
a leftover, and `ensure_running()` brings it back (same address, host key and users) after this
machine rebooted or its sshd died. Addresses, namespaces and veth pairs: `appliances.labnet`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from appliances import labnet, var_dir
from appliances.keys import fingerprint
from appliances.labnet import SLOTS, SUBNET, LabHostError

__all__ = ["SLOTS", "SUBNET", "LabHost", "LabHostError", "LabHostInfo", "cleanup_leftovers", "lab_root", "require_root"]

FLEET_OWNER = "fleet"  # owner of persistent VAs; test VAs are owned by their creating process
ID_RE = re.compile(r"^[0-9a-f]{6}$")
ENGINE_DIR = "vafleet"  # relative to the login's home: where the VA side installs engines
HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$", re.IGNORECASE)
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
# Runs inside the VA's fresh mount + UTS namespace; arguments arrive as positional parameters. The VA
# gets a copy of this machine's /etc with its own accounts, bound over the whole of /etc: a bind over
# single files would be dropped by the kernel as soon as this machine replaced one (useradd renames a
# new /etc/shadow into place), and the VA would see this machine's passwords.
START_SCRIPT = (
    'd=$1; h=$2; m=$3; shift 3; '
    'rm -rf "$d/root-etc" && cp -a /etc "$d/root-etc" && '
    'cp "$d/etc/passwd" "$d/etc/shadow" "$d/etc/group" "$d/root-etc/" && '
    'mount --bind "$d/root-etc" /etc && hostname "$h" && '
    '{ [ -z "$m" ] || mount -t tmpfs -o "size=${m}m,mode=755" vafleet "$d/home/root/vafleet"; } && exec "$@"'
)


@dataclass
class LabHostInfo:
    id: str
    name: str
    address: str
    host_address: str
    port: int
    host_key: str
    host_key_fingerprint: str
    user: str
    vcpus: int
    workdir: str
    namespace: str
    engine_dir: str
    disk_mib: int | None = None


def lab_root() -> Path:
    root = var_dir() / "lab-appliances"
    root.mkdir(parents=True, exist_ok=True)
    return root


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabHostError("Lab appliances need root (network namespaces, veth, sshd): run as root, "
                           "or use the `local` transport for a single-machine setup.")


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _password_hash(password: str) -> str:
    return labnet.run(["openssl", "passwd", "-6", "-stdin"], stdin=password.encode() + b"\n").stdout.decode().strip()


class LabHost:
    """One lab appliance; `create()` starts it, `destroy()` removes everything it made."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.state = json.loads((workdir / "state.json").read_text())
        self.info = LabHostInfo(**self.state["info"]) if self.state.get("info") else None

    @classmethod
    def create(cls, name: str, password_root: str, password_user: str, vcpus: int = 2, *,
               user: str = "vauser", disk_mib: int | None = None, address: str | None = None,
               persistent: bool = False) -> LabHost:
        """Make and start a VA. `address` None = the first free slot (the lab's "DHCP"), else a static
        10.231.x.y with y % 4 == 2 that no other VA uses. `persistent` = owned by the fleet, not this process."""
        require_root()
        if not HOSTNAME_RE.match(name):
            raise LabHostError(f"Host name {name!r} is not valid: use letters, digits and hyphens (1-63 characters).")
        if not USER_RE.match(user) or user == "root":
            raise LabHostError(f"User name {user!r} is not valid: use lower-case letters, digits, '_' or '-'.")
        if vcpus < 1:
            raise LabHostError(f"A lab appliance needs at least one vCPU (got {vcpus}).")
        if address is not None:
            labnet.slot_of(address)  # the rule, before anything is made
        root = lab_root()
        cleanup_leftovers()
        host = None
        try:
            with labnet.alloc_lock():
                slot = labnet.take_slot(root, address)
                ident = secrets.token_hex(3)
                workdir = root / ident
                workdir.mkdir(mode=0o755)
                # owned by this process until it is complete: a crash half-way leaves a leftover, not a fleet VA
                state = {"owner": "process", "owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
                         "slot": slot, "namespace": f"vafleet-{ident}", "veth": f"vf{ident}", "sshd_pid": None,
                         "info": None}
                (workdir / "state.json").write_text(json.dumps(state))
                host = cls(workdir)
                labnet.up(state["namespace"], state["veth"], slot)
            host._build(name, password_root, password_user, vcpus, user, disk_mib)
            if persistent:
                host.state["owner"] = FLEET_OWNER
                host._save()
        except BaseException:
            if host is not None:
                host.destroy()
            raise
        return host

    @classmethod
    def find(cls, ident: str) -> LabHost | None:
        """The lab appliance with this id (`info.id`), or None when there is none."""
        workdir = lab_root() / str(ident)
        if not ID_RE.match(str(ident)) or not (workdir / "state.json").is_file():
            return None
        try:
            return cls(workdir)
        except (OSError, ValueError):
            return None

    @property
    def persistent(self) -> bool:
        return self.state.get("owner") == FLEET_OWNER

    def _save(self) -> None:
        tmp = self.workdir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.workdir / "state.json")

    def _build(self, name: str, password_root: str, password_user: str, vcpus: int, user: str,
               disk_mib: int | None) -> None:
        st, d = self.state, self.workdir
        host_addr, va_addr = labnet.addresses(st["slot"])
        ns = st["namespace"]
        uid = 62000 + st["slot"] % 3000  # above normal users; only exists inside the VA's passwd
        etc, home_root, home_user = d / "etc", d / "home" / "root", d / "home" / user
        for path in (etc, d / "home", home_root / ".ssh", home_root / ENGINE_DIR, home_user):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(home_root, 0o700)
        os.chmod(home_root / ".ssh", 0o700)
        os.chown(home_user, uid, uid)
        os.chmod(etc, 0o700)
        passwd = [line for line in Path("/etc/passwd").read_text().splitlines() if not line.startswith("root:")]
        (etc / "passwd").write_text("\n".join([f"root:x:0:0:root:{home_root}:/bin/bash", *passwd,
                                               f"{user}:x:{uid}:{uid}::{home_user}:/bin/bash"]) + "\n")
        (etc / "group").write_text(Path("/etc/group").read_text() + f"{user}:x:{uid}:\n")
        shadow = "".join(f"{login}:{_password_hash(password)}:20000:0:99999:7:::\n"
                         for login, password in (("root", password_root), (user, password_user)))
        fd = os.open(etc / "shadow", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(shadow)
        key = etc / "ssh_host_ed25519_key"
        labnet.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
        config = etc / "sshd_config"
        config.write_text("\n".join([
            "Port 22", f"ListenAddress {va_addr}", f"HostKey {key}", f"PidFile {d / 'sshd.pid'}",
            "UsePAM no", "PasswordAuthentication yes", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin yes", f"AllowUsers root {user}",
            "AuthorizedKeysFile .ssh/authorized_keys", "StrictModes yes", "Subsystem sftp internal-sftp",
            "MaxStartups 200", "MaxSessions 64", "LoginGraceTime 20", "LogLevel INFO", ""]))
        labnet.run(["/usr/sbin/sshd", "-t", "-f", str(config)])
        st["name"], st["disk_mib"], st["address"] = name, disk_mib, va_addr
        self._start_sshd()
        public = (etc / "ssh_host_ed25519_key.pub").read_text().strip()
        info = LabHostInfo(id=d.name, name=name, address=va_addr, host_address=host_addr, port=22,
                           host_key=" ".join(public.split()[:2]), host_key_fingerprint=fingerprint(public),
                           user=user, vcpus=vcpus, workdir=str(d), namespace=ns, engine_dir=ENGINE_DIR,
                           disk_mib=disk_mib)
        st["info"] = asdict(info)
        self.info = info
        self._save()

    def replace_host_key(self) -> str:
        """Give the VA a new host key (as a reinstalled appliance would) and restart its sshd."""
        key = self.workdir / "etc" / "ssh_host_ed25519_key"
        key.unlink()
        key.with_suffix(".pub").unlink()
        labnet.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        self._stop_processes()
        self._start_sshd()
        public = key.with_suffix(".pub").read_text().strip()
        self.info.host_key, self.info.host_key_fingerprint = " ".join(public.split()[:2]), fingerprint(public)
        self.state["info"] = asdict(self.info)
        self._save()
        return self.info.host_key_fingerprint

    def _start_sshd(self) -> None:
        st, d = self.state, self.workdir
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(d / "sshd.log", "ab")  # noqa: SIM115 - handed to the child process
        with log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", st["namespace"], "unshare", "--mount", "--uts", "--propagation", "private",
                 "--", "sh", "-c", START_SCRIPT, "sh", str(d), st["name"], str(st["disk_mib"] or ""),
                 "/usr/sbin/sshd", "-D", "-e", "-f", str(d / "etc" / "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        st["sshd_pid"] = proc.pid
        self._save()
        _wait_listening(st["address"], 22, proc, d / "sshd.log")

    def _stop_processes(self) -> None:
        ns = self.state["namespace"]
        pid = self.state.get("sshd_pid")
        if pid and str(self.workdir) in _cmdline(pid):
            for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also ends a stopped sshd
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)
                if _reaped(pid, 2.0):
                    break
        if not labnet.namespace_exists(ns):
            return
        for other in labnet.namespace_pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)  # everything in our own namespace is ours
        for _ in range(100):
            if not labnet.namespace_pids(ns):
                break
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        """Are its namespace, veth and address in place and its sshd alive and listening?"""
        st = self.state
        if not labnet.is_up(st["namespace"], st["veth"], st["slot"]) or not _alive(st.get("sshd_pid"), self.workdir):
            return False
        with contextlib.suppress(OSError), socket.create_connection((st["address"], 22), timeout=2):
            return True
        return False

    def ensure_running(self) -> bool:
        """Bring the VA back if its namespace, veth or sshd is gone (reboot, killed sshd), with the same
        address, host key and users; returns True if it had to restart it. The engine directory of a VA
        made with `disk_mib` is a tmpfs, so what it held is gone after a restart (the server reinstalls)."""
        if self.info is None:
            raise LabHostError(f"Lab appliance {self.workdir.name} was never completed; remove it and deploy again.")
        if self.running:
            return False
        require_root()
        with open(self.workdir / ".restart.lock", "a") as lock:  # one restart at a time (several health checks)
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.state = st = json.loads((self.workdir / "state.json").read_text())
            if self.running:
                return False
            self._stop_processes()
            with labnet.alloc_lock():
                labnet.down(st["namespace"], st["veth"])
                if labnet.host_address_in_use(st["slot"]):
                    raise LabHostError(f"Cannot restart lab appliance {self.info.name}: its address {st['address']} "
                                       f"is now used on this machine ({labnet.addresses(st['slot'])[0]} is on another "
                                       "interface); remove that interface or redeploy the appliance.")
                labnet.up(st["namespace"], st["veth"], st["slot"])
            self._start_sshd()
        return True

    def destroy(self) -> None:
        """Remove the namespace, its processes and files; safe to call twice or after a crash."""
        self._stop_processes()
        labnet.down(self.state["namespace"], self.state["veth"])
        shutil.rmtree(self.workdir, ignore_errors=True)


def _reaped(pid: int, timeout: float) -> bool:
    """Wait for `pid` to end (reaping it when this process started it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # a zombie of someone else's: it has ended
            except OSError:
                return True
        time.sleep(0.02)
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int | None, workdir: Path) -> bool:
    """Is `pid` a live (not zombie) process of this VA?"""
    if not pid or str(workdir) not in _cmdline(pid):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_listening(address: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabHostError(f"The appliance's sshd exited at start (exit {proc.returncode}): "
                               f"{log.read_text(errors='replace').strip()[-400:]}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise LabHostError(f"The appliance's sshd did not listen on {address}:{port} within {timeout:.0f} s; see {log}.")


def cleanup_leftovers() -> list[str]:
    """Destroy lab appliances whose creating process is gone (a crashed run); returns their ids.

    Fleet-owned (persistent) appliances are never leftovers: only their deployer removes them."""
    removed = []
    for state_file in lab_root().glob("*/state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if state.get("owner") == FLEET_OWNER:
            continue
        if _start_time(state["owner_pid"]) == state.get("owner_start"):
            continue  # its creator is alive: not a leftover
        with contextlib.suppress(OSError, ValueError, LabHostError):
            LabHost(state_file.parent).destroy()
            removed.append(state_file.parent.name)
    return removed

"""Bootstrap an appliance and keep its engine current ("binary injection").

`bootstrap` logs in once with the root password, installs the fleet's SSH key, the VA-side
installer and the fleet's signing public key, then returns a key-authenticated transport.
`ensure_engine` asks the VA for its engine version (one round trip) and, only if it differs,
uploads the signed bundle and has the VA verify, unpack and switch to it.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import paramiko

from appliances.bundle import Bundle
from appliances.keys import signing_public_pem, ssh_key_path, ssh_public_line
from appliances.transports import Stream, Transport, TransportError, UploadError
from appliances.transports.ssh import SSHTransport

INSTALLER = Path(__file__).resolve().parent / "va_side" / "install.py"


class InjectionError(TransportError):
    """The VA refused or failed to install a bundle; the message is the VA's own sentence."""


@dataclass
class EngineState:
    version: str | None
    previous: str | None
    free_bytes: int
    python: str
    machine: str


@dataclass
class InjectResult:
    version: str
    previous: str | None
    uploaded: bool
    bytes_sent: int


def fleet_key() -> paramiko.Ed25519Key:
    return paramiko.Ed25519Key.from_private_key_file(str(ssh_key_path()))


def _events(stdout: bytes) -> list[dict]:
    events = []
    for line in stdout.decode(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _installer(engine_dir: str) -> str:
    return f"{engine_dir}/install.py"


def install_va_side(transport: Transport, engine_dir: str = "vafleet") -> None:
    """Copy the installer and the fleet's signing public key to the VA."""
    result = transport.run(["mkdir", "-p", engine_dir], timeout=30)
    if result.exit != 0:
        raise TransportError(f"Cannot create {engine_dir} on {transport.label}: {result.stderr.decode().strip()}")
    transport.put_file(str(INSTALLER), _installer(engine_dir))
    with tempfile.NamedTemporaryFile(suffix=".pem") as pem:
        pem.write(signing_public_pem())
        pem.flush()
        transport.put_file(pem.name, f"{engine_dir}/fleet-signing.pem")


def _install_fleet_key(transport: SSHTransport) -> None:
    sftp = transport.sftp()
    try:
        sftp.stat(".ssh")
    except OSError:
        sftp.mkdir(".ssh", 0o700)
    try:
        with sftp.open(".ssh/authorized_keys", "r") as fh:
            existing = fh.read().decode()
    except OSError:
        existing = ""
    line = ssh_public_line()
    if line.split()[1] in existing:
        return
    with sftp.open(".ssh/authorized_keys.part", "w") as fh:
        fh.write((existing.rstrip("\n") + "\n" if existing.strip() else "") + line + "\n")
    sftp.chmod(".ssh/authorized_keys.part", 0o600)
    sftp.posix_rename(".ssh/authorized_keys.part", ".ssh/authorized_keys")


def bootstrap(host: str, port: int, host_key: str, root_password: str, *, username: str = "root",
              engine_dir: str = "vafleet", connect_timeout: float = 10.0) -> SSHTransport:
    """First contact: password login, fleet key and installer in place; returns a key-authenticated transport."""
    with SSHTransport(host, port, username, host_key=host_key, password=root_password,
                      connect_timeout=connect_timeout) as first:
        _install_fleet_key(first)
        install_va_side(first, engine_dir)
    return SSHTransport(host, port, username, host_key=host_key, key=fleet_key(), connect_timeout=connect_timeout)


def engine_version(transport: Transport, engine_dir: str = "vafleet", python: str = "python3") -> EngineState:
    result = transport.run([python, _installer(engine_dir), "version"], timeout=30)
    for event in _events(result.stdout):
        if event.get("event") == "version":
            return EngineState(event["version"], event["previous"], event["free_bytes"], event["python"],
                               event["machine"])
    raise InjectionError(f"{transport.label} did not report its engine version (exit {result.exit}: "
                         f"{result.stderr.decode(errors='replace').strip()[-300:]}): bootstrap it again.")


def ensure_engine(transport: Transport, bundle: Bundle, engine_dir: str = "vafleet",
                  python: str = "python3") -> InjectResult:
    """Make the VA run `bundle`'s engine: nothing is sent when it already does."""
    state = engine_version(transport, engine_dir, python)
    if state.version == bundle.version:
        return InjectResult(bundle.version, state.previous, False, 0)
    desc = bundle.descriptor
    if (state.python, state.machine) != (desc["python"], desc["machine"]):
        raise InjectionError(f"{transport.label} runs {state.python}/{state.machine} but the bundle is for "
                             f"{desc['python']}/{desc['machine']}: build a bundle on a server of that platform.")
    need = bundle.size + desc["unpacked_bytes"]
    if state.free_bytes < need:
        raise UploadError(f"{transport.label} has {state.free_bytes >> 20} MiB free in {engine_dir}, the engine "
                          f"needs {need >> 20} MiB: free space on the appliance; its engine {state.version} "
                          "stays active.")
    remote = f"{engine_dir}/incoming-{bundle.version}-{secrets.token_hex(4)}.tar"  # two senders never share it
    sent = transport.put_file(str(bundle.path), remote)
    return install_uploaded(transport, bundle, remote, engine_dir, python, sent)


def install_uploaded(transport: Transport, bundle: Bundle, remote: str, engine_dir: str = "vafleet",
                     python: str = "python3", sent: int = 0, envelope: bytes | None = None) -> InjectResult:
    result = transport.run([python, _installer(engine_dir), "install", remote],
                           stdin=bundle.envelope() if envelope is None else envelope, timeout=300)
    events = _events(result.stdout)
    done = [e for e in events if e.get("event") == "installed"]
    if result.exit == 0 and done:
        return InjectResult(done[-1]["version"], done[-1]["previous"], True, sent)
    errors = [e["message"] for e in events if e.get("event") == "error"]
    raise InjectionError(f"{transport.label} refused the engine bundle: "
                         f"{errors[-1] if errors else result.stderr.decode(errors='replace').strip()[-300:]}")


def run_engine(transport: Transport, args: list[str], stdin: bytes | None = None, engine_dir: str = "vafleet",
               python: str = "python3") -> Stream:
    """Start the VA's active engine; iterate the stream for its JSON-lines events."""
    return transport.stream([python, _installer(engine_dir), "run", *args], stdin)

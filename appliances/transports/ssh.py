"""The `ssh` transport (paramiko): pinned host key, password or fleet-key login, exec and SFTP.

Commands are argument lists joined with `shlex.join`, never shell strings from input. Each command
runs behind a tiny wrapper that reports its pid first, so a timeout or a cancel can signal it.
"""

from __future__ import annotations

import base64
import shlex
import socket
import struct
import threading
import time
from collections.abc import Iterator

import paramiko

from appliances.keys import fingerprint
from appliances.transports.base import (
    PID_WRAPPER,
    AuthenticationError,
    CommandResult,
    CommandTimeoutError,
    HostKeyMismatchError,
    Stream,
    Transport,
    TransportError,
    UnreachableError,
    UploadError,
)


class Traffic:
    """Bytes this process exchanged with appliances over SSH, as the kernel counted them (TCP_INFO)."""

    # struct tcp_info (linux/tcp.h): tcpi_bytes_acked at 120, tcpi_bytes_received at 128 (u64 each).
    _FIELDS = struct.Struct("=QQ")

    def __init__(self):
        self.sent = self.received = 0
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:
            return  # already closed: nothing to count
        if len(info) < 136:
            return
        sent, received = self._FIELDS.unpack_from(info, 120)
        with self._lock:
            self.sent += sent
            self.received += received


TRAFFIC = Traffic()


def scan_host_key(host: str, port: int = 22, timeout: float = 10.0) -> str:
    """The appliance's host key as an `ssh-ed25519 AAAA...` line, to pin at deployment."""
    sock = _connect_socket(host, port, timeout)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        t.close()


def _connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise UnreachableError(f"Cannot reach {host}:{port} (timed out after {timeout:g} s): check the appliance "
                               "is powered on and its address is right.") from exc
    except ConnectionRefusedError as exc:
        raise UnreachableError(f"Cannot reach {host}:{port} (connection refused): check that SSH is enabled "
                               "on the appliance.") from exc
    except OSError as exc:
        raise UnreachableError(f"Cannot reach {host}:{port} ({exc.strerror or exc}): check the network path "
                               "to the appliance.") from exc


class SSHStream(Stream):
    def __init__(self, transport: SSHTransport, channel: paramiko.Channel, stdin: bytes | None):
        self.transport, self.channel = transport, channel
        self._err = bytearray()
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        self._out = channel.makefile("rb")
        first = self._out.readline()
        self.pid = int(first) if first.strip().isdigit() else None

    def _read_stderr(self) -> None:
        while chunk := self.channel.recv_stderr(65536):
            self._err.extend(chunk)

    def __iter__(self) -> Iterator[str]:
        for line in self._out:
            yield line.decode(errors="replace").rstrip("\n")

    def _signal(self, name: str) -> None:
        if self.pid and not self.channel.exit_status_ready():
            self.transport.run(["kill", f"-{name}", str(self.pid)], timeout=10)

    def terminate(self) -> None:
        self._signal("TERM")

    def kill(self) -> None:
        self._signal("KILL")

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.channel.exit_status_ready():
            if deadline is not None and time.monotonic() > deadline:
                raise CommandTimeoutError(f"The command on {self.transport.label} did not end within {timeout:g} s.")
            time.sleep(0.02)
        self._drain.join(5)
        return self.channel.recv_exit_status()

    @property
    def stderr(self) -> bytes:
        return bytes(self._err)


class SSHTransport(Transport):
    name = "ssh"

    def __init__(self, host: str, port: int = 22, username: str = "root", *, host_key: str,
                 password: str | None = None, key: paramiko.PKey | None = None, connect_timeout: float = 10.0):
        self.host, self.port, self.username = host, port, username
        self.label = f"{host}:{port}"
        self.bytes_sent = 0
        self._sftp: paramiko.SFTPClient | None = None
        pinned = _pinned_key(host_key)
        sock = _connect_socket(host, port, connect_timeout)
        self._sock = sock
        self._t = paramiko.Transport(sock)
        self._t.get_security_options().key_types = [pinned.get_name()]  # ask for the pinned key type only
        self._t.banner_timeout = self._t.auth_timeout = connect_timeout
        try:
            self._t.start_client(timeout=connect_timeout)
            got = self._t.get_remote_server_key()  # raises when the handshake did not finish in time
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._t.close()
            raise UnreachableError(f"Cannot reach {self.label} (no SSH answer within {connect_timeout:g} s: {exc}): "
                                   "check the appliance is powered on and its SSH service runs.") from exc
        if got.asbytes() != pinned.asbytes():
            self._t.close()
            raise HostKeyMismatchError(
                f"The host key of {self.label} does not match the key pinned at deployment: pinned "
                f"{fingerprint(host_key)}, presented {fingerprint(got.get_name() + ' ' + got.get_base64())}. "
                "Nothing was sent. If the appliance was reinstalled, check the new fingerprint on its console and "
                "re-pin it; otherwise treat this as a possible interception.")
        self._authenticate(password, key)
        self._t.set_keepalive(30)

    def _authenticate(self, password: str | None, key: paramiko.PKey | None) -> None:
        who = f"{self.username}@{self.label}"
        try:
            if key is not None:
                self._t.auth_publickey(self.username, key)
            elif password is not None:
                self._t.auth_password(self.username, password)
            else:
                raise AuthenticationError(f"No password or key was given for {who}.")
        except paramiko.BadAuthenticationType as exc:
            self._t.close()
            raise AuthenticationError(f"{who} does not accept this login method (it allows "
                                      f"{', '.join(exc.allowed_types)}): check the appliance's SSH settings.") from exc
        except paramiko.AuthenticationException as exc:
            self._t.close()
            if key is not None:
                raise AuthenticationError(f"{who} refused the fleet key: bootstrap the appliance again with its "
                                          "root password to install the key.") from exc
            raise AuthenticationError(f"{who} refused the password: check the password configured for "
                                      "this appliance.") from exc
        except (paramiko.SSHException, OSError) as exc:
            self._t.close()
            raise UnreachableError(f"Login to {who} failed ({exc}): check the appliance's SSH service.") from exc

    def _open(self, argv: list[str]) -> paramiko.Channel:
        try:
            channel = self._t.open_session(timeout=10)
            channel.exec_command(shlex.join([*PID_WRAPPER, *argv]))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise UnreachableError(f"The SSH connection to {self.label} failed ({exc}): check the appliance is "
                                   "still running, then retry.") from exc
        return channel

    def stream(self, argv: list[str], stdin: bytes | None = None) -> Stream:
        self.bytes_sent += len(stdin or b"")
        return SSHStream(self, self._open(argv), stdin)

    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        stream = self.stream(argv, stdin)
        out = bytearray()
        reader = threading.Thread(target=lambda: out.extend(b"".join(line for line in stream._out)), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            stream.kill()
            stream.channel.close()
            raise CommandTimeoutError(f"`{argv[0]}` on {self.label} did not finish within {timeout:g} s and was "
                                      "stopped: check the appliance's load and try again.")
        return CommandResult(stream.wait(10), bytes(out), stream.stderr)

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._t.open_sftp_client()
        return self._sftp

    def put_file(self, local: str, remote: str) -> int:
        sftp = self.sftp()
        part = remote + ".part"
        try:
            attrs = sftp.put(local, part, confirm=True)
            sftp.posix_rename(part, remote)
        except (OSError, paramiko.SSHException) as exc:
            try:
                sftp.remove(part)
            except OSError:
                pass
            raise UploadError(f"Uploading {local} to {self.label}:{remote} failed ({exc}); the appliance's disk may "
                              "be full: free space there and try again. Nothing was installed.") from exc
        self.bytes_sent += attrs.st_size
        return attrs.st_size

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        TRAFFIC.add(self._sock)
        self._t.close()


def _pinned_key(line: str) -> paramiko.PKey:
    try:
        kind, data = line.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(data))
    except (ValueError, paramiko.SSHException) as exc:
        raise TransportError(f"The pinned host key {line[:40]!r} is not a valid `ssh-ed25519 AAAA...` line: "
                             "pin the key the appliance showed at deployment.") from exc

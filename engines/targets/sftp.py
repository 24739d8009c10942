"""SFTP target (paramiko): one SSH connection per thread, pipelined writes, prefetched reads,
atomic overwrite with posix-rename@openssh.com, free space with statvfs@openssh.com, and every
uploaded file made durable with fsync@openssh.com before it is renamed into place."""

from __future__ import annotations

import errno
import io
import logging
import socket
import stat
import struct
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_READ,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from engines.errors import (
    TargetAuthFailed,
    TargetError,
    TargetFull,
    TargetNotFound,
    TargetPermissionDenied,
    TargetUnreachable,
)
from engines.targets.base import Entry, Target, TargetSpec
from engines.targets.remote import PerThread, is_temp, join, temp_name

log = logging.getLogger(__name__)

# A dropped or silent connection shows up as any of these; the thread's connection is replaced.
DROPPED = (paramiko.SSHException, EOFError, socket.timeout, ConnectionError, BrokenPipeError)
WRITE_SIZE = 128 << 10  # per SFTP read or write request; OpenSSH accepts up to 256 KiB messages
WINDOW = 32  # requests in flight: keeps the link busy without waiting per request
FSYNC = "fsync@openssh.com"  # OpenSSH extension: fsync(2) of an open file handle on the server


class _Client(paramiko.SFTPClient):
    """paramiko's SFTP client, keeping the extensions the server announces in its VERSION
    reply (paramiko reads and drops them): fsync is used only where the server offers it."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        self.extensions = {}
        init = paramiko.Message()
        init.add_int(3)
        self._send_packet(CMD_INIT, init)
        kind, data = self._read_packet()
        if kind != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version = reply.get_int()
        try:
            while reply.get_remainder():
                name = reply.get_string().decode("utf-8", "replace")
                self.extensions[name] = reply.get_string()
        except (IndexError, struct.error):  # a malformed list: use no extension
            self.extensions = {}
        return version


def _open(sftp: paramiko.SFTPClient, path: str, flags: int) -> bytes:
    kind, msg = sftp._request(CMD_OPEN, path, flags, SFTPAttributes())
    if kind != CMD_HANDLE:
        raise SFTPError("Expected a file handle")
    return msg.get_binary()


def _close(sftp: paramiko.SFTPClient, handle: bytes, quiet: bool) -> None:
    try:
        sftp._request(CMD_CLOSE, handle)
    except Exception:
        if not quiet:
            raise


def _download(sftp: paramiko.SFTPClient, path: str) -> bytes:
    """Whole-file read with up to WINDOW requests in flight into one buffer (paramiko's
    prefetch starts a thread per file and copies every block twice)."""
    handle = _open(sftp, path, SFTP_FLAG_READ)
    try:
        kind, msg = sftp._request(CMD_FSTAT, handle)
        if kind != CMD_ATTRS:
            raise SFTPError("Expected file attributes")
        size = SFTPAttributes._from_msg(msg).st_size or 0
        buf = bytearray(size)
        todo = deque((offset, min(WRITE_SIZE, size - offset)) for offset in range(0, size, WRITE_SIZE))
        pending: deque[tuple[int, int, int]] = deque()
        while todo or pending:
            while todo and len(pending) < WINDOW:
                offset, length = todo.popleft()
                pending.append((sftp._async_request(type(None), CMD_READ, handle, int64(offset), length),
                                offset, length))
            num, offset, length = pending.popleft()
            kind, msg = sftp._read_response(num)
            if kind != CMD_DATA:
                raise SFTPError("Expected data")
            data = msg.get_string()
            buf[offset:offset + len(data)] = data
            if 0 < len(data) < length:  # a short read: ask for the rest
                todo.append((offset + len(data), length - len(data)))
            elif not data:
                raise SFTPError(f"{path} shrank while being read")
    except BaseException:
        _close(sftp, handle, quiet=True)
        raise
    _close(sftp, handle, quiet=False)
    return bytes(buf)


def _upload(sftp: paramiko.SFTPClient, path: str, data: bytes | memoryview, fsync: bool = False) -> None:
    """Pipelined write that checks every reply: paramiko's own pipelined mode drops write
    errors (a full disk would go unnoticed), so requests are issued and confirmed here.
    With `fsync`, an fsync@openssh.com request follows the last write in the same pipeline
    (the server handles one handle's requests in order), so it costs no extra round trip."""
    handle = _open(sftp, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC)
    view = memoryview(data).cast("B")
    pending: deque[int] = deque()
    try:
        for offset in range(0, len(view), WRITE_SIZE):
            block = bytes(view[offset:offset + WRITE_SIZE])
            pending.append(sftp._async_request(type(None), CMD_WRITE, handle, int64(offset), block))
            if len(pending) >= WINDOW:
                sftp._read_response(pending.popleft())
        if fsync:
            pending.append(sftp._async_request(type(None), CMD_EXTENDED, FSYNC, handle))
        while pending:
            sftp._read_response(pending.popleft())
    except BaseException:
        _close(sftp, handle, quiet=True)  # the write error is the one to report
        raise
    _close(sftp, handle, quiet=False)  # the server reports a late write error here


class _Conn:
    def __init__(self, transport: paramiko.Transport, sftp: paramiko.SFTPClient):
        self.transport = transport
        self.sftp = sftp

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.transport.close()


def _load_key(value: str, passphrase: str | None) -> paramiko.PKey:
    """The private key from a file path or from the key text itself."""
    if "PRIVATE KEY" in value:
        for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return cls.from_private_key(io.StringIO(value), password=passphrase)
            except paramiko.SSHException:
                continue
        raise TargetAuthFailed("The SFTP private key in the target settings cannot be read: paste an OpenSSH or "
                               "PEM private key (ed25519, ECDSA or RSA).")
    try:
        return paramiko.PKey.from_path(value, password=passphrase)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise TargetAuthFailed(f"The SFTP private key file {value} cannot be read ({exc}): check the path and "
                               "its passphrase.") from exc


class SftpTarget(Target):
    type = "sftp"

    def __init__(self, spec: TargetSpec):
        super().__init__(spec)
        self.port = spec.port or 22
        self.where = f"sftp://{spec.username}@{spec.host}:{self.port}"
        self.timeout = float(spec.options.get("timeout", 30))
        self.base = spec.path.rstrip("/") or "."
        key = spec.options.get("private_key")
        self.pkey = _load_key(key, spec.options.get("private_key_passphrase")) if key else None
        self.durable = bool(spec.options.get("sync", True))
        self._warned_no_fsync = False
        self.pool: PerThread[_Conn] = PerThread(self._connect, _Conn.close, lambda c: c.transport.is_active())

    # -- connections ---------------------------------------------------------------------------
    def _connect(self) -> _Conn:
        host, port = self.spec.host, self.port
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except TimeoutError as exc:
            raise TargetUnreachable(f"Cannot reach {host}:{port} (timed out after {self.timeout:g} s): check the "
                                    "SFTP server is running and the address and port are right.") from exc
        except OSError as exc:
            raise TargetUnreachable(f"Cannot reach {host}:{port} ({exc.strerror or exc}): check the SFTP server "
                                    "is running and the address and port are right.") from exc
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.auth_timeout = transport.handshake_timeout = self.timeout
        try:
            transport.start_client(timeout=self.timeout)
            self._check_host_key(transport)
            if self.pkey is not None:
                transport.auth_publickey(self.spec.username, self.pkey)
            else:
                transport.auth_password(self.spec.username, self.spec.password)
            sftp = _Client.from_transport(transport)
            sftp.get_channel().settimeout(self.timeout)
        except paramiko.AuthenticationException as exc:
            transport.close()
            raise TargetAuthFailed(f"{self.where} refused the login ({exc}): check the user name and the "
                                   "password or private key.") from exc
        except TargetError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise TargetUnreachable(f"The SSH session with {host}:{port} failed ({exc or type(exc).__name__}): "
                                    "check that it is an SSH server with the SFTP subsystem enabled.") from exc
        return _Conn(transport, sftp)

    def _check_host_key(self, transport: paramiko.Transport) -> None:
        pinned = self.spec.options.get("host_key")  # "ssh-ed25519 AAAA..." as in known_hosts
        if not pinned:
            return
        key = transport.get_remote_server_key()
        offered = f"{key.get_name()} {key.get_base64()}"
        if pinned.split()[:2] != offered.split():
            raise TargetError(f"The SSH host key of {self.spec.host}:{self.port} is {offered}, not the pinned one: "
                              "if the server was reinstalled, update the target's host key.",
                              code="target_host_key_mismatch")

    @contextmanager
    def _op(self, action: str, path: str) -> Iterator[paramiko.SFTPClient]:
        conn = self.pool.get()
        try:
            yield conn.sftp
        except TargetError:
            raise
        except DROPPED as exc:
            self.pool.discard()
            raise TargetUnreachable(f"The connection to {self.where} dropped while trying to {action} {path} "
                                    f"({exc or type(exc).__name__}): check the server and network, then retry."
                                    ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise TargetNotFound(f"{path} does not exist on {self.where}.") from exc
            if exc.errno == errno.EACCES:
                raise TargetPermissionDenied(f"{self.where} denied permission to {action} {path}: give user "
                                             f"{self.spec.username!r} write access to {self.base}.") from exc
            raise TargetError(f"{self.where} could not {action} {path}: {exc}.") from exc

    def _full(self, path: str) -> str:
        return join(self.base, path)

    # -- Target interface --------------------------------------------------------------------
    def _fsync(self, sftp: paramiko.SFTPClient) -> bool:
        """Whether uploads on this connection end with an fsync on the server."""
        if not self.durable:
            return False
        if FSYNC in getattr(sftp, "extensions", {}):
            return True
        if not self._warned_no_fsync:
            self._warned_no_fsync = True
            log.warning("%s does not offer %s: the server decides when written files reach its disk.",
                        self.where, FSYNC)
        return False

    def _write_temp(self, sftp: paramiko.SFTPClient, path: str, data: bytes | memoryview) -> str:
        full = self._full(path)
        tmp = temp_name(full)
        fsync = self._fsync(sftp)
        try:
            try:
                _upload(sftp, tmp, data, fsync)
            except FileNotFoundError:
                self._mkdirs(sftp, full.rsplit("/", 1)[0])
                _upload(sftp, tmp, data, fsync)
        except OSError as exc:
            if not isinstance(exc, DROPPED):
                self._remove_quietly(sftp, tmp)
                self._raise_if_full(path, len(data), exc)
            raise
        return tmp

    def _raise_if_full(self, path: str, size: int, exc: OSError) -> None:
        # SFTPv3 reports ENOSPC as a plain "Failure"; the server's statvfs tells them apart.
        if exc.errno in (None, errno.ENOSPC):
            free = self.free_space()
            if free is not None and free < size + (1 << 20):
                raise TargetFull(f"{self.where} is full ({free} bytes free) while writing {path}: free space or "
                                 "move the repository to a larger volume.") from exc

    @staticmethod
    def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except (OSError, *DROPPED):
            pass

    def put(self, path: str, data: bytes | memoryview) -> None:
        with self._op("write", path) as sftp:
            tmp = self._write_temp(sftp, path, data)
            try:
                sftp.posix_rename(tmp, self._full(path))
            except OSError:
                self._remove_quietly(sftp, tmp)
                raise

    def put_new(self, path: str, data: bytes) -> bool:
        with self._op("create", path) as sftp:
            tmp = self._write_temp(sftp, path, data)
            try:
                # OpenSSH's plain rename is link()+unlink(): it fails when the name exists.
                sftp.rename(tmp, self._full(path))
                return True
            except OSError as exc:
                self._remove_quietly(sftp, tmp)
                if isinstance(exc, DROPPED):
                    raise
                try:
                    sftp.stat(self._full(path))
                    return False
                except FileNotFoundError:
                    raise exc from None

    def get(self, path: str) -> bytes:
        with self._op("read", path) as sftp:
            return _download(sftp, self._full(path))

    def exists(self, path: str) -> bool:
        with self._op("check", path) as sftp:
            try:
                sftp.stat(self._full(path))
                return True
            except FileNotFoundError:
                return False

    def list(self, folder: str) -> Iterator[Entry]:
        with self._op("list", folder or "/") as sftp:
            try:
                attrs = sftp.listdir_attr(self._full(folder))
            except FileNotFoundError:
                return iter(())
        return iter([Entry(a.filename, a.st_size or 0, stat.S_ISDIR(a.st_mode or 0))
                     for a in attrs if not is_temp(a.filename)])

    def delete(self, path: str) -> None:
        with self._op("delete", path) as sftp:
            try:
                sftp.remove(self._full(path))
            except FileNotFoundError:
                pass

    def makedirs(self, folder: str) -> None:
        with self._op("create folder", folder) as sftp:
            self._mkdirs(sftp, self._full(folder))

    def _mkdirs(self, sftp: paramiko.SFTPClient, full: str) -> None:
        try:
            sftp.mkdir(full)
        except FileNotFoundError:
            parent = full.rsplit("/", 1)[0] if "/" in full.strip("/") else ""
            if parent and parent != full:
                self._mkdirs(sftp, parent)
                self._mkdirs(sftp, full)
                return
            raise
        except OSError as exc:
            # SFTPv3 answers "Failure" for an existing folder; accept it only if it is one.
            try:
                is_dir = stat.S_ISDIR(sftp.stat(full).st_mode or 0)
            except FileNotFoundError:
                raise exc from None
            if not is_dir:
                raise

    def free_space(self) -> int | None:
        with self._op("query free space of", self.base) as sftp:
            folder = self.base
            while True:
                try:
                    kind, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", folder)
                    break
                except FileNotFoundError:
                    if folder in ("", ".", "/"):
                        raise
                    folder = folder.rsplit("/", 1)[0] if "/" in folder.strip("/") else "."  # not created yet
                except OSError as exc:
                    if exc.errno == errno.EACCES:
                        raise
                    return None  # server without the OpenSSH extension
            if kind != CMD_EXTENDED_REPLY:
                return None
            bsize, frsize, blocks, bfree, bavail = struct.unpack(">5Q", msg.get_remainder()[:40])
            return bavail * (frsize or bsize)

    def sync(self) -> None:
        """Nothing left to do: put() has the server fsync each file before renaming it into place
        (fsync@openssh.com), so every completed put is already durable."""
        return None

    def close(self) -> None:
        self.pool.close_all()

"""SMB/CIFS target (smbprotocol's smbclient): one SMB connection per thread (each with its own
connection cache, so several targets or credentials never share a session), atomic overwrite
with replace(), free space from the share's volume information, and every written file flushed
(SMB2 FLUSH) before it is renamed into place."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import smbclient
from smbprotocol.exceptions import SMBAuthenticationError, SMBConnectionClosed, SMBException, SMBResponseException
from smbprotocol.header import NtStatus
from spnego.exceptions import SpnegoError

from engines.errors import (
    TargetAuthFailed,
    TargetError,
    TargetFull,
    TargetNotFound,
    TargetPermissionDenied,
    TargetUnreachable,
)
from engines.targets.base import Entry, Target, TargetSpec
from engines.targets.remote import PerThread, clean_relative, is_temp, temp_name, write_in_blocks

BLOCK = 4 << 20
T = TypeVar("T")
FULL = {NtStatus.STATUS_DISK_FULL, 0xC0000044}  # disk full, quota exceeded
SHARING, DENIED_STATUS, NAME_INVALID = NtStatus.STATUS_SHARING_VIOLATION, NtStatus.STATUS_ACCESS_DENIED, 0xC0000033
DENIED = {NtStatus.STATUS_ACCESS_DENIED, NtStatus.STATUS_PRIVILEGE_NOT_HELD}
MISSING = {NtStatus.STATUS_OBJECT_NAME_NOT_FOUND, NtStatus.STATUS_OBJECT_PATH_NOT_FOUND, NtStatus.STATUS_NOT_FOUND}
# logon failure, wrong password, expired password, account disabled, account restriction
LOGON = {NtStatus.STATUS_LOGON_FAILURE, NtStatus.STATUS_WRONG_PASSWORD, NtStatus.STATUS_PASSWORD_EXPIRED,
         0xC0000072, 0xC000006E}


# Concurrent session setups from one process could stall smbprotocol forever (no reply seen).
_SESSION_SETUP = threading.Lock()
BUSY_WAIT = 3.0  # seconds to wait out a reader holding a file that replace() must overwrite


# Socket errors of a connection closed under a running operation (e.g. the server died).
DROPPED = {errno.EBADF, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNABORTED}

def _retry_busy(call: Callable[[], T], statuses: tuple[int, ...]) -> T:
    """Samba refuses to open a file while it is being renamed, and to rename over a file that
    a reader holds open (Windows semantics): both last only as long as one read."""
    deadline = time.monotonic() + BUSY_WAIT
    delay = 0.002
    while True:
        try:
            return call()
        except OSError as exc:
            if _status(exc) not in statuses or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _alive(cache: dict) -> bool:
    # smbprotocol's receiver thread records a dead socket; such a cached session is useless.
    return all(getattr(c, "_t_exc", None) is None and getattr(c.transport, "connected", False)
               for c in cache.values())


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "ntstatus", None) or getattr(exc, "status", None)


def _missing(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == errno.ENOENT or _status(exc) in MISSING


class SmbTarget(Target):
    type = "smb"

    def __init__(self, spec: TargetSpec):
        super().__init__(spec)
        share = str(spec.options.get("share", "")).strip("\\/")
        if not share:
            raise TargetError("The SMB target has no share name: set options.share (e.g. 'backup').",
                              code="target_bad_spec")
        self.port = spec.port or 445
        self.timeout = float(spec.options.get("timeout", 30))
        self.where = f"smb://{spec.username}@{spec.host}:{self.port}/{share}"
        base = clean_relative(spec.path).replace("/", "\\")
        self.root = f"\\\\{spec.host}\\{share}" + (f"\\{base}" if base else "")
        self.durable = bool(spec.options.get("sync", True))
        self.pool: PerThread[dict] = PerThread(self._connect, self._disconnect, _alive)

    # -- connections ---------------------------------------------------------------------------
    def _kwargs(self, cache: dict) -> dict:
        return {"port": self.port, "username": self.spec.username, "password": self.spec.password,
                "connection_cache": cache, "connection_timeout": self.timeout,
                "encrypt": self.spec.options.get("encrypt"),
                "auth_protocol": self.spec.options.get("auth_protocol", "ntlm")}

    def _connect(self) -> dict:
        cache: dict = {}
        host, port = self.spec.host, self.port
        try:
            with _SESSION_SETUP:
                smbclient.register_session(host, **self._kwargs(cache))
        except ValueError as exc:  # smbprotocol's "Failed to connect to host:port"
            raise TargetUnreachable(f"Cannot reach {host}:{port} ({exc}): check the SMB server is running and the "
                                    "address and port are right.") from exc
        except (SMBAuthenticationError, SpnegoError) as exc:
            raise TargetAuthFailed(f"{self.where} refused the login ({exc}): check the user name and "
                                   "password.") from exc
        except SMBResponseException as exc:
            if _status(exc) in LOGON:
                raise TargetAuthFailed(f"{self.where} refused the login ({exc.message}): check the user name and "
                                       "password.") from exc
            raise TargetUnreachable(f"The SMB session with {host}:{port} failed ({exc}).") from exc
        except (SMBException, OSError) as exc:
            raise TargetUnreachable(f"The SMB session with {host}:{port} failed ({exc}): check the server "
                                    "and retry.") from exc
        return cache

    @staticmethod
    def _disconnect(cache: dict) -> None:
        smbclient.reset_connection_cache(connection_cache=cache)

    @contextmanager
    def _op(self, action: str, path: str) -> Iterator[dict]:
        kwargs = self._kwargs(self.pool.get())
        try:
            yield kwargs
        except TargetError:
            raise
        except (SMBConnectionClosed, ConnectionError, EOFError) as exc:
            self.pool.discard()
            raise TargetUnreachable(f"The connection to {self.where} dropped while trying to {action} {path} "
                                    f"({exc}): check the server and network, then retry.") from exc
        except (SMBException, OSError) as exc:
            if getattr(exc, "errno", None) in DROPPED:
                self.pool.discard()
                raise TargetUnreachable(f"The connection to {self.where} dropped while trying to {action} {path} "
                                        f"({exc}): check the server and network, then retry.") from exc
            status = _status(exc)
            if status in FULL or getattr(exc, "errno", None) == errno.ENOSPC:
                raise TargetFull(f"{self.where} is full while trying to {action} {path}: free space on the share "
                                 "or move the repository to a larger volume.") from exc
            if _missing(exc):
                raise TargetNotFound(f"{path} does not exist on {self.where}.") from exc
            if status in DENIED or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
                raise TargetPermissionDenied(f"{self.where} denied permission to {action} {path}: give user "
                                             f"{self.spec.username!r} write access to the share.") from exc
            if status == NAME_INVALID:
                raise TargetError(f"{self.where} refuses the name {path!r}: SMB names cannot contain "
                                  '\\ / : * ? " < > |; rename it.', code="target_bad_name") from exc
            if isinstance(exc, SMBException) and not isinstance(exc, (SMBResponseException, OSError)):
                self.pool.discard()  # a transport failure: the next call reconnects
                raise TargetUnreachable(f"The connection to {self.where} failed while trying to {action} {path} "
                                        f"({exc}): check the server and network, then retry.") from exc
            raise TargetError(f"{self.where} could not {action} {path}: {exc}.") from exc

    def _unc(self, path: str) -> str:
        rel = clean_relative(path).replace("/", "\\")
        return f"{self.root}\\{rel}" if rel else self.root

    # -- Target interface --------------------------------------------------------------------
    def _write_temp(self, kw: dict, path: str, data: bytes | memoryview) -> str:
        full = self._unc(path)
        folder, name = full.rsplit("\\", 1)
        tmp = folder + "\\" + temp_name(name)
        try:
            handle = smbclient.open_file(tmp, mode="wb", **kw)
        except OSError as exc:
            if not _missing(exc):
                raise
            smbclient.makedirs(folder, exist_ok=True, **kw)
            handle = smbclient.open_file(tmp, mode="wb", **kw)
        try:
            with handle:
                write_in_blocks(handle.write, data, BLOCK)
                if self.durable:
                    handle.flush()  # Python's buffer to the server first
                    # SMB2 FLUSH: the server writes the file to stable storage (Samba: "strict sync",
                    # on by default), before the rename makes it visible under its final name.
                    getattr(handle, "raw", handle).flush()
        except BaseException:
            self._remove_quietly(tmp, kw)  # a partial temporary file would hold the space left
            raise
        return tmp

    @staticmethod
    def _remove_quietly(unc: str, kw: dict) -> None:
        try:
            smbclient.remove(unc, **kw)
        except (SMBException, OSError, ValueError):
            pass

    def put(self, path: str, data: bytes | memoryview) -> None:
        with self._op("write", path) as kw:
            tmp = self._write_temp(kw, path, data)
            try:
                _retry_busy(lambda: smbclient.replace(tmp, self._unc(path), **kw), (SHARING, DENIED_STATUS))
            except BaseException:
                self._remove_quietly(tmp, kw)
                raise

    def put_new(self, path: str, data: bytes) -> bool:
        with self._op("create", path) as kw:
            tmp = self._write_temp(kw, path, data)
            try:
                smbclient.rename(tmp, self._unc(path), **kw)  # no overwrite: fails if the name exists
                return True
            except OSError as exc:
                self._remove_quietly(tmp, kw)
                if exc.errno == errno.EEXIST or _status(exc) == NtStatus.STATUS_OBJECT_NAME_COLLISION:
                    return False
                raise

    def get(self, path: str) -> bytes:
        with self._op("read", path) as kw:
            # Share read/write/delete: a reader must never block put() renaming over the file.
            handle = _retry_busy(lambda: smbclient.open_file(self._unc(path), mode="rb", share_access="rwd", **kw),
                                 (SHARING,))
            with handle:
                return handle.read()

    def exists(self, path: str) -> bool:
        with self._op("check", path) as kw:
            try:
                smbclient.stat(self._unc(path), **kw)
                return True
            except OSError as exc:
                if _missing(exc):
                    return False
                raise

    def list(self, folder: str) -> Iterator[Entry]:
        with self._op("list", folder or "\\") as kw:
            try:
                # smb_info, not entry.stat(): the latter forgets the port and dials 445.
                entries = [Entry(e.name, e.smb_info.end_of_file, e.is_dir())
                           for e in smbclient.scandir(self._unc(folder), **kw) if not is_temp(e.name)]
            except OSError as exc:
                if _missing(exc):
                    return iter(())
                raise
        return iter(entries)

    def delete(self, path: str) -> None:
        with self._op("delete", path) as kw:
            try:
                smbclient.remove(self._unc(path), **kw)
            except OSError as exc:
                if not _missing(exc):
                    raise

    def makedirs(self, folder: str) -> None:
        with self._op("create folder", folder) as kw:
            smbclient.makedirs(self._unc(folder), exist_ok=True, **kw)

    def free_space(self) -> int | None:
        with self._op("query free space of", "the share") as kw:
            folder = self.root
            share_root = "\\".join(self.root.split("\\")[:4])  # \\host\share
            while True:
                try:
                    return smbclient.stat_volume(folder, **kw).caller_available_size
                except OSError as exc:
                    if not _missing(exc) or folder == share_root:
                        raise
                    folder = folder.rsplit("\\", 1)[0]  # the repository folder is not created yet

    def sync(self) -> None:
        """Nothing left to do: put() flushes each file (SMB2 FLUSH) before renaming it into place,
        so every completed put is already durable as far as the server honours FLUSH."""
        return None

    def close(self) -> None:
        self.pool.close_all()

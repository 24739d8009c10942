"""FTP and explicit FTPS target (ftplib): one control connection per thread, STOR to a temporary
name then RNFR/RNTO, LIST parsing (vsftpd has no MLSD). FTP cannot report free space."""

from __future__ import annotations

import ftplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from engines.errors import (
    TargetAuthFailed,
    TargetError,
    TargetFull,
    TargetNotFound,
    TargetPermissionDenied,
    TargetUnreachable,
)
from engines.targets.base import Entry, Target, TargetSpec
from engines.targets.remote import TEMP_MARK, PerThread, is_temp, join, temp_name, write_in_blocks

T = TypeVar("T")
BLOCK = 1 << 20
DROPPED = (EOFError, ConnectionError, socket.timeout, ssl.SSLError, ftplib.error_proto, ftplib.error_reply)
FULL_CODES = ("451", "452", "552")  # vsftpd: "451 Failure writing to local file" on ENOSPC
NAME_MISMATCH = (62, 64)  # OpenSSL: X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
LOCK_WAIT = 10.0  # seconds a put_new waits for another one on the same name before breaking its lock


class _Conn:
    def __init__(self, ftp: ftplib.FTP, home: str):
        self.ftp = ftp
        self.home = home

    def close(self) -> None:
        try:
            self.ftp.quit()
        except (*DROPPED, OSError, ftplib.Error):
            self.ftp.close()


def _code(exc: BaseException) -> str:
    return str(exc)[:3]


class FtpTarget(Target):
    type = "ftp"

    def __init__(self, spec: TargetSpec):
        super().__init__(spec)
        self.tls = spec.type == "ftps" or bool(spec.options.get("tls"))
        self.port = spec.port or 21
        self.where = f"{'ftps' if self.tls else 'ftp'}://{spec.username}@{spec.host}:{self.port}"
        self.timeout = float(spec.options.get("timeout", 30))
        self.base = spec.path.rstrip("/") or "."
        self.pool: PerThread[_Conn] = PerThread(self._connect, _Conn.close)

    # -- connections ---------------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext:
        options = self.spec.options
        context = ssl.create_default_context(cafile=options.get("ca_file") or None)
        if not options.get("tls_verify", True):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> _Conn:
        host, port = self.spec.host, self.port
        ftp = ftplib.FTP_TLS(context=self._tls_context(), timeout=self.timeout) if self.tls \
            else ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(host, port)
        except TimeoutError as exc:
            raise TargetUnreachable(f"Cannot reach {host}:{port} (timed out after {self.timeout:g} s): check the "
                                    "FTP server is running and the address and port are right.") from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            raise TargetUnreachable(f"Cannot reach {host}:{port} ({getattr(exc, 'strerror', None) or exc}): check "
                                    "the FTP server is running and the address and port are right.") from exc
        try:
            if self.tls:
                self._secure(ftp)
            ftp.login(self.spec.username, self.spec.password)
            if self.tls:
                ftp.prot_p()  # encrypt data connections too, not only the login
            ftp.voidcmd("TYPE I")
            home = ftp.pwd()
        except ftplib.error_perm as exc:
            ftp.close()
            if _code(exc) == "530":
                raise TargetAuthFailed(f"{self.where} refused the login ({exc}): check the user name and "
                                       "password.") from exc
            raise TargetError(f"{self.where} failed the login ({exc}): check the account on the server (its home "
                              "folder must exist).") from exc
        except TargetError:
            ftp.close()
            raise
        except (*DROPPED, OSError, ftplib.Error) as exc:
            ftp.close()
            raise TargetUnreachable(f"The FTP session with {host}:{port} failed during login ({exc}): check the "
                                    "server is an FTP server and retry.") from exc
        return _Conn(ftp, home)

    def _secure(self, ftp: ftplib.FTP_TLS) -> None:
        try:
            ftp.auth()
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in NAME_MISMATCH:
                raise TargetError(f"The TLS certificate of {self.spec.host}:{self.port} is not trusted: it is not "
                                  f"issued for {self.spec.host} ({exc.verify_message}): connect with a host name "
                                  "the certificate lists, or reissue the certificate for this name.",
                                  code="target_tls_untrusted") from exc
            raise TargetError(f"The TLS certificate of {self.spec.host}:{self.port} is not trusted "
                              f"({exc.verify_message}): set the target's ca_file to the server's CA certificate.",
                              code="target_tls_untrusted") from exc
        except ftplib.error_perm as exc:
            raise TargetError(f"{self.where} does not offer TLS ({exc}): enable explicit FTPS (AUTH TLS) on the "
                              "server or use the ftp target type.", code="target_tls_unavailable") from exc

    def _run(self, action: str, path: str, work: Callable[[ftplib.FTP, str], T], retry: bool = True) -> T:
        """Run `work(ftp, home)`; an idle connection the server closed is replaced once (only for
        idempotent work: a lost reply to put_new could hide that the name was ours)."""
        for attempt in (1, 2):
            fresh = self.pool.fresh()
            conn = self.pool.get()
            try:
                return work(conn.ftp, conn.home)
            except TargetError:
                raise
            except (*DROPPED, OSError) as exc:
                self.pool.discard()
                if retry and attempt == 1 and not fresh and not isinstance(exc, socket.timeout):
                    continue
                raise TargetUnreachable(f"The connection to {self.where} dropped while trying to {action} {path} "
                                        f"({exc or type(exc).__name__}): check the server and network, then retry."
                                        ) from exc
            except ftplib.error_perm as exc:
                if _code(exc) in ("552",):
                    raise self._full_error(path, exc) from exc
                raise TargetPermissionDenied(f"{self.where} refused to {action} {path} ({exc}): give user "
                                             f"{self.spec.username!r} write access to {self.base}.") from exc
            except ftplib.error_temp as exc:
                if _code(exc) in FULL_CODES:
                    raise self._full_error(path, exc) from exc
                raise TargetError(f"{self.where} could not {action} {path} ({exc}): retry later.") from exc
        raise AssertionError("unreachable")

    def _full_error(self, path: str, exc: BaseException) -> TargetFull:
        return TargetFull(f"{self.where} could not store {path} ({exc}): the server's disk is probably full; free "
                          "space or move the repository to a larger volume.")

    def _abs(self, home: str, path: str) -> str:
        full = join(self.base, path)
        return full if full.startswith("/") else f"{home.rstrip('/')}/{full}".replace("/./", "/").rstrip("/.")

    # -- protocol helpers --------------------------------------------------------------------
    def _store(self, ftp: ftplib.FTP, name: str, data: bytes | memoryview) -> None:
        conn = ftp.transfercmd(f"STOR {name}")
        try:
            with conn:
                write_in_blocks(conn.sendall, data, BLOCK)
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
        except OSError:
            # The server may have hung up on purpose (disk full): its reply says why.
            ftp.voidresp()
            raise
        ftp.voidresp()

    def _is_dir(self, ftp: ftplib.FTP, home: str, full: str) -> bool:
        try:
            ftp.cwd(full)
        except ftplib.error_perm:
            return False
        ftp.cwd(home)
        return True

    def _exists(self, ftp: ftplib.FTP, home: str, full: str) -> bool:
        try:
            ftp.size(full)
            return True
        except ftplib.error_perm:
            return self._is_dir(ftp, home, full)

    def _mkdirs(self, ftp: ftplib.FTP, home: str, full: str) -> None:
        try:
            ftp.mkd(full)
            return
        except ftplib.error_perm:
            if self._is_dir(ftp, home, full):
                return
        parent = full.rsplit("/", 1)[0]
        if not parent or parent == full:
            raise ftplib.error_perm(f"550 Cannot create folder {full}")
        self._mkdirs(ftp, home, parent)
        try:
            ftp.mkd(full)
        except ftplib.error_perm:
            if not self._is_dir(ftp, home, full):  # another thread may have just made it
                raise

    def _put(self, ftp: ftplib.FTP, home: str, path: str, data: bytes | memoryview) -> None:
        full = self._abs(home, path)
        tmp = temp_name(full)
        try:
            try:
                self._store(ftp, tmp, data)
            except ftplib.error_perm:
                self._mkdirs(ftp, home, full.rsplit("/", 1)[0])  # 550 on STOR: usually a missing folder
                self._store(ftp, tmp, data)
        except ftplib.error_temp:
            self._quiet(ftp.delete, tmp)  # a partial temporary file would hold the little space left
            raise
        try:
            ftp.rename(tmp, full)  # RNFR/RNTO: rename(2) on the server, replaces atomically
        except ftplib.Error:
            self._quiet(ftp.delete, tmp)
            raise

    @staticmethod
    def _quiet(call: Callable[[str], object], name: str) -> None:
        try:
            call(name)
        except (ftplib.Error, OSError, EOFError):
            pass

    # -- Target interface --------------------------------------------------------------------
    def put(self, path: str, data: bytes | memoryview) -> None:
        self._run("write", path, lambda ftp, home: self._put(ftp, home, path, data))

    def put_new(self, path: str, data: bytes) -> bool:
        return self._run("create", path, lambda ftp, home: self._put_new(ftp, home, path, data), retry=False)

    def _put_new(self, ftp: ftplib.FTP, home: str, path: str, data: bytes) -> bool:
        # FTP has no exclusive create: MKD is atomic, so a sibling folder serialises put_new
        # callers and the existence check plus the write happen while holding it.
        full = self._abs(home, path)
        folder, name = full.rsplit("/", 1)
        lock = f"{folder}/.{name}{TEMP_MARK}lock"
        deadline = time.monotonic() + LOCK_WAIT
        refusals = 0
        while True:
            try:
                ftp.mkd(lock)
                break
            except ftplib.error_perm:
                if not self._is_dir(ftp, home, folder):
                    self._mkdirs(ftp, home, folder)
                elif self._is_dir(ftp, home, lock):
                    if time.monotonic() > deadline:
                        self._quiet(ftp.rmd, lock)  # left by a process that died mid put_new
                    time.sleep(0.01)
                else:
                    refusals += 1  # released just now, or really not allowed: a few tries tell
                    if refusals > 3:
                        raise
        try:
            if self._exists(ftp, home, full):
                return False
            self._put(ftp, home, path, data)
            return True
        finally:
            self._quiet(ftp.rmd, lock)

    def get(self, path: str) -> bytes:
        def work(ftp: ftplib.FTP, home: str) -> bytes:
            full = self._abs(home, path)
            buf = bytearray()
            try:
                ftp.retrbinary(f"RETR {full}", buf.extend, blocksize=BLOCK)
            except ftplib.error_perm as exc:
                if not self._exists(ftp, home, full):
                    raise TargetNotFound(f"{path} does not exist on {self.where}.") from exc
                raise
            return bytes(buf)

        return self._run("read", path, work)

    def exists(self, path: str) -> bool:
        return self._run("check", path, lambda ftp, home: self._exists(ftp, home, self._abs(home, path)))

    def list(self, folder: str) -> Iterator[Entry]:
        def work(ftp: ftplib.FTP, home: str) -> list[Entry]:
            # CWD then a bare LIST: vsftpd would read a path argument as a glob pattern.
            try:
                ftp.cwd(self._abs(home, folder))
            except ftplib.error_perm:
                return []
            lines: list[str] = []
            try:
                ftp.retrlines("LIST -a", lines.append)
            finally:
                ftp.cwd(home)
            return [entry for entry in map(_parse_list_line, lines) if entry and not is_temp(entry.name)]

        return iter(self._run("list", folder or "/", work))

    def delete(self, path: str) -> None:
        def work(ftp: ftplib.FTP, home: str) -> None:
            full = self._abs(home, path)
            try:
                ftp.delete(full)
            except ftplib.error_perm:
                if self._exists(ftp, home, full):
                    raise

        self._run("delete", path, work)

    def makedirs(self, folder: str) -> None:
        self._run("create folder", folder, lambda ftp, home: self._mkdirs(ftp, home, self._abs(home, folder)))

    def free_space(self) -> int | None:
        return None  # FTP has no standard command for it

    def sync(self) -> None:
        """FTP has no command to make stored files durable: when a STOR's data reaches the disk is
        the server's decision (vsftpd leaves it to the page cache)."""
        return None

    def close(self) -> None:
        self.pool.close_all()


def _parse_list_line(line: str) -> Entry | None:
    """One line of a Unix-style LIST: mode links owner group size month day time-or-year name."""
    fields = line.split(None, 8)
    if len(fields) < 9 or fields[0].startswith("total"):
        return None
    name = fields[8]
    if fields[0].startswith("l"):
        name = name.split(" -> ", 1)[0]
    if name in (".", ".."):
        return None
    size = int(fields[4]) if fields[4].isdigit() else 0
    return Entry(name, size, fields[0].startswith("d"))

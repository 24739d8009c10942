"""NFS target (nfs-rs, a userspace NFSv4.1 client, no kernel mount): one client per thread,
atomic overwrite by rename, exclusive create by hard link, free space from FSSTAT.

nfs-rs cannot address the export root itself over NFSv4 (NFS4ERR_BADNAME on "."), so the
repository must live in a folder below the export (`path`), which is always listable."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import quote

import nfs_rs
from nfs_rs import Client, FileType

from engines.errors import (
    TargetError,
    TargetFull,
    TargetNotFound,
    TargetPermissionDenied,
    TargetUnreachable,
)
from engines.targets.base import Entry, Target, TargetSpec
from engines.targets.remote import PerThread, clean_relative, is_temp, join, temp_name, write_in_blocks

BLOCK = 4 << 20  # per write() call; nfs-rs splits it into parallel WRITEs of the negotiated size
DROPPED = (nfs_rs.NfsConnectionError, nfs_rs.NfsTimeoutError, nfs_rs.NfsClientClosedError, ConnectionError,
           TimeoutError)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
RETRIES = 4
T = TypeVar("T")


def _retryable(exc: BaseException) -> bool:
    """The server asked for a retry, here or in a cleanup error's children (a failed close)."""
    action = getattr(exc, "recovery_action", None)
    if isinstance(exc, nfs_rs.NfsRetryableError) or action in (
            nfs_rs.RecoveryAction.RETRY, nfs_rs.RecoveryAction.VERIFY_THEN_RESUME, nfs_rs.RecoveryAction.REOPEN):
        return True
    return any(_retryable(child) for child in getattr(exc, "errors", ()) or ())


class NfsTarget(Target):
    type = "nfs"

    def __init__(self, spec: TargetSpec):
        super().__init__(spec)
        self.base = clean_relative(spec.path)
        if not self.base:
            raise TargetError("The NFS target needs a repository folder inside the export (path, e.g. 'vafleet'): "
                              "the export root itself cannot be listed over NFSv4.", code="target_bad_spec")
        self.port = spec.port or 2049
        options = spec.options
        self.export = "/" + str(options.get("export", "")).strip("/")
        self.version = str(options.get("version", "4.1"))
        self.timeout = float(options.get("timeout", 30))
        self.where = f"nfs://{spec.host}:{self.port}{self.export}"
        self.pool: PerThread[Client] = PerThread(self._connect, Client.close)

    # -- connections ---------------------------------------------------------------------------
    def _connect(self) -> Client:
        options = self.spec.options
        url = f"nfs://{self.spec.host}:{self.port}{quote(self.export)}"
        try:
            return Client.connect(url, versions=[self.version], uid=options.get("uid"), gid=options.get("gid"),
                                  noresvport=options.get("noresvport", True), connect_timeout=self.timeout,
                                  operation_timeout=self.timeout)
        except (nfs_rs.NfsNotFoundError, nfs_rs.NfsMountError) as exc:
            raise TargetNotFound(f"The NFS server {self.spec.host}:{self.port} has no export {self.export} ({exc}): "
                                 "check the export path (the pseudo path on NFSv4).") from exc
        except nfs_rs.NfsPermissionError as exc:
            raise TargetPermissionDenied(f"The NFS server {self.spec.host}:{self.port} refused access to "
                                         f"{self.export} ({exc}): allow this appliance's address in the export's "
                                         "client list.") from exc
        except (nfs_rs.NfsError, OSError) as exc:
            raise TargetUnreachable(f"Cannot reach the NFS server {self.spec.host}:{self.port} ({exc}): check it "
                                    f"is running, serves NFSv{self.version} and the address and port are right."
                                    ) from exc

    def _run(self, action: str, path: str, work: Callable[[Client], T], retry_dropped: bool = True) -> T:
        """Run `work(client)`, retrying on a fresh session when the server asks for a retry:
        ganesha now and then answers NFS4ERR_RETRY_UNCACHED_REP or DELAY, and every
        operation here is idempotent (puts go through a new temporary name each time)."""
        for attempt in range(RETRIES + 1):
            fresh = self.pool.fresh()
            client = self.pool.get()
            try:
                return work(client)
            except TargetError:
                raise
            except DROPPED as exc:
                self.pool.discard()
                if retry_dropped and not fresh and attempt == 0:
                    continue  # this session may predate a server restart: try a new one once
                raise TargetUnreachable(f"The connection to {self.where} dropped while trying to {action} {path} "
                                        f"({exc}): check the server and network, then retry.") from exc
            except nfs_rs.NfsNotFoundError as exc:
                raise TargetNotFound(f"{path} does not exist on {self.where}.") from exc
            except nfs_rs.NfsPermissionError as exc:
                raise TargetPermissionDenied(f"{self.where} denied permission to {action} {path}: give the "
                                             f"appliance's user (uid {self.spec.options.get('uid', 0)}) write access "
                                             f"to {self.base}.") from exc
            except (nfs_rs.NfsError, OSError) as exc:
                if getattr(exc, "errno", None) in FULL_ERRNOS or "no space" in str(exc).lower():
                    raise TargetFull(f"{self.where} is full while trying to {action} {path}: free space on the "
                                     "export or move the repository to a larger volume.") from exc
                self.pool.discard()  # the session's state is in doubt: start over on the next call
                if _retryable(exc) and attempt < RETRIES:
                    time.sleep(0.02 * 2**attempt)
                    continue
                raise TargetError(f"{self.where} could not {action} {path}: {exc}.") from exc
        raise AssertionError("unreachable")

    def _full(self, path: str) -> str:
        return join(self.base, path)

    # -- Target interface --------------------------------------------------------------------
    def _write_temp(self, client: Client, path: str, data: bytes | memoryview) -> str:
        full = self._full(path)
        tmp = temp_name(full)
        try:
            handle = client.open(tmp, "wb")
        except nfs_rs.NfsNotFoundError:
            client.mkdir(full.rsplit("/", 1)[0], parents=True, exist_ok=True)
            handle = client.open(tmp, "wb")
        try:
            with handle:
                write_in_blocks(handle.write, data, BLOCK)
        except BaseException:
            self._remove_quietly(client, tmp)  # a partial temporary file would hold the space left
            raise
        return tmp

    @staticmethod
    def _remove_quietly(client: Client, path: str) -> None:
        try:
            client.unlink(path, missing_ok=True)
        except (nfs_rs.NfsError, OSError):
            pass

    def put(self, path: str, data: bytes | memoryview) -> None:
        def work(client: Client) -> None:
            tmp = self._write_temp(client, path, data)
            try:
                client.rename(tmp, self._full(path))  # NFS RENAME replaces the destination atomically
            except BaseException:
                self._remove_quietly(client, tmp)
                raise

        self._run("write", path, work)

    def put_new(self, path: str, data: bytes) -> bool:
        def work(client: Client) -> bool:
            tmp, full = self._write_temp(client, path, data), self._full(path)
            try:
                client.link(tmp, full)  # LINK fails when the name exists: exclusive, and complete
                return True
            except nfs_rs.NfsAlreadyExistsError:
                return False
            except nfs_rs.NfsOperationOutcomeError:
                # The reply was lost: the link is ours if both names are the same file now.
                if self._same_file(client, tmp, full):
                    return True
                raise
            finally:
                self._remove_quietly(client, tmp)

        return self._run("create", path, work, retry_dropped=False)  # a lost LINK reply could hide our win

    @staticmethod
    def _same_file(client: Client, first: str, second: str) -> bool:
        try:
            return client.stat(first).fileid == client.stat(second).fileid
        except nfs_rs.NfsError:
            return False

    def get(self, path: str) -> bytes:
        def work(client: Client) -> bytes:
            with client.open(self._full(path), "rb") as handle:
                return handle.read()

        return self._run("read", path, work)

    def exists(self, path: str) -> bool:
        return self._run("check", path, lambda client: client.exists(self._full(path)))

    def list(self, folder: str) -> Iterator[Entry]:
        def work(client: Client) -> list[Entry]:
            try:
                return [Entry(e.name, e.info.size, e.info.type == FileType.DIRECTORY)
                        for e in client.scandir(self._full(folder)) if not is_temp(e.name)]
            except nfs_rs.NfsNotFoundError:
                return []

        return iter(self._run("list", folder or "/", work))

    def delete(self, path: str) -> None:
        self._run("delete", path, lambda client: client.unlink(self._full(path), missing_ok=True))

    def makedirs(self, folder: str) -> None:
        self._run("create folder", folder,
                  lambda client: client.mkdir(self._full(folder), parents=True, exist_ok=True))

    def free_space(self) -> int | None:
        return self._run("query free space of", self.export, lambda client: client.fs_stat().available_bytes)

    def sync(self) -> None:
        """Nothing left to do: nfs-rs returns from each write() only once the server has committed
        it (UNSTABLE WRITEs, then one COMMIT per call), so every completed put is already durable."""
        return None

    def close(self) -> None:
        self.pool.close_all()

"""A repository in a local folder (or any mounted file system)."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from collections.abc import Iterator

from engines.errors import TargetError, TargetFull, TargetNotFound, TargetPermissionDenied
from engines.targets.base import Entry, Target, TargetSpec

TEMP_MARK = ".tmp-"

try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.syncfs.argtypes = [ctypes.c_int]
    _LIBC.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (OSError, AttributeError):  # not Linux: sync() falls back to os.sync
    _LIBC = None
SYNC_FILE_RANGE_WRITE = 2


def _error(exc: OSError, what: str) -> TargetError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TargetFull(f"The target folder is full while writing {what}: free space on the target or prune "
                          "old restore points, then run the job again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TargetPermissionDenied(f"The target refuses to write {what} ({exc.strerror}): check the folder's "
                                      "permissions for the appliance's user.")
    return TargetError(f"The target failed on {what}: {exc.strerror or exc}.")


class LocalTarget(Target):
    type = "local"

    def __init__(self, spec: TargetSpec):
        super().__init__(spec)
        if not spec.path:
            raise TargetError("The local target needs a folder path: set the repository's path.")
        self.root = os.path.abspath(spec.path)
        self.durable = bool(spec.options.get("sync", True))

    def _full(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise TargetError(f"Refusing a path outside the repository: {path!r}.")
        return os.path.join(self.root, *parts)

    def put(self, path: str, data: bytes | memoryview) -> None:
        full = self._full(path)
        temp = f"{full}{TEMP_MARK}{secrets.token_hex(4)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _error(exc, path) from exc
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durable and _LIBC is not None:
                    # Start writeback now, so the sync before the manifest has little left to wait for.
                    _LIBC.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
            finally:
                os.close(fd)
            os.rename(temp, full)
        except OSError as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise _error(exc, path) from exc

    def put_new(self, path: str, data: bytes) -> bool:
        full = self._full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        try:
            # Write the content beside it, then hard-link: the name appears complete or not at all.
            temp = f"{full}{TEMP_MARK}{secrets.token_hex(4)}"
            with open(temp, "xb") as fh:
                fh.write(data)
            try:
                os.link(temp, full)
            except FileExistsError:
                return False
            finally:
                os.unlink(temp)
        except OSError as exc:
            raise _error(exc, path) from exc
        return True

    def get(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise TargetNotFound(f"{path} is missing from the repository.") from None
        except OSError as exc:
            raise _error(exc, path) from exc

    def exists(self, path: str) -> bool:
        return os.path.exists(self._full(path))

    def list(self, folder: str) -> Iterator[Entry]:
        try:
            with os.scandir(self._full(folder)) as it:
                entries = []
                for e in it:
                    is_dir = e.is_dir(follow_symlinks=False)
                    entries.append(Entry(e.name, 0 if is_dir else e.stat(follow_symlinks=False).st_size, is_dir))
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        except OSError as exc:
            raise _error(exc, folder) from exc
        return iter(entries)

    def delete(self, path: str) -> None:
        try:
            os.unlink(self._full(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error(exc, path) from exc

    def makedirs(self, folder: str) -> None:
        try:
            os.makedirs(self._full(folder), exist_ok=True)
        except OSError as exc:
            raise _error(exc, folder) from exc

    def sync(self) -> None:
        if not self.durable:
            return
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise _error(exc, "the repository folder") from exc
        try:
            # syncfs flushes only this file system, in one pass instead of an fsync per chunk file.
            if _LIBC is None or _LIBC.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def free_space(self) -> int | None:
        folder = self.root
        while not os.path.exists(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)  # not created yet: the file system it will live on
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

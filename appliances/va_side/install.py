#!/usr/bin/env python3
"""VA Fleet engine installer: runs ON the appliance (stdlib + `cryptography` only).

Copied to `<engine dir>/install.py` at bootstrap, next to `fleet-signing.pem` (the fleet's public
key). Subcommands, each printing JSON lines on stdout:

  version           the active engine version, the previous one, free space (one cheap round trip)
  status            what `version` reports plus load, CPU count, running jobs and the VA's clock
  install BUNDLE    verify size, SHA-256 and Ed25519 signature (envelope on stdin) BEFORE unpacking,
                    unpack into releases/<version>/ (fsync'd), switch `current` atomically, keep
                    `previous` for rollback, prune older releases no job uses
  rollback          switch `current` back to `previous`
  run [ARGS...]     run the active engine (`python -m engines ARGS`) holding its release in use

Locks: `install.lock` (exclusive) serialises installers. A job holds a shared flock on
`releases/<version>/.inuse` for its whole life (the fd is inherited by the engine), and the
installer deletes a release only after taking that lock exclusively without waiting, so an upgrade
never waits for a job and never removes files a running job uses.

Running jobs: just before `run` execs the engine it creates `jobs/<pid>.<start>.<boot>`, naming the
process by pid, start time (clock ticks since boot) and boot id. exec keeps pid and start time,
so the entry names the engine process for its whole life and never any other process. `status`
counts the entries whose process is still alive and removes the others (an engine that ended or
was killed): an entry can only be removed once its process is gone for good, so counting races
with nothing.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
FORMAT = 1


class InstallError(Exception):
    pass


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def platform_tag() -> dict:
    import platform

    return {"python": sys.implementation.cache_tag, "machine": platform.machine()}


def read_link(root: str, name: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(root, name)))
    except OSError:
        return None


def switch_link(root: str, name: str, version: str) -> None:
    """Point `name` at releases/<version> atomically: a temp symlink renamed over the old one."""
    tmp = os.path.join(root, f".{name}.{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", version), tmp)
    os.replace(tmp, os.path.join(root, name))
    fsync_path(root)


def free_bytes(root: str) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip().replace("-", "")[:12] or "0"
    except OSError:
        return "0"


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat); None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def job_entry(pid: int) -> str | None:
    start = start_time(pid)
    return None if start is None else f"{pid}.{start}.{boot_id()}"


def running_jobs(root: str) -> int:
    """Engine processes started by `run` that are alive now; entries of ended ones are removed."""
    jobs = os.path.join(root, "jobs")
    try:
        names = os.listdir(jobs)
    except FileNotFoundError:
        return 0
    boot, count = boot_id(), 0
    for name in names:
        pid, start, entry_boot = (name.split(".") + ["", ""])[:3]
        if pid.isdigit() and entry_boot == boot and start_time(int(pid)) == start:
            count += 1
            continue
        try:
            os.unlink(os.path.join(jobs, name))  # its process has ended: it can never come back
        except OSError:
            pass
    return count


def load_1m() -> float | None:
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return None


def cmd_version(root: str) -> int:
    emit(event="version", version=read_link(root, "current"), previous=read_link(root, "previous"),
         free_bytes=free_bytes(root), **platform_tag())
    return 0


def cmd_status(root: str) -> int:
    """One JSON line for the server's health check; `time` is read last, just before it is sent."""
    state = dict(version=read_link(root, "current"), previous=read_link(root, "previous"),
                 free_bytes=free_bytes(root), **platform_tag(), load_1m=load_1m(), cpus=os.cpu_count(),
                 running_jobs=running_jobs(root))
    emit(event="status", **state, time=time.time())
    return 0


def verify(root: str, envelope_text: bytes, fh) -> dict:
    """Check signature, platform, size and SHA-256; return the signed descriptor."""
    import hashlib

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        envelope = json.loads(envelope_text)
        descriptor_text, signature = envelope["descriptor"], base64.b64decode(envelope["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InstallError("The bundle came without a valid signed descriptor (unsigned bundle): it was not "
                           "installed. Rebuild and sign it on the server.") from exc
    try:
        with open(os.path.join(root, "fleet-signing.pem"), "rb") as kf:
            public_key = load_pem_public_key(kf.read())
    except OSError as exc:
        raise InstallError("The fleet public key is missing on this appliance: bootstrap it again.") from exc
    try:
        public_key.verify(signature, descriptor_text.encode())
    except InvalidSignature as exc:
        raise InstallError("The bundle's signature does not match the fleet key: it was not installed. "
                           "Rebuild it on this fleet's server.") from exc
    descriptor = json.loads(descriptor_text)
    if descriptor.get("format") != FORMAT:
        raise InstallError(f"Bundle format {descriptor.get('format')} is not supported by this installer.")
    here = platform_tag()
    if (descriptor["python"], descriptor["machine"]) != (here["python"], here["machine"]):
        raise InstallError(f"The bundle was built for {descriptor['python']}/{descriptor['machine']} but this "
                           f"appliance runs {here['python']}/{here['machine']}: build a bundle for its platform.")
    size = os.fstat(fh.fileno()).st_size
    if size != descriptor["size"]:
        raise InstallError(f"The bundle is {size} bytes, the signed size is {descriptor['size']} (truncated or "
                           "padded upload): it was not installed. Upload it again.")
    digest = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        digest.update(chunk)
    if digest.hexdigest() != descriptor["sha256"]:
        raise InstallError("The bundle's SHA-256 does not match its signed descriptor (tampered or corrupted): "
                           "it was not installed. Upload it again.")
    fh.seek(0)
    return descriptor


def safe_target(base: str, name: str) -> str:
    target = os.path.normpath(os.path.join(base, name))
    if os.path.isabs(name) or not target.startswith(base + os.sep):
        raise InstallError(f"The bundle holds an unsafe path {name!r}: it was not installed.")
    return target


def write_file(target: str, src, mode: int) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(target, 0o755 if mode & 0o111 else 0o644)


def unpack(fh, dest: str) -> None:
    import tarfile  # imported here: `version` stays a cheap start-up
    import zipfile

    with tarfile.open(fileobj=fh, mode="r:") as tar:
        for member in tar:
            target = safe_target(dest, member.name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                write_file(target, tar.extractfile(member), member.mode)
            else:
                raise InstallError(f"The bundle holds a link or device {member.name!r}: it was not installed.")
    site = os.path.join(dest, "site")
    wheels = os.path.join(dest, "wheels")
    for name in sorted(os.listdir(wheels)) if os.path.isdir(wheels) else []:
        with zipfile.ZipFile(os.path.join(wheels, name)) as whl:
            for info in whl.infolist():
                if info.is_dir():
                    continue
                parts = info.filename.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue  # scripts and headers are not needed to import the engine
                    parts = parts[2:]
                with whl.open(info) as src:
                    write_file(safe_target(site, "/".join(parts)), src, info.external_attr >> 16)
    shutil.rmtree(wheels, ignore_errors=True)
    for dirpath, _dirs, _files in os.walk(dest, topdown=False):
        fsync_path(dirpath)


def lock(path: str, mode: int, wait: float):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def prune(root: str) -> None:
    releases = os.path.join(root, "releases")
    keep = {read_link(root, "current"), read_link(root, "previous")}
    for name in os.listdir(releases):
        path = os.path.join(releases, name)
        if name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)  # left by a killed installer; we hold install.lock
        elif name not in keep:
            fd = lock(os.path.join(path, ".inuse"), fcntl.LOCK_EX, 0)
            if fd is None:
                continue  # a running job uses it; a later install removes it
            try:
                doomed = os.path.join(releases, f".tmp-del-{name}")
                os.rename(path, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            finally:
                os.close(fd)


def cmd_install(root: str, bundle: str, envelope_text: bytes) -> int:
    releases = os.path.join(root, "releases")
    os.makedirs(releases, exist_ok=True)
    lock_fd = lock(os.path.join(root, "install.lock"), fcntl.LOCK_EX, 120)
    if lock_fd is None:
        raise InstallError("Another engine installation is running on this appliance: retry in a minute.")
    try:
        with open(bundle, "rb") as fh:
            descriptor = verify(root, envelope_text, fh)
            version = descriptor["version"]
            emit(event="verified", version=version)
            final = os.path.join(releases, version)
            if not os.path.exists(os.path.join(final, ".complete")):
                need = descriptor["unpacked_bytes"] + (1 << 20)
                if free_bytes(root) < need:
                    raise InstallError(f"Not enough free space to unpack the engine ({need >> 20} MiB needed, "
                                       f"{free_bytes(root) >> 20} MiB free): free space on the appliance; "
                                       "the previous release stays active.")
                tmp = os.path.join(releases, f".tmp-{version}-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                emit(event="unpacking", version=version)
                try:
                    unpack(fh, tmp)
                    with open(os.path.join(tmp, ".complete"), "w") as marker:
                        marker.write(json.dumps(descriptor))
                        marker.flush()
                        os.fsync(marker.fileno())
                    fsync_path(tmp)
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(tmp, final)
                    fsync_path(releases)
                except BaseException as exc:
                    shutil.rmtree(tmp, ignore_errors=True)
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise InstallError("The appliance's disk filled up while unpacking the engine: free "
                                           "space there; the previous release stays active.") from exc
                    raise
        old = read_link(root, "current")
        if old != version:
            if old:
                switch_link(root, "previous", old)
            switch_link(root, "current", version)
        emit(event="switched", version=version, previous=old)
        prune(root)
        os.unlink(bundle)
        emit(event="installed", version=version, previous=old)
        return 0
    finally:
        os.close(lock_fd)


def cmd_rollback(root: str) -> int:
    lock_fd = lock(os.path.join(root, "install.lock"), fcntl.LOCK_EX, 120)
    if lock_fd is None:
        raise InstallError("An engine installation is running on this appliance: retry in a minute.")
    try:
        current, previous = read_link(root, "current"), read_link(root, "previous")
        if not previous or not os.path.exists(os.path.join(root, "releases", previous, ".complete")):
            raise InstallError("There is no previous engine release to roll back to.")
        switch_link(root, "current", previous)
        switch_link(root, "previous", current)
        emit(event="installed", version=previous, previous=current)
        return 0
    finally:
        os.close(lock_fd)


def register_job(root: str) -> str | None:
    """Create this process's `jobs/` entry (it stays valid across exec); returns its path."""
    name = job_entry(os.getpid())
    if name is None:
        return None  # no /proc: jobs are not counted
    jobs = os.path.join(root, "jobs")
    os.makedirs(jobs, exist_ok=True)
    path = os.path.join(jobs, name)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    return path


def cmd_run(root: str, args: list[str]) -> int:
    for _ in range(5):
        release = os.path.realpath(os.path.join(root, "current"))
        if not os.path.exists(os.path.join(release, ".complete")):
            raise InstallError("No engine is installed on this appliance: the server injects it before a job.")
        fd = lock(os.path.join(release, ".inuse"), fcntl.LOCK_SH, 30)
        if fd is not None and os.path.exists(os.path.join(release, ".complete")):
            os.set_inheritable(fd, True)  # the engine keeps the shared lock until it exits
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(release, "site"), release]),
                       VAFLEET_ENGINE_RELEASE=os.path.basename(release))
            entry = register_job(root)
            try:
                os.execve(sys.executable, [sys.executable, "-s", "-m", "engines", *args], env)
            except BaseException:
                if entry:
                    try:
                        os.unlink(entry)
                    except OSError:
                        pass
                raise
        if fd is not None:
            os.close(fd)  # pruned between resolve and lock: resolve `current` again
    raise InstallError("The engine release changed repeatedly while starting: retry the job.")


def main(argv: list[str]) -> int:
    root = os.environ.get("VAFLEET_ENGINE_ROOT", ROOT)
    try:
        if argv[:1] == ["version"]:
            return cmd_version(root)
        if argv[:1] == ["status"]:
            return cmd_status(root)
        if argv[:1] == ["install"] and len(argv) == 2:
            return cmd_install(root, argv[1], sys.stdin.buffer.read())
        if argv[:1] == ["rollback"]:
            return cmd_rollback(root)
        if argv[:1] == ["run"]:
            return cmd_run(root, argv[1:])
    except (InstallError, OSError) as exc:
        message = str(exc) if isinstance(exc, InstallError) else (
            f"The installer failed on {exc.filename or 'a system call'} ({exc.strerror or exc}): nothing was "
            "switched; check the appliance's disk and retry.")
        emit(event="error", message=message)
        print(message, file=sys.stderr)
        if argv[:1] == ["install"] and len(argv) == 2:
            try:
                os.unlink(argv[1])  # a refused bundle is never kept around
            except OSError:
                pass
        return 2
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

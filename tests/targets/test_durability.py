"""Durability on the network targets, observed on the real servers: SFTP asks for
fsync@openssh.com on every uploaded file, SMB sends an SMB2 FLUSH, NFS commits its writes.
Each server here is the test's own, restarted with a log that shows those requests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.targets import open_target
from tests.harness.storage import STARTERS, ServerUnavailable, StorageServer


def _own(kind: str) -> StorageServer:
    try:
        return STARTERS[kind]()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


def _wait_for(path: Path, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.fixture
def logged_sshd() -> Iterator[tuple[StorageServer, Path]]:
    """sshd running OpenSSH's sftp-server at log level VERBOSE, which logs each fsync request."""
    server = _own("sftp")
    log = server.root / "sftp-server.log"
    log.touch()
    os.chmod(log, 0o666)
    config = server.root / "sshd_config"
    config.write_text(config.read_text().replace(
        "Subsystem sftp internal-sftp", f"Subsystem sftp /usr/lib/openssh/sftp-server -e -l VERBOSE 2>>{log}"))
    if not os.path.exists("/usr/lib/openssh/sftp-server"):
        server.stop()
        pytest.skip("/usr/lib/openssh/sftp-server is missing")
    server.restart()
    yield server, log
    server.stop()


def test_sftp_fsyncs_every_file_before_renaming_it(logged_sshd):
    server, log = logged_sshd
    with open_target(server.spec("durable")) as target:
        target.put("chunks/ab/first", os.urandom(300 << 10))
        target.put("snapshots/vm/manifest", b"names the chunk")
        target.sync()
        assert target.get("chunks/ab/first")
    with open_target(server.spec("durable", sync=False)) as target:
        target.put("chunks/ab/unsynced", b"left to the server")
    text = _wait_for(log, ".manifest.vaf-tmp-")
    fsynced = [line for line in text.splitlines() if line.startswith("fsync ")]
    # The temporary name is fsynced, so the file is durable before it appears under its final name.
    assert any(f"{server.data_dir}/durable/chunks/ab/.first.vaf-tmp-" in line for line in fsynced), text
    assert any("/snapshots/vm/.manifest.vaf-tmp-" in line for line in fsynced), text
    assert not any(".unsynced.vaf-tmp-" in line for line in fsynced), text  # options.sync=false: none


@pytest.fixture
def logged_smbd() -> Iterator[StorageServer]:
    """smbd logging its SMB2 requests (debug class smb2 at level 10)."""
    server = _own("smb")
    config = server.root / "smb.conf"
    config.write_text(config.read_text().replace("log level = 1", "log level = 1 smb2:10"))
    server.restart()
    yield server
    server.stop()


def test_smb_flushes_every_file_before_renaming_it(logged_smbd):
    server = logged_smbd
    with open_target(server.spec("durable")) as target:
        target.put("chunks/ab/first", os.urandom(300 << 10))
        target.sync()
    with open_target(server.spec("durable", sync=False)) as target:
        target.put("chunks/ab/unsynced", b"left to the server")
        assert target.get("chunks/ab/unsynced") == b"left to the server"
    text = _wait_for(server.root / "smbd.stdout", "smbd_smb2_flush: durable/chunks/ab/.first.vaf-tmp-")
    flushed = [line for line in text.splitlines() if "smbd_smb2_flush: " in line]
    assert any("durable/chunks/ab/.first.vaf-tmp-" in line for line in flushed), flushed
    assert not any(".unsynced.vaf-tmp-" in line for line in flushed), flushed


@pytest.fixture
def logged_ganesha() -> Iterator[StorageServer]:
    """NFS-Ganesha logging each NFSv4 operation it processes."""
    server = _own("nfs")
    config = server.root / "ganesha.conf"
    config.write_text(config.read_text().replace(
        "Default_Log_Level = EVENT;", "Default_Log_Level = EVENT;\n    COMPONENTS { NFS_V4 = FULL_DEBUG; }"))
    server.restart()
    yield server
    server.stop()


def test_nfs_commits_the_writes_of_every_put(logged_ganesha):
    server = logged_ganesha
    log = server.root / "ganesha.log"
    with open_target(server.spec("durable", uid=0, gid=0)) as target:
        target.makedirs("chunks")
        before = log.read_text(errors="replace").count("is OP_COMMIT")
        target.put("chunks/first", os.urandom(300 << 10))
        target.sync()
        assert target.get("chunks/first")
    text = _wait_for(log, "is OP_COMMIT")
    writes = [line for line in text.splitlines() if "nfs4_op_write" in line and "length = 307200  stable" in line]
    assert writes and all("stable = 0" in line for line in writes), writes  # UNSTABLE writes...
    assert text.count("is OP_COMMIT") > before  # ...then a COMMIT before put() returned

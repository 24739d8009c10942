"""How each network target fails, against its real server: wrong credentials, nothing listening,
a server that never answers, no permission, a full disk, and the server killed mid-transfer.
Each failure is the matching engines.errors class with a sentence, and nothing is lost."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.errors import (
    TargetAuthFailed,
    TargetError,
    TargetFull,
    TargetPermissionDenied,
    TargetUnreachable,
)
from engines.targets import open_target
from engines.targets.remote import TEMP_MARK
from tests.harness.storage import STARTERS, ServerUnavailable
from tests.harness.storage.process import HOST, free_port
from tests.targets.conftest import SERVER_OF, Servers, new_folder

MiB = 1 << 20
NETWORK = ("sftp", "ftp", "ftps", "smb", "nfs")


def spec_of(kind: str, servers: Servers, folder: str | None = None, **options):
    server = servers[kind]
    folder = folder or new_folder()
    return server.spec(folder, tls=True, **options) if kind == "ftps" else server.spec(folder, **options)


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if TEMP_MARK in p.name] if folder.exists() else []


@pytest.mark.parametrize("kind", ["sftp", "ftp", "ftps", "smb"])
def test_wrong_password_is_target_auth_failed(kind: str, servers: Servers):
    spec = spec_of(kind, servers, private_key="") if kind == "sftp" else spec_of(kind, servers)
    spec.password = "not-the-password"
    with open_target(spec) as target, pytest.raises(TargetAuthFailed, match="check the user name") as caught:
        target.exists("config")
    assert caught.value.code == "target_auth_failed"
    spec.password = servers[kind].password  # the right one works: the failure was the password
    with open_target(spec) as target:
        assert not target.exists("config")


def test_sftp_unknown_private_key_is_target_auth_failed(servers: Servers, tmp_path: Path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with open_target(spec_of("sftp", servers, private_key=str(key))) as target, pytest.raises(TargetAuthFailed):
        target.put("config", b"x")


def test_sftp_pinned_host_key_is_checked(servers: Servers):
    server = servers["sftp"]
    real = (server.root / "host_ed25519.pub").read_text().split()
    with open_target(spec_of("sftp", servers, host_key=" ".join(real[:2]))) as target:
        target.put("config", b"pinned")
    wrong = (server.root / "client_ed25519.pub").read_text()
    with open_target(spec_of("sftp", servers, host_key=wrong)) as target, pytest.raises(TargetError) as caught:
        target.get("config")
    assert caught.value.code == "target_host_key_mismatch"


def test_ftps_untrusted_certificate_is_refused_unless_allowed(servers: Servers):
    spec = spec_of("ftps", servers, ca_file="")
    with open_target(spec) as target, pytest.raises(TargetError, match="not trusted") as caught:
        target.put("config", b"x")
    assert caught.value.code == "target_tls_untrusted"
    spec.options["tls_verify"] = False
    with open_target(spec) as target:
        target.put("config", b"over TLS")
        assert target.get("config") == b"over TLS"


@pytest.mark.parametrize("kind", NETWORK)
def test_nothing_listening_is_target_unreachable(kind: str, servers: Servers):
    spec = spec_of(kind, servers, timeout=5)
    spec.port = free_port()
    with open_target(spec) as target, pytest.raises(TargetUnreachable, match=f"{HOST}:{spec.port}") as caught:
        target.exists("config")
    assert caught.value.code == "target_unreachable"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("kind", NETWORK)
def test_server_that_never_answers_times_out(kind: str, servers: Servers, silent_port: int):
    spec = spec_of(kind, servers, timeout=1)
    spec.port = silent_port
    started = time.monotonic()
    with open_target(spec) as target, pytest.raises(TargetUnreachable):
        target.exists("config")
    assert time.monotonic() - started < 15  # bounded by options["timeout"], not the 30 s default


@pytest.mark.parametrize("kind", NETWORK)
def test_folder_without_write_permission(kind: str, servers: Servers):
    server = servers[kind]
    locked = server.data_dir / f"locked-{kind}"
    locked.mkdir(mode=0o755, exist_ok=True)  # owned by root: the server's user may only read
    options = {"uid": 4242, "gid": 4242} if kind == "nfs" else {}  # NFS: root is not squashed here
    with open_target(spec_of(kind, servers, f"locked-{kind}/repo", **options)) as target:
        with pytest.raises(TargetPermissionDenied, match="permission|refused") as caught:
            target.put("config", b"x")
    assert caught.value.code == "target_permission_denied"
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("kind", NETWORK)
def test_full_disk_is_target_full_and_loses_nothing(kind: str, servers: Servers):
    server = servers[kind]
    if server.small_dir is None:
        pytest.skip("this machine does not allow tmpfs mounts (needs root and mount rights)")
    folder = f"full-{kind}"
    spec = server.small_spec(folder, tls=True) if kind == "ftps" else server.small_spec(folder)
    keep = os.urandom(MiB)
    with open_target(spec) as target:
        target.put("chunks/keep", keep)
        with pytest.raises(TargetFull, match="full") as caught:
            target.put("chunks/too-big", os.urandom(9 * MiB))  # the volume holds 8 MiB
        assert caught.value.code == "target_full"
        assert target.get("chunks/keep") == keep
        assert not target.exists("chunks/too-big")
        assert temp_files(server.small_dir / folder) == []  # the partial upload is gone: space is back
        target.put("chunks/small", b"after")  # and the target still works
        assert target.get("chunks/small") == b"after"
    shutil.rmtree(server.small_dir / folder)


@pytest.fixture
def own_server(request):
    """A server of the test's own, to kill: the session's servers stay up for everyone else."""
    try:
        server = STARTERS[SERVER_OF[request.param]]()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield request.param, server
    server.stop()


@pytest.mark.parametrize("own_server", NETWORK, indirect=True)
def test_server_killed_mid_transfer(own_server):
    kind, server = own_server
    folder = "killed repo"
    spec = server.spec(folder, tls=True, timeout=3) if kind == "ftps" else server.spec(folder, timeout=3)
    if kind == "nfs":
        spec.options["uid"] = spec.options["gid"] = 0
    big = memoryview(bytes(256 * MiB))
    outcome: list[BaseException | None] = []
    with open_target(spec) as target:
        target.put("config", b"before")

        def upload() -> None:
            try:
                target.put("chunks/big", big)
                outcome.append(None)
            except BaseException as exc:  # judged below
                outcome.append(exc)

        thread = threading.Thread(target=upload)
        thread.start()
        on_disk = server.local(folder) / "chunks"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not outcome:
            if any(p.stat().st_size > 0 for p in on_disk.glob(f"*{TEMP_MARK}*")):
                break
            time.sleep(0.002)
        server.kill()
        thread.join(60)
        assert outcome and isinstance(outcome[0], TargetUnreachable), outcome
        # Dropped mid-write, or refused when the upload reconnects: either sentence says what to check.
        assert re.search(r"check the (\w+ )?server", str(outcome[0])), outcome[0]
        assert not (on_disk / "big").exists()  # never a partial file under the final name
        server.start()  # same port: the target reconnects on its own
        assert target.get("config") == b"before"
        target.put("chunks/after", b"works again")
        assert (on_disk / "after").read_bytes() == b"works again"


def test_nfs_and_smb_refuse_incomplete_settings():
    from engines.targets import TargetSpec

    with pytest.raises(TargetError, match="folder inside the export"):
        open_target(TargetSpec(type="nfs", host=HOST, path="", options={"export": "/export"}))
    with pytest.raises(TargetError, match="share"):
        open_target(TargetSpec(type="smb", host=HOST, path="repo"))


def test_harness_users_exist_after_start(servers: Servers):
    for kind in ("sftp", "ftp", "smb"):
        assert pwd.getpwnam(servers[kind].username).pw_uid > 0


def test_sftp_private_key_given_as_text(servers: Servers):
    key_text = (servers["sftp"].root / "client_ed25519").read_text()
    with open_target(spec_of("sftp", servers, private_key=key_text)) as target:
        target.put("config", b"key from the job spec")
        assert target.get("config") == b"key from the job spec"
    with pytest.raises(TargetAuthFailed, match="cannot be read"):
        open_target(spec_of("sftp", servers, private_key="-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n"))

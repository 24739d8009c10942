"""The engine's `probe` against the real servers: a writable folder with or without a repository,
wrong credentials, nothing listening and a folder the server's user may not write."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from engines import api
from engines.errors import TargetAuthFailed, TargetPermissionDenied, TargetUnreachable
from engines.repository.keys import WrongPassphrase
from engines.targets import open_target
from tests.harness.storage.process import HOST, free_port
from tests.targets.conftest import Servers, spec_for

PASSPHRASE = "probe passphrase"
NETWORK = ("sftp", "ftp", "ftps", "smb", "nfs")
FREE_SPACE_KNOWN = {"local", "sftp", "smb", "nfs"}


def test_probe_then_init_then_probe_again(target_type: str, servers: Servers, tmp_path):
    spec = spec_for(target_type, servers, tmp_path)
    first = api.probe(asdict(spec))
    assert (first["reachable"], first["writable"], first["initialized"]) == (True, True, False)
    if target_type in FREE_SPACE_KNOWN:
        assert isinstance(first["free_bytes"], int) and first["free_bytes"] > 0
    else:
        assert first["free_bytes"] is None  # FTP cannot tell
    with open_target(spec) as target:
        assert [e.name for e in target.list("")] == []  # the test file was removed

    api.init(asdict(spec), PASSPHRASE, chunk_size=1 << 16, kdf_n=1 << 12)
    again = api.probe(asdict(spec), PASSPHRASE)
    assert again["initialized"] is True and again["passphrase_ok"] is True and again["chunk_size"] == 1 << 16
    assert api.probe(asdict(spec))["passphrase_ok"] is None  # without the passphrase: not judged
    with pytest.raises(WrongPassphrase) as caught:
        api.probe(asdict(spec), "wrong passphrase")
    assert caught.value.code == "wrong_passphrase"


@pytest.mark.parametrize("kind", ["sftp", "ftp", "ftps", "smb"])
def test_wrong_password_is_target_auth_failed(kind: str, servers: Servers, tmp_path):
    spec = spec_for(kind, servers, tmp_path, private_key="") if kind == "sftp" else spec_for(kind, servers, tmp_path)
    spec.password = "not-the-password"
    with pytest.raises(TargetAuthFailed) as caught:
        api.probe(asdict(spec))
    assert caught.value.code == "target_auth_failed" and "check the user name" in str(caught.value)


@pytest.mark.parametrize("kind", NETWORK)
def test_nothing_listening_is_target_unreachable(kind: str, servers: Servers, tmp_path):
    spec = spec_for(kind, servers, tmp_path, timeout=5)
    spec.port = free_port()
    with pytest.raises(TargetUnreachable, match=f"{HOST}:{spec.port}") as caught:
        api.probe(asdict(spec))
    assert caught.value.code == "target_unreachable"


@pytest.mark.parametrize("kind", NETWORK)
def test_read_only_folder_is_permission_denied(kind: str, servers: Servers, tmp_path):
    server = servers[kind]
    locked = server.data_dir / f"probe-locked-{kind}"
    locked.mkdir(mode=0o755, exist_ok=True)  # owned by root: the server's user may only read
    options = {"uid": 4242, "gid": 4242} if kind == "nfs" else {}  # NFS: root is not squashed here
    spec = spec_for(kind, servers, tmp_path, f"probe-locked-{kind}/repo", **options)
    with pytest.raises(TargetPermissionDenied) as caught:
        api.probe(asdict(spec))
    assert caught.value.code == "target_permission_denied"
    assert list(locked.iterdir()) == []

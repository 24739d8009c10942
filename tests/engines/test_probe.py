"""The `probe` operation on a local folder: write access, free space, an existing repository and its
passphrase, through the Python API and through the engine process."""

from __future__ import annotations

import os
import subprocess

import pytest

from engines import api
from engines.contract import OPERATIONS
from engines.errors import TargetPermissionDenied
from engines.repository.format import FORMAT_VERSION
from engines.repository.keys import WrongPassphrase
from tests.engines.conftest import CHUNK, KDF_N, PASSPHRASE, run_engine


def test_probe_is_an_operation_of_the_contract():
    assert "probe" in OPERATIONS


def test_probe_creates_the_folder_and_leaves_no_test_file(tmp_path):
    folder = tmp_path / "new" / "repo folder é"
    result = api.probe({"type": "local", "path": str(folder)})
    assert folder.is_dir()
    assert list(folder.iterdir()) == []  # the test file is gone
    assert result["reachable"] and result["writable"]
    assert result["initialized"] is False and result["passphrase_ok"] is None
    assert result["format_version"] is None
    free = os.statvfs(tmp_path)
    assert abs(result["free_bytes"] - free.f_bavail * free.f_frsize) < 64 << 20


def test_probe_sees_an_existing_repository_without_the_passphrase(repo):
    result = api.probe(repo.target)
    assert result["initialized"] is True
    assert result["format_version"] == FORMAT_VERSION and result["chunk_size"] == CHUNK
    assert result["passphrase_ok"] is None  # not asked
    assert api.probe(repo.target, PASSPHRASE)["passphrase_ok"] is True
    with pytest.raises(WrongPassphrase, match="passphrase does not open"):
        api.probe(repo.target, "not the passphrase")


def test_passphrase_without_a_repository_is_not_judged(tmp_path):
    result = api.probe({"type": "local", "path": str(tmp_path / "empty")}, "anything")
    assert result["initialized"] is False and result["passphrase_ok"] is None


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder the engine cannot write: a read-only tmpfs as root, a mode 555 folder otherwise."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_folder_is_permission_denied(read_only_folder):
    with pytest.raises(TargetPermissionDenied) as caught:
        api.probe({"type": "local", "path": str(read_only_folder / "repo")})
    assert caught.value.code == "target_permission_denied"
    assert "permissions" in str(caught.value)


def test_a_damaged_config_is_a_clear_error(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config").write_bytes(b"not json")
    run = run_engine({"operation": "probe", "target": {"type": "local", "path": str(folder)}})
    assert run.returncode != 0
    assert run.error["code"] == "repository_corrupt" and "choose an empty folder" in run.error["message"]


def test_engine_process_probe_events(tmp_path):
    target = {"type": "local", "path": str(tmp_path / "repo")}
    run = run_engine({"operation": "probe", "target": target})
    assert run.returncode == 0, run.stderr
    result = run.result
    assert result["operation"] == "probe"
    assert (result["reachable"], result["writable"], result["initialized"], result["passphrase_ok"]) == (
        True, True, False, None)
    assert isinstance(result["free_bytes"], int) and result["free_bytes"] > 0

    run = run_engine({"operation": "init", "target": target, "passphrase": PASSPHRASE,
                      "options": {"chunk_size": CHUNK, "kdf_n": KDF_N}})
    assert run.returncode == 0, run.stderr
    run = run_engine({"operation": "probe", "target": target, "passphrase": PASSPHRASE})
    assert run.returncode == 0 and run.result["initialized"] is True and run.result["passphrase_ok"] is True

    run = run_engine({"operation": "probe", "target": target, "passphrase": "wrong"})
    assert run.returncode != 0
    assert run.error["code"] == "wrong_passphrase" and "passphrase" in run.error["message"]
    assert run.of("result") == []


def test_unwritable_target_is_an_error_event(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_bytes(b"x")
    run = run_engine({"operation": "probe", "target": {"type": "local", "path": str(blocker / "repo")}})
    assert run.returncode != 0 and run.of("result") == []
    assert run.error["code"] == "target_bad_path"
    assert "a file" in run.error["message"] and "Not a directory" in run.error["message"]

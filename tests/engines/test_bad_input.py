"""Damaged repositories and hostile conditions: each ends in a clear error, nothing is lost."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from engines import api
from engines.contract import DiskSpec
from engines.errors import EngineError
from tests.engines.conftest import CHUNK, KDF_N, PASSPHRASE, Repo, backup_job, run_engine, write_image


def _chunk_file(repo_path: Path, chunk_hex: str) -> Path:
    return repo_path / "chunks" / chunk_hex[:2] / chunk_hex


def _backup(repo, tmp_path, vm="web01", seed=21):
    disk = write_image(tmp_path / f"{vm}.img", 12 * CHUNK, seed=seed, layout="rt")
    return disk, api.backup(repo.target, PASSPHRASE, vm, [DiskSpec("disk0", str(disk))])


def _find_chunk_at(repo, vm: str, rp: str, index: int) -> str:
    with api.open_repository(repo.target, PASSPHRASE) as r:
        return r.load_manifest(vm, rp).disks[0].chunks[index].hex()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_verify_names_vm_disk_and_offset_of_a_damaged_chunk(repo, tmp_path, damage):
    disk, result = _backup(repo, tmp_path)
    rp = result["restore_point"]
    victim = _find_chunk_at(repo, "web01", rp, 5)
    path = _chunk_file(repo.path, victim)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x10
        path.write_bytes(raw)
    elif damage == "truncate":
        path.write_bytes(raw[: len(raw) // 3])
    else:
        path.unlink()
    run = run_engine({"operation": "verify", "target": repo.target, "passphrase": PASSPHRASE})
    assert run.returncode == 1
    assert run.error["code"] == "verify_failed"
    problems = run.error["problems"]
    assert [(p["vm"], p["restore_point"], p["disk"], p["offset"], p["chunk"]) for p in problems] == [
        ("web01", rp, "disk0", 5 * CHUNK, victim)]
    assert f"offset {5 * CHUNK}" in run.error["message"] and "disk0" in run.error["message"]
    # restoring that restore point fails clearly, naming the offset
    run = run_engine({"operation": "restore", "target": repo.target, "passphrase": PASSPHRASE, "restore_point": rp,
                      "disks": [{"name": "disk0", "path": str(tmp_path / "out.img")}]})
    assert run.returncode == 1 and run.error["code"] == "chunk_corrupt"
    assert str(5 * CHUNK) in run.error["message"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_manifest_is_reported_and_others_still_restore(repo, tmp_path, damage):
    _, good = _backup(repo, tmp_path, vm="good")
    _, bad = _backup(repo, tmp_path, vm="bad", seed=22)
    manifest = repo.path / "snapshots" / "bad" / bad["restore_point"]
    raw = bytearray(manifest.read_bytes())
    raw[20] ^= 1
    manifest.write_bytes(raw if damage == "flip" else raw[: len(raw) - 40])
    result = api.verify(repo.target, PASSPHRASE)
    assert not result["ok"]
    assert [(p["vm"], p["restore_point"]) for p in result["problems"]] == [("bad", bad["restore_point"])]
    catalog = api.rebuild_catalog(repo.target, PASSPHRASE)
    assert [p["id"] for p in catalog["restore_points"]] == [good["restore_point"]]
    assert catalog["damaged"][0]["restore_point"] == bad["restore_point"]
    # prune refuses to sweep while a manifest cannot be read: it cannot tell what that point needs
    with pytest.raises(EngineError, match="deleted no chunks"):
        api.prune(repo.target, PASSPHRASE, retention={"keep_last": 5}, grace_seconds=0)


def test_manifest_moved_to_another_vm_does_not_open(repo, tmp_path):
    _, result = _backup(repo, tmp_path, vm="a")
    src = repo.path / "snapshots" / "a" / result["restore_point"]
    (repo.path / "snapshots" / "b").mkdir()
    shutil.copy(src, repo.path / "snapshots" / "b" / result["restore_point"])
    problems = api.verify(repo.target, PASSPHRASE)["problems"]
    assert [(p["vm"], p["reason"][:20]) for p in problems] == [("b", "Restore point " + result["restore_point"][:6])]


def test_unknown_format_version_is_refused(repo):
    config = json.loads((repo.path / "config").read_text())
    config["version"] = 99
    (repo.path / "config").write_text(json.dumps(config))
    run = run_engine({"operation": "list", "target": repo.target, "passphrase": PASSPHRASE})
    assert run.returncode == 1 and run.error["code"] == "unsupported_format"
    assert "format version 99" in run.error["message"] and "update" in run.error["message"]


def test_init_twice_is_refused(repo):
    with pytest.raises(EngineError, match="already exists"):
        api.init(repo.target, PASSPHRASE, kdf_n=KDF_N)


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "full"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_target_full_gives_clear_error_and_repository_stays_consistent(small_tmpfs, tmp_path):
    target = {"type": "local", "path": str(small_tmpfs / "repo")}
    api.init(target, PASSPHRASE, chunk_size=CHUNK, kdf_n=KDF_N)
    small = write_image(tmp_path / "small.img", 8 * CHUNK, seed=31, layout="t")
    first = api.backup(target, PASSPHRASE, "vm", [DiskSpec("d", str(small))])
    big = write_image(tmp_path / "big.img", 128 * CHUNK, seed=32, layout="r")  # 8 MiB random: cannot fit
    run = run_engine({"operation": "backup", "target": target, "passphrase": PASSPHRASE, "vm": {"name": "vm"},
                      "disks": [{"name": "d", "path": str(big)}], "parent": first["restore_point"]})
    assert run.returncode == 1
    assert run.error["code"] == "target_full" and "full" in run.error["message"]
    assert not list((small_tmpfs / "repo").rglob("*.tmp-*"))  # no partial files left behind
    points = api.list_restore_points(target, PASSPHRASE)["restore_points"]
    assert [p["id"] for p in points] == [first["restore_point"]]
    assert api.verify(target, PASSPHRASE)["ok"]
    out = tmp_path / "out.img"
    api.restore(target, PASSPHRASE, first["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == small.read_bytes()
    # prune frees the orphans the failed backup left, after which the repository has room again
    api.prune(target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert api.stats(target, PASSPHRASE)["orphan_chunks"] == 0
    run = run_engine(backup_job(Repo(small_tmpfs / "repo", target), "vm", [{"name": "d", "path": str(small)}]))
    assert run.returncode == 0, run.error


def test_repair_then_cbt_backup_heals_a_damaged_chunk(repo, tmp_path):
    disk, first = _backup(repo, tmp_path, seed=23)
    victim = _find_chunk_at(repo, "web01", first["restore_point"], 2)
    path = _chunk_file(repo.path, victim)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(raw)
    run = run_engine({"operation": "verify", "target": repo.target, "passphrase": PASSPHRASE,
                      "options": {"repair": True}})
    assert run.returncode == 1 and run.error["problems"][0]["offset"] == 2 * CHUNK
    assert not path.exists()
    # a CBT incremental with an empty change list still re-reads the chunk the parent lost
    run = run_engine(backup_job(repo, "web01", [{"name": "disk0", "path": str(disk), "changed_extents": []}],
                                parent=first["restore_point"], options={"verify": True}))
    assert run.returncode == 0, run.error
    assert any("missing from the target" in e["message"] for e in run.of("log"))
    assert run.result["stats"]["read_bytes"] == CHUNK and run.result["stats"]["new_chunks"] == 1
    assert run.result["verified"]["chunks"] == 12
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, run.result["restore_point"], [DiskSpec("disk0", str(out))],
                check_digest=True)
    assert out.read_bytes() == disk.read_bytes()


def test_change_passphrase_keeps_restore_points_and_refuses_the_old_one(repo, tmp_path):
    disk, result = _backup(repo, tmp_path, seed=24)
    run = run_engine({"operation": "change_passphrase", "target": repo.target, "passphrase": PASSPHRASE,
                      "options": {"new_passphrase": "a new passphrase"}})
    assert run.returncode == 0, run.error
    assert run_engine({"operation": "list", "target": repo.target, "passphrase": PASSPHRASE}).error["code"] == (
        "wrong_passphrase")
    out = tmp_path / "out.img"
    api.restore(repo.target, "a new passphrase", result["restore_point"], [DiskSpec("disk0", str(out))],
                check_digest=True)
    assert out.read_bytes() == disk.read_bytes()

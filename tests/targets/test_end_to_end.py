"""The engine on every target, through its Python API: init a repository, back up a small
sparse disk twice, restore and compare sha256, verify, prune to the last restore point."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engines import api
from engines.contract import DiskSpec
from tests.engines.conftest import mutate, write_image
from tests.targets.conftest import Servers, spec_for

PASSPHRASE = "target test passphrase"
CHUNK = 64 << 10
KDF_N = 1 << 12  # cheap scrypt keeps the test fast; the repository records the cost


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_restore_verify_prune(target_type: str, servers: Servers, tmp_path: Path):
    target = spec_for(target_type, servers, tmp_path).__dict__
    api.init(target, PASSPHRASE, chunk_size=CHUNK, kdf_n=KDF_N)
    disk = write_image(tmp_path / "disk 01.img", 48 * CHUNK + 777, seed=7)  # holes, zeros, a short tail
    first = api.backup(target, PASSPHRASE, "web 01 é", [DiskSpec("scsi0:0", str(disk))])
    first_sha = sha256(disk)
    changed = mutate(disk, [5 * CHUNK + 100, 30 * CHUNK], seed=8)
    second = api.backup(target, PASSPHRASE, "web 01 é", [DiskSpec("scsi0:0", str(disk), changed_extents=changed)],
                        parent=first["restore_point"])
    assert second["stats"]["new_chunks"] <= 2  # only the changed chunks travel

    out = tmp_path / "restored.img"
    api.restore(target, PASSPHRASE, first["restore_point"], [DiskSpec("scsi0:0", str(out))], check_digest=True)
    assert sha256(out) == first_sha
    assert api.verify(target, PASSPHRASE)["ok"]

    pruned = api.prune(target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert [f["restore_point"] for f in pruned["forgotten"]] == [first["restore_point"]]
    points = [p["id"] for p in api.list_restore_points(target, PASSPHRASE)["restore_points"]]
    assert points == [second["restore_point"]]
    assert api.verify(target, PASSPHRASE)["ok"]
    api.restore(target, PASSPHRASE, second["restore_point"], [DiskSpec("scsi0:0", str(out))], check_digest=True)
    assert sha256(out) == sha256(disk)

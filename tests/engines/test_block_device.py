"""Hot-add mode: back up from a block device and restore onto one (a loop device stands in)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engines import api
from engines.contract import DiskSpec
from tests.engines.conftest import CHUNK, PASSPHRASE, write_image


@pytest.fixture
def loop_device(tmp_path: Path):
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\xff" * (20 * CHUNK))  # stale bytes a restore must overwrite
    proc = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"no loop device here: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    yield device, backing
    subprocess.run(["losetup", "-d", device], check=True)


def test_restore_onto_a_block_device_and_back_up_from_it(repo, tmp_path, loop_device):
    device, backing = loop_device
    disk = write_image(tmp_path / "disk.img", 20 * CHUNK, seed=71)  # random, text, written zeros, holes
    first = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    api.restore(repo.target, PASSPHRASE, first["restore_point"], [DiskSpec("d", device)], check_digest=True)
    with open(device, "rb") as fh:
        assert fh.read() == disk.read_bytes()  # zero and hole chunks were written as zeros, not left stale
    # the device as a source (hot-add): every byte is read, the same chunks are found
    second = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", device)], parent=first["restore_point"])
    assert second["stats"]["read_bytes"] == 20 * CHUNK and second["stats"]["new_chunks"] == 0
    assert second["disks"][0]["digest"] == first["disks"][0]["digest"]
    assert backing.stat().st_size == 20 * CHUNK

"""Restores into hot-added disks found on the appliance by backing UUID or SCSI slot, in fake /dev and /sys trees.

The trees are those of tests/engines/test_device_source.py: udev's by-id links and the SCSI addresses of
PVSCSI controllers; each "block device" is a symlink to an ordinary image file holding old bytes.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from engines import api
from engines.contract import BadJobSpec, DeviceSpec, DiskSpec, JobSpec
from tests.engines.conftest import CHUNK, PASSPHRASE, backup_job, run_engine, write_image
from tests.engines.test_device_source import HEX, UUID, Appliance, appliance  # noqa: F401 - a fixture


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backed_up(repo, tmp_path, disks: dict[str, int]) -> tuple[str, dict]:
    """A restore point of VM web01 with one synthetic image per disk name; returns its id and the images."""
    images = {name: write_image(tmp_path / f"{name}.img", 8 * CHUNK, seed=seed) for name, seed in disks.items()}
    run = run_engine(backup_job(repo, "web01", [{"name": n, "path": str(p)} for n, p in images.items()]))
    assert run.returncode == 0, (run.events, run.stderr)
    return run.result["restore_point"], images


def restore_job(repo, restore_point: str, disks: list[dict]) -> dict:
    return {"operation": "restore", "target": repo.target, "passphrase": repo.passphrase, "vm": {"name": "web01"},
            "restore_point": restore_point, "disks": disks, "options": {"check_digest": True}}


def test_a_restore_writes_the_hot_added_disks_it_finds_by_uuid_and_by_slot(appliance, repo, tmp_path):
    restore_point, images = backed_up(repo, tmp_path, {"disk-2000": 21, "disk-2001": 22})
    # Old bytes everywhere, longer than the restored disks: holes and zero chunks must come back as zeros.
    first = write_image(tmp_path / "target-a.img", 10 * CHUNK, seed=31, layout="r")
    second = write_image(tmp_path / "target-b.img", 10 * CHUNK, seed=32, layout="r")
    appliance.plug(first, "sdb", uuid_hex=HEX)
    appliance.plug(second, "sdc", host=2, unit=3)  # bus 1, unit 3

    run = run_engine(restore_job(repo, restore_point, [
        {"name": "disk-2000", "device": {"uuid": UUID, "bus": 0, "unit": 1}},
        {"name": "disk-2001", "device": {"bus": 1, "unit": 3}}]))

    assert run.returncode == 0, (run.events, run.stderr)
    logs = [e["message"] for e in run.of("log")]
    assert f"Disk 'disk-2000' is written to {appliance.dev}/disk/by-id/wwn-0x{HEX} -> {appliance.dev}/sdb." in logs
    assert f"Disk 'disk-2001' is written to {appliance.dev}/sdc at SCSI 1:3." in logs
    assert appliance.scans() == {"host0": "- - -", "host2": "- - -", "host3": "- - -"}  # rescanned first
    assert [d["disk"] for d in run.result["disks"]] == ["disk-2000", "disk-2001"]
    assert all(len(d["digest"]) == 64 for d in run.result["disks"])  # the whole-disk digest was checked
    assert sha256(first) == sha256(images["disk-2000"]) and sha256(second) == sha256(images["disk-2001"])


def test_a_device_that_never_appears_ends_the_restore_before_anything_is_written(appliance, repo, tmp_path):
    restore_point, _ = backed_up(repo, tmp_path, {"disk-2000": 23, "disk-2001": 24})
    present = write_image(tmp_path / "target-a.img", 8 * CHUNK, seed=33, layout="r")
    before = sha256(present)
    appliance.plug(present, "sdb", host=3, unit=1)

    run = run_engine(restore_job(repo, restore_point, [
        {"name": "disk-2000", "device": {"bus": 0, "unit": 1}},
        {"name": "disk-2001", "device": {"bus": 0, "unit": 2, "timeout": 0.4}}]))

    assert run.returncode != 0 and run.error["code"] == "source_not_found"
    assert run.error["message"].startswith("The hot-added disk (SCSI 0:2) did not appear on this appliance within "
                                           "0.4 s")
    assert run.of("result") == [] and sha256(present) == before  # the disk that was there is untouched


def test_a_restore_disk_names_a_path_or_a_device(repo, tmp_path):
    spec = restore_job(repo, "x", [{"name": "d", "device": {"uuid": UUID}}])
    assert JobSpec.from_json(json.dumps(spec)).disks[0].device == DeviceSpec(uuid=HEX)
    both = restore_job(repo, "x", [{"name": "d", "path": "/dev/sdb", "device": {"uuid": UUID}}])
    with pytest.raises(BadJobSpec, match="names both a path and a device: give one of them"):
        JobSpec.from_json(json.dumps(both))

    restore_point, _ = backed_up(repo, tmp_path, {"disk-2000": 25})
    with pytest.raises(api.EngineError, match="Disk 'disk-2000' of the restore names no output: give a path or a "
                                              "device."):
        api.restore(repo.target, PASSPHRASE, restore_point, [DiskSpec("disk-2000")])

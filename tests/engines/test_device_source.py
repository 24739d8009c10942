"""Hot-added disks found on the appliance by backing UUID or SCSI slot, in fake /dev and /sys trees.

The trees mimic a VA with disk.EnableUUID=TRUE: `/dev/disk/by-id/wwn-0x<hex>` links to `/dev/sdX`, and
`/sys/class/scsi_host/hostN` points into the PCI device of a PVSCSI controller (an ATA host sits beside
them and is never counted as a bus). The "block devices" are symlinks to ordinary image files.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from engines import api
from engines.contract import BadJobSpec, DeviceSpec, DiskSpec, JobSpec
from engines.errors import SourceNotFound
from engines.sources import open_source
from engines.sources.device import DEVICE_ROOT_ENV, SYSFS_ROOT_ENV, find_device
from tests.engines.conftest import CHUNK, PASSPHRASE, backup_job, run_engine, write_image

UUID = "6000C298-1ca0-3c6d-8a2f-b5f7b3ae5df7"
HEX = "6000c2981ca03c6d8a2fb5f7b3ae5df7"


class Appliance:
    """A fake /dev and /sys: controllers as the kernel lists them, disks plugged in as udev would link them."""

    def __init__(self, root: Path):
        self.dev, self.sys = root / "dev", root / "sys"
        (self.dev / "disk" / "by-id").mkdir(parents=True)
        (self.sys / "class" / "scsi_host").mkdir(parents=True)
        self.controller(0, "ata_piix", "0000:00:07.1/ata1")
        self.controller(3, "vmw_pvscsi", "0000:00:15.0/0000:03:00.0")  # bus 0
        self.controller(2, "vmw_pvscsi", "0000:00:16.0/0000:0b:00.0")  # bus 1: a later PCI slot, a lower number

    def controller(self, host: int, driver: str, pci: str) -> None:
        folder = self.sys / "devices" / "pci0000:00" / pci / f"host{host}" / "scsi_host" / f"host{host}"
        folder.mkdir(parents=True)
        (folder / "proc_name").write_text(f"{driver}\n")
        (folder / "scan").write_text("")
        (self.sys / "class" / "scsi_host" / f"host{host}").symlink_to(folder)

    def plug(self, image: Path, name: str, *, host: int | None = None, unit: int | None = None,
             uuid_hex: str = "") -> Path:
        (self.dev / name).symlink_to(image)
        if host is not None:
            (self.sys / "class" / "scsi_device" / f"{host}:0:{unit}:0" / "device" / "block" / name).mkdir(
                parents=True)
        if uuid_hex:
            (self.dev / "disk" / "by-id" / f"wwn-0x{uuid_hex}").symlink_to(f"../../{name}")
            (self.dev / "disk" / "by-id" / f"scsi-3{uuid_hex}").symlink_to(f"../../{name}")
        return self.dev / name

    def scans(self) -> dict[str, str]:
        return {p.parent.name: p.read_text() for p in (self.sys / "class" / "scsi_host").glob("host*/scan")}


@pytest.fixture
def appliance(tmp_path, monkeypatch) -> Appliance:
    fake = Appliance(tmp_path / "va")
    monkeypatch.setenv(DEVICE_ROOT_ENV, str(fake.dev))
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(fake.sys))
    return fake


def test_a_disk_found_by_uuid_is_backed_up_by_the_engine_process(appliance, repo, tmp_path):
    image = write_image(tmp_path / "source.img", 10 * CHUNK, seed=5)
    appliance.plug(image, "sdb", uuid_hex=HEX)

    run = run_engine(backup_job(repo, "web01", [{"name": "disk-2000", "device": {"uuid": UUID, "bus": 0,
                                                                                 "unit": 1}}]))

    assert run.returncode == 0, (run.events, run.stderr)
    logs = [e["message"] for e in run.of("log")]
    assert f"Disk 'disk-2000' is {appliance.dev}/disk/by-id/wwn-0x{HEX} -> {appliance.dev}/sdb." in logs
    assert appliance.scans() == {"host0": "- - -", "host2": "- - -", "host3": "- - -"}  # rescanned first
    out = tmp_path / "restored.img"
    api.restore(repo.target, PASSPHRASE, run.result["restore_point"], [DiskSpec("disk-2000", str(out))])
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(image.read_bytes()).digest()


def test_a_disk_found_by_bus_and_unit_counts_controllers_in_pci_order(appliance, tmp_path):
    image = write_image(tmp_path / "source.img", 3 * CHUNK, seed=6)
    other = write_image(tmp_path / "other.img", 3 * CHUNK, seed=7)
    appliance.plug(other, "sdc", host=3, unit=2)  # bus 0, unit 2: not the one asked for
    appliance.plug(image, "sdd", host=2, unit=2)  # bus 1, unit 2

    source = open_source("device", device=DeviceSpec(bus=1, unit=2, timeout=5))
    try:
        assert source.path == str(appliance.dev / "sdd")
        assert source.found_as == f"{appliance.dev}/sdd at SCSI 1:2"
        buf = bytearray(source.size)
        assert source.read_into(0, memoryview(buf)) == image.stat().st_size and bytes(buf) == image.read_bytes()
    finally:
        source.close()


def test_a_disk_that_appears_later_is_waited_for(appliance, tmp_path):
    image = write_image(tmp_path / "source.img", 2 * CHUNK, seed=8)

    def udev():
        time.sleep(0.6)
        appliance.plug(image, "sde", host=3, unit=4)

    started = time.monotonic()
    thread = threading.Thread(target=udev)
    thread.start()
    try:
        path, how = find_device(DeviceSpec(uuid=HEX, bus=0, unit=4, timeout=10))
    finally:
        thread.join()

    assert path == appliance.dev / "sde" and how.endswith("at SCSI 0:4")
    assert 0.6 <= time.monotonic() - started < 5


def test_a_disk_that_never_appears_ends_in_a_sentence(appliance, repo, tmp_path):
    image = write_image(tmp_path / "source.img", 2 * CHUNK, seed=9)
    appliance.plug(image, "sdb", host=3, unit=1)  # another disk: its slot is not the one asked for

    with pytest.raises(SourceNotFound) as caught:
        find_device(DeviceSpec(uuid=HEX, bus=0, unit=2, timeout=0.4))
    message = str(caught.value)
    assert message.startswith(f"The hot-added disk (uuid {HEX}, SCSI 0:2) did not appear on this appliance "
                              "within 0.4 s: ")
    assert f"{appliance.dev}/disk/by-id/wwn-0x{HEX}" in message and "disk.EnableUUID=TRUE" in message

    run = run_engine(backup_job(repo, "web01", [{"name": "disk-2000", "device": {"bus": 0, "unit": 3,
                                                                                 "timeout": 0.4}}]))
    assert run.returncode != 0 and run.error["code"] == "source_not_found"
    assert run.error["message"].startswith("The hot-added disk (SCSI 0:3) did not appear on this appliance within "
                                           "0.4 s")
    assert run.of("result") == []


@pytest.mark.parametrize(("device", "why"), [
    ("/dev/sdb", "must be an object, not str"),
    ({}, "names neither a uuid nor a bus and unit"),
    ({"uuid": "6000C298-zz"}, "uuid '6000C298-zz' is not 32 hexadecimal digits"),
    ({"bus": 0}, "needs both bus and unit, or neither"),
    ({"bus": 0, "unit": 7}, "unit 7 is the SCSI controller itself"),
    ({"bus": 4, "unit": 1}, "bus must be a whole number from 0 to 3, not 4"),
    ({"bus": 0, "unit": "1"}, "unit must be a whole number from 0 to 15, not '1'"),
    ({"uuid": UUID, "timeout": 0}, "timeout must be a number of seconds from 0 to 3600"),
    ({"uuid": UUID, "lun": 0}, "has unknown field(s) lun"),
])
def test_a_malformed_device_spec_is_refused_with_a_sentence(device, why):
    spec = {"operation": "backup", "target": {"type": "local", "path": "/nonexistent"}, "vm": "web01",
            "disks": [{"name": "disk-2000", "device": device}]}

    with pytest.raises(BadJobSpec) as caught:
        JobSpec.from_json(json.dumps(spec))

    assert str(caught.value).startswith(f"Disk 'disk-2000': the device {why}")
    assert str(caught.value).endswith('give it as {"uuid": "6000C298-1ca0-3c6d-8a2f-b5f7b3ae5df7", "bus": 0, '
                                      '"unit": 1}.')


def test_a_device_with_a_path_or_outside_a_backup_is_refused(repo):
    both = backup_job(repo, "web01", [{"name": "d", "path": "/dev/sdb", "device": {"uuid": UUID}}])
    with pytest.raises(BadJobSpec, match="names both a path and a device: give one of them"):
        JobSpec.from_json(json.dumps(both))
    verify = {"operation": "verify", "target": repo.target, "restore_point": "x",
              "disks": [{"name": "d", "device": {"uuid": UUID}}]}
    with pytest.raises(BadJobSpec, match="only a backup or a restore uses a hot-added device; give the verify a path"):
        JobSpec.from_json(json.dumps(verify))
    assert JobSpec.from_json(json.dumps(backup_job(repo, "web01", [{"name": "d", "device": {"uuid": UUID}}]))
                             ).disks[0].device == DeviceSpec(uuid=HEX)

    run = run_engine(backup_job(repo, "web01", [{"name": "d", "device": {"bus": 0}}]))
    assert run.returncode != 0 and run.error["code"] == "bad_job_spec"
    assert "needs both bus and unit" in run.error["message"]

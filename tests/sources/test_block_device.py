"""Block devices (hot-add): a loop device stands in for an attached disk."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from engines.errors import RestoreError
from engines.sinks import DiskWriter
from engines.sources.file import FileSource
from tests.sources.conftest import MiB, make_sparse

SIZE = 8 * MiB


@pytest.fixture
def loop_device(tmp_path):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("loop devices need root and losetup")
    backing = tmp_path / "backing.img"
    content = make_sparse(backing, SIZE, [(MiB, MiB), (5 * MiB, 4096)])
    attach = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.skip(f"no loop device here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        yield device, content
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_block_device_source_reads_the_whole_device(loop_device):
    device, content = loop_device
    buf = bytearray(2 * MiB)
    with FileSource(device, changed_extents=[[5 * MiB, 4096]]) as cbt:
        assert cbt.is_block_device and cbt.size == SIZE
        assert list(cbt.extents()) == [(5 * MiB, 4096)]
    with FileSource(device) as source:
        assert list(source.extents()) == [(0, SIZE)]  # a device cannot tell holes
        assert source.read_into(MiB - 10, memoryview(buf)) == 2 * MiB
        assert buf == content[MiB - 10 : 3 * MiB - 10]
        assert source.read_into(SIZE - 5, memoryview(buf)) == 5


def test_restore_to_a_block_device_writes_zeros_only_when_asked(loop_device):
    device, content = loop_device
    with DiskWriter(device, SIZE) as writer:  # zero chunk skipped: the old bytes stay
        writer.write(MiB, bytes(MiB))
        writer.finish()
    with open(device, "rb") as f:
        f.seek(MiB)
        assert f.read(MiB) == content[MiB : 2 * MiB]
    with DiskWriter(device, SIZE, write_zeros=True) as writer:
        writer.zero(MiB, MiB)
        writer.write(5 * MiB, b"\x01" * 4096)
        writer.finish()
    with open(device, "rb") as f:
        data = f.read()
    assert data[MiB : 2 * MiB] == bytes(MiB)
    assert data[5 * MiB : 5 * MiB + 4096] == b"\x01" * 4096


def test_a_device_smaller_than_the_disk_is_refused(loop_device):
    device, _ = loop_device
    with pytest.raises(RestoreError, match=r"holds 8388608 bytes, less than the disk's 16777216: attach a device"):
        DiskWriter(device, 2 * SIZE)

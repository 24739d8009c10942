"""The restore writer: concurrent positional writes, holes kept, whole-disk digest check."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from engines.errors import DigestMismatch, RestoreError
from engines.sinks import DiskWriter, disk_digest
from tests.sources.conftest import MiB

CHUNKS = 24


def chunk_plan(seed: int = 3) -> list[bytes]:
    """Every third chunk is zeros (never stored), the others random, one half-zero."""
    rng = random.Random(seed)
    plan = [bytes(MiB) if k % 3 == 0 else rng.randbytes(MiB) for k in range(CHUNKS)]
    plan[4] = bytes(MiB // 2) + rng.randbytes(MiB // 2)
    return plan


def data_ranges(path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    ranges, offset, size = [], 0, os.fstat(fd).st_size
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, end))
            offset = end
    finally:
        os.close(fd)
    return ranges


def restore(path, plan: list[bytes], **options) -> DiskWriter:
    writer = DiskWriter(path, len(plan) * MiB, **options)
    order = list(range(len(plan)))
    random.Random(5).shuffle(order)  # workers finish in any order
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: writer.write(k * MiB, plan[k]), order))
    return writer


def test_restore_keeps_holes_and_replaces_old_contents(tmp_path):
    path = tmp_path / "restored disk ü.img"
    path.write_bytes(b"\xff" * (40 * MiB))  # an older, larger file at the destination
    plan = chunk_plan()
    expected = b"".join(plan)
    digest = hashlib.sha256(expected).hexdigest()
    writer = restore(path, plan)
    assert writer.finish(expected_digest=digest) == digest
    assert path.read_bytes() == expected
    data_bytes = sum(1 for k in range(CHUNKS) if k % 3) * MiB + MiB // 2
    assert os.stat(path).st_blocks * 512 <= data_bytes + 64 * 1024
    ranges = data_ranges(path)
    assert all(not (start < k * MiB + MiB and k * MiB < end) for k in range(0, CHUNKS, 3) for start, end in ranges)


def test_digest_check_detects_a_mismatch(tmp_path):
    path = tmp_path / "disk.img"
    plan = chunk_plan()
    plan_changed = list(plan)
    plan_changed[7] = bytes(MiB)  # one data chunk lost on the way
    recorded = hashlib.sha256(b"".join(plan)).hexdigest()
    writer = restore(path, plan_changed)
    with pytest.raises(DigestMismatch, match=rf"does not match the backup: sha256 [0-9a-f]{{64}}, expected {recorded}"):
        writer.finish(expected_digest=recorded)


def test_digest_of_a_sparse_disk_counts_holes_as_zeros(tmp_path):
    path = tmp_path / "disk.img"
    plan = chunk_plan()
    restore(path, plan).finish()
    assert disk_digest(path) == hashlib.sha256(b"".join(plan)).hexdigest()
    import blake3

    assert disk_digest(path, algorithm="blake3") == blake3.blake3(b"".join(plan)).hexdigest()


def test_zeros_are_written_when_asked(tmp_path):
    path = tmp_path / "thick.img"
    writer = restore(path, chunk_plan(), write_zeros=True)
    writer.zero(0, MiB)
    writer.finish()
    assert os.stat(path).st_blocks * 512 >= CHUNKS * MiB
    assert data_ranges(path) == [(0, CHUNKS * MiB)]


def test_preallocated_runs_hold_the_written_data(tmp_path):
    path = tmp_path / "disk.img"
    plan = chunk_plan()
    writer = DiskWriter(path, CHUNKS * MiB)
    writer.preallocate([(MiB, 2 * MiB), (4 * MiB, 2 * MiB)])
    for k in (1, 2, 4, 5):
        writer.write(k * MiB, plan[k])
    writer.finish()
    content = path.read_bytes()
    assert content[MiB : 3 * MiB] == plan[1] + plan[2]
    assert content[4 * MiB : 6 * MiB] == plan[4] + plan[5]
    assert content[6 * MiB :] == bytes(len(content) - 6 * MiB)


def test_bad_destinations_and_writes_give_sentences(tmp_path):
    with pytest.raises(RestoreError, match="its folder does not exist; create it first"):
        DiskWriter(tmp_path / "missing" / "disk.img", MiB)
    with pytest.raises(RestoreError, match="is a folder"):
        DiskWriter(tmp_path, MiB)
    with DiskWriter(tmp_path / "disk.img", MiB) as writer:
        with pytest.raises(RestoreError, match="falls outside the disk of 1048576 bytes"):
            writer.write(MiB - 10, b"x" * 20)
    with pytest.raises(RestoreError, match="Unknown digest algorithm 'md4'"):
        disk_digest(tmp_path / "disk.img", algorithm="md4")


def test_a_full_destination_gives_a_sentence(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        writer = DiskWriter(small / "disk.img", 4 * MiB)
        with pytest.raises(RestoreError, match=r"at offset \d+ failed \(No space left on device\): free space"):
            for k in range(4):
                writer.write(k * MiB, b"\x07" * MiB)
        writer.close()
    finally:
        subprocess.run(["umount", str(small)], check=True)

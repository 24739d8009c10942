"""The restore's write path: direct writes from a queue, page-cache fallback, failures, chunk authentication."""

from __future__ import annotations

import errno
import os
import random
import shutil

import pytest

from engines import api, sinks
from engines.contract import DiskSpec
from engines.errors import DigestMismatch, EngineError, RestoreError
from engines.sinks import DiskWriter
from tests.engines.conftest import CHUNK, PASSPHRASE, write_image

MiB = 1 << 20


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def plan(n: int, seed: int) -> list[bytes]:
    """Every third piece zeros (left a hole), the others random."""
    rng = random.Random(seed)
    return [bytes(MiB) if k % 3 == 0 else rng.randbytes(MiB) for k in range(n)]


def write_shuffled(writer: DiskWriter, pieces: list[bytes], tail: bytes = b"") -> None:
    order = list(range(len(pieces)))
    random.Random(7).shuffle(order)
    for k in order:
        writer.write(k * MiB, pieces[k])
    if tail:
        writer.write(len(pieces) * MiB, tail)


def direct_io_here(path) -> bool:
    with DiskWriter(path, MiB) as writer:
        return writer.direct


@pytest.mark.parametrize("io_threads", [0, 2])
def test_direct_writes_keep_data_identical_and_holes_sparse(tmp_path, io_threads):
    if not direct_io_here(tmp_path / "probe.img"):
        pytest.skip("this file system has no O_DIRECT")
    pieces = plan(12, seed=1)
    tail = random.Random(2).randbytes(12345)  # a short, unaligned last piece: through the page cache
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xff" * (20 * MiB))  # an older, larger file at the destination
    writer = DiskWriter(path, 12 * MiB + len(tail), io_threads=io_threads)
    assert writer.direct
    write_shuffled(writer, pieces, tail)
    writer.finish()
    assert path.read_bytes() == b"".join(pieces) + tail
    assert writer.bytes_written == 8 * MiB + len(tail)
    assert allocated(path) <= 8 * MiB + len(tail) + 64 * 1024  # the four zero pieces stayed holes


def test_refused_direct_write_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    path = tmp_path / "disk.img"
    writer = DiskWriter(path, 6 * MiB, io_threads=2)
    if not writer.direct:
        writer.close()
        pytest.skip("this file system has no O_DIRECT")
    real = os.pwrite
    refused = []

    def pwrite(fd, data, offset):
        if fd == writer._dfd:  # a device with stricter alignment than 4 KiB answers EINVAL
            refused.append(offset)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, data, offset)

    monkeypatch.setattr(sinks.os, "pwrite", pwrite)
    pieces = plan(6, seed=3)
    write_shuffled(writer, pieces)
    writer.finish()
    assert refused and not writer.direct
    assert path.read_bytes() == b"".join(pieces)


def test_a_failed_queued_write_is_raised_with_a_sentence(tmp_path, monkeypatch):
    path = tmp_path / "disk.img"
    writer = DiskWriter(path, 6 * MiB, io_threads=2)
    if not writer.direct:
        writer.close()
        pytest.skip("this file system has no O_DIRECT")
    real = os.pwrite

    def pwrite(fd, data, offset):
        if fd == writer._dfd and offset >= 4 * MiB:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(sinks.os, "pwrite", pwrite)
    with pytest.raises(RestoreError, match=rf"at offset {4 * MiB} failed \(No space left on device\): free space"):
        for k in (1, 2, 4, 5):  # the failure surfaces in a later write() or in finish(), never silently
            writer.write(k * MiB, b"\x07" * MiB)
        writer.finish()
    writer.close()


def test_restore_writes_directly_and_checks_the_digest(repo, tmp_path, monkeypatch):
    disk = write_image(tmp_path / "disk.img", 24 * CHUNK + 5000, seed=31)  # random, text, zeros, holes; short tail
    result = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    made: list[DiskWriter] = []
    real_init = DiskWriter.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(DiskWriter, "__init__", init)
    out = tmp_path / "out.img"
    restored = api.restore(repo.target, PASSPHRASE, result["restore_point"], [DiskSpec("d", str(out))],
                           check_digest=True)
    assert out.read_bytes() == disk.read_bytes()
    assert restored["disks"][0]["digest"] == result["disks"][0]["digest"]
    assert allocated(out) <= 13 * CHUNK + 64 * 1024  # 6 random + 6 text + the tail; zeros and holes stay holes
    assert made and all(not w._io for w in made)  # the writer threads are gone once the restore returns


def test_a_valid_blob_under_another_chunks_name_is_refused(repo, tmp_path):
    """AES-GCM binds each blob to its chunk id: moving a genuine blob to another id cannot restore wrong data."""
    disk = write_image(tmp_path / "disk.img", 8 * CHUNK, seed=41, layout="rt")
    result = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    with api.open_repository(repo.target, PASSPHRASE) as r:
        chunks = r.load_manifest("vm", result["restore_point"]).disks[0].chunks
    victim, donor = chunks[3].hex(), chunks[4].hex()
    shutil.copyfile(repo.path / "chunks" / donor[:2] / donor, repo.path / "chunks" / victim[:2] / victim)
    with pytest.raises(EngineError, match=rf"Chunk {victim} of disk 'd' at offset {3 * CHUNK} is damaged") as err:
        api.restore(repo.target, PASSPHRASE, result["restore_point"], [DiskSpec("d", str(tmp_path / "out.img"))])
    assert err.value.code == "chunk_corrupt"


def _reseal(repo, rp: str, index: int, plaintext: bytes) -> str:
    """What a faulty backup writer would leave: other bytes sealed (with the real key) under a chunk's id."""
    with api.open_repository(repo.target, PASSPHRASE) as r:
        chunk_id = r.load_manifest("vm", rp).disks[0].chunks[index]
        r.put_chunk_blob(chunk_id, r.keys.seal(plaintext, 0, chunk_id))
    return chunk_id.hex()


def test_sealed_bytes_of_the_wrong_length_are_refused(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 8 * CHUNK, seed=43, layout="rt")
    rp = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])["restore_point"]
    victim = _reseal(repo, rp, 2, b"\x05" * (CHUNK - 4096))
    with pytest.raises(EngineError, match=rf"Chunk {victim} .* is damaged \(holds {CHUNK - 4096} bytes where the "
                                          rf"disk needs {CHUNK}\)"):
        api.restore(repo.target, PASSPHRASE, rp, [DiskSpec("d", str(tmp_path / "out.img"))])


def test_other_bytes_sealed_under_an_id_are_caught_by_the_digest_check_and_verify(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 8 * CHUNK, seed=44, layout="rt")
    rp = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])["restore_point"]
    _reseal(repo, rp, 2, b"\x05" * CHUNK)
    out = tmp_path / "out.img"
    with pytest.raises(EngineError, match="does not match restore point") as err:
        api.restore(repo.target, PASSPHRASE, rp, [DiskSpec("d", str(out))], check_digest=True)
    assert err.value.code == DigestMismatch.code
    checked = api.verify(repo.target, PASSPHRASE)
    assert not checked["ok"] and [p["offset"] for p in checked["problems"]] == [2 * CHUNK]

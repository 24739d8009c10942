"""Backup and restore through the Python API on a local repository: content, holes, dedup, CBT."""

from __future__ import annotations

import os
from pathlib import Path

from engines import api
from engines.contract import DiskSpec
from engines.repository import format as fmt
from tests.engines.conftest import CHUNK, PASSPHRASE, mutate, write_image


def data_extents(path: Path) -> list[tuple[int, int]]:
    """Allocated ranges of a file, by SEEK_DATA / SEEK_HOLE."""
    out, offset = [], 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            offset = end
    finally:
        os.close(fd)
    return out


def test_full_backup_restores_identical_sparse_disk(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 40 * CHUNK + 12345, seed=1)  # a short last chunk too
    result = api.backup(repo.target, PASSPHRASE, "web01", [DiskSpec("scsi0:0", str(disk))],
                        vm_config={"cpus": 2, "memory_mb": 4096})
    stats = result["stats"]
    assert result["kind"] == "full"
    assert stats["zero_chunks"] == 10  # the written-zero regions; holes are never read
    assert stats["new_chunks"] == 21  # 10 random + 10 text + the short tail (random)
    assert stats["stored_bytes"] < stats["read_bytes"]  # text compressed
    out = tmp_path / "restored.img"
    restored = api.restore(repo.target, PASSPHRASE, result["restore_point"], [DiskSpec("scsi0:0", str(out))],
                           check_digest=True)
    assert out.read_bytes() == disk.read_bytes()
    assert restored["disks"][0]["digest"] == result["disks"][0]["digest"]
    # zero and hole chunks stay holes: only the 21 data chunks are allocated
    allocated = sum(length for _, length in data_extents(out))
    assert allocated <= 21 * CHUNK
    listed = api.list_restore_points(repo.target, PASSPHRASE)["restore_points"]
    assert [p["id"] for p in listed] == [result["restore_point"]]
    assert listed[0]["vm_config"] == {"cpus": 2, "memory_mb": 4096}


def test_chunk_files_are_encrypted_and_named_by_keyed_hash(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 8 * CHUNK, seed=2, layout="t")
    api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    files = sorted((repo.path / "chunks").rglob("*"))
    blobs = [f for f in files if f.is_file()]
    assert len(blobs) == 8
    plain = disk.read_bytes()
    for blob in blobs:
        raw = blob.read_bytes()
        assert raw[0] == fmt.FLAG_ZSTD and len(raw) < CHUNK // 4  # text compresses
        assert b"INFO request" not in raw
        assert blob.parent.name == blob.name[:2]
    # an unkeyed hash of a chunk must not appear as a name (no content-hash leak)
    import blake3

    assert blake3.blake3(plain[:CHUNK]).hexdigest() not in {b.name for b in blobs}


def test_incremental_with_cbt_reads_only_changed_chunks(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 32 * CHUNK, seed=3, layout="rt")
    first = api.backup(repo.target, PASSPHRASE, "db", [DiskSpec("d", str(disk))])
    changed = mutate(disk, [5 * CHUNK + 100, 20 * CHUNK], seed=4)
    second = api.backup(repo.target, PASSPHRASE, "db", [DiskSpec("d", str(disk), changed_extents=changed)],
                        parent=first["restore_point"])
    assert second["kind"] == "incremental-cbt"
    assert second["stats"]["read_bytes"] == 2 * CHUNK
    assert second["stats"]["new_chunks"] == 2
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, second["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == disk.read_bytes()
    # the parent still restores the old content
    api.restore(repo.target, PASSPHRASE, first["restore_point"], [DiskSpec("d", str(out))])
    assert out.read_bytes()[5 * CHUNK : 6 * CHUNK] != disk.read_bytes()[5 * CHUNK : 6 * CHUNK]


def test_incremental_without_cbt_uploads_only_new_chunks(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 24 * CHUNK, seed=5, layout="rrt")
    first = api.backup(repo.target, PASSPHRASE, "app", [DiskSpec("d", str(disk))])
    mutate(disk, [3 * CHUNK], seed=6)
    second = api.backup(repo.target, PASSPHRASE, "app", [DiskSpec("d", str(disk))], parent=first["restore_point"])
    assert second["kind"] == "incremental"
    assert second["stats"]["read_bytes"] == 24 * CHUNK
    assert second["stats"]["new_chunks"] == 1
    assert second["stats"]["reused_chunks"] == 23


def test_cbt_list_on_resized_disk_falls_back_to_full_read(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 8 * CHUNK, seed=7, layout="r")
    first = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    with open(disk, "ab") as fh:
        fh.write(os.urandom(CHUNK))  # disk grew: the CBT list cannot be trusted
    second = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk), changed_extents=[[0, 10]])],
                        parent=first["restore_point"])
    assert second["stats"]["read_bytes"] == 9 * CHUNK
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, second["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == disk.read_bytes()


def test_dedup_across_vms_and_multiple_disks(repo, tmp_path):
    a = write_image(tmp_path / "a.img", 12 * CHUNK, seed=8, layout="rt")
    b = tmp_path / "b.img"
    b.write_bytes(a.read_bytes())
    first = api.backup(repo.target, PASSPHRASE, "vm-a", [DiskSpec("d0", str(a)), DiskSpec("d1", str(b))])
    assert first["stats"]["new_chunks"] == 12 and first["stats"]["reused_chunks"] == 12
    second = api.backup(repo.target, PASSPHRASE, "vm-b", [DiskSpec("d0", str(b))])
    assert second["stats"]["new_chunks"] == 0
    stats = api.stats(repo.target, PASSPHRASE)
    assert stats["restore_points"] == 2 and stats["vms"] == 2 and stats["chunks"] == 12
    assert stats["data_bytes"] == 36 * CHUNK
    assert stats["dedup_ratio"] > 3


def test_two_terabyte_sparse_disk_and_unicode_names(repo, tmp_path):
    disk = tmp_path / "disque très grand ☃.img"
    size = 2 * 1024**4 + 4096
    with open(disk, "wb") as fh:
        fh.truncate(size)
        fh.seek(size - 3 * CHUNK)
        fh.write(b"end of disk" * 1000)
        fh.seek(CHUNK * 7)
        fh.write(b"boot sector" * 100)
    vm = "Serveur de fichiers / été №2"
    result = api.backup(repo.target, PASSPHRASE, vm, [DiskSpec("Hard disk 1", str(disk))])
    assert result["stats"]["read_bytes"] == 2 * CHUNK
    out = tmp_path / "restauré ☃.img"
    api.restore(repo.target, PASSPHRASE, result["restore_point"], [DiskSpec("Hard disk 1", str(out))], vm=vm,
                check_digest=True)
    assert out.stat().st_size == size
    assert out.stat().st_blocks * 512 <= 4 * CHUNK
    with open(out, "rb") as fh:
        fh.seek(size - 3 * CHUNK)
        assert fh.read(11) == b"end of disk"
    listed = api.rebuild_catalog(repo.target, PASSPHRASE)["restore_points"]
    assert listed[0]["vm"] == vm and listed[0]["disks"][0]["size"] == size


def test_missing_parent_falls_back_to_a_complete_backup(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 6 * CHUNK, seed=9, layout="r")
    first = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    logs = []
    second = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk), changed_extents=[])],
                        parent="20200101T000000.000000Z-00000000", emit=logs.append)
    assert second["kind"] == "full" and second["parent"] == ""
    assert second["stats"]["read_bytes"] == 6 * CHUNK and second["stats"]["reused_chunks"] == 6
    assert any(e["type"] == "log" and e["level"] == "warning" and "does not exist" in e["message"] for e in logs)
    assert second["disks"][0]["digest"] == first["disks"][0]["digest"]


def test_wrong_changed_extent_list_is_caught_by_sampling(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 16 * CHUNK, seed=10, layout="rt")
    first = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    mutate(disk, [3 * CHUNK], seed=11)  # changed, but the list below only names chunk 5
    logs = []
    second = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk), changed_extents=[[5 * CHUNK, 10]])],
                        parent=first["restore_point"], cbt_sample=100, emit=logs.append)
    assert second["stats"]["read_bytes"] == 16 * CHUNK and second["kind"] == "incremental"  # read everything
    assert any(f"offset {3 * CHUNK}" in e.get("message", "") and "cannot be trusted" in e["message"] for e in logs)
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, second["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == disk.read_bytes()

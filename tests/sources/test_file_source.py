"""The file / block-device source: sparse extents, changed-block lists, positional reads."""

from __future__ import annotations

import os
import random
import threading

import pytest

from engines.errors import SourceError, SourceNotFound
from engines.sources import open_source, validate_extents
from engines.sources.file import FileSource
from tests.sources.conftest import PIECES, SIZE, MiB, make_sparse


def test_extents_follow_the_files_real_layout(sparse_disk):
    path, _ = sparse_disk
    with FileSource(path) as source:
        assert source.size == SIZE
        assert list(source.extents()) == PIECES


def test_a_file_without_data_has_no_extents_and_a_full_file_one(tmp_path):
    empty = tmp_path / "empty.img"
    make_sparse(empty, 8 * MiB, [])
    full = tmp_path / "full.img"
    make_sparse(full, 3 * MiB, [(0, 3 * MiB)])
    with FileSource(empty) as a, FileSource(full) as b:
        assert list(a.extents()) == []
        assert list(b.extents()) == [(0, 3 * MiB)]


def test_changed_extents_replace_the_layout_sorted_and_merged(sparse_disk):
    path, _ = sparse_disk
    cbt = [[5 * MiB, 4096], [0, 8192], {"start": 4096, "length": 8192}, {"offset": 6 * MiB, "length": 0}]
    with FileSource(path, changed_extents=cbt) as source:
        assert list(source.extents()) == [(0, 12288), (5 * MiB, 4096)]


def test_changed_extents_accept_the_exported_document():
    document = {"size": 100, "changed_bytes": 20, "extents": [[10, 10], [20, 10], [50, 5]]}
    assert validate_extents(document, 100) == [(10, 20), (50, 5)]


@pytest.mark.parametrize("extent", [[SIZE - 4096, 8192], [-1, 10], [SIZE, 1]])
def test_changed_extent_outside_the_disk_is_refused_with_a_sentence(sparse_disk, extent):
    path, _ = sparse_disk
    with pytest.raises(SourceError, match=r"lies outside the disk of 33554432 bytes: .* run the backup without it"):
        FileSource(path, changed_extents=[[0, 10], extent])


def test_malformed_changed_extent_is_refused_with_a_sentence():
    with pytest.raises(SourceError, match=r"#2 .* is not an \(offset, length\) pair"):
        validate_extents([[0, 1], "nonsense"], 100)


def test_reads_are_exact_at_boundaries_and_at_the_end(sparse_disk):
    path, content = sparse_disk
    buf = bytearray(2 * MiB)
    view = memoryview(buf)
    with FileSource(path) as source:
        # across a data/hole boundary, inside a hole, and the last bytes of the disk
        for offset, length in [(MiB - 100, 300), (8 * MiB + MiB - 1, 2), (3 * MiB, MiB), (SIZE - 4096, 4096)]:
            assert source.read_into(offset, view[:length]) == length
            assert buf[:length] == content[offset : offset + length]
        assert source.read_into(SIZE - 10, view) == 10
        assert buf[:10] == content[-10:]
        assert source.read_into(SIZE, view) == 0
        assert source.read_into(SIZE + MiB, view) == 0


def test_threaded_reads_return_the_files_bytes(sparse_disk):
    path, content = sparse_disk
    errors: list[str] = []
    with FileSource(path) as source:

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            buf = bytearray(MiB)
            for _ in range(200):
                offset, length = rng.randrange(SIZE), rng.randrange(1, MiB)
                n = source.read_into(offset, memoryview(buf)[:length])
                if buf[:n] != content[offset : offset + length]:
                    errors.append(f"{offset}+{length}")

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_a_disk_beyond_two_terabytes(tmp_path):
    path = tmp_path / "big disk ü.img"
    size = (2 << 40) + (512 << 30)  # 2.5 TiB, sparse
    pieces = [(4096, 4096), (2 << 40, MiB), (size - MiB, MiB)]
    make_sparse(path, size, pieces)
    buf = bytearray(MiB)
    with open(path, "rb") as f, FileSource(path, changed_extents=[[size - 8192, 8192]]) as cbt:
        assert cbt.size == size
        assert list(cbt.extents()) == [(size - 8192, 8192)]
        f.seek(size - MiB)
        tail = f.read()
        assert cbt.read_into(size - MiB, memoryview(buf)) == MiB
        assert buf == tail
    with FileSource(path) as source:
        assert list(source.extents()) == pieces


def test_missing_disk_and_folder_give_sentences(tmp_path):
    with pytest.raises(SourceNotFound, match="does not exist: check the path"):
        FileSource(tmp_path / "nope.img")
    with pytest.raises(SourceError, match="is a folder"):
        FileSource(tmp_path)


def test_registry_opens_file_sources_and_names_unknown_types(sparse_disk):
    path, _ = sparse_disk
    with open_source("file", path=os.fspath(path)) as source:
        assert isinstance(source, FileSource)
    with pytest.raises(SourceError, match="Unknown source type 'nbd'; known: file, device, http"):
        open_source("nbd", path="x")

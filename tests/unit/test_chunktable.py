"""The compact chunk table behaves like the dict it replaces, in ascending index order."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from engines.repository.chunktable import SEGMENT, ChunkTable
from engines.repository.format import DiskRecord, Manifest


def cid(n: int) -> bytes:
    return n.to_bytes(32, "little")


def test_matches_a_dict_under_random_changes():
    rng = random.Random(7)
    table, model = ChunkTable(), {}
    for _ in range(5000):
        index = rng.choice([rng.randrange(40), rng.randrange(3 * SEGMENT), rng.randrange(1 << 24)])
        if rng.random() < 0.25 and index in model:
            del table[index], model[index]
        else:
            table[index] = model[index] = cid(rng.randrange(1 << 60))
    assert len(table) == len(model)
    assert list(table) == sorted(model)
    assert list(table.items()) == sorted(model.items())
    assert table == model and table.copy() == model
    assert all(table[i] == v for i, v in model.items())
    missing = next(i for i in range(1 << 20) if i not in model)
    assert missing not in table and table.get(missing) is None
    with pytest.raises(KeyError):
        table[missing]
    with pytest.raises(KeyError):
        del table[missing]
    assert table.pop(missing, None) is None


def test_copy_is_independent_and_bad_ids_are_refused():
    table = ChunkTable({1: cid(1)})
    other = table.copy()
    other[1], other[2] = cid(9), cid(2)
    assert table[1] == cid(1) and 2 not in table
    with pytest.raises(ValueError, match="32 bytes"):
        table[3] = b"short"
    with pytest.raises(KeyError):
        table[-1] = cid(1)


def test_manifest_round_trip_keeps_every_entry():
    disk = DiskRecord("disk 0", 5 << 40, {i * 7919: cid(i) for i in range(3000)})
    manifest = Manifest("rp", "vm", 1 << 20, "s", "f", disks=[disk])
    decoded = Manifest.decode(manifest.encode())
    assert isinstance(decoded.disks[0].chunks, ChunkTable)
    assert decoded.disks[0].chunks == disk.chunks and len(decoded.disks[0].chunks) == 3000


def test_a_two_terabyte_disk_table_stays_small():
    """2 Mi entries (a full 2 TiB disk of 1 MiB chunks): about 70 MiB, where a dict took about 400."""
    code = (
        "import resource; from engines.repository.chunktable import ChunkTable\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = ChunkTable(); t.update_from((i, i.to_bytes(32, 'little')) for i in range(1 << 21))\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown < 100, f"{grown} MiB"

"""One suite, every target (local, SFTP, FTP, FTPS, SMB, NFS) against its real server: the
Target contract the repository code relies on."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from engines.errors import TargetNotFound
from engines.targets import Target

MiB = 1 << 20


@pytest.mark.parametrize("size", [0, 1000, 4 * MiB], ids=["empty", "small", "4MiB"])
def test_put_get_round_trip(target: Target, size: int):
    data = os.urandom(size)
    target.put(f"chunks/ab/{size}", data)
    assert target.get(f"chunks/ab/{size}") == data
    assert target.exists(f"chunks/ab/{size}")


def test_put_accepts_a_memoryview_slice(target: Target):
    buf = bytearray(os.urandom(3 * MiB))
    target.put("slice", memoryview(buf)[MiB:2 * MiB])
    assert target.get("slice") == bytes(buf[MiB:2 * MiB])


def test_get_of_a_missing_file_is_target_not_found(target: Target):
    with pytest.raises(TargetNotFound):
        target.get("snapshots/none/such")


def test_overwrite_replaces_whole_file_and_readers_never_see_a_mix(target: Target):
    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB) + b"tail"
    target.put("config", old)
    seen: list[bytes] = []
    errors: list[Exception] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(target.get("config"))
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for data in (new, old, new):
            target.put("config", data)
    finally:
        done.set()
        thread.join()
    assert target.get("config") == new
    assert errors == []
    assert seen and all(read in (old, new) for read in seen)


def test_put_new_is_exclusive(target: Target):
    assert target.put_new("locks/prune", b"holder one")
    assert not target.put_new("locks/prune", b"holder two")
    assert target.get("locks/prune") == b"holder one"
    target.delete("locks/prune")
    assert target.put_new("locks/prune", b"holder three")
    assert target.get("locks/prune") == b"holder three"


def test_put_new_from_four_threads_has_one_winner(target: Target):
    def claim(n: int) -> bool:
        return target.put_new("locks/race", f"thread {n}".encode())

    with ThreadPoolExecutor(4) as pool:
        won = list(pool.map(claim, range(4)))
    assert won.count(True) == 1
    assert target.get("locks/race") == f"thread {won.index(True)}".encode()


def test_makedirs_list_exists_delete(target: Target):
    target.makedirs("snapshots/web01")
    target.makedirs("snapshots/web01")  # again: no error
    target.makedirs("snapshots/db01/deep/er")
    target.put("snapshots/web01/rp1", b"x" * 10)
    target.put("snapshots/web01/rp2", b"y" * 20)
    listed = {e.name: (e.size, e.is_dir) for e in target.list("snapshots/web01")}
    assert listed == {"rp1": (10, False), "rp2": (20, False)}  # no temporary names left behind
    top = {e.name: e.is_dir for e in target.list("snapshots")}
    assert top == {"web01": True, "db01": True}
    assert list(target.list("snapshots/nobody")) == []
    assert target.exists("snapshots/web01") and target.exists("snapshots/web01/rp1")
    assert not target.exists("snapshots/web01/rp3")
    target.delete("snapshots/web01/rp1")
    target.delete("snapshots/web01/rp1")  # already gone: no error
    assert not target.exists("snapshots/web01/rp1")
    assert [e.name for e in target.list("snapshots/web01")] == ["rp2"]


def test_names_with_spaces_and_unicode(target: Target):
    names = ["web 01", "Ünïcödé-VM 日本", "a  two  spaces", "x[1] (copy) #2"]
    for i, name in enumerate(names):
        target.put(f"snapshots/{name}/point {i}", name.encode())
    assert {e.name for e in target.list("snapshots")} == set(names)
    for i, name in enumerate(names):
        assert [e.name for e in target.list(f"snapshots/{name}")] == [f"point {i}"]
        assert target.get(f"snapshots/{name}/point {i}") == name.encode()


def test_concurrent_puts_from_four_threads(target: Target):
    blobs = {f"chunks/{i % 4:02x}/{i:04d}": os.urandom(256 << 10) for i in range(32)}

    def put(item: tuple[str, bytes]) -> None:
        target.put(*item)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, blobs.items()))
    with ThreadPoolExecutor(4) as pool:
        got = dict(zip(blobs, pool.map(target.get, blobs), strict=True))
    assert got == blobs
    assert sum(len(list(target.list(f"chunks/{i:02x}"))) for i in range(4)) == 32


def test_free_space(target: Target, target_type: str):
    free = target.free_space()
    if target_type in ("ftp", "ftps"):
        assert free is None  # FTP has no command for it
    else:
        assert isinstance(free, int) and free > 4 * MiB

"""Retention, mark-and-sweep with a grace period, locks against concurrent backups, stale locks."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from engines import api
from engines.contract import DiskSpec
from engines.repository.locks import RepositoryLock, RepositoryLocked
from engines.repository.prune import Retention
from engines.targets import TargetSpec, open_target
from tests.engines.conftest import CHUNK, PASSPHRASE, ROOT, engine_cmd, parse_events, write_image


def test_retention_keeps_last_daily_weekly_monthly():
    ids = [
        "20261125T230000.000000Z-00000001", "20261125T100000.000000Z-00000002",  # same day
        "20261124T100000.000000Z-00000003", "20261118T100000.000000Z-00000004",  # previous week
        "20261020T100000.000000Z-00000005", "20260915T100000.000000Z-00000006",
    ]
    assert Retention(keep_last=2).keep(ids) == set(ids[:2])
    assert Retention(keep_daily=2).keep(ids) == {ids[0], ids[2]}
    assert Retention(keep_weekly=2).keep(ids) == {ids[0], ids[3]}
    assert Retention(keep_monthly=3).keep(ids) == {ids[0], ids[4], ids[5]}
    assert Retention(keep_last=1, keep_monthly=2).keep(ids) == {ids[0], ids[4]}
    with pytest.raises(Exception, match="at least one"):
        Retention.from_dict({})
    with pytest.raises(Exception, match="Unknown retention"):
        Retention.from_dict({"keep_hourly": 3})


def _points(repo) -> list[str]:
    return [p["id"] for p in api.list_restore_points(repo.target, PASSPHRASE)["restore_points"]]


def test_prune_forgets_old_points_and_sweeps_only_their_chunks(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 10 * CHUNK, seed=41, layout="r")
    old = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    disk.write_bytes(os.urandom(10 * CHUNK // 2) + disk.read_bytes()[10 * CHUNK // 2 :])  # half the chunks change
    new = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))], parent=old["restore_point"])
    other = api.backup(repo.target, PASSPHRASE, "other vm", [DiskSpec("d", str(disk))])
    assert api.stats(repo.target, PASSPHRASE)["chunks"] == 15
    dry = api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0, dry_run=True)
    assert dry["forgotten"] == [{"vm": "vm", "restore_point": old["restore_point"]}] and dry["deleted_files"] == 5
    assert len(_points(repo)) == 3 and api.stats(repo.target, PASSPHRASE)["chunks"] == 15  # nothing touched
    # with a grace period, unreferenced chunks are only marked
    result = api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=3600)
    assert result["forgotten"] == [{"vm": "vm", "restore_point": old["restore_point"]}]
    assert result["deleted_files"] == 0 and result["pending_files"] == 5
    assert sorted(_points(repo)) == sorted([new["restore_point"], other["restore_point"]])
    # once past the grace period they go
    result = api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert result["deleted_files"] == 5 and result["freed_bytes"] > 5 * CHUNK
    stats = api.stats(repo.target, PASSPHRASE)
    assert stats["chunks"] == 10 and stats["orphan_chunks"] == 0 and stats["missing_chunks"] == 0
    assert api.verify(repo.target, PASSPHRASE)["ok"]
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, new["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == disk.read_bytes()


def test_pending_chunk_referenced_again_is_not_deleted(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 6 * CHUNK, seed=42, layout="r")
    first = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    other = write_image(tmp_path / "other.img", 6 * CHUNK, seed=43, layout="r")
    api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(other))])
    api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=3600)  # marks first's chunks
    again = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])  # dedups against marked chunks
    assert again["stats"]["new_chunks"] == 0
    pending = json.loads((repo.path / "prune" / "pending").read_text())["paths"]
    assert len(pending) == 6
    result = api.prune(repo.target, PASSPHRASE, retention={"keep_last": 2}, grace_seconds=0)
    assert result["deleted_files"] == 0
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, again["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == disk.read_bytes()
    assert first["restore_point"] not in _points(repo)


def test_prune_waits_for_running_backup_and_backup_for_prune(repo, tmp_path):
    target = open_target(TargetSpec(**repo.target))
    with RepositoryLock(target, "shared", "backup of web01"):
        with pytest.raises(RepositoryLocked, match="backup of web01"):
            api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    disk = write_image(tmp_path / "disk.img", 2 * CHUNK, seed=44)
    with RepositoryLock(target, "exclusive", "prune"):
        with pytest.raises(RepositoryLocked, match="prune"):
            api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))], lock_wait=0)
    assert not list((repo.path / "locks").iterdir())
    api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)


def test_stale_locks_are_detected_and_removed(repo, tmp_path):
    locks = repo.path / "locks"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    now = time.time()
    (locks / "shared-dead").write_text(json.dumps({"kind": "shared", "purpose": "backup of crashed", "pid": dead_pid,
                                                   "host": socket.gethostname(), "refreshed": now}))
    (locks / "shared-old").write_text(json.dumps({"kind": "shared", "purpose": "backup elsewhere", "pid": 1,
                                                  "host": "another-appliance", "refreshed": now - 3600}))
    (locks / "shared-live").write_text(json.dumps({"kind": "shared", "purpose": "backup elsewhere", "pid": 1,
                                                   "host": "another-appliance", "refreshed": now}))
    with pytest.raises(RepositoryLocked):
        api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert sorted(p.name for p in locks.iterdir()) == ["shared-live"]  # the two stale ones are gone
    (locks / "shared-live").unlink()
    assert api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)["kept"] == 0


def _chunk_files(repo) -> set[str]:
    return {f"chunks/{p.parent.name}/{p.name}" for p in (repo.path / "chunks").glob("*/*") if p.is_file()}


def test_sigterm_during_the_sweep_stops_cleanly_and_a_later_prune_finishes(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 8 * CHUNK, seed=45, layout="rt")
    kept = api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))])
    referenced = _chunk_files(repo)
    rnd = random.Random(46)
    orphans = set()
    for _ in range(15000):  # unreferenced chunk files: enough for a sweep that lasts a while
        name = rnd.randbytes(32).hex()
        (repo.path / "chunks" / name[:2] / name).write_bytes(b"orphan")
        orphans.add(f"chunks/{name[:2]}/{name}")
    job = {"operation": "prune", "target": repo.target, "passphrase": PASSPHRASE,
           "options": {"retention": {"keep_last": 1}, "grace_seconds": 0}}
    cut_mid_sweep = 0
    for delay in (0.0, 0.01, 0.04, 0.1):
        before = _chunk_files(repo)
        proc = subprocess.Popen(engine_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        seen = []
        while not any("unreferenced file(s) found" in e.get("message", "") for e in seen):
            line = proc.stdout.readline()
            assert line, f"the engine ended before its sweep: {seen}"
            seen.append(json.loads(line))
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # a hang fails here, with its own message (what is left to read is small)
        rest = parse_events(proc.stdout.read().decode())
        proc.stdout.close()
        after = _chunk_files(repo)
        assert referenced <= after  # nothing a restore point names is ever deleted
        assert not list((repo.path / "locks").iterdir())  # the exclusive lock is released
        if proc.returncode == 0:  # the whole sweep finished before the signal landed
            assert rest[-1]["type"] == "result"
            break
        assert proc.returncode == 143, rest
        assert rest[-1]["type"] == "error" and rest[-1]["code"] == "cancelled", rest
        assert "run prune again" in rest[-1]["message"]
        # The files not swept yet stay recorded as pending, with the time they were first seen.
        pending = json.loads((repo.path / "prune" / "pending").read_text())["paths"]
        assert set(pending) == after - referenced
        if len(before) > len(after) > len(referenced):
            cut_mid_sweep += 1
        verified = api.verify(repo.target, PASSPHRASE)
        assert verified["ok"], verified["problems"]
    assert cut_mid_sweep >= 2, "no SIGTERM landed mid-sweep: the test did not exercise an interrupted prune"
    result = api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert result["pending_files"] == 0
    assert _chunk_files(repo) == referenced
    assert api.verify(repo.target, PASSPHRASE)["ok"]
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, kept["restore_point"], [DiskSpec("d", str(out))], check_digest=True)
    assert out.read_bytes() == disk.read_bytes()

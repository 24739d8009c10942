"""A backup waits for prune's lock (released, timed out, cancelled, stale) and honours a per-VM read limit."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from engines import api
from engines.backup import BackupPipeline, Cancelled, DiskInput
from engines.contract import DiskSpec
from engines.repository.locks import RepositoryLock, RepositoryLocked
from engines.sources import open_source
from engines.targets import TargetSpec, open_target
from engines.workers import MB, Throttle, read_limit
from tests.engines.conftest import CHUNK, PASSPHRASE, ROOT, backup_job, run_engine, write_image

FAST = (0.01, 0.05)  # backoff for tests: first and longest pause, seconds


def _prune_lock(repo, **kwargs) -> RepositoryLock:
    return RepositoryLock(open_target(TargetSpec(**repo.target)), "exclusive", "prune", **kwargs).acquire()


def _pipeline_backup(repo, disk, *, lock_wait: float, events: list, cancel: threading.Event | None = None,
                     read_limit_bytes: float | None = None) -> tuple[BackupPipeline, dict]:
    with api.open_repository(repo.target, PASSPHRASE) as r:
        source = open_source("file", path=str(disk))
        try:
            pipeline = BackupPipeline(r, threads=2, emit=events.append, cancel=cancel, lock_wait=lock_wait,
                                      read_limit=read_limit_bytes)
            pipeline.run("vm", [DiskInput("d", source)])
        finally:
            source.close()
    return pipeline, pipeline.stats_dict()


def _waiting_logs(events: list) -> list[str]:
    return [e["message"] for e in events if e["type"] == "log" and e["message"].startswith("Waiting for")]


def test_a_backup_waits_for_prune_to_release_its_lock(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 4 * CHUNK, seed=71)
    prune = _prune_lock(repo)
    events: list[dict] = []
    releaser = threading.Timer(0.3, prune.release)
    releaser.start()
    try:
        _pipeline_backup(repo, disk, lock_wait=30, events=events)
    finally:
        releaser.cancel()
    waiting = _waiting_logs(events)
    assert len(waiting) == 1, events  # said once, however many tries
    assert f"held by prune on {socket.gethostname()} since " in waiting[0] and "UTC" in waiting[0]
    assert any("Repository lock taken after waiting" in e.get("message", "") for e in events)
    assert len(api.list_restore_points(repo.target, PASSPHRASE)["restore_points"]) == 1
    assert not list((repo.path / "locks").iterdir())


def test_a_wait_that_runs_out_fails_with_the_locked_sentence(repo, tmp_path):
    prune = _prune_lock(repo)
    try:
        lock = RepositoryLock(open_target(TargetSpec(**repo.target)), "shared", "backup of vm", wait=0.2,
                              backoff=FAST)
        with pytest.raises(RepositoryLocked, match=r"still locked by prune on .* since .* after waiting 0\.\d s"):
            lock.acquire()
        assert lock.waited >= 0.2
    finally:
        prune.release()
    assert not list((repo.path / "locks").iterdir())  # the waiting backup left no lock behind


def test_cancel_during_the_wait_ends_cleanly(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 2 * CHUNK, seed=72)
    prune = _prune_lock(repo)
    cancel = threading.Event()
    events: list[dict] = []
    stopper = threading.Timer(0.2, cancel.set)
    stopper.start()
    try:
        with pytest.raises(Cancelled, match="cancelled while it waited for the repository lock held by prune"):
            _pipeline_backup(repo, disk, lock_wait=600, events=events, cancel=cancel)
    finally:
        prune.release()
    assert len(_waiting_logs(events)) == 1
    assert api.list_restore_points(repo.target, PASSPHRASE)["restore_points"] == []
    assert not list((repo.path / "locks").iterdir())


def test_sigterm_during_the_wait_ends_the_engine_as_cancelled(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 2 * CHUNK, seed=73)
    prune = _prune_lock(repo)
    job = backup_job(repo, "vm", [{"name": "d", "path": str(disk)}], options={"lock_wait": 600})
    proc = subprocess.Popen([sys.executable, "-m", "engines"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        seen = []
        while not _waiting_logs(seen):
            line = proc.stdout.readline()
            assert line, f"the engine ended before it waited: {seen}"
            seen.append(json.loads(line))
        proc.terminate()
        rest = [json.loads(line) for line in proc.stdout.read().splitlines()]
        assert proc.wait(30) == 143
    finally:
        proc.stdout.close()
        prune.release()
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "cancelled", rest
    assert not list((repo.path / "locks").iterdir())


def test_a_stale_prune_lock_is_cleared_without_waiting(repo, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (repo.path / "locks" / "exclusive").write_text(json.dumps({
        "kind": "exclusive", "purpose": "prune", "pid": int(dead.stdout), "host": socket.gethostname(),
        "created": time.time(), "refreshed": time.time()}))
    disk = write_image(tmp_path / "disk.img", 2 * CHUNK, seed=74)
    events: list[dict] = []
    api.backup(repo.target, PASSPHRASE, "vm", [DiskSpec("d", str(disk))], emit=events.append)
    assert _waiting_logs(events) == []
    assert not list((repo.path / "locks").iterdir())


def test_a_lock_that_goes_stale_during_the_wait_is_cleared(repo):
    target = open_target(TargetSpec(**repo.target))
    (repo.path / "locks" / "exclusive").write_text(json.dumps({
        "kind": "exclusive", "purpose": "prune", "pid": 1, "host": "another-appliance",
        "created": time.time(), "refreshed": time.time()}))
    heard: list[str] = []
    lock = RepositoryLock(target, "shared", "backup of vm", stale_after=0.3, wait=30, backoff=FAST,
                          on_wait=heard.append)
    with lock:
        assert lock.waited >= 0.2 and len(heard) == 1 and "another-appliance" in heard[0]
        assert [p.name for p in (repo.path / "locks").iterdir()] == [lock.path.split("/")[-1]]


def test_the_read_limit_is_validated():
    assert read_limit(None) is None and read_limit(0) is None and read_limit("") is None
    assert read_limit(8) == 8 * MB and read_limit(0.5) == MB / 2
    for bad in (-1, "fast", True, float("nan"), float("inf")):
        with pytest.raises(api.EngineError, match="throttle_mbps must be a positive number"):
            read_limit(bad)


def test_the_token_bucket_accounts_for_the_rate():
    now = [0.0]
    throttle = Throttle(8 * MB, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(16):
        throttle.take(1 << 20)
    assert throttle.taken == 16 << 20
    assert throttle.slept == pytest.approx((16 << 20) / (8 * MB))  # an empty bucket: every byte waits its turn
    waited = throttle.slept
    now[0] += 10  # idle for 10 s: only a quarter second's worth is saved up, not 10 s worth
    throttle.take(2 * MB)
    assert throttle.slept == waited
    throttle.take(4 * MB)
    assert throttle.slept == pytest.approx(waited + 4 * MB / (8 * MB))


def test_a_throttled_backup_reports_the_limit_and_its_waits(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 16 << 20, seed=75, layout="rt")
    run = run_engine(backup_job(repo, "vm", [{"name": "d", "path": str(disk)}], options={"throttle_mbps": 8}))
    assert run.returncode == 0, run.error
    stats = run.result["stats"]
    assert stats["throttle_mbps"] == 8 and stats["read_bytes"] == 16 << 20
    assert stats["throttled_seconds"] > 0  # the engine's own account of the time its readers were held back
    assert any("limited to 8 MB/s" in e["message"] for e in run.of("log"))


def test_a_bad_read_limit_is_refused_before_anything_is_written(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 2 * CHUNK, seed=76)
    run = run_engine(backup_job(repo, "vm", [{"name": "d", "path": str(disk)}], options={"throttle_mbps": -5}))
    assert run.returncode != 0 and run.error["code"] == "bad_job_spec"
    assert "throttle_mbps must be a positive number" in run.error["message"]
    assert api.list_restore_points(repo.target, PASSPHRASE)["restore_points"] == []

"""`python -m engines`: job spec on stdin, JSON-lines events on stdout, exit codes, SIGTERM, kill -9."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

from engines import api
from tests.engines.conftest import (
    CHUNK,
    KDF_N,
    PASSPHRASE,
    ROOT,
    backup_job,
    engine_cmd,
    parse_events,
    run_engine,
    write_image,
)


def test_engine_process_init_backup_list_restore_verify(tmp_path):
    target = {"type": "local", "path": str(tmp_path / "repo with spaces")}
    run = run_engine({"operation": "init", "target": target, "passphrase": PASSPHRASE,
                      "options": {"chunk_size": CHUNK, "kdf_n": KDF_N}})
    assert run.returncode == 0, run.stderr
    assert run.result["chunk_size"] == CHUNK
    disk = write_image(tmp_path / "disk.img", 16 * CHUNK, seed=11)
    run = run_engine({"operation": "backup", "target": target, "passphrase": PASSPHRASE,
                      "vm": {"name": "mail server", "config": {"guest": "debian12"}},
                      "disks": [{"name": "disk0", "path": str(disk), "change_id": "52 1a/7"}]})
    assert run.returncode == 0, run.stderr
    rp = run.result["restore_point"]
    progress = run.of("progress")
    assert progress and progress[-1]["done"] == progress[-1]["total"] > 0
    assert {"rate", "eta", "phase"} <= set(progress[-1])
    assert run.result["disks"][0]["change_id"] == "52 1a/7"
    run = run_engine({"operation": "list", "target": target, "passphrase": PASSPHRASE})
    assert [p["id"] for p in run.result["restore_points"]] == [rp]
    out = tmp_path / "out.img"
    run = run_engine({"operation": "restore", "target": target, "passphrase": PASSPHRASE, "restore_point": rp,
                      "disks": [{"name": "disk0", "path": str(out)}], "options": {"check_digest": True}})
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == disk.read_bytes()
    run = run_engine({"operation": "verify", "target": target, "passphrase": PASSPHRASE})
    assert run.returncode == 0 and run.result["ok"] and run.result["chunks"] > 0


def test_bad_job_spec_and_wrong_passphrase_give_error_events(repo, tmp_path):
    proc = subprocess.run(engine_cmd(), input=b"{not json", capture_output=True, cwd=ROOT, timeout=60)
    events = parse_events(proc.stdout.decode())
    assert proc.returncode != 0 and events[-1]["type"] == "error" and events[-1]["code"] == "bad_job_spec"
    run = run_engine({"operation": "explode", "target": repo.target})
    assert run.returncode != 0 and "Unknown operation" in run.error["message"]
    run = run_engine({"operation": "list", "target": repo.target, "passphrase": "wrong"})
    assert run.returncode != 0
    assert run.error["code"] == "wrong_passphrase" and "passphrase" in run.error["message"]
    run = run_engine({"operation": "list", "target": {"type": "local", "path": str(tmp_path / "nothing")},
                      "passphrase": PASSPHRASE})
    assert run.error["code"] == "repository_not_found"
    run = run_engine(backup_job(repo, "vm", [{"name": "d", "path": str(tmp_path / "missing.img")}]))
    assert run.returncode != 0 and run.error["code"] == "source_not_found"


def _slow_backup_job(repo, tmp_path) -> dict:
    """A 2 TB sparse disk whose CBT list claims every byte changed: reading holes keeps the engine busy."""
    disk = tmp_path / "big.img"
    size = 2 * 1024**4
    with open(disk, "wb") as fh:
        fh.truncate(size)
    first = api.backup(repo.target, PASSPHRASE, "busy", [api.DiskSpec("d", str(disk))])
    return backup_job(repo, "busy", [{"name": "d", "path": str(disk), "changed_extents": [[0, size]]}],
                      parent=first["restore_point"])


def test_sigterm_stops_cleanly_without_a_restore_point(repo, tmp_path):
    job = _slow_backup_job(repo, tmp_path)
    proc = subprocess.Popen(engine_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    seen = [json.loads(proc.stdout.readline())]
    while seen[-1]["type"] != "progress":
        seen.append(json.loads(proc.stdout.readline()))
    assert any("changed extents (CBT)" in e.get("message", "") for e in seen)
    assert seen[-1]["done"] < seen[-1]["total"]
    proc.send_signal(signal.SIGTERM)
    rest = parse_events(proc.stdout.read().decode())
    proc.wait(timeout=30)
    proc.stderr.close()
    proc.stdout.close()
    assert proc.returncode == 143
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "cancelled"
    assert len(api.list_restore_points(repo.target, PASSPHRASE)["restore_points"]) == 1
    assert not [p for p in (repo.path / "locks").iterdir()]  # the backup's lock is released


def test_kill_9_at_random_points_leaves_a_consistent_repository(repo, tmp_path):
    disk = write_image(tmp_path / "disk.img", 400 * CHUNK, seed=12, layout="rtrh")
    job = backup_job(repo, "victim", [{"name": "d", "path": str(disk)}])
    rnd = random.Random(99)
    for attempt in range(10):
        proc = subprocess.Popen(engine_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        if attempt % 2:  # counted from the engine's first event, so a slow start still lands mid-backup
            proc.stdout.readline()
        time.sleep(rnd.uniform(0.0, 0.8))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        verified = api.verify(repo.target, PASSPHRASE)
        assert verified["ok"], verified["problems"]
    chunk_files = [p for p in (repo.path / "chunks").rglob("*") if p.is_file() and ".tmp-" not in p.name]
    assert chunk_files, "no kill landed after the first upload: the test did not exercise an interrupted backup"
    run = run_engine(job)
    assert run.returncode == 0, run.error
    assert run.result["stats"]["reused_chunks"] > 0  # chunks uploaded by the killed runs are reused
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, run.result["restore_point"], [api.DiskSpec("d", str(out))],
                check_digest=True)
    assert out.read_bytes() == disk.read_bytes()
    # prune clears what the killed runs left: their stale locks, temporary files and orphan chunks
    api.prune(repo.target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert not list((repo.path / "locks").iterdir())
    assert not list((repo.path / "chunks").rglob("*.tmp-*"))
    assert api.stats(repo.target, PASSPHRASE)["orphan_chunks"] == 0
    assert api.verify(repo.target, PASSPHRASE)["ok"]

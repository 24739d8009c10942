"""Faults during backup runs, in the lab through the built-in local appliance: each ends in a clear
sentence with its code, and leaves the repository and the catalog consistent.

The target-full test mounts a small tmpfs as the repository's folder: it needs root (mount) and
skips loudly without it. The others need no privileges.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from appliances.models import Appliance
from engines import api as engine
from engines.repository.locks import RepositoryLock
from engines.targets import TargetSpec, open_target
from inventory.connectors.lab import LabConnector, seed
from inventory.models import VirtualMachine
from inventory.sync import sync_connection
from jobs import services
from jobs.backup import vm_key
from jobs.models import JobRun, Repository, RestorePoint, Task
from jobs.runs import execute_run
from jobs.targets import target_spec
from tests.jobs.conftest import PASSPHRASE, job_for

MIB = 1 << 20
needs_mount = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="TARGET-FULL TEST SKIPPED: it mounts a small tmpfs as the repository folder, which needs root. "
           "Run the suite as root to exercise it.")


def engine_points(repo: Repository, vm: VirtualMachine) -> list[dict]:
    """The restore points the repository itself holds for the VM (the engine's `list`)."""
    return engine.list_restore_points(target_spec(repo), PASSPHRASE, vm=vm_key(vm))["restore_points"]


def verifies(repo: Repository) -> bool:
    """The engine's verify of the whole repository, with the right passphrase."""
    return engine.verify(target_spec(repo), PASSPHRASE)["ok"]


def run_job(job) -> JobRun:
    return execute_run(services.start_run(job, queue=False).pk)


def run_in_thread(run: JobRun, outcome: dict) -> threading.Thread:
    """Execute the run as a worker thread does (its own database connection, closed at the end)."""
    def work() -> None:
        try:
            outcome["run"] = execute_run(run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


# -- 1. target full ----------------------------------------------------------------------------
@pytest.fixture
def small_target(tmp_path):
    folder = tmp_path / "small-target"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "vafleet-test-full", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@needs_mount
def test_a_full_target_fails_the_task_with_its_sentence_and_keeps_no_half_restore_point(lab, small_target):
    small_repo = Repository.objects.create(name="small", kind="local", path=str(small_target / "repo"),
                                           passphrase=PASSPHRASE, chunk_size=256 << 10)
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    connector = LabConnector(root=lab.options["root"])
    engine.init(target_spec(small_repo), PASSPHRASE, chunk_size=256 << 10, kdf_n=1 << 10)
    # Leave far less room than the VM's data needs.
    free = shutil.disk_usage(small_target).free
    ballast = small_target / "ballast"
    ballast.write_bytes(os.urandom(free - 256 * 1024))
    job = job_for(small_repo, [vm])

    run = run_job(job)
    task = run.tasks.get()
    assert run.state == JobRun.State.FAILED
    assert task.state == Task.State.FAILED and task.error_code == "target_full", task.message
    assert task.message.startswith("The target folder is full while writing")
    assert "free space on the target or prune old restore points" in task.message
    error = task.events.filter(type="error").get()  # the engine's own error event, with its code
    assert error.data.get("code") == "target_full" and error.data.get("message") == task.message
    assert task.restore_point is None and not RestorePoint.objects.filter(repository=small_repo).exists()
    assert connector.list_snapshots(vm.moref) == [] and task.snapshot == "" and task.attached == []
    ballast.unlink()
    assert engine_points(small_repo, vm) == []
    assert verifies(small_repo)

    after = run_job(job)
    done = after.tasks.get()
    assert after.state == JobRun.State.SUCCEEDED, done.message
    assert [p["id"] for p in engine_points(small_repo, vm)] == [done.restore_point.rp_id]
    assert done.restore_point.kind == "full"
    assert verifies(small_repo)


# -- 2. wrong passphrase -----------------------------------------------------------------------
def test_a_wrong_passphrase_fails_every_task_and_never_reinitialises(lab, repository):
    vms = list(VirtualMachine.objects.filter(connection=lab).order_by("name")[:2])
    job = job_for(repository, vms)
    assert run_job(job).state == JobRun.State.SUCCEEDED
    repository.refresh_from_db()
    config = Path(repository.path, "config")
    before, initialized = config.read_bytes(), repository.initialized_at
    points = set(RestorePoint.objects.values_list("rp_id", flat=True))

    repository.passphrase = "Not-The-Passphrase-2"
    repository.save()
    failed = run_job(job)
    assert failed.state == JobRun.State.FAILED
    for task in failed.tasks.all():
        assert task.state == Task.State.FAILED and task.error_code == "wrong_passphrase", task.message
        assert task.message == ("The passphrase does not open this repository: check the repository passphrase "
                                "in its settings.")
        assert task.restore_point is None
    # A repository not yet recorded as initialised is probed, refused, and still not initialised over.
    Repository.objects.filter(pk=repository.pk).update(initialized_at=None)
    again = run_job(job)
    assert {t.error_code for t in again.tasks.all()} == {"wrong_passphrase"}
    repository.refresh_from_db()
    assert repository.initialized_at is None
    assert config.read_bytes() == before
    assert set(RestorePoint.objects.values_list("rp_id", flat=True)) == points
    assert verifies(repository)  # the right passphrase still opens it, with its restore points
    assert initialized is not None


# -- 3. an outdated engine on the appliance ----------------------------------------------------
def test_an_outdated_engine_is_replaced_before_the_backup(lab, repository, make_changed_bundle):
    from appliances.actions import current_bundle
    from appliances.connect import ENGINE_DIR, python_for, transport_for
    from appliances.injection import engine_version, ensure_engine, install_va_side

    # A home of its own: the default local appliance's home is shared with tests running beside this one.
    appliance = Appliance.objects.get(name="local-appliance")
    Appliance.objects.filter(pk=appliance.pk).update(hostname=f"outdated-{uuid.uuid4().hex[:8]}")
    appliance.refresh_from_db()
    current = current_bundle().version
    with transport_for(appliance) as transport:
        install_va_side(transport, ENGINE_DIR)
        old = ensure_engine(transport, make_changed_bundle("old"), ENGINE_DIR, python_for(appliance))
        assert old.uploaded and old.version != current
        assert engine_version(transport, ENGINE_DIR, python_for(appliance)).version == old.version
    Appliance.objects.filter(pk=appliance.pk).update(engine_version=old.version)  # as its last check saw it

    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    run = run_job(job_for(repository, [vm]))
    task = run.tasks.get()
    assert task.state == Task.State.SUCCEEDED, task.message
    messages = [e.data.get("message", "") for e in task.events.filter(type="log")]
    assert f"Engine {current} on local-appliance." in messages, messages
    assert not any(old.version in m for m in messages)
    appliance.refresh_from_db()
    assert appliance.engine_version == current and appliance.engine_previous == old.version
    with transport_for(appliance) as transport:
        assert engine_version(transport, ENGINE_DIR, python_for(appliance)).version == current


# -- 4. cancel -----------------------------------------------------------------------------------
def test_cancelling_a_run_mid_backup_leaves_no_snapshot_and_a_sound_repository(lab, repository):
    root = lab.options["root"]
    connector = LabConnector(root=root)
    small = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    assert run_job(job_for(repository, [small], name="first")).state == JobRun.State.SUCCEEDED
    seed(root, vms=7, disk_size=768 * MIB, fill=1.0)  # one more VM, with a disk far larger than the others
    assert sync_connection(lab.pk, claimed=True).ok
    big = VirtualMachine.objects.get(connection=lab, name="proxy-01")
    assert big.provisioned_bytes >= 768 * MIB
    job = job_for(repository, [big], name="big")
    run = services.start_run(job, queue=False)
    outcome: dict = {}
    driver = run_in_thread(run, outcome)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            task = run.tasks.get()
            if task.phase == "backup" and task.bytes_done > 0 or not task.active:
                break
            time.sleep(0.05)
        assert task.phase == "backup" and task.active, (task.state, task.phase, task.message)
        seen_snapshots = connector.list_snapshots(big.moref)
        services.cancel_run(run)
    finally:
        driver.join(300)
    assert not driver.is_alive()
    assert len(seen_snapshots) == 1  # the backup held one while it ran
    ended = outcome["run"]
    task = ended.tasks.get()
    assert task.state == Task.State.CANCELLED and task.error_code == "cancelled", task.message
    assert "was cancelled" in task.message
    assert ended.state == JobRun.State.CANCELLED
    assert connector.list_snapshots(big.moref) == [] and task.snapshot == "" and task.attached == []
    assert task.restore_point is None and not RestorePoint.objects.filter(vm=big).exists()
    assert engine_points(repository, big) == []
    assert verifies(repository)
    # The repository goes on: the small VM backs up again on top of its restore point.
    assert run_job(job_for(repository, [small], name="after")).state == JobRun.State.SUCCEEDED


def test_cancelling_a_run_that_waits_for_the_prune_lock_stops_it_while_it_waits(lab, repository):
    """The engine says nothing while it waits for the lock: the cancel still reaches it (a watcher polls)."""
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    assert run_job(job_for(repository, [vm], name="first")).state == JobRun.State.SUCCEEDED  # initialised
    prune = RepositoryLock(open_target(TargetSpec(**target_spec(repository))), "exclusive", "prune").acquire()
    run = services.start_run(job_for(repository, [vm], name="waits"), queue=False)
    outcome: dict = {}
    driver = run_in_thread(run, outcome)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not Task.objects.filter(
                run=run, events__data__message__startswith="Waiting for the repository lock").exists():
            time.sleep(0.1)
        task = run.tasks.get()
        assert task.state == Task.State.RUNNING, (task.state, task.message)
        services.cancel_run(run)
        driver.join(60)  # the lock is still held: only the cancel can end the wait this soon
        assert not driver.is_alive(), "the run did not stop while its engine waited for the lock"
    finally:
        prune.release()
        driver.join(300)
    ended = outcome["run"]
    task = ended.tasks.get()
    assert ended.state == JobRun.State.CANCELLED
    assert task.state == Task.State.CANCELLED and "cancelled" in task.message, task.message
    assert task.snapshot == "" and LabConnector(root=lab.options["root"]).list_snapshots(vm.moref) == []
    assert task.restore_point is None and len(engine_points(repository, vm)) == 1
    assert verifies(repository)

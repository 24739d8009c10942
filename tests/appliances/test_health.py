"""Appliance health: the VA-side `status`, probes over real SSH, state flips, the schedule."""

from __future__ import annotations

import fcntl
import importlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliances import health, var_dir
from appliances.health import MIN_FREE_BYTES, HealthReport, check_all, check_appliance, probe, warnings_for
from appliances.injection import bootstrap, ensure_engine, install_va_side, run_engine
from appliances.keys import ssh_public_line
from appliances.transports import open_transport
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, needs_root


def _until(condition, timeout: float = 15.0, step: float = 0.1):
    """Poll `condition()` until it returns something true (returned) or the time is up (last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def _bootstrap(host):
    info = host.info
    return bootstrap(info.address, info.port, info.host_key, ROOT_PASSWORD)


# --- the VA-side `status` command on the local transport (no root needed) -----------------------------------


def test_status_on_a_bootstrapped_local_appliance_counts_running_jobs(tmp_path, bundle):
    t = open_transport("local", home=tmp_path)
    install_va_side(t)
    report = probe(t, python=sys.executable)
    assert report.reachable and report.engine_version is None
    assert "No engine is installed yet" in report.message
    assert report.running_jobs == 0 and report.cpus == os.cpu_count()
    assert report.free_bytes > 0 and report.load_1m is not None and abs(report.clock_skew_s) < 2

    ensure_engine(t, bundle, python=sys.executable)
    report = probe(t, python=sys.executable)
    assert report.engine_version == bundle.version and report.warnings == [] and report.message == ""

    jobs = tmp_path / "vafleet" / "jobs"
    jobs.mkdir(exist_ok=True)
    (jobs / "999999999.12345.deadbeef0000").touch()  # an engine of long ago: gone, its entry is stale
    (jobs / f"{os.getpid()}.1.000000000000").touch()  # a live pid, but not the process that wrote it
    assert probe(t, python=sys.executable).running_jobs == 0
    assert list(jobs.iterdir()) == []

    os.mkfifo(tmp_path / "vafleet" / "job.fifo")
    first = run_engine(t, ["vafleet/job.fifo"], python=sys.executable)  # blocks opening its job file
    second = run_engine(t, ["vafleet/job.fifo"], python=sys.executable)
    try:
        assert _until(lambda: probe(t, python=sys.executable).running_jobs == 2)
        first.kill()
        first.wait(10)
        assert probe(t, python=sys.executable).running_jobs == 1
    finally:
        first.kill()
        second.kill()
        first.wait(10)
        second.wait(10)
    assert probe(t, python=sys.executable).running_jobs == 0
    assert list(jobs.iterdir()) == []


def test_a_never_bootstrapped_or_outdated_appliance_reports_a_sentence(tmp_path):
    t = open_transport("local", home=tmp_path, label="appliance va-x")
    report = probe(t, python=sys.executable)
    assert report.reachable and report.engine_version is None
    assert "has no VA Fleet installer in vafleet/ (it was never bootstrapped): bootstrap it" in report.message
    (tmp_path / "vafleet").mkdir()
    (tmp_path / "vafleet" / "install.py").write_text("import sys\nsys.exit(64)\n")
    assert "older than this server (it has no `status` command)" in probe(t, python=sys.executable).message


def test_warnings_name_clock_skew_and_low_space():
    report = HealthReport(True, "", engine_version="1.0", free_bytes=MIN_FREE_BYTES // 2, clock_skew_s=-45.2)
    text = " ".join(warnings_for(report))
    assert "Only 50 MiB free in the engine directory, 100 MiB are needed" in text
    assert "Its clock is 45 s behind the server's" in text
    fine = HealthReport(True, "", engine_version="1.0", free_bytes=MIN_FREE_BYTES, clock_skew_s=29.0)
    assert warnings_for(fine) == []


# --- Django rows for lab appliances --------------------------------------------------------------------------


@pytest.fixture
def inventory(transactional_db):
    from inventory.models import Connection, Datacenter, Datastore, Host, Network

    connection = Connection.objects.create(name="Lab health", kind="lab", status=Connection.Status.OK)
    dc = Datacenter.objects.create(connection=connection, moref="dc-1", name="DC1")
    host = Host.objects.create(connection=connection, moref="host-1", name="esx-1.lab.test", datacenter=dc)
    datastore = Datastore.objects.create(connection=connection, moref="ds-1", name="ds1", datacenter=dc)
    network = Network.objects.create(connection=connection, moref="net-1", name="VM Network", datacenter=dc)
    return connection, host, datastore, network


@pytest.fixture
def make_appliance(inventory):
    from appliances.models import Appliance

    connection, host, datastore, network = inventory

    def make(lab_host, state=Appliance.State.READY, vcpus=1):
        info = lab_host.info
        return Appliance.objects.create(
            name=info.name, connection=connection, host=host, datastore=datastore, network=network,
            address=info.address, hostname=info.name, root_password=ROOT_PASSWORD, user_password=USER_PASSWORD,
            vcpus=vcpus, transport=Appliance.Transport.SSH, port=info.port, host_key=info.host_key,
            host_key_fingerprint=info.host_key_fingerprint, state=state)

    return make


def test_a_local_appliance_without_engine_is_ready_with_a_warning(inventory):
    from appliances.connect import local_home
    from appliances.models import Appliance

    connection, host, datastore, network = inventory
    appliance = Appliance.objects.create(
        name="local-va", connection=connection, host=host, datastore=datastore, network=network,
        hostname="local-va", root_password=ROOT_PASSWORD, user_password=USER_PASSWORD, vcpus=1,
        transport=Appliance.Transport.LOCAL, state=Appliance.State.UNREACHABLE, state_message="Was down.")
    install_va_side(open_transport("local", home=local_home(appliance)))
    report = check_appliance(appliance)
    appliance.refresh_from_db()
    assert report.reachable and appliance.state == Appliance.State.READY and appliance.state_message == ""
    assert appliance.health_message == "No engine is installed yet: it is injected before the appliance's first job."
    assert appliance.engine_version == "" and appliance.running_jobs == 0 and appliance.last_seen is not None


@pytest.fixture(scope="module")
def ready_fleet(fleet, bundle):
    """The module's three lab VAs, bootstrapped and given the engine."""

    def prepare(host):
        with _bootstrap(host) as t:
            ensure_engine(t, bundle)

    ssh_public_line()  # the fleet key exists before the threads below use it
    with ThreadPoolExecutor(len(fleet)) as pool:
        list(pool.map(prepare, fleet))
    return fleet


@pytest.mark.appliance
@needs_root
def test_a_reachable_appliance_reports_version_space_load_skew_and_jobs(ready_fleet, make_appliance, bundle):
    appliance = make_appliance(ready_fleet[0])
    report = check_appliance(appliance)
    assert report.reachable and report.message == "", report.message
    appliance.refresh_from_db()
    assert appliance.state == "ready" and appliance.engine_version == bundle.version
    assert appliance.free_bytes > MIN_FREE_BYTES and appliance.load_1m is not None
    assert abs(appliance.clock_skew_s) < 5 and appliance.running_jobs == 0 and appliance.free_slots == 1
    assert appliance.last_seen is not None and appliance.last_seen == appliance.health_checked
    assert report.cpus == os.cpu_count()  # lab VAs share this machine's CPUs

    with _bootstrap(ready_fleet[0]) as t:
        assert t.run(["mkfifo", "vafleet/job.fifo"]).exit == 0
        job = run_engine(t, ["vafleet/job.fifo"])  # the engine blocks opening its job file: a long job
        try:
            assert _until(lambda: check_appliance(appliance).running_jobs == 1)
            appliance.refresh_from_db()
            assert appliance.running_jobs == 1 and appliance.free_slots == 0
            assert not job.channel.exit_status_ready()
        finally:
            job.kill()
            job.wait(10)
            t.run(["rm", "-f", "vafleet/job.fifo"])
    assert check_appliance(appliance).running_jobs == 0
    appliance.refresh_from_db()
    assert appliance.running_jobs == 0


@pytest.mark.appliance
@needs_root
def test_unreachable_refused_and_changed_key_then_ready_again(lab_va, make_appliance, bundle):
    from appliances.models import Appliance
    from core.models import AuditEntry

    with _bootstrap(lab_va) as t:
        ensure_engine(t, bundle)
    appliance = make_appliance(lab_va)
    assert check_appliance(appliance).reachable
    appliance.refresh_from_db()
    seen = appliance.last_seen

    lab_va._stop_processes()  # the VA's sshd is gone: connection refused
    report = check_appliance(appliance)
    assert not report.reachable and "connection refused" in report.message
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.UNREACHABLE and not appliance.usable
    assert appliance.state_message == appliance.health_message == report.message
    assert appliance.state_message.startswith(f"Cannot reach {lab_va.info.address}:22 (connection refused)")
    assert appliance.last_seen == seen and appliance.health_checked > seen
    assert AuditEntry.objects.filter(object_id=str(appliance.pk), message__contains="is unreachable").count() == 1
    check_appliance(appliance)  # still unreachable: no new state change in the audit log
    assert AuditEntry.objects.filter(object_id=str(appliance.pk), message__contains="is unreachable").count() == 1

    lab_va._start_sshd()
    assert check_appliance(appliance).reachable
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.READY and appliance.usable
    assert appliance.state_message == "" and appliance.last_seen > seen
    assert AuditEntry.objects.filter(object_id=str(appliance.pk), message__contains="reachable again").exists()

    with _bootstrap(lab_va) as t:  # the fleet key is no longer accepted
        assert t.run(["rm", ".ssh/authorized_keys"]).exit == 0
    report = check_appliance(appliance)
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.UNREACHABLE and "refused the fleet key" in appliance.state_message

    with _bootstrap(lab_va):
        pass  # key installed again
    assert check_appliance(appliance).reachable
    new_fingerprint = lab_va.replace_host_key()  # e.g. reinstalled, or someone in between
    report = check_appliance(appliance)
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.UNREACHABLE
    assert "does not match the key pinned at deployment" in appliance.state_message
    assert new_fingerprint in appliance.state_message and report.message == appliance.health_message


@pytest.mark.appliance
@needs_root
def test_only_deployed_appliances_are_touched(ready_fleet, make_appliance):
    from appliances.models import Appliance

    appliance = make_appliance(ready_fleet[1], state=Appliance.State.REMOVING)
    report = check_appliance(appliance)
    assert not report.reachable and "only deployed appliances are checked" in report.message
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.REMOVING and appliance.health_checked is None


@pytest.mark.appliance
@needs_root
def test_check_all_checks_the_fleet_concurrently(ready_fleet, make_appliance, monkeypatch):
    from appliances.models import Appliance

    appliances = [make_appliance(host) for host in ready_fleet]
    draft = Appliance.objects.get(pk=appliances[2].pk)
    draft.pk, draft.name, draft.hostname, draft.address, draft.state = None, "draft-va", "draft-va", None, "draft"
    draft.save()
    barrier = threading.Barrier(len(ready_fleet), timeout=20)
    real_probe = health.probe

    def probe_together(*args, **kwargs):
        barrier.wait()  # breaks (and that appliance counts as an error) unless all three probe at once
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(health, "probe", probe_together)
    counts = check_all(max_workers=8)
    assert {k: counts[k] for k in ("checked", "ready", "warnings", "unreachable", "skipped", "errors")} == {
        "checked": 3, "ready": 3, "warnings": 0, "unreachable": 0, "skipped": 0, "errors": 0}
    for appliance in appliances:
        appliance.refresh_from_db()
        assert appliance.state == "ready" and appliance.health_checked is not None and appliance.engine_version
    draft.refresh_from_db()
    assert draft.state == "draft" and draft.health_checked is None

    monkeypatch.setattr(health, "probe", real_probe)
    Appliance.objects.filter(pk=appliances[0].pk).update(port=2222)  # nothing listens there: refused
    with open(var_dir() / "health-round.lock", "a") as lock:  # a round is still running
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            assert health.health_round_task() == {"skipped_round": True,
                                                  "reason": "The previous health round is still running."}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    counts = health.health_round_task()
    assert (counts["checked"], counts["ready"], counts["unreachable"]) == (3, 2, 1)
    assert Appliance.objects.get(pk=appliances[0].pk).state == "unreachable"


def test_the_health_schedule_exists_after_migrate_and_is_idempotent(db, settings):
    from django.apps import apps
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="appliance health")
    assert schedule.func == "appliances.health.health_round_task"
    assert callable(getattr(importlib.import_module("appliances.health"), schedule.func.rsplit(".", 1)[1]))
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == settings.VAFLEET_HEALTH_MINUTES == 5
    assert schedule.repeats == -1
    migration = importlib.import_module("appliances.migrations.0002_health_schedule")
    settings.VAFLEET_HEALTH_MINUTES = 7
    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)
    assert list(Schedule.objects.filter(name="appliance health").values_list("minutes", flat=True)) == [7]

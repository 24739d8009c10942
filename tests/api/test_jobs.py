"""Backup jobs, runs, tasks, restore points and restores through the API only, as an automation user does it.

The full flow runs against a lab through the built-in local appliance: an administrator creates a
repository and a job, an operator runs it, the queued work is run as a worker runs it, the client
polls the run, reads tasks and their events, restores a point as a new VM, and the restored disks
are compared with the source's.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from inventory.connectors.lab import LabConnector, seed
from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from inventory.sync import sync_connection
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task, TaskEvent
from tests.api.fixtures import unique_name
from tests.api.test_lab_end_to_end import run_queued

PASSPHRASE = "Repo-Passphrase-8120"
JOBS = "/api/jobs/jobs/"
RUNS = "/api/jobs/runs/"
TASKS = "/api/jobs/tasks/"
POINTS = "/api/jobs/restore-points/"


@pytest.fixture
def lab(tmp_path, transactional_db):
    seed(tmp_path / "lab", vms=6, disk_size=4 << 20)
    connection = Connection.objects.create(name=unique_name("Lab"), kind="lab",
                                           options={"root": str(tmp_path / "lab")})
    assert sync_connection(connection.pk).ok
    call_command("fleet", "local", "--connection", connection.name)
    return connection


@pytest.fixture
def admin_api(api_client_for):
    return api_client_for("administrator")


@pytest.fixture
def operator_api(api_client_for):
    return api_client_for("operator")


@pytest.fixture
def viewer_api(api_client_for):
    return api_client_for("viewer")


def test_automation_flow_backup_then_restore_as_a_new_vm(lab, tmp_path, admin_api, operator_api,
                                                          django_capture_on_commit_callbacks):
    # An administrator creates a local repository and a job for 3 VMs.
    created = admin_api.post("/api/jobs/repositories/", {
        "name": "lab repo", "kind": "local", "path": str(tmp_path / "repo"), "passphrase": PASSPHRASE,
    }, format="json")
    assert created.status_code == 201, created.json()
    repository = created.json()["id"]
    vms = admin_api.get("/api/inventory/vms/", {"connection": lab.pk, "ordering": "name", "limit": 3}).json()
    chosen = [vm["id"] for vm in vms["results"]]
    assert len(chosen) == 3
    job_name = unique_name("nightly")
    job = admin_api.post(JOBS, {"name": job_name, "repository": repository, "vms": chosen,
                                "schedule": "0 2 * * *", "keep_last": 3}, format="json")
    assert job.status_code == 201, job.json()
    job = job.json()
    assert job["next_run"] and job["last_run"] is None and job["rules"] == {"hosts": [], "folders": [], "name": ""}
    selected = admin_api.get(f"{JOBS}{job['id']}/vms/").json()
    assert sorted(vm["id"] for vm in selected["results"]) == sorted(chosen)

    # An operator runs it: 202 with the queued run, driven by a worker.
    with django_capture_on_commit_callbacks(execute=True):
        started = operator_api.post(f"{JOBS}{job['id']}/run/")
    assert started.status_code == 202, started.json()
    run = started.json()
    assert (run["state"], run["task_count"], run["trigger"]) == ("queued", 3, "manual")
    assert run["created_by"] == operator_api.user.username
    assert run_queued(f"job {job_name} run #{run['id']}") == 1

    for _ in range(50):  # the client polls until the run has ended
        run = operator_api.get(f"{RUNS}{run['id']}/").json()
        if run["state"] not in ("queued", "running"):
            break
    assert run["state"] == "succeeded", [(t["vm_name"], t["message"]) for t in run["tasks"]]
    assert run["tasks_succeeded"] == 3 and run["finished"]
    assert admin_api.get(f"{JOBS}{job['id']}/").json()["last_run"]["state"] == "succeeded"
    assert [r["id"] for r in operator_api.get(RUNS, {"job": job["id"], "state": "succeeded"}).json()["results"]] \
        == [run["id"]]

    tasks = operator_api.get(TASKS, {"run": run["id"], "kind": "backup"}).json()
    assert tasks["count"] == 3
    for task in tasks["results"]:
        assert task["state"] == "succeeded" and task["appliance_name"] == "local-appliance"
        assert task["mode"] in ("hotadd", "network") and task["mode_reason"]
        assert task["bytes_total"] > 0 and task["percent"] == 100.0 and task["restore_point"]
        body = operator_api.get(f"{TASKS}{task['id']}/events/").json()
        seqs = [e["seq"] for e in body["events"]]
        assert seqs == list(range(1, len(seqs) + 1)) and body["last_seq"] == seqs[-1] and not body["more"]
        types = [e["type"] for e in body["events"]]
        assert types.count("result") == 1 and "phase" in types
        progress = [e["data"] for e in body["events"] if e["type"] == "progress"]
        assert progress and {"done", "total"} <= set(progress[0])
        # Polling from a sequence number gives only what came after it, in order.
        tail = operator_api.get(f"{TASKS}{task['id']}/events/", {"after": seqs[2], "limit": 2}).json()
        assert [e["seq"] for e in tail["events"]] == seqs[3:5] and tail["more"] is (len(seqs) > 5)

    points = operator_api.get(POINTS, {"repository": repository}).json()
    assert points["count"] == 3
    source_vm = VirtualMachine.objects.get(pk=chosen[0])
    point = operator_api.get(POINTS, {"vm": source_vm.pk}).json()["results"][0]
    assert point["kind"] == "full" and point["display_name"] == source_vm.name
    assert point["disks"] and point["size_bytes"] == (4 << 20) * len(point["disks"])

    # Restore it as a new VM on the source's host.
    datastore = Datastore.objects.filter(hosts=source_vm.host).order_by("-free_bytes").first()
    network = Network.objects.filter(hosts=source_vm.host).order_by("name").first()
    new_name = f"{source_vm.name}-restored"
    with django_capture_on_commit_callbacks(execute=True):
        restore = operator_api.post(f"{POINTS}{point['id']}/restore/", {
            "mode": "new_vm", "name": new_name, "host": source_vm.host_id, "datastore": datastore.pk,
            "network": network.pk,
        }, format="json")
    assert restore.status_code == 202, restore.json()
    restore = restore.json()
    assert (restore["kind"], restore["state"], restore["restore_point"]) == ("restore", "queued", point["id"])
    assert run_queued(f"restore #{restore['id']}") == 1
    restore = operator_api.get(f"{TASKS}{restore['id']}/").json()
    assert restore["state"] == "succeeded", restore["message"]
    events = operator_api.get(f"{TASKS}{restore['id']}/events/").json()["events"]
    assert any(e["type"] == "result" for e in events)

    connector = LabConnector(root=lab.options["root"])
    source = [connector.disk_digest(source_vm.moref, d["key"]) for d in connector.vm_disks(source_vm.moref)]
    new_vm = connector.find_vm(new_name)
    restored = [connector.disk_digest(new_vm, d["key"]) for d in connector.vm_disks(new_vm)]
    assert restored == source and len(source) == len(point["disks"])

    # A finished run cannot be cancelled: 409 with a sentence.
    refused = operator_api.post(f"{RUNS}{run['id']}/cancel/")
    assert refused.status_code == 409
    assert "has already ended" in refused.json()["detail"] and refused.json()["code"] == "nothing_to_do"


def test_restore_destination_is_checked_before_anything_is_queued(lab, tmp_path, operator_api):
    repository = Repository.objects.create(name="r", kind="local", path=str(tmp_path / "repo"), passphrase=PASSPHRASE)
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    point = RestorePoint.objects.create(repository=repository, rp_id="rp-1", vm=vm, vm_name=vm.name, kind="full",
                                        taken="2026-01-01T00:00:00Z", disks=[{"name": "disk-0", "size": 4 << 20}])
    elsewhere = Datastore.objects.filter(connection=lab).exclude(hosts=vm.host).first()
    assert elsewhere is not None
    lonely = Network.objects.create(connection=lab, datacenter=vm.datacenter, moref="network-lonely", name="Lonely")
    url = f"{POINTS}{point.pk}/restore/"
    base = {"mode": "new_vm", "name": "copy", "host": vm.host_id}

    response = operator_api.post(url, {**base, "datastore": elsewhere.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["datastore"] == [f"Host {vm.host.name} does not mount datastore {elsewhere.name}: "
                                            "choose a datastore the host mounts."]
    mounted = Datastore.objects.filter(hosts=vm.host).first()
    response = operator_api.post(url, {**base, "datastore": mounted.pk, "network": lonely.pk}, format="json")
    assert response.status_code == 400 and "is not available on host" in response.json()["network"][0]
    response = operator_api.post(url, {**base, "name": "  ", "datastore": mounted.pk}, format="json")
    assert response.status_code == 400 and "Enter the name of the new VM" in response.json()["name"][0]
    response = operator_api.post(url, {**base, "name": vm.name, "datastore": mounted.pk}, format="json")
    assert response.status_code == 400 and "already exists" in response.json()["name"][0]
    response = operator_api.post(url, {"mode": "folder", "folder": "relative/path"}, format="json")
    assert response.status_code == 400 and "absolute path" in response.json()["folder"][0]
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()


@pytest.fixture
def inventory(synced):
    return synced


@pytest.fixture
def repo(db):
    return Repository.objects.create(name="repo", kind="local", path="/srv/vafleet/repo", passphrase=PASSPHRASE)


def test_job_rules_and_sentences(inventory, repo, admin_api):
    host = Host.objects.filter(connection=inventory).order_by("name").first()
    bad = admin_api.post(JOBS, {"name": "j", "repository": repo.pk, "vms": [], "schedule": "every night"},
                         format="json")
    assert bad.status_code == 400
    assert "is not a cron expression" in bad.json()["schedule"][0]
    assert "Choose at least one VM, or set a rule" in bad.json()["vms"][0]
    bad = admin_api.post(JOBS, {"name": "j", "repository": repo.pk, "rules": {"hosts": [999999]},
                                "keep_last": 0, "max_parallel": 0, "compression_level": 30}, format="json")
    assert bad.status_code == 400
    body = bad.json()
    assert "no host with id 999999" in body["rules"]["hosts"]
    assert "Keep at least the last restore point" in body["keep_last"][0]
    assert "between 1 and" in body["max_parallel"][0] and "between 1 (fastest)" in body["compression_level"][0]
    assert not BackupJob.objects.exists()

    made = admin_api.post(JOBS, {"name": "by rules", "repository": repo.pk, "schedule": "",
                                 "rules": {"hosts": [host.pk], "folders": ["/prod/"], "name": "vm-000*"}},
                          format="json")
    assert made.status_code == 201, made.json()
    job = made.json()
    assert job["rules"] == {"hosts": [host.pk], "folders": ["prod"], "name": "vm-000*"} and job["next_run"] is None
    selected = {vm["name"] for vm in admin_api.get(f"{JOBS}{job['id']}/vms/", {"limit": 100}).json()["results"]}
    expected = set(VirtualMachine.objects.filter(connection=inventory).filter(
        host=host).values_list("name", flat=True))
    expected |= set(VirtualMachine.objects.filter(folder="prod").values_list("name", flat=True))
    expected |= {f"vm-000{i}" for i in range(2, 10)}
    assert selected == expected

    changed = admin_api.patch(f"{JOBS}{job['id']}/", {"schedule": "30 1 * * 1-5", "enabled": False}, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["schedule"] == "30 1 * * 1-5" and changed.json()["next_run"] is None
    assert admin_api.patch(f"{JOBS}{job['id']}/", {"schedule": "61 * * * *"}, format="json").status_code == 400


def test_run_queues_one_task_per_vm_and_can_be_cancelled(inventory, repo, admin_api, operator_api,
                                                         django_capture_on_commit_callbacks):
    vms = list(VirtualMachine.objects.filter(connection=inventory).order_by("name")[:2])
    job = BackupJob.objects.create(name=unique_name("job"), repository=repo)
    job.vms.set(vms)
    started = operator_api.post(f"{JOBS}{job.pk}/run/")
    assert started.status_code == 202
    run = JobRun.objects.get(pk=started.json()["id"])
    assert run.tasks.count() == 2 and run.created_by == operator_api.user

    task = run.tasks.order_by("vm_name").first()
    assert operator_api.post(f"{TASKS}{task.pk}/cancel/").status_code == 202
    assert Task.objects.get(pk=task.pk).cancel_requested
    cancelled = operator_api.post(f"{RUNS}{run.pk}/cancel/")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    assert set(run.tasks.values_list("state", flat=True)) == {"cancelled"}
    again = operator_api.post(f"{TASKS}{task.pk}/cancel/")
    assert again.status_code == 409 and "has already ended" in again.json()["detail"]

    detail = operator_api.get(f"{RUNS}{run.pk}/").json()
    assert [t["vm_name"] for t in detail["tasks"]] == sorted(vm.name for vm in vms)
    assert operator_api.get(TASKS, {"vm": vms[0].pk}).json()["count"] == 1

    deleted = admin_api.delete(f"{JOBS}{job.pk}/")
    assert deleted.status_code == 409 and "run in progress" in deleted.json()["detail"]  # still marked running
    JobRun.objects.filter(pk=run.pk).update(state=JobRun.State.CANCELLED)
    assert admin_api.delete(f"{JOBS}{job.pk}/").status_code == 204
    assert JobRun.objects.get(pk=run.pk).job is None  # history stays


def test_an_empty_job_is_refused_with_409(inventory, repo, operator_api):
    job = BackupJob.objects.create(name="empty", repository=repo, rules={"name": "no-such-vm-*"})
    response = operator_api.post(f"{JOBS}{job.pk}/run/")
    assert response.status_code == 409 and "selects no VM" in response.json()["detail"]
    assert not JobRun.objects.exists()


def test_events_parameters_are_checked(inventory, repo, viewer_api):
    task = Task.objects.create(vm_name="x", repository=repo, last_seq=3)
    TaskEvent.objects.bulk_create(TaskEvent(task=task, seq=n, type="log", data={"message": str(n)}) for n in (1, 2, 3))
    assert [e["seq"] for e in viewer_api.get(f"{TASKS}{task.pk}/events/", {"after": 1}).json()["events"]] == [2, 3]
    for params in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}):
        response = viewer_api.get(f"{TASKS}{task.pk}/events/", params)
        assert response.status_code == 400 and "whole number" in response.json()["detail"], params


@pytest.mark.parametrize(("role", "method", "url", "expected"), [
    ("viewer", "post", "run", 403),
    ("viewer", "get", "detail", 200),
    ("operator", "post", "create", 403),
    ("operator", "patch", "detail", 403),
    ("operator", "delete", "detail", 403),
    ("viewer", "post", "cancel", 403),
])
def test_roles(inventory, repo, api_client_for, role, method, url, expected):
    vm = VirtualMachine.objects.filter(connection=inventory).first()
    job = BackupJob.objects.create(name="job", repository=repo)
    job.vms.set([vm])
    run = JobRun.objects.create(job=job, job_name=job.name)
    urls = {"run": f"{JOBS}{job.pk}/run/", "detail": f"{JOBS}{job.pk}/", "create": JOBS,
            "cancel": f"{RUNS}{run.pk}/cancel/"}
    body = {"name": "other", "repository": repo.pk, "vms": [vm.pk], "schedule": ""}
    response = getattr(api_client_for(role), method)(urls[url], body, format="json")
    assert response.status_code == expected, response.content[:300]
    if expected == 403:
        assert BackupJob.objects.get().name == "job" and JobRun.objects.count() == 1
        assert not JobRun.objects.filter(cancel_requested=True).exists()

"""Each role x each backup job, run, task and restore point endpoint (API and portal): viewers read,
operators also run, cancel and restore, administrators also create, change and delete jobs. Refused
calls change nothing and queue nothing."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from inventory.models import Datastore, VirtualMachine
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task
from tests.conftest import PASSWORD

ROLES = ("anonymous", None, "viewer", "operator", "administrator")
READ = {"anonymous": 401, None: 403, "viewer": 200, "operator": 200, "administrator": 200}
DENIED = {"anonymous": 401, None: 403, "viewer": 403}
OPERATE = {**DENIED, "operator": 202, "administrator": 202}
ADMIN_ONLY = {**DENIED, "operator": 403}

MATRIX = [
    ("get", "/api/jobs/jobs/", None, READ),
    ("get", "/api/jobs/jobs/{job}/", None, READ),
    ("get", "/api/jobs/jobs/{job}/vms/", None, READ),
    ("get", "/api/jobs/runs/", None, READ),
    ("get", "/api/jobs/runs/{run}/", None, READ),
    ("get", "/api/jobs/tasks/", None, READ),
    ("get", "/api/jobs/tasks/{task}/", None, READ),
    ("get", "/api/jobs/tasks/{task}/events/", None, READ),
    ("get", "/api/jobs/restore-points/", None, READ),
    ("get", "/api/jobs/restore-points/{point}/", None, READ),
    ("post", "/api/jobs/jobs/", "new", {**ADMIN_ONLY, "administrator": 201}),
    ("patch", "/api/jobs/jobs/{job}/", {"schedule": "0 3 * * *"}, {**ADMIN_ONLY, "administrator": 200}),
    ("delete", "/api/jobs/jobs/{job}/", None, {**ADMIN_ONLY, "administrator": 204}),
    ("post", "/api/jobs/jobs/{job}/run/", None, OPERATE),
    ("post", "/api/jobs/runs/{run}/cancel/", None, OPERATE),
    ("post", "/api/jobs/tasks/{task}/cancel/", None, OPERATE),
    # No appliance is ready here: an operator's restore is checked and refused with the sentence (400).
    ("post", "/api/jobs/restore-points/{point}/restore/", "restore", {**DENIED, "operator": 400,
                                                                      "administrator": 400}),
]


@pytest.fixture
def objects(synced):
    repo = Repository.objects.create(name="repo", kind="local", path="/srv/vafleet/repo",
                                     passphrase="Stored-Passphrase-1")
    vm = VirtualMachine.objects.order_by("name").first()
    job = BackupJob.objects.create(name="job", repository=repo)
    job.vms.set([vm])
    run = JobRun.objects.create(job=None, job_name="an older job")  # queued; its job was deleted
    task = Task.objects.create(run=run, vm=vm, vm_name=vm.name, repository=repo)
    point = RestorePoint.objects.create(repository=repo, rp_id="rp-1", vm=vm, vm_name=vm.uuid,
                                        taken="2026-01-01T00:00:00Z", disks=[{"name": "disk-0", "size": 1 << 20}])
    datastore = Datastore.objects.filter(hosts=vm.host).first()
    bodies = {
        "new": {"name": "new-job", "repository": repo.pk, "vms": [vm.pk]},
        "restore": {"mode": "new_vm", "name": "copy", "host": vm.host_id, "datastore": datastore.pk},
    }
    return {"job": job, "run": run, "task": task, "point": point, "bodies": bodies}


def _case_id(case) -> str:
    return f"{case[0].upper()} {case[1]}"


def _unchanged(objects) -> None:
    job = BackupJob.objects.get(pk=objects["job"].pk)
    assert job.schedule == "" and not BackupJob.objects.filter(name="new-job").exists()
    assert JobRun.objects.count() == 1 and not JobRun.objects.filter(cancel_requested=True).exists()
    assert Task.objects.count() == 1 and not Task.objects.filter(cancel_requested=True).exists()


@pytest.mark.parametrize("role", ROLES, ids=lambda r: str(r))
@pytest.mark.parametrize("case", MATRIX, ids=_case_id)
def test_api_role_gets_expected_status(case, role, objects, api_client_for):
    method, url, body, expected = case
    client = APIClient() if role == "anonymous" else api_client_for(role)
    if isinstance(body, str):
        body = objects["bodies"][body]
    url = url.format(**{k: getattr(v, "pk", None) for k, v in objects.items()})
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == expected[role], response.content[:300]
    if response.status_code in (400, 401, 403):
        _unchanged(objects)


PORTAL = [
    ("get", "/jobs/", READ),
    ("get", "/jobs/{job}/", READ),
    ("get", "/jobs/runs/{run}/", READ),
    ("get", "/jobs/tasks/{task}/", READ),
    ("get", "/jobs/restore-points/", READ),
    ("get", "/jobs/add/", {**ADMIN_ONLY, "administrator": 200}),
    ("get", "/jobs/{job}/edit/", {**ADMIN_ONLY, "administrator": 200}),
    ("get", "/jobs/vm-choices/", {**ADMIN_ONLY, "administrator": 200}),
    ("post", "/jobs/{job}/delete/", {**ADMIN_ONLY, "administrator": 302}),
    ("get", "/jobs/restore-points/{point}/restore/", {**DENIED, "operator": 200, "administrator": 200}),
    ("get", "/jobs/restore-points/host-choices/", {**DENIED, "operator": 200, "administrator": 200}),
    ("post", "/jobs/{job}/run/", {**DENIED, "operator": 302, "administrator": 302}),
    ("post", "/jobs/runs/{run}/cancel/", {**DENIED, "operator": 302, "administrator": 302}),
    ("post", "/jobs/tasks/{task}/cancel/", {**DENIED, "operator": 302, "administrator": 302}),
]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: str(r))
@pytest.mark.parametrize("case", PORTAL, ids=lambda c: f"{c[0].upper()} {c[1]}")
def test_portal_role_gets_expected_status(case, role, objects, make_user):
    method, url, expected = case
    client = Client()
    if role != "anonymous":
        assert client.login(username=make_user(role).username, password=PASSWORD)
    url = url.format(**{k: getattr(v, "pk", None) for k, v in objects.items()})
    response = getattr(client, method)(url)
    if role == "anonymous":
        assert response.status_code == 302 and "login" in response["Location"]
    else:
        assert response.status_code == expected[role], response.content[:300]
    refused = role in ("anonymous", None) or expected[role] == 403
    if refused and method == "post":
        _unchanged(objects)
        assert BackupJob.objects.filter(pk=objects["job"].pk).exists()

"""A lab connection through the API: test, sync (the queued task run as a worker runs it), then browse."""

from __future__ import annotations

from importlib import import_module

import pytest

from core.models import AuditEntry
from inventory.connectors.lab import seed
from tests.api.fixtures import take_queued, unique_name

URL = "/api/inventory/connections/"


@pytest.fixture
def lab_root(tmp_path):
    seed(tmp_path, vms=6, disk_size=1 << 20)
    return tmp_path


def run_queued(task_name: str) -> int:
    """Take this test's queued tasks from django-q2's broker and run them, as a worker process would."""
    tasks = take_queued(task_name)
    for task in tasks:
        module, _, name = task["func"].rpartition(".")
        getattr(import_module(module), name)(*task["args"], **task["kwargs"])
    return len(tasks)


def test_lab_connection_test_sync_and_browse(api_client_for, lab_root, django_capture_on_commit_callbacks):
    admin = api_client_for("administrator")
    name = unique_name("lab")
    created = admin.post(URL, {"name": name, "kind": "lab", "options": {"root": str(lab_root)}}, format="json")
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]

    operator = api_client_for("operator")
    tested = operator.post(f"{URL}{pk}/test/")
    assert tested.status_code == 200, tested.json()
    assert tested.json()["product"] == "VA Fleet lab"

    with django_capture_on_commit_callbacks(execute=True):
        assert operator.post(f"{URL}{pk}/sync/").status_code == 202
    assert run_queued(f"sync {name}") == 1

    connection = admin.get(f"{URL}{pk}/").json()
    assert connection["status"] == "ok", connection["status_message"]
    assert connection["product"] == "VA Fleet lab"
    vms = admin.get("/api/inventory/vms/", {"connection": pk, "limit": 100}).json()
    assert vms["count"] == 6
    assert all(vm["host_name"].endswith(".lab.local") for vm in vms["results"])
    detail = admin.get(f"/api/inventory/vms/{vms['results'][0]['id']}/").json()
    assert detail["disks"] and detail["disks"][0]["capacity_bytes"] == 1 << 20
    stores = {d["name"]: d for d in admin.get("/api/inventory/datastores/", {"connection": pk}).json()["results"]}
    assert len(stores["shared-nfs-01"]["hosts"]) == 4
    assert [h["name"] for h in stores["local-esx-01"]["hosts"]] == ["esx-01.lab.local"]

    sync_entry = AuditEntry.objects.filter(action="operation", message__startswith="sync: Synced").get()
    assert sync_entry.username == operator.user.username  # the worker acts for the user who asked


def test_lab_folder_gone_is_a_sentence(api_client_for, tmp_path):
    folder = tmp_path / "lab"
    folder.mkdir()
    admin = api_client_for("administrator")
    body = {"name": "lab", "kind": "lab", "options": {"root": str(folder)}}
    pk = admin.post(URL, body, format="json").json()["id"]
    folder.rmdir()
    response = admin.post(f"{URL}{pk}/test/")
    assert response.status_code == 502
    assert str(folder) in response.json()["detail"]

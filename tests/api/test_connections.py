"""Connections through the API: create, validate, update, delete, test and sync."""

from __future__ import annotations

import pytest

from core.models import AuditEntry
from inventory.models import Connection
from tests.api.fixtures import HYPERVISOR_PASSWORD, closed_loopback_port, take_queued, unique_name

URL = "/api/inventory/connections/"
THUMBPRINT = ":".join(f"{b:02x}" for b in range(32))


@pytest.fixture
def admin_api(api_client_for):
    return api_client_for("administrator")


def vsphere(**overrides) -> dict:
    body = {
        "name": "vc-prod", "kind": "vsphere", "host": "127.0.0.1", "port": closed_loopback_port(),
        "username": "administrator@vsphere.local", "password": HYPERVISOR_PASSWORD,
    }
    body.update(overrides)
    return body


def test_create_returns_connection_without_password(admin_api):
    response = admin_api.post(URL, vsphere(tls_thumbprint=THUMBPRINT), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "password" not in body
    assert body["has_password"] is True
    assert body["status"] == "new"
    assert body["kind_label"] == "VMware vCenter / ESXi"
    assert body["tls_thumbprint"] == THUMBPRINT.upper()  # normalised for comparison with the server's
    saved = Connection.objects.get(pk=body["id"])
    assert saved.password == HYPERVISOR_PASSWORD


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"kind": "hyperv"}, "kind", "Unknown connection type 'hyperv'"),
        ({"host": ""}, "host", "Enter the address of the vCenter or ESXi host"),
        ({"host": "https://vc.example.com/sdk"}, "host", "without http:// or a path"),
        ({"username": ""}, "username", "Enter the user name"),
        ({"password": ""}, "password", "Enter the password of this user."),
        ({"kind": "lab", "options": {"root": "relative/lab"}}, "options", "absolute path"),
        ({"kind": "lab", "options": {"root": "/nonexistent/lab"}}, "options", "seed a lab there first"),
        ({"port": 0}, "port", "between 1 and 65535"),
        ({"port": 70000}, "port", "between 1 and 65535"),
        ({"port": "https"}, "port", "whole number"),
        ({"tls_thumbprint": "AA:BB:CC"}, "tls_thumbprint", "32 hex byte pairs"),
        ({"tls_thumbprint": THUMBPRINT + ":00"}, "tls_thumbprint", "32 hex byte pairs"),
        ({"tls_thumbprint": THUMBPRINT.replace(":", "-")}, "tls_thumbprint", "separated by colons"),
        ({"tls_thumbprint": "ZZ" + THUMBPRINT[2:]}, "tls_thumbprint", "SHA-256 fingerprint"),
        ({"options": ["a"]}, "options", "must be a JSON object"),
        ({"name": ""}, "name", "may not be blank"),
    ],
)
def test_bad_input_is_refused_with_a_sentence(admin_api, overrides, field, words):
    response = admin_api.post(URL, vsphere(**overrides), format="json")
    assert response.status_code == 400
    errors = response.json()[field]
    message = errors if isinstance(errors, str) else " ".join(errors)
    assert words in message
    assert not Connection.objects.exists()


@pytest.mark.parametrize("written", [THUMBPRINT.replace(":", ""), THUMBPRINT.replace(":", " "), f" {THUMBPRINT} "])
def test_thumbprint_is_stored_in_one_form(admin_api, written):
    response = admin_api.post(URL, vsphere(tls_thumbprint=written), format="json")
    assert response.status_code == 201, response.json()
    assert Connection.objects.get().tls_thumbprint == THUMBPRINT.upper()


def test_lab_connection_needs_no_host(admin_api):
    response = admin_api.post(URL, {"name": "lab", "kind": "lab"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["has_password"] is False


def test_duplicate_name_is_refused(admin_api, connection):
    response = admin_api.post(URL, vsphere(name=connection.name), format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["name"][0]


def test_update_without_password_keeps_it(admin_api, connection):
    response = admin_api.patch(f"{URL}{connection.pk}/", {"username": "backup@vsphere.local"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["has_password"] is True
    connection.refresh_from_db()
    assert connection.username == "backup@vsphere.local"
    assert connection.password == HYPERVISOR_PASSWORD


def test_update_with_blank_password_keeps_it(admin_api, connection):
    response = admin_api.put(f"{URL}{connection.pk}/", vsphere(name=connection.name, password=""), format="json")
    assert response.status_code == 200, response.json()
    connection.refresh_from_db()
    assert connection.password == HYPERVISOR_PASSWORD


def test_update_with_password_replaces_it(admin_api, connection):
    response = admin_api.patch(f"{URL}{connection.pk}/", {"password": "n3w-secret"}, format="json")
    assert response.status_code == 200
    assert "n3w-secret" not in response.content.decode()
    connection.refresh_from_db()
    assert connection.password == "n3w-secret"


def test_update_validates_against_stored_kind(admin_api, connection):
    response = admin_api.patch(f"{URL}{connection.pk}/", {"host": ""}, format="json")
    assert response.status_code == 400
    assert "Enter the address" in response.json()["host"][0]


def test_status_fields_are_read_only(admin_api, connection):
    admin_api.patch(f"{URL}{connection.pk}/", {"status": "ok", "product": "fake"}, format="json")
    connection.refresh_from_db()
    assert (connection.status, connection.product) == ("new", "")


def test_delete(admin_api, connection):
    assert admin_api.delete(f"{URL}{connection.pk}/").status_code == 204
    assert not Connection.objects.exists()


def test_filter_and_search(admin_api, connection):
    Connection.objects.create(name="lab", kind="lab")
    assert [c["name"] for c in admin_api.get(URL, {"kind": "lab"}).json()["results"]] == ["lab"]
    assert [c["name"] for c in admin_api.get(URL, {"q": "vcenter"}).json()["results"]] == ["vcenter-1"]
    assert [c["name"] for c in admin_api.get(URL, {"search": "127.0"}).json()["results"]] == ["vcenter-1"]
    assert [c["name"] for c in admin_api.get(URL, {"ordering": "-name"}).json()["results"]] == ["vcenter-1", "lab"]


def test_test_of_unreachable_server_says_what_failed(api_client_for, connection):
    response = api_client_for("operator").post(f"{URL}{connection.pk}/test/")
    assert response.status_code == 502
    body = response.json()
    assert body["code"]
    assert len(body["detail"]) > 20 and body["detail"].endswith(".")


def test_sync_is_queued_once(api_client_for, connection, django_capture_on_commit_callbacks):
    connection.name = unique_name("vc")
    connection.save()
    client = api_client_for("operator")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{URL}{connection.pk}/sync/")
    assert response.status_code == 202
    assert response.json()["detail"] == f"Sync of {connection.name} queued."
    connection.refresh_from_db()
    assert connection.status == Connection.Status.SYNCING

    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(f"{URL}{connection.pk}/sync/")
    assert again.status_code == 409
    assert again.json()["detail"] == f"A sync of {connection.name} is already running; wait for it to finish."
    # Exactly one task waits in django-q2's broker for a worker.
    [task] = take_queued(f"sync {connection.name}")
    assert task["func"] == "inventory.tasks.sync_connection_task"
    assert tuple(task["args"]) == (connection.pk, client.user.username)
    requested = AuditEntry.objects.filter(action="operation", message="sync requested")
    assert [e.username for e in requested] == [client.user.username]


def test_unknown_connection_is_404(admin_api, db):
    assert admin_api.post(f"{URL}999/test/").status_code == 404

"""Every change through the API or the admin leaves an audit entry: who, what, which object, from where."""

from __future__ import annotations

import pytest

from core.models import AuditEntry
from inventory.models import Connection
from tests.api.fixtures import HYPERVISOR_PASSWORD, closed_loopback_port
from tests.conftest import PASSWORD

URL = "/api/inventory/connections/"


def entries(action: str, obj_id) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action, object_type="inventory.Connection", object_id=str(obj_id)))


def assert_attributed(entry: AuditEntry, username: str, via: str) -> None:
    assert (entry.username, entry.user.username, entry.remote_addr, entry.via) == (username, username, "127.0.0.1", via)


def test_api_create_update_delete_are_audited(api_client_for):
    client = api_client_for("administrator")
    body = {"name": "vc-a", "kind": "vsphere", "host": "127.0.0.1", "port": closed_loopback_port(), "username": "u",
            "password": "p1"}
    pk = client.post(URL, body, format="json").json()["id"]
    client.patch(f"{URL}{pk}/", {"host": "localhost"}, format="json")
    client.delete(f"{URL}{pk}/")
    created, updated, deleted = entries("create", pk), entries("update", pk), entries("delete", pk)
    assert len(created) == len(updated) == len(deleted) == 1
    for entry in (created[0], updated[0], deleted[0]):
        assert_attributed(entry, client.user.username, "api")
        assert entry.object_repr == "vc-a"
    assert updated[0].changes["host"] == ["127.0.0.1", "localhost"]


def test_api_password_change_is_audited_without_the_value(api_client_for, connection):
    client = api_client_for("administrator")
    client.patch(f"{URL}{connection.pk}/", {"password": "Rotated-Secret-1"}, format="json")
    [entry] = entries("update", connection.pk)
    assert_attributed(entry, client.user.username, "api")
    assert "password" in entry.changes
    assert "Rotated-Secret-1" not in str(entry.changes)


def test_api_operations_are_audited(api_client_for, connection, django_capture_on_commit_callbacks):
    client = api_client_for("operator")
    client.post(f"{URL}{connection.pk}/test/")
    with django_capture_on_commit_callbacks():
        client.post(f"{URL}{connection.pk}/sync/")
    [sync] = AuditEntry.objects.filter(action="operation", message="sync requested")
    assert_attributed(sync, client.user.username, "api")
    assert sync.object_id == str(connection.pk)


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("support", password=PASSWORD)
    client.force_login(user)
    return client


def admin_form(**overrides) -> dict:
    form = {
        "name": "vc-admin", "kind": "vsphere", "host": "127.0.0.1", "port": "443", "username": "root",
        "password": HYPERVISOR_PASSWORD, "options": "{}", "tls_thumbprint": "",
    }
    form.update(overrides)
    return form


def test_admin_create_change_delete_are_audited(admin_client):
    response = admin_client.post("/admin/inventory/connection/add/", admin_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    conn = Connection.objects.get(name="vc-admin")
    assert conn.password == HYPERVISOR_PASSWORD
    admin_client.post(f"/admin/inventory/connection/{conn.pk}/change/", admin_form(port="8443", password=""))
    conn.refresh_from_db()
    assert (conn.port, conn.password) == (8443, HYPERVISOR_PASSWORD)  # blank keeps the password
    admin_client.post(f"/admin/inventory/connection/{conn.pk}/delete/", {"post": "yes"})
    assert not Connection.objects.exists()
    created, updated, deleted = entries("create", conn.pk), entries("update", conn.pk), entries("delete", conn.pk)
    assert len(created) == len(updated) == len(deleted) == 1
    for entry in (created[0], updated[0], deleted[0]):
        assert_attributed(entry, "support", "admin")
    assert updated[0].changes["port"] == [443, 8443]
    assert "password" not in updated[0].changes


def test_admin_user_role_change_is_audited(admin_client, make_user):
    user = make_user("viewer")
    from django.contrib.auth.models import Group

    operator = Group.objects.get(name="operator")
    response = admin_client.post(
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": user.username, "is_active": "on", "groups": [operator.pk],
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    changes = AuditEntry.objects.filter(object_type="auth.User", object_id=str(user.pk), via="admin")
    assert any("groups" in " ".join(e.changes) for e in changes)
    assert all(e.username == "support" and e.remote_addr == "127.0.0.1" for e in changes)


def test_admin_bulk_delete_is_audited_per_connection(admin_client):
    first = Connection.objects.create(name="vc-1", kind="lab")
    second = Connection.objects.create(name="vc-2", kind="lab")
    action = {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"}
    response = admin_client.post("/admin/inventory/connection/", action)
    assert response.status_code == 302
    assert not Connection.objects.exists()
    for conn in (first, second):
        [entry] = entries("delete", conn.pk)
        assert_attributed(entry, "support", "admin")

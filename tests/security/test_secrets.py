"""The hypervisor password: encrypted at rest, never in API output, admin pages, the audit log or logs."""

from __future__ import annotations

import json
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection as db
from rest_framework.test import APIClient

from core import secrets
from core.models import AuditEntry
from inventory.models import Connection
from tests.api.fixtures import HYPERVISOR_PASSWORD
from tests.conftest import PASSWORD

URL = "/api/inventory/connections/"


@pytest.fixture
def superuser_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password=PASSWORD))
    return client


@pytest.fixture
def other_key(settings):
    """The secrets key replaced by another one, as after a lost or wrongly restored key file."""
    secrets._fernet.cache_clear()
    settings.VAFLEET_SECRETS_KEY = Fernet.generate_key().decode()
    yield
    secrets._fernet.cache_clear()


def raw_password_column(pk: int) -> str:
    with db.cursor() as cursor:
        cursor.execute("SELECT password FROM inventory_connection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_password_is_stored_encrypted(connection):
    raw = raw_password_column(connection.pk)
    assert raw.startswith("fernet:")
    assert HYPERVISOR_PASSWORD not in raw
    assert Connection.objects.get(pk=connection.pk).password == HYPERVISOR_PASSWORD
    assert HYPERVISOR_PASSWORD not in repr(Connection.objects.get(pk=connection.pk).password)


def test_password_never_in_api_output(api_client_for, connection):
    client = api_client_for("administrator")
    new = {"name": "b", "kind": "vsphere", "host": "h", "username": "u"}
    responses = [
        client.get(URL),
        client.get(f"{URL}{connection.pk}/"),
        client.post(URL, {**new, "password": HYPERVISOR_PASSWORD}, format="json"),
        client.patch(f"{URL}{connection.pk}/", {"password": HYPERVISOR_PASSWORD + "2"}, format="json"),
        client.put(
            f"{URL}{connection.pk}/", {"name": "c", "kind": "vsphere", "host": "h", "username": "u"}, format="json"
        ),
        client.post(f"{URL}{connection.pk}/test/"),
        client.get("/api/audit/"),
        client.get("/api/schema/"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 201, 200, 200, 502, 200, 200]
    for response in responses:
        assert HYPERVISOR_PASSWORD not in response.content.decode()
        assert "fernet:" not in response.content.decode()


def test_password_never_in_admin_pages(superuser_client, connection):
    for url in (
        "/admin/inventory/connection/",
        f"/admin/inventory/connection/{connection.pk}/change/",
        f"/admin/inventory/connection/{connection.pk}/history/",
        "/admin/core/auditentry/",
        f"/admin/core/auditentry/{AuditEntry.objects.first().pk}/change/",
    ):
        page = superuser_client.get(url).content.decode()
        assert HYPERVISOR_PASSWORD not in page, url
        assert "fernet:" not in page, url


def test_password_never_in_audit_log(api_client_for, connection):
    client = api_client_for("administrator")
    client.patch(f"{URL}{connection.pk}/", {"password": "Second-Secret-99"}, format="json")
    client.delete(f"{URL}{connection.pk}/")
    stored = json.dumps(list(AuditEntry.objects.values()), default=str)
    assert AuditEntry.objects.filter(object_type="inventory.Connection").count() >= 2
    for secret in (HYPERVISOR_PASSWORD, "Second-Secret-99", "fernet:"):
        assert secret not in stored


def test_password_never_in_log_output(api_client_for, connection, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    client = api_client_for("administrator")
    client.post(f"{URL}{connection.pk}/test/")
    client.post(URL, {"name": "x", "kind": "vsphere", "host": "127.0.0.1", "password": "Third-9"}, format="json")
    client.patch(f"{URL}{connection.pk}/", {"port": 0, "password": "Fourth-9"}, format="json")  # refused: bad port
    logged = caplog.text + "".join(capsys.readouterr())
    for secret in (HYPERVISOR_PASSWORD, "Third-9", "Fourth-9"):
        assert secret not in logged


def test_api_token_key_never_in_audit_log(make_user):
    cache.clear()
    user = make_user("viewer")
    response = APIClient().post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json")
    key = response.json()["token"]
    entries = json.dumps(list(AuditEntry.objects.values()), default=str)
    assert key not in entries
    created = AuditEntry.objects.get(object_type="authtoken.Token", action="create")
    assert (created.username, created.remote_addr, created.via) == (user.username, "127.0.0.1", "api")
    assert created.object_repr == f"API token of {user.username}"


def test_wrong_secrets_key_gives_a_clear_error(connection, other_key):
    with pytest.raises(secrets.SecretUnreadable) as raised:
        Connection.objects.get(pk=connection.pk).password  # noqa: B018
    assert "VAFLEET_SECRETS_KEY" in str(raised.value)
    assert "restore the old key or enter the password again" in str(raised.value)


def test_wrong_secrets_key_in_api_is_a_sentence_and_lists_still_work(api_client_for, connection, other_key):
    client = api_client_for("operator")
    listing = client.get(URL)
    assert listing.status_code == 200
    assert listing.json()["results"][0]["has_password"] is True
    response = client.post(f"{URL}{connection.pk}/test/")
    assert response.status_code == 500
    assert response.json()["code"] == "secret_unreadable"
    assert "VAFLEET_SECRETS_KEY" in response.json()["detail"]


def test_malformed_secrets_key_is_reported_by_check(settings):
    settings.VAFLEET_SECRETS_KEY = "not-a-key"
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert "VAFLEET_SECRETS_KEY is not a valid key" in str(raised.value)


def test_after_key_loss_entering_the_password_again_repairs_the_connection(api_client_for, connection, other_key):
    client = api_client_for("administrator")
    assert client.patch(f"{URL}{connection.pk}/", {"username": "other"}, format="json").status_code == 200
    response = client.patch(f"{URL}{connection.pk}/", {"password": "Re-Entered-1"}, format="json")
    assert response.status_code == 200, response.content[:500]
    assert Connection.objects.get(pk=connection.pk).password == "Re-Entered-1"
    first, second = AuditEntry.objects.filter(action="update", object_type="inventory.Connection").order_by("id")
    assert "username" in first.changes and "password" not in first.changes
    assert "password" in second.changes


def test_user_password_hashes_never_in_audit_log(superuser_client, make_user):
    user = make_user("viewer")
    user.set_password("Changed-Login-77")
    user.save()
    superuser_client.post(
        f"/admin/auth/user/{user.pk}/password/", {"password1": "Admin-Set-88x", "password2": "Admin-Set-88x"}
    )
    user.refresh_from_db()
    assert user.check_password("Admin-Set-88x")
    entries = AuditEntry.objects.filter(object_type="auth.User", object_id=str(user.pk))
    assert sum("password" in e.changes for e in entries.filter(action="update")) == 2  # both changes recorded
    stored = json.dumps(list(entries.values()), default=str)
    assert "md5$" not in stored and "pbkdf2" not in stored and user.password not in stored


def test_wrong_secrets_key_admin_pages_still_render(superuser_client, connection, other_key):
    assert superuser_client.get("/admin/inventory/connection/").status_code == 200
    assert superuser_client.get(f"/admin/inventory/connection/{connection.pk}/change/").status_code == 200


def test_password_never_in_browsable_api(superuser_client, connection):
    for path in (URL, f"{URL}{connection.pk}/"):
        page = superuser_client.get(path, HTTP_ACCEPT="text/html")
        assert page.status_code == 200
        assert "text/html" in page["Content-Type"]
        assert HYPERVISOR_PASSWORD not in page.content.decode()

"""Each role x each API endpoint and method, with the status it must get.

Anonymous callers get 401; viewers read; operators also test and sync; administrators
also create, change and delete. Read-only endpoints answer 405 to writes once the role
would allow them, so the role check is seen to run first.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from core.models import AuditEntry
from inventory.models import Datacenter, Datastore, Host, Network, VirtualMachine
from tests.api.fixtures import closed_loopback_port

ROLES = ("anonymous", None, "viewer", "operator", "administrator")

READ = {"anonymous": 401, None: 403, "viewer": 200, "operator": 200, "administrator": 200}
ADMIN_ONLY = {"anonymous": 401, None: 403, "viewer": 403, "operator": 403}
OPERATE = {"anonymous": 401, None: 403, "viewer": 403}
READ_ONLY_WRITE = {**ADMIN_ONLY, "administrator": 405}

NEW_CONNECTION = {"name": "new-vc", "kind": "vsphere", "host": "127.0.0.1", "port": 1, "username": "u", "password": "p"}

# (method, url, body, expected by role); {conn}, {dc}, ... are filled with ids of the synced inventory.
MATRIX = [
    ("get", "/api/me/", None, {**READ, None: 200}),
    ("get", "/api/audit/", None, READ),
    ("get", "/api/audit/{audit}/", None, READ),
    ("post", "/api/audit/", {}, READ_ONLY_WRITE),
    ("delete", "/api/audit/{audit}/", None, READ_ONLY_WRITE),
    ("get", "/api/inventory/", None, READ),
    ("get", "/api/inventory/summary/", None, READ),
    ("post", "/api/inventory/summary/", {}, READ_ONLY_WRITE),
    ("get", "/api/inventory/connections/", None, READ),
    ("options", "/api/inventory/connections/", None, READ),
    ("head", "/api/inventory/vms/", None, READ),
    ("get", "/api/inventory/connections/{conn}/", None, READ),
    ("post", "/api/inventory/connections/", NEW_CONNECTION, {**ADMIN_ONLY, "administrator": 201}),
    ("put", "/api/inventory/connections/{conn}/", {**NEW_CONNECTION, "name": "renamed"},
     {**ADMIN_ONLY, "administrator": 200}),
    ("patch", "/api/inventory/connections/{conn}/", {"username": "other"}, {**ADMIN_ONLY, "administrator": 200}),
    ("delete", "/api/inventory/connections/{conn}/", None, {**ADMIN_ONLY, "administrator": 204}),
    ("post", "/api/inventory/connections/{conn}/test/", None, {**OPERATE, "operator": 502, "administrator": 502}),
    ("post", "/api/inventory/connections/{conn}/sync/", None, {**OPERATE, "operator": 202, "administrator": 202}),
    ("get", "/api/inventory/datacenters/", None, READ),
    ("get", "/api/inventory/datacenters/{dc}/", None, READ),
    ("get", "/api/inventory/clusters/", None, READ),
    ("get", "/api/inventory/hosts/", None, READ),
    ("get", "/api/inventory/hosts/{host}/", None, READ),
    ("patch", "/api/inventory/hosts/{host}/", {"name": "x"}, READ_ONLY_WRITE),
    ("get", "/api/inventory/datastores/", None, READ),
    ("get", "/api/inventory/datastores/{ds}/", None, READ),
    ("get", "/api/inventory/networks/", None, READ),
    ("get", "/api/inventory/networks/{net}/", None, READ),
    ("get", "/api/inventory/vms/", None, READ),
    ("get", "/api/inventory/vms/{vm}/", None, READ),
    ("post", "/api/inventory/vms/", {"name": "x"}, READ_ONLY_WRITE),
    ("delete", "/api/inventory/vms/{vm}/", None, READ_ONLY_WRITE),
    # The schema and docs describe the API, not its data: open to all, as the docs say.
    ("get", "/api/schema/", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/docs/", None, dict.fromkeys(ROLES, 200)),
]


def _case_id(case) -> str:
    method, url, _, _ = case
    return f"{method.upper()} {url}"


@pytest.fixture
def ids(synced) -> dict:
    AuditEntry.objects.create(action=AuditEntry.Action.OPERATION, message="seed")
    return {
        "conn": synced.pk,
        "dc": Datacenter.objects.get().pk,
        "host": Host.objects.first().pk,
        "ds": Datastore.objects.first().pk,
        "net": Network.objects.first().pk,
        "vm": VirtualMachine.objects.first().pk,
        "audit": AuditEntry.objects.first().pk,
    }


@pytest.mark.parametrize("role", ROLES, ids=lambda r: str(r))
@pytest.mark.parametrize("case", MATRIX, ids=_case_id)
def test_role_gets_expected_status(case, role, ids, api_client_for):
    method, url, body, expected = case
    client = APIClient() if role == "anonymous" else api_client_for(role)
    if "port" in (body or {}):
        body = {**body, "port": closed_loopback_port()}
    response = getattr(client, method)(url.format(**ids), body, format="json")
    assert response.status_code == expected[role], response.content[:300]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_denied_write_changes_nothing_and_says_why(role, synced, api_client_for):
    response = api_client_for(role).delete(f"/api/inventory/connections/{synced.pk}/")
    assert response.status_code == 403
    assert response.json()["detail"] == "Your role does not allow this."
    synced.refresh_from_db()


def test_session_login_gets_same_role_as_token(synced, make_user):
    """Session authentication (the portal's) is enforced with the same roles."""
    client = APIClient()
    client.force_login(make_user("viewer"))
    assert client.get("/api/inventory/vms/").status_code == 200
    assert client.post(f"/api/inventory/connections/{synced.pk}/sync/").status_code == 403


def test_inactive_user_token_is_refused(synced, api_client_for):
    client = api_client_for("administrator")
    client.user.is_active = False
    client.user.save()
    assert client.get("/api/inventory/vms/").status_code == 401

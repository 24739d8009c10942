"""Each role x each appliance API endpoint: viewers read, operators deploy, redeploy, check and upgrade,
administrators also create, change, remove and bulk-deploy. Refused calls change nothing."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from appliances.models import Appliance, FleetOperation
from inventory.models import Datastore, Host, Network, VirtualMachine
from tests.api.fixtures import GiB

ROLES = ("anonymous", None, "viewer", "operator", "administrator")
READ = {"anonymous": 401, None: 403, "viewer": 200, "operator": 200, "administrator": 200}
DENIED = {"anonymous": 401, None: 403, "viewer": 403}
ADMIN_ONLY = {**DENIED, "operator": 403}
PASSWORDS = {"root_password": "Root-Pass-9182!x", "user_password": "User-Pass-7731!y"}

# (method, url, body, expected by role); {va} is a draft appliance, {ready} a ready one, {op} an operation.
MATRIX = [
    ("get", "/api/appliances/", None, READ),
    ("get", "/api/appliances/{va}/", None, READ),
    ("get", "/api/appliances/operations/", None, READ),
    ("get", "/api/appliances/operations/{op}/", None, READ),
    ("get", "/api/appliances/protection/?vm={vm}", None, READ),
    ("post", "/api/appliances/", "new", {**ADMIN_ONLY, "administrator": 201}),
    ("patch", "/api/appliances/{va}/", {"vcpus": 4}, {**ADMIN_ONLY, "administrator": 200}),
    ("delete", "/api/appliances/{va}/", None, {**ADMIN_ONLY, "administrator": 202}),
    ("post", "/api/appliances/bulk/", "bulk", {**ADMIN_ONLY, "administrator": 202}),
    ("post", "/api/appliances/{va}/deploy/", None, {**DENIED, "operator": 202, "administrator": 202}),
    ("post", "/api/appliances/{ready}/redeploy/", None, {**DENIED, "operator": 202, "administrator": 202}),
    ("post", "/api/appliances/{ready}/check/", None, {**DENIED, "operator": 202, "administrator": 202}),
    ("post", "/api/appliances/upgrade/", {}, {**DENIED, "operator": 202, "administrator": 202}),
    ("delete", "/api/appliances/operations/{op}/", None, {**ADMIN_ONLY, "administrator": 405}),
]


@pytest.fixture
def ids(synced) -> dict:
    Datastore.objects.update(capacity_bytes=1024 * GiB, free_bytes=512 * GiB)
    hosts = list(Host.objects.order_by("name"))
    common = {"connection": synced, "datastore": Datastore.objects.get(name="shared-nfs"),
              "network": Network.objects.get(name="VM Network"), **PASSWORDS}
    draft = Appliance.objects.create(name="va-draft", hostname="va-draft", host=hosts[0], **common)
    ready = Appliance.objects.create(name="va-ready", hostname="va-ready", host=hosts[1], state="ready", **common)
    operation = FleetOperation.objects.create(kind="health", state="succeeded")
    new = {"name": "va-new", "hostname": "va-new", "connection": synced.pk, "host": hosts[2].pk,
           "datastore": common["datastore"].pk, "network": common["network"].pk, **PASSWORDS}
    bulk = {"connection": synced.pk, "hosts": [hosts[3].pk], "base_name": "bulk", "network_name": "VM Network",
            **PASSWORDS}
    return {"va": draft.pk, "ready": ready.pk, "op": operation.pk, "vm": VirtualMachine.objects.first().pk,
            "new": new, "bulk": bulk}


def _case_id(case) -> str:
    method, url, _, _ = case
    return f"{method.upper()} {url}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: str(r))
@pytest.mark.parametrize("case", MATRIX, ids=_case_id)
def test_role_gets_expected_status(case, role, ids, api_client_for):
    method, url, body, expected = case
    client = APIClient() if role == "anonymous" else api_client_for(role)
    body = ids[body] if isinstance(body, str) else body
    operations_before = FleetOperation.objects.count()
    response = getattr(client, method)(url.format(**ids), body, format="json")
    assert response.status_code == expected[role], response.content[:300]
    if response.status_code in (401, 403):
        assert FleetOperation.objects.count() == operations_before  # refused: nothing queued
        assert not Appliance.objects.filter(name__in=("va-new", "bulk-esx4")).exists()

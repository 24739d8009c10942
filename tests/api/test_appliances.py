"""The appliance API: CRUD with write-only passwords and validation.problems' sentences, fleet actions that
queue operations, removal refused (409) while busy, bulk deployment, protection and the operations."""

from __future__ import annotations

import pytest

from appliances.models import Appliance, FleetOperation
from inventory.models import Datastore, Host, Network, VirtualMachine
from inventory.sync import apply_inventory
from tests.api.fixtures import GiB, build_inventory, make_connection, take_queued

ROOT_PASSWORD = "Root-Pass-9182!x"
USER_PASSWORD = "User-Pass-7731!y"


@pytest.fixture
def inventory(synced):
    Datastore.objects.update(capacity_bytes=1024 * GiB, free_bytes=512 * GiB)
    hosts = list(Host.objects.order_by("name"))
    return {
        "connection": synced, "hosts": hosts, "shared": Datastore.objects.get(name="shared-nfs"),
        "local": {ds.name: ds for ds in Datastore.objects.exclude(name="shared-nfs")},
        "network": Network.objects.get(name="VM Network"),
    }


@pytest.fixture
def admin(api_client_for):
    return api_client_for("administrator")


def body(inv, **changes) -> dict:
    values = {
        "name": "va-api", "connection": inv["connection"].pk, "host": inv["hosts"][0].pk,
        "datastore": inv["local"]["local-1"].pk, "network": inv["network"].pk, "addressing": "static",
        "address": "10.2.0.10", "prefix": 24, "gateway": "10.2.0.1", "hostname": "va-api",
        "root_password": ROOT_PASSWORD, "user_password": USER_PASSWORD,
    }
    values.update(changes)
    return values


def make(inv, name: str = "va-1", host: int = 0, **fields) -> Appliance:
    values = {
        "name": name, "hostname": name, "connection": inv["connection"], "host": inv["hosts"][host],
        "datastore": inv["shared"], "network": inv["network"], "root_password": ROOT_PASSWORD,
        "user_password": USER_PASSWORD,
    }
    values.update(fields)
    appliance = Appliance.objects.create(**values)
    appliance.served_hosts.set([inv["hosts"][host]])
    return appliance


def test_create_read_update_with_write_only_passwords(admin, inventory):
    created = admin.post("/api/appliances/", body(inventory), format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert "root_password" not in data and "user_password" not in data
    assert data["served_hosts"] == [inventory["hosts"][0].pk] and data["state"] == "draft"
    appliance = Appliance.objects.get(pk=data["id"])
    assert appliance.root_password == ROOT_PASSWORD

    listing = admin.get("/api/appliances/").content.decode()
    assert "va-api" in listing and ROOT_PASSWORD not in listing and USER_PASSWORD not in listing

    changed = admin.patch(f"/api/appliances/{appliance.pk}/", {"vcpus": 4, "root_password": ""}, format="json")
    assert changed.status_code == 200, changed.json()
    appliance.refresh_from_db()
    assert appliance.vcpus == 4 and appliance.root_password == ROOT_PASSWORD  # blank keeps the stored one
    dhcp = admin.patch(f"/api/appliances/{appliance.pk}/", {"addressing": "dhcp"}, format="json")
    assert dhcp.json()["address"] is None


def test_problems_are_400s_by_field(admin, inventory):
    make(inventory, "va-1", addressing="static", address="10.2.0.10", prefix=24)
    response = admin.post("/api/appliances/", body(inventory, name="va-2", hostname="VA-1",
                                                   datastore=inventory["local"]["local-2"].pk,
                                                   user_password="short"), format="json")
    assert response.status_code == 400
    errors = response.json()
    assert errors["address"] == ["10.2.0.10 is already the address of appliance va-1."]
    assert errors["hostname"] == ["Host name 'VA-1' is already used by appliance va-1."]
    assert "does not mount datastore local-2" in errors["datastore"][0]
    assert any("too short" in e for e in errors["user_password"])
    missing = admin.post("/api/appliances/", body(inventory, root_password=""), format="json").json()
    assert missing["root_password"] == ["Enter a password for root."]
    assert Appliance.objects.count() == 1


def test_served_hosts_must_be_in_the_connection(admin, inventory):
    other = make_connection("vcenter-2")
    apply_inventory(other, build_inventory(vms=1, hosts=1))
    foreign = Host.objects.get(connection=other)
    response = admin.post("/api/appliances/", body(inventory, served_hosts=[foreign.pk]), format="json")
    assert response.status_code == 400
    assert "Served hosts must be in the appliance's connection" in response.json()["served_hosts"][0]


def test_actions_queue_operations(api_client_for, inventory, django_capture_on_commit_callbacks):
    operator = api_client_for("operator")
    draft = make(inventory)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/api/appliances/{draft.pk}/deploy/")
    assert response.status_code == 202
    operation = FleetOperation.objects.get(pk=response.json()["id"])
    assert operation.kind == "deploy" and operation.created_by == operator.user
    assert len(take_queued(f"fleet deploy #{operation.pk}")) == 1
    again = operator.post(f"/api/appliances/{draft.pk}/deploy/")
    assert again.status_code == 409 and "already takes part in an operation" in again.json()["detail"]

    ready = make(inventory, "va-ready", host=1, state=Appliance.State.READY)
    check = operator.post(f"/api/appliances/{ready.pk}/check/")
    assert check.status_code == 202 and check.json()["kind"] == "health"
    upgrade = operator.post("/api/appliances/upgrade/", {}, format="json")
    assert upgrade.status_code == 409  # va-ready is being checked
    detail = operator.get(f"/api/appliances/operations/{check.json()['id']}/").json()
    assert [i["appliance_name"] for i in detail["items"]] == ["va-ready"]
    assert operator.get("/api/appliances/operations/").json()["count"] == 2


def test_delete_is_refused_with_409_while_busy(admin, inventory):
    appliance = make(inventory, state=Appliance.State.READY, running_jobs=1)
    response = admin.delete(f"/api/appliances/{appliance.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "appliance_busy"
    assert "running 1 engine job(s)" in response.json()["detail"]
    assert Appliance.objects.filter(pk=appliance.pk).exists()
    Appliance.objects.filter(pk=appliance.pk).update(running_jobs=0)
    removed = admin.delete(f"/api/appliances/{appliance.pk}/")
    assert removed.status_code == 202 and removed.json()["kind"] == "remove"


def test_bulk_creates_all_or_nothing(admin, inventory):
    make(inventory, "bulk-esx2", host=1)
    request = {
        "connection": inventory["connection"].pk, "hosts": [h.pk for h in inventory["hosts"][:3]],
        "base_name": "bulk", "network_name": "VM Network", "root_password": ROOT_PASSWORD,
        "user_password": USER_PASSWORD,
    }
    refused = admin.post("/api/appliances/bulk/", request, format="json")
    assert refused.status_code == 400
    problems = refused.json()["problems"]
    assert list(problems) == ["esx2.lab.local"]
    assert problems["esx2.lab.local"]["name"] == ["An appliance named 'bulk-esx2' already exists."]
    assert Appliance.objects.count() == 1
    accepted = admin.post("/api/appliances/bulk/", {**request, "base_name": "va"}, format="json")
    assert accepted.status_code == 202, accepted.json()
    created = Appliance.objects.filter(name__startswith="va-").order_by("name")
    assert [a.name for a in created] == ["va-esx1", "va-esx2", "va-esx3"]
    assert [a.datastore.name for a in created] == ["local-1", "local-2", "local-3"]  # each host's largest
    assert [list(a.served_hosts.all()) for a in created] == [[h] for h in inventory["hosts"][:3]]
    assert FleetOperation.objects.get(pk=accepted.json()["id"]).items.count() == 3


def test_protection_of_a_vm(api_client_for, inventory):
    viewer = api_client_for("viewer")
    vm = VirtualMachine.objects.filter(host=inventory["hosts"][0]).first()
    make(inventory, state=Appliance.State.READY)
    options = viewer.get("/api/appliances/protection/", {"vm": vm.pk}).json()
    assert [(o["appliance"]["name"], o["mode"]) for o in options] == [("va-1", "hotadd")]
    assert "mounts every datastore" in options[0]["reason"]
    assert viewer.get("/api/appliances/protection/").status_code == 400

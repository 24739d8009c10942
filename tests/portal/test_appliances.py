"""The appliance pages: the form and its checks, the htmx-narrowed selects, bulk deployment (all or nothing),
the detail page's protection table, removal refused while busy, the roles, and the live fleet socket."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from appliances import live, services
from appliances.models import Appliance, FleetOperation
from inventory.consumers import FORBIDDEN
from inventory.models import Network
from tests.api.fixtures import take_queued
from vaproject.asgi import application

ROOT_PASSWORD = "Root-Pass-9182!x"
USER_PASSWORD = "User-Pass-7731!y"


def form_data(lab, **changes) -> dict:
    data = {
        "name": "va-1", "connection": lab.connection.pk, "host": lab.hosts[0].pk, "datastore": lab.locals[0].pk,
        "network": lab.networks[1].pk, "addressing": "static", "address": "10.0.0.10", "prefix": "24",
        "gateway": "10.0.0.1", "dns": "10.0.0.2, 10.0.0.3", "hostname": "va-1", "root_password": ROOT_PASSWORD,
        "root_password_confirm": ROOT_PASSWORD, "user_name": "vauser", "user_password": USER_PASSWORD,
        "user_password_confirm": USER_PASSWORD, "vcpus": "2", "memory_mb": "2048", "transport": "ssh",
    }
    data.update(changes)
    return data


def make_appliance(lab, name: str = "va-1", host: int = 0, **fields) -> Appliance:
    values = {
        "name": name, "hostname": name, "connection": lab.connection, "host": lab.hosts[host],
        "datastore": lab.locals[host], "network": lab.networks[0], "root_password": ROOT_PASSWORD,
        "user_password": USER_PASSWORD,
    }
    values.update(fields)
    appliance = Appliance.objects.create(**values)
    appliance.served_hosts.set([lab.hosts[host]])
    return appliance


def text(response) -> str:
    return html.unescape(response.content.decode())


def test_a_new_appliance_is_saved_as_a_draft_serving_its_host(admin, lab):
    response = admin.post("/appliances/add/", form_data(lab))
    appliance = Appliance.objects.get(name="va-1")
    assert response.status_code == 302 and response["Location"] == appliance.get_absolute_url()
    assert appliance.state == Appliance.State.DRAFT
    assert list(appliance.served_hosts.all()) == [lab.hosts[0]]
    assert (appliance.root_password, appliance.user_password) == (ROOT_PASSWORD, USER_PASSWORD)
    assert not FleetOperation.objects.exists()  # saving does not deploy


def test_passwords_never_reach_a_page(admin, lab):
    appliance = make_appliance(lab)
    for url in ("/appliances/", appliance.get_absolute_url(), f"/appliances/{appliance.pk}/edit/"):
        page = admin.get(url).content.decode()
        assert ROOT_PASSWORD not in page and USER_PASSWORD not in page, url
    detail = text(admin.get(appliance.get_absolute_url()))
    assert "Root password</dt><dd>set</dd>" in detail
    edit = admin.get(f"/appliances/{appliance.pk}/edit/").content.decode()
    assert 'type="password"' in edit and "Leave blank to keep the stored password." in edit


def test_each_problem_shows_at_its_field(admin, lab):
    make_appliance(lab, "va-1", address="10.0.0.10", addressing="static", prefix=24)
    isolated = Network.objects.create(connection=lab.connection, moref="net-iso", name="Isolated",
                                      datacenter=lab.datacenter)
    isolated.hosts.set([lab.hosts[2]])
    data = form_data(lab, name="va-2", hostname="VA-1", datastore=lab.locals[1].pk, network=isolated.pk,
                     root_password="password", root_password_confirm="password")
    response = admin.post("/appliances/add/", data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    page = text(response)
    expected = {
        "address": "10.0.0.10 is already the address of appliance va-1.",
        "hostname": "Host name 'VA-1' is already used by appliance va-1.",
        "datastore": "Host esx-0.example.test does not mount datastore local-1",
        "network": "Network Isolated is not available on host esx-0.example.test",
        "root_password": "Password for root: This password is too common.",
    }
    for field, sentence in expected.items():
        assert any(sentence in e for e in errors[field]), (field, errors.get(field))
        assert sentence in page, field
    assert Appliance.objects.count() == 1


def test_password_confirmation_must_match(admin, lab):
    response = admin.post("/appliances/add/", form_data(lab, user_password_confirm="Other-Pass-1234!"))
    assert "The two passwords for the non-root user differ" in text(response)
    assert not Appliance.objects.exists()


def test_editing_with_blank_passwords_keeps_the_stored_ones(admin, lab):
    appliance = make_appliance(lab)
    data = form_data(lab, name="va-1", vcpus="4", root_password="", root_password_confirm="", user_password="",
                     user_password_confirm="", addressing="dhcp")
    response = admin.post(f"/appliances/{appliance.pk}/edit/", data)
    assert response.status_code == 302, response.context["form"].errors
    appliance.refresh_from_db()
    assert appliance.vcpus == 4 and appliance.address is None  # DHCP: the static settings are dropped
    assert (appliance.root_password, appliance.user_password) == (ROOT_PASSWORD, USER_PASSWORD)


def test_save_and_deploy_queues_the_deployment(admin, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post("/appliances/add/", form_data(lab, deploy="1"))
    operation = FleetOperation.objects.get()
    assert response["Location"] == operation.get_absolute_url()
    assert operation.kind == FleetOperation.Kind.DEPLOY
    assert [i.appliance.name for i in operation.items.all()] == ["va-1"]
    (task,) = take_queued(f"fleet deploy #{operation.pk}")
    assert task["func"] == "appliances.tasks.run_operation_task" and task["args"][0] == operation.pk
    page = text(admin.get(operation.get_absolute_url()))
    assert f'id="item-{operation.items.get().pk}"' in page and "Queued" in page


def test_placement_offers_what_the_host_can_use(admin, lab):
    only_connection = text(admin.get("/appliances/placement/", {"connection": lab.connection.pk}))
    assert all(h.name in only_connection for h in lab.hosts)
    assert "shared-ds" not in only_connection  # no host chosen: no datastores yet
    response = admin.get("/appliances/placement/", {"connection": lab.connection.pk, "host": lab.hosts[1].pk})
    page = text(response)
    assert "shared-ds — 4,096.0 GiB free" in page and "local-1 — 400.0 GiB free" in page
    assert "local-0" not in page and "local-2" not in page
    assert "VM Network 1 (distributed port group, VLAN 11)" in page
    served = response.context["form"]["served_hosts"].value()
    assert [int(pk) for pk in served] == [lab.hosts[1].pk]  # one-to-one by default


def test_fleet_list_filters_by_state(admin, lab):
    make_appliance(lab, "va-ready", state=Appliance.State.READY, engine_version="1.4.0")
    make_appliance(lab, "va-draft", host=1)
    response = admin.get("/appliances/", {"state": "ready"}, headers={"HX-Request": "true", "HX-Target": "results"})
    rows = text(response)
    assert "va-ready" in rows and "1.4.0" in rows and "va-draft" not in rows
    assert "<html" not in rows  # the rows only
    assert "va-draft" in text(admin.get("/appliances/"))


def test_bulk_deploy_is_all_or_nothing(admin, lab):
    make_appliance(lab, "bulk-esx-1", host=1)
    data = {
        "connection": lab.connection.pk, "hosts": [h.pk for h in lab.hosts[:3]], "base_name": "bulk",
        "network_name": "VM Network 0", "datastore": "", "addressing": "dhcp", "root_password": ROOT_PASSWORD,
        "root_password_confirm": ROOT_PASSWORD, "user_name": "vauser", "user_password": USER_PASSWORD,
        "user_password_confirm": USER_PASSWORD, "vcpus": "2", "memory_mb": "2048",
    }
    page = text(admin.post("/appliances/bulk/", data))
    assert "Nothing was created" in page
    assert "esx-1.example.test" in page and "An appliance named 'bulk-esx-1' already exists." in page
    assert Appliance.objects.count() == 1

    only_on_0 = Network.objects.create(connection=lab.connection, moref="net-b", name="Backup",
                                       datacenter=lab.datacenter)
    only_on_0.hosts.set([lab.hosts[0]])
    page = text(admin.post("/appliances/bulk/", {**data, "hosts": [lab.hosts[0].pk, lab.hosts[2].pk],
                                                 "network_name": "Backup"}))
    assert "Host esx-2.example.test has no port group named 'Backup'." in page
    assert Appliance.objects.count() == 1


def test_bulk_deploy_gives_each_host_the_next_free_address(admin, lab, django_capture_on_commit_callbacks):
    make_appliance(lab, "other", host=3, addressing="static", address="10.1.0.11", prefix=24)
    data = {
        "connection": lab.connection.pk, "hosts": [h.pk for h in lab.hosts[:3]], "base_name": "va",
        "network_name": "VM Network 1", "datastore": lab.shared.pk, "addressing": "static",
        "first_address": "10.1.0.10", "prefix": "24", "gateway": "10.1.0.1", "dns": "10.1.0.2",
        "root_password": ROOT_PASSWORD, "root_password_confirm": ROOT_PASSWORD, "user_name": "vauser",
        "user_password": USER_PASSWORD, "user_password_confirm": USER_PASSWORD, "vcpus": "2", "memory_mb": "2048",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post("/appliances/bulk/", data)
    operation = FleetOperation.objects.get()
    assert response["Location"] == operation.get_absolute_url()
    created = {a.name: a for a in Appliance.objects.exclude(name="other").prefetch_related("served_hosts")}
    assert {n: a.address for n, a in created.items()} == {
        "va-esx-0": "10.1.0.10", "va-esx-1": "10.1.0.12", "va-esx-2": "10.1.0.13"}
    for n in range(3):
        appliance = created[f"va-esx-{n}"]
        assert list(appliance.served_hosts.all()) == [lab.hosts[n]]
        assert appliance.datastore == lab.shared and appliance.network == lab.networks[1]
    assert operation.items.count() == 3
    assert len(take_queued(f"fleet deploy #{operation.pk}")) == 1


def test_bulk_placement_offers_port_groups_of_every_chosen_host(admin, lab):
    only_on_0 = Network.objects.create(connection=lab.connection, moref="net-b", name="Backup",
                                       datacenter=lab.datacenter)
    only_on_0.hosts.set([lab.hosts[0]])
    one = text(admin.get("/appliances/bulk/placement/", {"connection": lab.connection.pk, "hosts": [lab.hosts[0].pk]}))
    assert '<option value="Backup">' in one and "local-0" in one
    two = text(admin.get("/appliances/bulk/placement/",
                         {"connection": lab.connection.pk, "hosts": [lab.hosts[0].pk, lab.hosts[1].pk]}))
    assert '<option value="Backup">' not in two and '<option value="VM Network 0">' in two
    assert "shared-ds" in two and "local-0" not in two  # only datastores both hosts mount


def test_detail_and_vm_page_show_how_vms_are_protected(admin, lab):
    appliance = make_appliance(lab, state=Appliance.State.READY)
    appliance.served_hosts.set(lab.hosts[:2])
    on_host_1_local = next(vm for vm in lab.vms if vm.host_id == lab.hosts[1].pk)
    on_host_1_local.datastores.set([lab.locals[1]])  # a disk the appliance's host cannot reach
    page = text(admin.get(appliance.get_absolute_url()))
    assert "one-to-many" in page
    assert "hot-add" in page and "mounts every datastore of the VM's disks" in page
    assert "Reads over the network: its host esx-0.example.test does not mount local-1." in page
    vm_page = text(admin.get(on_host_1_local.get_absolute_url()))
    assert 'id="protected-by"' in vm_page and "va-1" in vm_page and "network" in vm_page
    unserved = next(vm for vm in lab.vms if vm.host_id == lab.hosts[3].pk)
    assert "No ready appliance serves this VM's host." in text(admin.get(unserved.get_absolute_url()))


def test_remove_is_refused_while_the_appliance_has_work(admin, lab):
    appliance = make_appliance(lab, state=Appliance.State.READY)
    services.start_health_round(appliances=[appliance], queue=False)
    confirm = text(admin.get(f"/appliances/{appliance.pk}/remove/"))
    assert "Health check #" in confirm and "is in progress on it" in confirm
    response = admin.post(f"/appliances/{appliance.pk}/remove/", follow=True)
    page = text(response)
    assert "va-1 cannot be removed now" in page
    assert Appliance.objects.filter(pk=appliance.pk).exists()
    assert not FleetOperation.objects.filter(kind=FleetOperation.Kind.REMOVE).exists()


def test_remove_of_a_free_appliance_queues_its_removal(admin, lab):
    appliance = make_appliance(lab, state=Appliance.State.READY)
    response = admin.post(f"/appliances/{appliance.pk}/remove/")
    operation = FleetOperation.objects.get(kind=FleetOperation.Kind.REMOVE)
    assert response["Location"] == operation.get_absolute_url()
    assert operation.items.get().appliance == appliance


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("operator", False), ("administrator", True)])
def test_configuration_pages_are_for_administrators(portal_client, lab, role, allowed):
    client = portal_client(role)
    appliance = make_appliance(lab)
    for url in ("/appliances/add/", f"/appliances/{appliance.pk}/edit/", f"/appliances/{appliance.pk}/remove/",
                "/appliances/bulk/", f"/appliances/placement/?connection={lab.connection.pk}"):
        assert client.get(url).status_code == (200 if allowed else 403), url
    response = client.post("/appliances/add/", form_data(lab, name="va-2", hostname="va-2", address="10.0.0.20"))
    assert response.status_code == (302 if allowed else 403)
    assert Appliance.objects.filter(name="va-2").exists() == allowed


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("operator", True), ("administrator", True)])
def test_operations_are_for_operators(portal_client, lab, role, allowed):
    client = portal_client(role)
    appliance = make_appliance(lab)
    assert client.get("/appliances/").status_code == 200
    assert client.get(appliance.get_absolute_url()).status_code == 200
    response = client.post(f"/appliances/{appliance.pk}/deploy/")
    assert response.status_code == (302 if allowed else 403)
    assert FleetOperation.objects.filter(kind=FleetOperation.Kind.DEPLOY).exists() == allowed
    buttons = client.get(appliance.get_absolute_url()).content.decode()
    assert ("</i> Edit</a>" in buttons) == (role == "administrator")


def test_upgrade_and_health_with_nothing_deployed_say_why(portal_client, lab):
    client = portal_client("operator")
    make_appliance(lab)
    page = text(client.post("/appliances/upgrade/", follow=True))
    assert "No deployed appliance to upgrade: deploy one first." in page
    page = text(client.post("/appliances/health/", follow=True))
    assert "No deployed appliance to check." in page
    assert not FleetOperation.objects.exists()


def test_upgrade_fleet_queues_one_operation_for_the_deployed(portal_client, lab):
    client = portal_client("operator")
    ready = make_appliance(lab, state=Appliance.State.READY)
    make_appliance(lab, "va-draft", host=1)
    response = client.post("/appliances/upgrade/")
    operation = FleetOperation.objects.get(kind=FleetOperation.Kind.UPGRADE)
    assert response["Location"] == operation.get_absolute_url()
    assert [i.appliance for i in operation.items.all()] == [ready]
    assert str(operation) in text(client.get("/appliances/"))  # listed under recent operations


# The socket test needs committed users (the consumer reads them from another thread).
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_fleet_socket_forwards_events_to_viewers_only(make_user):
    def socket_for(user) -> WebsocketCommunicator:
        client = Client()
        client.force_login(user)
        headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"),
                   (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]
        return WebsocketCommunicator(application, "/ws/appliances/", headers=headers)

    async def listen(refused, ws):
        await refused.connect()
        assert (await refused.receive_output(timeout=5))["code"] == FORBIDDEN
        connected, _ = await ws.connect()
        assert connected
        await ws.receive_nothing(timeout=0.5)  # joined the group
        payload = {"id": 7, "name": "va-7", "state": "ready"}
        await ws.send_json_to({"ignored": True})
        from channels.layers import get_channel_layer

        await get_channel_layer().group_send(live.GROUP, {"type": "fleet.event", "event": "fleet.appliance",
                                                          "data": payload})
        message = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return message

    viewer = make_user("viewer")
    message = async_to_sync(listen)(socket_for(make_user(None)), socket_for(viewer))
    assert message == {"event": "fleet.appliance", "data": {"id": 7, "name": "va-7", "state": "ready"}}

    # A deploy that ended between a page's rendering and its socket's join: the join brings its states.
    from django.utils import timezone

    ended = FleetOperation.objects.create(kind=FleetOperation.Kind.DEPLOY, state=FleetOperation.State.SUCCEEDED,
                                          finished=timezone.now())
    item = ended.items.create(appliance_name="va-quick", state="succeeded", finished=timezone.now())
    FleetOperation.objects.create(kind=FleetOperation.Kind.DEPLOY, state=FleetOperation.State.SUCCEEDED,
                                  finished=timezone.now() - timedelta(hours=1))  # long ended: not sent again

    async def join(ws):
        assert (await ws.connect())[0]
        got = [await ws.receive_json_from(timeout=5), await ws.receive_json_from(timeout=5)]
        await ws.receive_nothing(timeout=0.5)
        await ws.disconnect()
        return got

    got = async_to_sync(join)(socket_for(viewer))
    assert [(m["event"], m["data"]["id"], m["data"]["state"]) for m in got] == [
        ("fleet.item", item.pk, "succeeded"), ("fleet.operation", ended.pk, "succeeded")]

"""Read-only inventory lists and details: filters, search, ordering, pagination, related objects."""

from __future__ import annotations

import pytest
from django.utils import timezone

from inventory.models import Datastore, Host, Network, VirtualMachine

API = "/api/inventory"


@pytest.fixture
def viewer(api_client_for):
    return api_client_for("viewer")


def names(response) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    return [row["name"] for row in response.json()["results"]]


def test_vm_list_shows_host_name_datastores_and_networks(viewer, synced):
    rows = {row["name"]: row for row in viewer.get(f"{API}/vms/", {"limit": 100}).json()["results"]}
    assert len(rows) == 30
    vm = rows["vm-0004"]
    assert vm["host_name"] == "esx1.lab.local"
    assert sorted(d["name"] for d in vm["datastores"]) == ["local-1", "shared-nfs"]
    assert sorted(n["name"] for n in vm["networks"]) == ["Backup DPG", "VM Network"]
    assert "disks" not in vm  # details only: lists stay small


def test_vm_detail_has_disks(viewer, synced):
    vm = VirtualMachine.objects.get(moref="vm-2")
    body = viewer.get(f"{API}/vms/{vm.pk}/").json()
    assert [d["key"] for d in body["disks"]] == [2000, 2001]
    big = body["disks"][1]
    assert big["capacity_bytes"] == 3 * 1024**4  # 3 TiB disks are reported exactly
    assert big["datastore_name"] == "local-3"
    assert big["cbt_enabled"] is True
    assert body["provisioned_bytes"] == 16 * 1024**3 + 3 * 1024**4


def test_odd_characters_round_trip(viewer, synced):
    assert names(viewer.get(f"{API}/vms/", {"q": "finance"})) == ["Finance & <Reports> ünï"]


def test_datastore_lists_the_hosts_that_mount_it(viewer, synced):
    rows = {row["name"]: row for row in viewer.get(f"{API}/datastores/").json()["results"]}
    assert sorted(h["name"] for h in rows["shared-nfs"]["hosts"]) == [f"esx{i}.lab.local" for i in range(1, 5)]
    assert rows["shared-nfs"]["shared"] is True
    assert [h["name"] for h in rows["local-2"]["hosts"]] == ["esx2.lab.local"]
    assert rows["local-2"]["shared"] is False


def test_datastore_filter_by_host(viewer, synced):
    host = Host.objects.get(name="esx3.lab.local")
    assert names(viewer.get(f"{API}/datastores/", {"host": host.pk})) == ["local-3", "shared-nfs"]


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"power_state": "poweredOff"}, 10),
        ({"cbt_enabled": "true"}, 15),
        ({"tag": "gold"}, 6),
        ({"q": "windows"}, 15),
        ({"search": "ubuntu"}, 15),
        ({"q": "5000-00000007"}, 1),
    ],
)
def test_vm_filters_and_search(viewer, synced, params, count):
    assert viewer.get(f"{API}/vms/", params).json()["count"] == count


def test_vm_filter_by_host_datastore_network(viewer, synced):
    host = Host.objects.get(name="esx2.lab.local")
    local = Datastore.objects.get(name="local-2")
    dpg = Network.objects.get(name="Backup DPG")
    on_host = viewer.get(f"{API}/vms/", {"host": host.pk, "limit": 100}).json()
    on_local = viewer.get(f"{API}/vms/", {"datastore": local.pk, "limit": 100}).json()
    assert on_host["count"] == on_local["count"] == 8
    assert viewer.get(f"{API}/vms/", {"network": dpg.pk}).json()["count"] == 7


def test_vanished_filter(viewer, synced):
    VirtualMachine.objects.filter(moref="vm-30").update(vanished_at=timezone.now())
    assert names(viewer.get(f"{API}/vms/", {"vanished": "true"})) == ["vm-0030"]
    assert viewer.get(f"{API}/vms/", {"vanished": "false"}).json()["count"] == 29


def test_ordering_and_pagination(viewer, synced):
    first = viewer.get(f"{API}/vms/", {"ordering": "-name", "limit": 5}).json()
    assert first["count"] == 30
    assert [r["name"] for r in first["results"]] == ["vm-0030", "vm-0029", "vm-0028", "vm-0027", "vm-0026"]
    assert "offset=5" in first["next"]
    second = viewer.get(f"{API}/vms/", {"ordering": "-name", "limit": 5, "offset": 5}).json()
    assert second["results"][0]["name"] == "vm-0025"
    assert viewer.get(f"{API}/vms/", {"ordering": "host__name", "limit": 1}).json()["results"][0]["host_name"] == (
        "esx1.lab.local"
    )


def test_unknown_ordering_field_is_ignored_not_an_error(viewer, synced):
    assert viewer.get(f"{API}/vms/", {"ordering": "password"}).status_code == 200


def test_bad_filter_value_says_what_is_wrong(viewer, synced):
    response = viewer.get(f"{API}/vms/", {"host": "esx1"})
    assert response.status_code == 400
    assert "valid choice" in response.json()["host"][0]


@pytest.mark.parametrize("endpoint", ["datacenters", "clusters", "hosts", "networks"])
def test_other_lists(viewer, synced, endpoint):
    body = viewer.get(f"{API}/{endpoint}/").json()
    assert body["count"] >= 1
    assert {"id", "connection", "moref", "name", "vanished"} <= set(body["results"][0])


def test_host_list_shows_cluster(viewer, synced):
    row = viewer.get(f"{API}/hosts/").json()["results"][0]
    assert (row["name"], row["cluster_name"], row["cpu_cores"]) == ("esx1.lab.local", "Cluster A", 16)


def test_network_kinds(viewer, synced):
    assert names(viewer.get(f"{API}/networks/", {"kind": "distributed"})) == ["Backup DPG"]


def test_summary_counts_what_is_present(viewer, synced):
    VirtualMachine.objects.filter(moref="vm-30").update(vanished_at=timezone.now())
    body = viewer.get(f"{API}/summary/").json()
    assert body == {
        "connections": {"new": 1, "syncing": 0, "ok": 0, "error": 0},
        "hosts": 4,
        "datastores": 5,
        "vms": {"total": 29, "powered_on": 20, "powered_off": 9},
    }

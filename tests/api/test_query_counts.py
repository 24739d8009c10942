"""API lists run a constant number of queries whatever the number of rows."""

from __future__ import annotations

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from core import audit
from core.models import AuditEntry
from inventory.sync import apply_inventory
from tests.api.fixtures import build_inventory, make_connection

LISTS = [
    "/api/inventory/vms/",
    "/api/inventory/hosts/",
    "/api/inventory/datastores/",
    "/api/inventory/networks/",
    "/api/inventory/clusters/",
    "/api/inventory/datacenters/",
    "/api/inventory/connections/",
    "/api/audit/",
]


def queries_for(client, url: str) -> tuple[int, int]:
    """Queries run for one page of up to 500 rows, and the number of rows."""
    with CaptureQueriesContext(db) as captured:
        response = client.get(url, {"limit": 500})
    assert response.status_code == 200
    return len(captured), response.json().get("count", 1)


def grow(vms: int, hosts: int) -> None:
    """A connection with `vms` VMs and `hosts` hosts, and as many audit entries as VMs."""
    conn = make_connection(name=f"vc-{vms}")
    apply_inventory(conn, build_inventory(vms=vms, hosts=hosts))
    for n in range(vms):
        audit.record(AuditEntry.Action.OPERATION, conn, message=f"entry {n}")


@pytest.mark.parametrize("url", LISTS)
def test_list_queries_do_not_grow_with_rows(api_client_for, url, django_assert_max_num_queries):
    client = api_client_for("viewer")
    grow(vms=20, hosts=4)
    small, small_rows = queries_for(client, url)
    grow(vms=380, hosts=40)  # 400 VMs and 44 hosts in all
    with django_assert_max_num_queries(small):
        large = client.get(url, {"limit": 500})
    assert large.status_code == 200
    assert large.json()["count"] > small_rows


def test_vm_detail_queries_do_not_grow_with_disks(api_client_for, django_assert_max_num_queries):
    client = api_client_for("viewer")
    grow(vms=20, hosts=4)
    from inventory.models import VirtualMachine

    vm = VirtualMachine.objects.first()
    small, _ = queries_for(client, f"/api/inventory/vms/{vm.pk}/")
    for key in range(3000, 3040):
        vm.disks.create(key=key, file_name=f"[ds] extra-{key}.vmdk", datastore=vm.datastores.first())
    with django_assert_max_num_queries(small):
        assert len(client.get(f"/api/inventory/vms/{vm.pk}/").json()["disks"]) == 42

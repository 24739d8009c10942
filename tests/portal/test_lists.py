"""Inventory lists: search, filters, sorting and pagination return the right rows, htmx gets only
the rows, and the number of queries does not grow with the inventory."""

from __future__ import annotations

import re

from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory.models import VirtualMachine
from tests.portal.conftest import add_vms, build_lab

HTMX = {"HX-Request": "true", "HX-Target": "results"}


def names(response) -> list[str]:
    """VM names in the order the VM table shows them."""
    return re.findall(r'<a href="/inventory/vms/\d+/">([^<]+)</a>', response.content.decode())


def count_queries(client, url: str, **kwargs) -> int:
    with CaptureQueriesContext(db_connection) as queries:
        response = client.get(url, **kwargs)
    assert response.status_code == 200
    return len(queries)


LIST_URLS = [
    "/inventory/vms/",
    "/inventory/vms/?q=vm&power_state=poweredOn&sort=-size&per_page=100",
    "/inventory/vms/?host={host}&sort=host",
    "/inventory/hosts/",
    "/inventory/datastores/",
    "/inventory/networks/",
    "/inventory/connections/",
    "/",
]


def test_query_counts_do_not_grow_with_the_inventory(viewer, db):
    lab = build_lab(vm_count=20)
    urls = [u.format(host=lab.hosts[0].pk) for u in LIST_URLS]
    small = {url: count_queries(viewer, url) for url in urls}
    add_vms(lab, 380, start=20)
    assert VirtualMachine.objects.count() == 400
    large = {url: count_queries(viewer, url) for url in urls}
    assert large == small
    assert small["/inventory/vms/"] <= 8, small  # session, user, role, connections, count, rows
    partial = count_queries(viewer, "/inventory/vms/?page=3", headers=HTMX)
    assert partial <= small["/inventory/vms/"]


def test_vm_detail_query_count_does_not_grow_with_disks(viewer, lab):
    vm = lab.vms[0]
    one_disk = count_queries(viewer, f"/inventory/vms/{vm.pk}/")
    for key in range(2001, 2012):
        vm.disks.create(key=key, label=f"Hard disk {key}", file_name=f"[shared-ds] x/x_{key}.vmdk",
                        datastore=lab.shared, capacity_bytes=3 * 1024**4)
    assert count_queries(viewer, f"/inventory/vms/{vm.pk}/") == one_disk


def test_search_matches_name_guest_os_folder_and_uuid(viewer, lab):
    assert names(viewer.get("/inventory/vms/?q=vm-0007")) == ["vm-0007"]
    windows = names(viewer.get("/inventory/vms/?q=windows&per_page=100"))
    assert len(windows) == 15 and all(int(n[3:]) % 2 == 0 for n in windows)
    assert len(names(viewer.get("/inventory/vms/?q=test&per_page=100"))) == 6  # folder "test": every fifth VM
    assert names(viewer.get(f"/inventory/vms/?q={lab.vms[3].uuid}")) == [lab.vms[3].name]
    empty = viewer.get("/inventory/vms/?q=no-such-vm").content.decode()
    assert "No VMs match these filters." in empty


def test_filters_combine(viewer, lab):
    on = names(viewer.get("/inventory/vms/?power_state=poweredOn&per_page=100"))
    assert len(on) == 20
    on_cbt = names(viewer.get("/inventory/vms/?power_state=poweredOn&cbt_enabled=true&per_page=100"))
    assert sorted(on_cbt) == sorted(n for n in on if int(n[3:]) % 2 == 0)
    on_host = names(viewer.get(f"/inventory/vms/?host={lab.hosts[1].pk}&per_page=100"))
    assert sorted(on_host) == [f"vm-{i:04d}" for i in range(30) if i % 4 == 1]
    on_ds = names(viewer.get(f"/inventory/vms/?datastore={lab.shared.pk}&per_page=100"))
    assert sorted(on_ds) == [f"vm-{i:04d}" for i in range(30) if i % 2 == 1]
    tagged = names(viewer.get("/inventory/vms/?tag=gold&per_page=100"))
    assert sorted(tagged) == [f"vm-{i:04d}" for i in range(30) if i % 7 == 0]
    other = build_lab(vm_count=3, name="Lab B")
    only_b = names(viewer.get(f"/inventory/vms/?connection={other.connection.pk}"))
    assert len(only_b) == 3


def test_sorting_whitelisted_keys_in_both_directions(viewer, lab):
    by_name = names(viewer.get("/inventory/vms/?per_page=100"))
    assert by_name == sorted(by_name)
    assert names(viewer.get("/inventory/vms/?sort=-name&per_page=100")) == by_name[::-1]
    by_size = names(viewer.get("/inventory/vms/?sort=-size&per_page=100"))
    assert by_size[:3] == ["vm-0029", "vm-0028", "vm-0027"]
    # an unknown key falls back to the name instead of failing or sorting by a hidden field
    assert names(viewer.get("/inventory/vms/?sort=connection__password&per_page=100")) == by_name


def test_pagination_keeps_filters_and_sort_in_its_links(viewer, lab):
    first = viewer.get("/inventory/vms/?power_state=poweredOn&sort=-name&per_page=25")
    html = first.content.decode()
    assert len(names(first)) == 20
    assert "Page 1 of 1" not in html  # 20 rows fit on one page: no page links
    page_one = viewer.get("/inventory/vms/?sort=-name&per_page=25")
    second = viewer.get("/inventory/vms/?sort=-name&per_page=25&page=2")
    assert len(names(page_one)) == 25 and len(names(second)) == 5
    assert not set(names(page_one)) & set(names(second))
    assert 'href="?sort=-name&amp;per_page=25&amp;page=2"' in page_one.content.decode()
    assert "Page 2 of 2" in second.content.decode()
    past_the_end = viewer.get("/inventory/vms/?sort=-name&per_page=25&page=99")
    assert names(past_the_end) == names(second)  # shows the last page


def test_htmx_gets_only_the_rows_and_a_history_restore_gets_the_page(viewer, lab):
    partial = viewer.get("/inventory/vms/?q=vm-001", headers=HTMX)
    body = partial.content.decode()
    assert "<html" not in body and 'id="vm-table"' in body
    assert len(names(partial)) == 10
    assert "HX-Request" in partial["Vary"]
    restore = viewer.get("/inventory/vms/?q=vm-001", headers={**HTMX, "HX-History-Restore-Request": "true"})
    assert "<html" in restore.content.decode()


def test_a_bad_filter_value_is_ignored_with_a_sentence(viewer, lab):
    html = viewer.get("/inventory/vms/?host=abc").content.decode()
    assert "was ignored" in html
    assert len(names(viewer.get("/inventory/vms/?host=abc&per_page=100"))) == 30


def test_vanished_objects_are_hidden_unless_asked_for(viewer, lab):
    VirtualMachine.objects.filter(pk=lab.vms[0].pk).update(vanished_at=timezone.now())
    assert lab.vms[0].name not in names(viewer.get("/inventory/vms/?per_page=100"))
    assert names(viewer.get("/inventory/vms/?vanished=true")) == [lab.vms[0].name]


def test_datastores_show_which_hosts_mount_them(viewer, lab):
    html = viewer.get("/inventory/datastores/").content.decode()
    shared_row = re.search(r"shared-ds</a>.*?</tr>", html, re.S).group(0)
    assert "shared" in shared_row and all(h.name in shared_row for h in lab.hosts)
    local_row = re.search(r"local-0</a>.*?</tr>", html, re.S).group(0)
    assert ">local<" in local_row and lab.hosts[0].name in local_row and lab.hosts[1].name not in local_row
    mounted = viewer.get(f"/inventory/datastores/?host={lab.hosts[1].pk}").content.decode()
    assert "local-1" in mounted and "local-0" not in mounted and "shared-ds" in mounted
    detail = viewer.get(f"/inventory/datastores/{lab.shared.pk}/").content.decode()
    assert "shared by 4 hosts" in detail


def test_vm_detail_lists_disks_with_capacity_thin_cbt_and_file(viewer, lab):
    vm = lab.vms[1]
    vm.disks.create(key=2001, label="Hard disk 2", file_name="[shared-ds] vm-0001/big (été).vmdk",
                    datastore=lab.shared, capacity_bytes=3 * 1024**4, thin=False, cbt_enabled=True)
    html = viewer.get(f"/inventory/vms/{vm.pk}/").content.decode()
    table = re.search(r'<table[^>]*id="disk-table".*?</table>', html, re.S).group(0)
    assert table.count("<tr") == 3
    assert "[shared-ds] vm-0001/big (été).vmdk" in table
    assert "3.0\xa0TB" in table and "thick" in table and "thin" in table


def test_dashboard_counts(viewer, lab):
    html = viewer.get("/").content.decode()
    assert "20 powered on" in html and "10 powered off" in html
    assert re.search(r'href="/inventory/hosts/">4<', html)
    assert re.search(r'href="/inventory/datastores/">5<', html)
    assert "No connection reports an error." in html
    lab.connection.status, lab.connection.status_message = "error", "Cannot log in to vc: wrong password."
    lab.connection.save()
    html = viewer.get("/").content.decode()
    assert "Cannot log in to vc: wrong password." in html
    assert "1 error" in html


def test_audit_log_page_lists_and_filters(viewer, lab):
    lab.connection.name = "Renamed lab"
    lab.connection.save()
    html = viewer.get("/audit/?action=update").content.decode()
    assert "Renamed lab" in html
    assert "Renamed lab" not in viewer.get("/audit/?action=delete").content.decode()
    assert "Renamed lab" in viewer.get("/audit/?q=renamed", headers=HTMX).content.decode()


def test_audit_log_never_shows_credential_values(viewer, lab, django_user_model):
    django_user_model.objects.create_user("someone", password="Another-Pass-3")  # its creation is audited
    lab.connection.password = "Rotated-Pass-5"
    lab.connection.save()
    html = viewer.get("/audit/").content.decode()
    assert "someone" in html
    assert "pbkdf2" not in html and "md5$" not in html and "Rotated-Pass-5" not in html
    assert "<code>password</code>: ••• → •••" in html  # the change itself is visible


def test_host_and_vm_pages_tell_shared_from_local_datastores(viewer, lab):
    host_page = viewer.get(f"/inventory/hosts/{lab.hosts[2].pk}/").content.decode()
    assert re.search(r"shared-ds</a>.*?shared by 4 hosts", host_page, re.S)
    assert re.search(r"local-2</a>.*?>local<", host_page, re.S)
    vm_page = viewer.get(f"/inventory/vms/{lab.vms[1].pk}/").content.decode()  # odd VMs live on the shared one
    assert re.search(r"shared-ds</a> <span[^>]*>shared<", vm_page)


def test_filters_set_by_links_show_as_named_chips_that_can_be_removed(viewer, lab):
    host = lab.hosts[1]
    html = viewer.get(f"/inventory/vms/?host={host.pk}&power_state=poweredOn").content.decode()
    assert f"Host: {host.name}" in html
    assert 'href="?power_state=poweredOn" aria-label="Remove the host filter"' in html
    mounted = viewer.get(f"/inventory/datastores/?host={host.pk}").content.decode()
    assert f"Mounted by: {host.name}" in mounted

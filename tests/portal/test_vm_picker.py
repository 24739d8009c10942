"""The job form's VM picker with 5,000 VMs: a search (name, host or folder) lists at most 50 matches per
page in a bounded number of queries, the form page never lists every VM, chosen VMs are chips carried as
hidden inputs `vms`, "select all" adds up to 1000 matches, and saving and editing keep the chosen VMs."""

from __future__ import annotations

import re

import pytest

from inventory.models import VirtualMachine
from jobs.models import BackupJob
from tests.portal.conftest import add_vms, build_lab

PICKER = "/jobs/vm-choices/"
ADD = "/jobs/add/"


@pytest.fixture
def big(db):
    lab = build_lab(vm_count=0, name="Big")
    add_vms(lab, 5000)  # bulk_create on the inventory models
    assert VirtualMachine.objects.count() == 5000
    return lab


def matches(page: str) -> list[str]:
    """The VM names of the picker's checkboxes (their labels)."""
    return re.findall(r'<label class="form-check-label" for="vm-choice-\d+">([^<]+)</label>', page)


def chips(page: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<input type="hidden" name="vms" value="(\d+)">', page)]


def form_data(repo, chosen, **overrides) -> dict:
    data = {"name": "web", "repository": repo.pk, "connection": "", "vms": [vm.pk for vm in chosen],
            "rule_hosts": [], "rule_folders": "", "rule_name": "", "schedule": "", "keep_last": "7",
            "keep_daily": "7", "keep_weekly": "4", "keep_monthly": "6", "mode": "auto", "compression_level": "3",
            "use_cbt": "on", "verify": "on", "max_parallel": "4", "enabled": "on", "vm_q": "",
            "notify_on": "failure", "notify_emails": ""}
    data.update(overrides)
    return data


def test_a_search_lists_at_most_50_matches_in_bounded_queries(admin, big, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        page = admin.get(PICKER, {"vm_q": "vm-4"}).content.decode()
    names = matches(page)
    assert len(names) == 50 and names[0] == "vm-4000" and all(n.startswith("vm-4") for n in names)
    assert "1000 VMs match “vm-4”; page 1 of 20." in page and "More VMs" in page
    assert "Select all 1000 matches" in page

    second = matches(admin.get(PICKER, {"vm_q": "vm-4", "vm_page": "2"}).content.decode())
    assert second[0] == "vm-4050" and len(second) == 50
    by_host = admin.get(PICKER, {"vm_q": big.hosts[1].name}).content.decode()
    assert "1250 VMs match" in by_host and len(matches(by_host)) == 50
    by_folder = admin.get(PICKER, {"vm_q": "test"}).content.decode()  # every fifth VM is in folder test
    assert "1000 VMs match" in by_folder
    chosen = VirtualMachine.objects.get(name="vm-4001")
    ticked = admin.get(PICKER, {"vm_q": "vm-400", "vms": [chosen.pk]}).content.decode()
    assert re.search(rf'value="{chosen.pk}" id="vm-choice-{chosen.pk}"[^>]*checked', ticked)


def test_select_all_adds_up_to_1000_matches_with_a_sentence_beyond(admin, big, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        some = admin.get(PICKER, {"vm_q": "vm-00", "all": "1"}).content.decode()
    assert len(chips(some)) == 100 and "Remove vm-0099" in some
    everything = admin.get(PICKER, {"all": "1"}).content.decode()
    assert len(chips(everything)) == 1000
    page = admin.get(PICKER).content.decode()
    assert "Select the first 1000 of 5000 matches" in page
    assert "More than 1000 VMs match: narrow the search, or protect them with a rule" in page


def test_the_form_page_does_not_list_every_vm(admin, big, django_assert_max_num_queries):
    with django_assert_max_num_queries(30):
        page = admin.get(ADD).content.decode()
    assert len(matches(page)) == 50 and "vm-4999" not in page and "vm-0049" in page
    assert '<label class="form-label" for="vm-search">Find VMs</label>' in page
    assert "5000 VMs match" in page


def test_saving_three_chosen_vms_and_editing_keeps_them(admin, big, repo, django_assert_max_num_queries):
    chosen = list(VirtualMachine.objects.filter(name__in=["vm-0007", "vm-2500", "vm-4998"]))
    with django_assert_max_num_queries(40):  # validation looks up the posted ids, never the 5,000 VMs
        response = admin.post(ADD, form_data(repo, chosen))
    assert response.status_code == 302, response.context["form"].errors
    job = BackupJob.objects.get(name="web")
    assert set(job.vms.all()) == set(chosen)

    edit = admin.get(f"/jobs/{job.pk}/edit/").content.decode()
    assert sorted(chips(edit)) == sorted(vm.pk for vm in chosen)
    assert "Remove vm-2500" in edit and "vm-4997" not in edit
    again = admin.post(f"/jobs/{job.pk}/edit/", form_data(repo, chosen, name="web", schedule="0 3 * * *"))
    assert again.status_code == 302
    job.refresh_from_db()
    assert set(job.vms.all()) == set(chosen) and job.schedule == "0 3 * * *"


def test_without_javascript_find_remove_and_select_all_post_the_form_back(admin, big, repo):
    first = VirtualMachine.objects.get(name="vm-0001")
    found = admin.post(ADD, form_data(repo, [first], vm_q="vm-0042", narrow="1"))
    page = found.content.decode()
    assert found.status_code == 200 and not BackupJob.objects.exists() and "correct the fields" not in page
    assert matches(page) == ["vm-0042"] and chips(page) == [first.pk]

    added = admin.post(ADD, form_data(repo, [first], vm_q="vm-001", narrow="select-all")).content.decode()
    assert len(chips(added)) == 11 and not BackupJob.objects.exists()
    removed = admin.post(ADD, form_data(repo, [first], narrow=f"unchoose-{first.pk}")).content.decode()
    assert chips(removed) == []
    saved = admin.post(ADD, form_data(repo, VirtualMachine.objects.filter(name__startswith="vm-001")))
    assert saved.status_code == 302 and BackupJob.objects.get().vms.count() == 10


def test_a_vanished_vm_is_refused_with_a_sentence(admin, big, repo):
    gone = VirtualMachine.objects.get(name="vm-0003")
    VirtualMachine.objects.filter(pk=gone.pk).update(vanished_at="2026-01-01T00:00:00Z")
    response = admin.post(ADD, form_data(repo, [gone]))
    assert response.status_code == 200 and "Select a valid choice" in " ".join(response.context["form"].errors["vms"])

"""The restore wizard in the portal, against lab restore points from real lab backups: each path (new VM,
original place, one disk, disk images) reaches the service's destination and starts a task; refusals are
sentences on the field; viewers get no wizard."""

from __future__ import annotations

import html
import re

import pytest

from appliances.models import Appliance
from inventory.connectors.base import NewVmSpec
from inventory.connectors.lab import LabConnector
from inventory.models import Datastore
from jobs.models import Task
from jobs.runs import execute_restore
from tests.jobs.conftest import lab, repository  # noqa: F401 - the real lab and its repository, not the ORM one
from tests.jobs.test_restore_modes import backed_up, digests, hot_addable, power, synced

MIB = 1 << 20


def url(point) -> str:
    return f"/jobs/restore-points/{point.pk}/restore/"


def carried(page: str) -> dict:
    """The hidden inputs of a wizard step: every choice made so far."""
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {name: html.unescape(value) for name, value in fields if name != "csrfmiddlewaretoken"}


def step_heading(page: str) -> str:
    return re.search(r'<h2 class="h5" id="wizard-step"[^>]*>([^<]+)</h2>', page).group(1)


def through_the_wizard(client, point, what: str, place: dict) -> tuple[str, object]:
    """Steps 1 and 2 posted, the summary's hidden inputs posted back with "Start restore": (summary, response)."""
    start = carried(client.get(url(point)).content.decode())
    first = client.post(url(point), {**start, "what": what, "go": "next"})
    assert first.status_code == 200 and step_heading(first.content.decode()) == "2. Where to restore it"
    second = client.post(url(point), {**carried(first.content.decode()), **place, "go": "next"})
    summary = second.content.decode()
    assert step_heading(summary) == "3. Check and start", second.context["form"].errors
    return summary, client.post(url(point), {**carried(summary), "go": "start"})


def started(response) -> Task:
    task = Task.objects.get(kind=Task.Kind.RESTORE)
    assert response.status_code == 302 and response["Location"] == f"/jobs/tasks/{task.pk}/"
    return task


def field_errors(response, name: str) -> str:
    return " ".join(response.context["form"].errors.get(name, []))


@pytest.fixture
def source(lab):
    return hot_addable(lab)[0]


@pytest.fixture
def point(lab, repository, source):
    return backed_up(lab, repository, source)


def test_a_new_vm_restore_goes_through_every_step_and_matches_the_backup(lab, operator, source, point):
    connector = LabConnector(root=lab.options["root"])
    page = operator.get(url(point)).content.decode()
    assert step_heading(page) == "1. What to restore" and ">Next</button>" in page and "Back</button>" not in page
    for label in ("The whole VM", "One disk, over a disk of an existing VM", "Disk images, into a folder"):
        assert label in page

    first = operator.post(url(point), {**carried(page), "what": "vm", "go": "next"}).content.decode()
    for label in ("New VM name", "Host", "Datastore", "Network", "Back</button>"):
        assert label in first
    assert f'value="{source.name}-restored"' in first  # the suggested name, carried from step 1's defaults
    assert 'name="place"' in first and "is powered on: power it off" in first  # original place not offered
    assert re.search(r'value="original"[^>]*disabled', first)

    datastore = Datastore.objects.filter(hosts=source.host).order_by("-free_bytes").first()
    place = {"place": "new_vm", "name": "wizard-copy", "host": source.host_id, "datastore": datastore.pk,
             "network": ""}
    summary, response = through_the_wizard(operator, point, "vm", place)
    assert "wizard-copy" in summary and datastore.name in summary and "Start restore" in summary
    task = started(response)
    assert task.destination == {"mode": "new_vm", "name": "wizard-copy", "host": source.host_id,
                                "datastore": datastore.pk}

    task = execute_restore(task.pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    restored = digests(connector, connector.find_vm("wizard-copy"))
    assert restored == digests(connector, source.moref)  # the source has not written since the backup
    result = task.events.get(type="result").data  # the engine read each written disk back
    assert [d.get("digest") for d in result.get("disks", [])] == [d["digest"] for d in point.disks], result


def test_back_keeps_the_choices_and_htmx_gets_fragments(lab, operator, point):
    hx = {"HX-Request": "true", "HX-Target": "restore-wizard"}
    second = operator.post(url(point), {"step": "1", "what": "images", "go": "next"}, headers=hx)
    fragment = second.content.decode()
    assert "<html" not in fragment and step_heading(fragment) == "2. Where to restore it"
    assert "Folder on the appliance" in fragment and "New VM name" not in fragment
    back = operator.post(url(point), {**carried(fragment), "folder": "/srv/x", "go": "back"}, headers=hx)
    page = back.content.decode()
    assert step_heading(page) == "1. What to restore" and re.search(r'value="images"[^>]*checked', page)
    assert carried(page)["folder"] == "/srv/x"  # still there on the way forward again

    # A wrong folder is a sentence on the field, and the step stays.
    wrong = operator.post(url(point), {**carried(fragment), "folder": "srv/x", "go": "next"}, headers=hx)
    assert "absolute path" in field_errors(wrong, "folder") and step_heading(wrong.content.decode()).startswith("2.")


def test_disk_images_into_a_folder(lab, operator, point, tmp_path):
    folder = tmp_path / "images"
    summary, response = through_the_wizard(operator, point, "images", {"folder": str(folder), "appliance": ""})
    assert str(folder) in summary and "Any suitable ready appliance" in summary
    task = execute_restore(started(response).pk)
    assert task.destination == {"mode": "folder", "folder": str(folder)}
    assert task.state == Task.State.SUCCEEDED, task.message
    assert len(list(folder.glob("*.img"))) == len(point.disks)


def test_the_original_place_needs_the_vm_off_and_its_name_typed(lab, operator, source, point):
    connector = LabConnector(root=lab.options["root"])
    before = digests(connector, source.moref)
    base = {"step": "2", "what": "vm", "place": "original", "go": "next"}

    powered_on = operator.post(url(point), {**base, "confirm_name": source.name})
    assert "is powered on: power it off, then restore again" in field_errors(powered_on, "place")

    connector.write(source.moref, percent=20, seed="after the backup")
    power(lab, source, "poweredOff")
    page = operator.post(url(point), {"step": "1", "what": "vm", "go": "next"}).content.decode()
    assert "Type the VM&#x27;s name to confirm" in page and not re.search(r'value="original"[^>]*disabled', page)
    assert all(d["file_name"] in html.unescape(page) for d in connector.vm_disks(source.moref))  # what is overwritten

    wrong = operator.post(url(point), {**base, "confirm_name": "not-the-name"})
    assert f"Type the VM's name, {source.name}, exactly" in field_errors(wrong, "confirm_name")
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()

    summary, response = through_the_wizard(operator, point, "vm", {"place": "original", "confirm_name": source.name})
    assert "Disks overwritten" in summary and source.name in summary
    task = started(response)
    assert task.destination == {"mode": "original", "confirm": True}
    task = execute_restore(task.pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    assert digests(connector, source.moref) == before
    assert f"over the disks of {source.name}" in operator.get(f"/jobs/tasks/{task.pk}/").content.decode()


def test_one_disk_into_another_vm_and_a_too_small_disk_refused(lab, operator, source, point):
    connector = LabConnector(root=lab.options["root"])
    disk = point.disks[0]
    appliance = Appliance.objects.get(name="local-appliance")
    small = synced(lab, connector.create_vm(NewVmSpec(
        name="too-small", datacenter=appliance.host.datacenter.moref, host=appliance.host.moref,
        datastore=appliance.host.datastores.order_by("name").first().moref, network=None, num_cpu=1, memory_mb=512,
        guest_os="otherGuest64", disk_capacities=[int(disk["size"]) - MIB])))
    target = power(lab, hot_addable(lab)[1], "poweredOff")
    target_key = connector.vm_disks(target.moref)[0]["key"]

    first = operator.post(url(point), {"step": "1", "what": "disk", "go": "next"}).content.decode()
    for label in ("Disk of the restore point", "Find the VM", "VM to overwrite", "Type the VM&#x27;s name to confirm",
                  "at least as large as the restored disk"):
        assert label in first
    narrowed = operator.post(url(point), {**carried(first), "vm_q": "too-sm", "vm": small.pk, "narrow": "vm"})
    options = narrowed.content.decode()
    assert f'value="{small.pk}" selected' in options and f'value="{target.pk}"' not in options
    assert f'value="{connector.vm_disks(small.moref)[0]["key"]}"' in options  # its disks, for the next choice

    refused = operator.post(url(point), {"step": "2", "what": "disk", "disk": disk["name"], "vm": small.pk,
                                         "target_disk": connector.vm_disks(small.moref)[0]["key"],
                                         "confirm_name": "too-small", "go": "next"})
    assert "choose a disk at least as large" in field_errors(refused, "target_disk")
    assert "choose a disk at least as large" in refused.content.decode()

    summary, response = through_the_wizard(operator, point, "disk", {
        "disk": disk["name"], "vm": target.pk, "target_disk": target_key, "confirm_name": target.name})
    assert target.name in summary and disk["name"] in summary
    task = started(response)
    assert task.destination == {"mode": "disk", "disk": disk["name"], "vm": target.pk, "target_disk_key": target_key,
                         "confirm": True}
    task = execute_restore(task.pk)
    assert task.state == Task.State.SUCCEEDED, task.message
    source_key = connector.vm_disks(source.moref)[0]["key"]
    assert connector.disk_digest(target.moref, target_key) == connector.disk_digest(source.moref, source_key)


def test_viewers_see_the_point_but_no_wizard(lab, portal_client, operator, source, point):
    viewer = portal_client("viewer")
    assert viewer.get(url(point)).status_code == 403
    start = {"step": "3", "what": "images", "folder": "/srv/x", "go": "start"}
    assert viewer.post(url(point), start).status_code == 403
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()
    listing = viewer.get("/jobs/restore-points/").content.decode()
    assert point.rp_id in listing or source.name in listing
    assert url(point) not in listing
    vm_page = viewer.get(f"/inventory/vms/{source.pk}/").content.decode()
    assert "Restore points" in vm_page and url(point) not in vm_page
    assert url(point) in operator.get(f"/inventory/vms/{source.pk}/").content.decode()


def test_a_datastore_no_appliance_can_write_is_marked_and_refused_on_step_two(lab, operator, source, point):
    appliance = Appliance.objects.get(state=Appliance.State.READY)
    unreachable = (Datastore.objects.filter(connection=lab).exclude(hosts=appliance.host)
                   .prefetch_related("hosts").order_by("name").first())
    assert unreachable is not None, "the lab has a host-local datastore the appliance's host does not mount"
    host = unreachable.hosts.first()
    step1 = operator.post(url(point), {"step": "1", "what": "vm", "go": "next"}).content.decode()
    place = {"place": "new_vm", "name": "elsewhere", "host": host.pk, "datastore": unreachable.pk, "network": ""}
    refused = operator.post(url(point), {**carried(step1), **place, "go": "next"})
    page = refused.content.decode()
    assert step_heading(page) == "2. Where to restore it"  # the step stays, with the sentence on the field
    assert "No ready appliance can write there" in field_errors(refused, "datastore")
    assert f"{unreachable.name}" in page and "(no ready appliance can write here)" in page
    assert not Task.objects.filter(kind=Task.Kind.RESTORE).exists()

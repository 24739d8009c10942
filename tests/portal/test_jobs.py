"""Backup jobs, runs, tasks and restore points in the portal: lists and pages render, the job form saves
VMs, rules, schedule and retention with a sentence per wrong field, "Run now" queues a run (operators),
cancelling works once, and the restore wizard narrows to what the chosen host sees."""

from __future__ import annotations

import re

import pytest

from core.models import AuditEntry
from inventory.models import Network, VirtualMachine
from jobs.models import BackupJob, JobRun, RestorePoint, Task, TaskEvent
from tests.api.fixtures import take_queued

ADD = "/jobs/add/"


def options_of(html: str, name: str) -> str:
    """The options of the <select name=...> in a page."""
    match = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert match, f"no select {name}"
    return match.group(1)


@pytest.fixture
def job(lab, repo) -> BackupJob:
    job = BackupJob.objects.create(name="nightly", repository=repo, schedule="0 2 * * *")
    job.vms.set(lab.vms[:3])
    return job


def form_data(repo, chosen, **overrides) -> dict:
    data = {"name": "web", "repository": repo.pk, "connection": "", "vms": [vm.pk for vm in chosen],
            "rule_hosts": [], "rule_folders": "", "rule_name": "", "schedule": "30 1 * * *", "keep_last": "7",
            "keep_daily": "7", "keep_weekly": "4", "keep_monthly": "6", "mode": "auto", "compression_level": "3",
            "use_cbt": "on", "verify": "on", "max_parallel": "4", "enabled": "on", "notify_on": "failure",
            "notify_emails": ""}
    data.update(overrides)
    return data


def test_nav_links_to_jobs_and_restore_points(viewer, lab):
    page = viewer.get("/jobs/").content.decode()
    assert 'href="/jobs/"' in page and 'href="/jobs/restore-points/"' in page and "Backup jobs" in page
    assert 'class="nav-link active" href="/jobs/"' in page


def test_add_a_job_with_vms_and_rules(admin, lab, repo):
    data = form_data(repo, lab.vms[:2], rule_hosts=[lab.hosts[1].pk], rule_folders="/prod/, test",
                     rule_name="web-*")
    response = admin.post(ADD, data)
    job = BackupJob.objects.get(name="web")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert set(job.vms.all()) == set(lab.vms[:2])
    assert job.rules == {"hosts": [lab.hosts[1].pk], "folders": ["prod", "test"], "name": "web-*"}
    assert job.schedule == "30 1 * * *" and job.use_cbt and job.enabled
    assert AuditEntry.objects.filter(object_type="jobs.BackupJob", action=AuditEntry.Action.CREATE).exists()

    page = admin.get(response["Location"]).content.decode()
    expected = VirtualMachine.objects.filter(host=lab.hosts[1]).count()
    assert "web-*" in page and "Run now" in page and lab.hosts[1].name in page
    selected = set(VirtualMachine.objects.filter(folder__in=["prod", "test"]).values_list("pk", flat=True))
    assert len(selected) >= expected
    assert f"{len(selected)} VMs" in page  # every VM is in prod or test, so the folder rule selects all


@pytest.mark.parametrize(("overrides", "field", "sentence"), [
    ({"schedule": "every night"}, "schedule", "is not a cron expression"),
    ({"schedule": "0 25 * * *"}, "schedule", "is not a cron expression"),
    ({"vms": []}, "vms", "Choose at least one VM, or set a rule"),
    ({"keep_last": "0"}, "keep_last", "Keep at least the last restore point"),
    ({"max_parallel": "0"}, "max_parallel", "between 1 and 64"),
    ({"compression_level": "30"}, "compression_level", "between 1 (fastest) and 22"),
    ({"name": "nightly"}, "name", "A backup job with this name already exists"),
    ({"repository": ""}, "repository", "This field is required."),
])
def test_bad_input_shows_a_sentence_per_field(admin, lab, repo, job, overrides, field, sentence):
    response = admin.post(ADD, form_data(repo, lab.vms[:1], **overrides))
    assert response.status_code == 200
    assert sentence in " ".join(response.context["form"].errors[field])
    assert sentence in response.content.decode()
    assert BackupJob.objects.count() == 1  # only the fixture's


def test_narrowing_by_connection_keeps_chosen_vms(admin, lab, repo):
    from tests.portal.conftest import add_vms, build_lab

    other = build_lab(vm_count=0, name="Lab B")
    add_vms(other, 2, start=500)
    chosen = lab.vms[0]
    hx = {"HX-Request": "true", "HX-Trigger-Name": "connection"}
    fragment = admin.get("/jobs/vm-choices/", {"connection": other.connection.pk, "vms": [chosen.pk]},
                         headers=hx).content.decode()
    assert f'value="{other.vms[0].pk}"' in fragment
    assert f'value="{lab.vms[1].pk}"' not in fragment  # another connection's VM
    assert f'value="{other.hosts[0].pk}"' in options_of(fragment, "rule_hosts") and 'hx-swap-oob="true"' in fragment

    # Without JavaScript: "narrow" shows the form again for that connection, saving nothing; the chosen VM
    # of the other connection stays chosen (a chip: a hidden input).
    response = admin.post(ADD, form_data(repo, [chosen], connection=other.connection.pk, narrow="1"))
    page = response.content.decode()
    assert response.status_code == 200 and not BackupJob.objects.exists()
    assert f'id="vm-choice-{lab.vms[1].pk}"' not in page and f'id="vm-choice-{other.vms[0].pk}"' in page
    assert f'<input type="hidden" name="vms" value="{chosen.pk}">' in page
    assert "correct the fields" not in page


def test_edit_shows_and_keeps_the_rules(admin, lab, job):
    job.rules = {"folders": ["prod"], "name": "vm-00*"}
    job.save()
    page = admin.get(f"/jobs/{job.pk}/edit/").content.decode()
    assert 'value="vm-00*"' in page and "prod</textarea>" in page
    data = form_data(job.repository, lab.vms[:3], name="nightly", rule_folders="prod", rule_name="vm-00*",
                     schedule="")
    response = admin.post(f"/jobs/{job.pk}/edit/", data)
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.schedule == "" and job.rules == {"folders": ["prod"], "name": "vm-00*"}


def test_pages_render_for_viewers_without_action_buttons(viewer, job):
    run = JobRun.objects.create(job=job, job_name=job.name, state=JobRun.State.RUNNING)
    vm = job.vms.order_by("name").first()
    task = Task.objects.create(run=run, vm=vm, vm_name=vm.name, state=Task.State.RUNNING, appliance_name="va-1",
                               mode="hotadd", mode_reason="va-1 runs on the VM's host: hot-add.", phase="read",
                               bytes_done=512 << 20, bytes_total=1 << 30)
    listing = viewer.get("/jobs/").content.decode()
    assert "nightly" in listing and "nas" in listing and "0 2 * * *" in listing and "Running" in listing.title()
    detail = viewer.get(f"/jobs/{job.pk}/").content.decode()
    assert "Run now" not in detail and vm.name in detail and "3 VMs" in detail
    run_page = viewer.get(f"/jobs/runs/{run.pk}/").content.decode()
    assert vm.name in run_page and "va-1 runs on the VM&#x27;s host: hot-add." in run_page
    assert "50%" in run_page and "512.0 MB of 1.0 GB" in run_page.replace("\xa0", " ")
    assert "Cancel run" not in run_page and f'data-run-live="{run.pk}"' in run_page
    assert "Cancel" not in viewer.get(f"/jobs/tasks/{task.pk}/").content.decode().replace("Cancelled", "")


def test_task_page_lists_its_events_in_order(viewer, job):
    vm = job.vms.first()
    task = Task.objects.create(vm=vm, vm_name=vm.name, state=Task.State.SUCCEEDED, last_seq=4,
                               message="Restore point rp-1 (full).", result={"restore_point": "rp-1"})
    TaskEvent.objects.bulk_create([
        TaskEvent(task=task, seq=1, type="phase", data={"phase": "snapshot", "message": "Taking a snapshot"}),
        TaskEvent(task=task, seq=2, type="progress", data={"done": 1 << 20, "total": 4 << 20, "rate": 1 << 20}),
        TaskEvent(task=task, seq=3, type="log", data={"level": "warning", "message": "CBT reset"}),
        TaskEvent(task=task, seq=4, type="result", data={"restore_point": "rp-1", "stored_bytes": 42}),
    ])
    page = viewer.get(f"/jobs/tasks/{task.pk}/").content.decode()
    order = [page.index(text) for text in ("snapshot: Taking a snapshot", "1.0 of 4.0 MiB (25 %), 1.0 MiB/s",
                                           "CBT reset", "restore_point: rp-1, stored_bytes: 42")]
    assert order == sorted(order)
    assert "Restore point rp-1 (full)." in page and "table-warning" in page


def test_run_now_queues_a_run_for_operators_only(operator, viewer, job, django_capture_on_commit_callbacks):
    assert viewer.post(f"/jobs/{job.pk}/run/").status_code == 403
    assert not JobRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/jobs/{job.pk}/run/")
    run = JobRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/runs/{run.pk}/"
    assert run.tasks.count() == 3 and run.created_by == operator.user and run.state == JobRun.State.QUEUED
    assert len(take_queued(f"job {job.name} run #{run.pk}")) == 1
    page = operator.get(response["Location"]).content.decode()
    assert "queued: 3 VM(s) to back up" in page and "Cancel run" in page

    assert operator.post(f"/jobs/runs/{run.pk}/cancel/").status_code == 302
    assert set(run.tasks.values_list("state", flat=True)) == {Task.State.CANCELLED}
    JobRun.objects.filter(pk=run.pk).update(state=JobRun.State.CANCELLED)
    again = operator.post(f"/jobs/runs/{run.pk}/cancel/", follow=True).content.decode()
    assert "has already ended (cancelled)" in again


def test_run_now_of_an_empty_job_says_why(operator, repo, lab):
    job = BackupJob.objects.create(name="empty", repository=repo, rules={"name": "nothing-*"})
    page = operator.post(f"/jobs/{job.pk}/run/", follow=True).content.decode()
    assert "selects no VM" in page and not JobRun.objects.exists()


def test_delete_a_job_keeps_its_runs(admin, job):
    run = JobRun.objects.create(job=job, job_name=job.name, state=JobRun.State.RUNNING)
    page = admin.get(f"/jobs/{job.pk}/delete/").content.decode()
    assert "has a run in progress" in page
    JobRun.objects.filter(pk=run.pk).update(state=JobRun.State.SUCCEEDED)
    assert admin.post(f"/jobs/{job.pk}/delete/").status_code == 302
    assert not BackupJob.objects.exists() and JobRun.objects.get().job is None


@pytest.fixture
def point(lab, repo) -> RestorePoint:
    vm = lab.vms[1]
    return RestorePoint.objects.create(repository=repo, rp_id="rp-7", vm=vm, vm_name=vm.uuid, kind="full",
                                       taken="2026-03-01T02:00:00Z", disks=[{"name": "disk-0", "size": 1 << 30}],
                                       vm_config={"name": vm.name}, logical_bytes=1 << 30, stored_bytes=300 << 20)


def test_restore_point_list(viewer, operator, point):
    page = viewer.get("/jobs/restore-points/").content.decode()
    assert point.vm.name in page and "2026-03-01" in page and "full" in page and "nas" in page
    assert "Restore</a>" not in page
    assert f"/jobs/restore-points/{point.pk}/restore/" in operator.get("/jobs/restore-points/").content.decode()
    assert viewer.get(f"/jobs/restore-points/{point.pk}/restore/").status_code == 403
    filtered = viewer.get("/jobs/restore-points/", {"vm": point.vm_id + 1000}).content.decode()
    assert "No restore points match" in filtered


def new_vm_step(point, **place) -> dict:
    """The wizard's second step for a whole VM as a new VM."""
    return {"step": "2", "what": "vm", "place": "new_vm", "go": "next", **place}


def test_restore_wizard_narrows_to_the_host(operator, lab, point):
    host = point.vm.host
    url = f"/jobs/restore-points/{point.pk}/restore/"
    page = operator.get(url).content.decode()
    assert f'value="{point.vm.name}-restored"' in page and "1. What to restore" in page
    page = operator.post(url, {"step": "1", "what": "vm", "host": host.pk, "go": "next"}).content.decode()
    assert "2. Where to restore it" in page and f'value="{host.pk}" selected' in options_of(page, "host")
    mounted = [d for d in [lab.shared, *lab.locals] if d.hosts.filter(pk=host.pk).exists()]
    other = next(d for d in lab.locals if not d.hosts.filter(pk=host.pk).exists())
    datastores = options_of(page, "datastore")
    assert all(f'value="{d.pk}"' in datastores for d in mounted) and f'value="{other.pk}"' not in datastores
    fragment = operator.get("/jobs/restore-points/host-choices/", {"host": lab.hosts[0].pk}).content.decode()
    datastores = options_of(fragment, "datastore")
    assert f'value="{lab.locals[0].pk}"' in datastores and f'value="{lab.locals[1].pk}"' not in datastores
    assert f'value="{lab.networks[0].pk}"' in options_of(fragment, "network")
    # Without JavaScript: "Show its datastores" posts the step back, unchecked, with the host's lists.
    narrowed = operator.post(url, {**new_vm_step(point), "host": lab.hosts[0].pk, "narrow": "host"}).content.decode()
    assert f'value="{lab.locals[1].pk}"' not in options_of(narrowed, "datastore")
    assert "2. Where to restore it" in narrowed and "correct what is marked" not in narrowed


@pytest.mark.parametrize(("field", "sentence"), [
    ("datastore", "does not mount datastore"),
    ("network", "is not available on host"),
    ("name", "Enter the name of the new VM"),
    ("folder", "absolute path"),
])
def test_restore_wizard_errors_per_field(operator, lab, point, field, sentence):
    host = point.vm.host
    lonely = Network.objects.create(connection=lab.connection, datacenter=lab.datacenter, moref="net-x", name="x")
    other = next(d for d in lab.locals if not d.hosts.filter(pk=host.pk).exists())
    data = new_vm_step(point, name="copy", host=host.pk, datastore=lab.shared.pk, network="")
    data.update({"datastore": {"datastore": other.pk}, "network": {"network": lonely.pk},
                 "name": {"name": " "}, "folder": {"what": "images", "folder": "srv/x"}}[field])
    response = operator.post(f"/jobs/restore-points/{point.pk}/restore/", data)
    assert response.status_code == 200
    assert sentence in " ".join(response.context["form"].errors[field])
    assert "2. Where to restore it" in response.content.decode()
    assert not Task.objects.exists()


def test_restore_without_a_ready_appliance_says_so(operator, lab, point):
    data = new_vm_step(point, name="copy", host=point.vm.host_id, datastore=lab.shared.pk)
    page = operator.post(f"/jobs/restore-points/{point.pk}/restore/", data).content.decode()
    assert "2. Where to restore it" in page and "Start restore" not in page  # refused where the place is chosen
    assert "No ready appliance can write there" in page and "(no ready appliance can write here)" in page
    # Posted straight to "Start restore" (a stale page): back on step two with the sentence.
    response = operator.post(f"/jobs/restore-points/{point.pk}/restore/", {**data, "step": "3", "go": "start"})
    started = response.content.decode()
    assert response.status_code == 200 and "No ready appliance can write there" in started
    assert "2. Where to restore it" in started
    assert not Task.objects.exists()


def test_admin_job_form_uses_the_same_rules_and_runs_now(lab, job, make_user, django_capture_on_commit_callbacks):
    from django.test import Client

    from tests.conftest import PASSWORD

    staff = make_user("administrator", "staff-admin")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = Client()
    assert client.login(username=staff.username, password=PASSWORD)
    url = f"/admin/jobs/backupjob/{job.pk}/change/"
    data = {"name": job.name, "repository": job.repository_id, "vms": [vm.pk for vm in job.vms.all()],
            "rules": '{"hosts": [123456]}', "schedule": "not cron", "keep_last": "7", "keep_daily": "7",
            "keep_weekly": "4", "keep_monthly": "6", "mode": "auto", "compression_level": "3", "max_parallel": "4",
            "enabled": "on"}
    page = client.post(url, data).content.decode()
    assert "is not a cron expression" in page and "no host with id 123456" in page
    assert BackupJob.objects.get(pk=job.pk).schedule == "0 2 * * *"
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/admin/jobs/backupjob/", {"action": "run_now", "_selected_action": [job.pk]})
    run = JobRun.objects.get()
    assert run.job == job and run.tasks.count() == 3
    assert len(take_queued(f"job {job.name} run #{run.pk}")) == 1

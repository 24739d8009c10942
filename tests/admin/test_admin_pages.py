"""Every admin changelist and change page renders for a superuser; inventory and audit are read-only."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.authtoken.models import Token

from core.models import AuditEntry
from inventory.models import Connection, VirtualDisk, VirtualMachine
from tests.api.fixtures import HYPERVISOR_PASSWORD, take_queued, unique_name
from tests.conftest import PASSWORD

MODELS = sorted(admin.site._registry, key=lambda m: m._meta.label)


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("support", password=PASSWORD)


@pytest.fixture
def admin_client(client, superuser, synced):
    Token.objects.create(user=superuser)
    background_task_rows()
    channel_layer_rows()
    appliance_rows(synced)
    job_rows(synced)
    client.force_login(superuser)
    return client


def background_task_rows() -> None:
    """One row for each of django-q2's admin pages: queued, scheduled, succeeded and failed tasks."""
    from django.utils import timezone
    from django_q.models import OrmQ, Schedule, Task
    from django_q.signing import SignedPackage

    now = timezone.now()
    Schedule.objects.create(name="nightly sync", func="inventory.tasks.sync_connection_task", args="1")
    for n, success in enumerate((True, False)):
        Task.objects.create(
            id=f"{n:032d}", name=f"sync {n}", func="inventory.tasks.sync_connection_task", started=now,
            stopped=now, success=success, result="Synced." if success else "Cannot reach the server.",
        )
    package = SignedPackage.dumps({"id": "q1", "name": "sync q", "func": "inventory.tasks.sync_connection_task"})
    OrmQ.objects.create(key="vafleet", payload=package, lock=now)


def channel_layer_rows() -> None:
    """A message in flight and a group membership of the embedded channel layer."""
    import time

    from core.models import ChannelGroupMember, ChannelMessage

    expires = time.time() + 60
    ChannelMessage.objects.create(channel="specific.abc!xyz", inbox="specific.abc!", payload=b"\x80", expires=expires)
    ChannelGroupMember.objects.create(group="connections", channel="specific.abc!xyz", expires=expires)


APPLIANCE_ROOT_PASSWORD = "Root-Pass-9182!x"


def appliance_rows(connection) -> None:
    """An appliance and a fleet operation with one item."""
    from appliances.models import Appliance, FleetOperation, FleetOperationItem
    from inventory.models import Datastore, Host, Network

    host = Host.objects.filter(connection=connection).order_by("name").first()
    appliance = Appliance.objects.create(
        name="va-admin", hostname="va-admin", connection=connection, host=host,
        datastore=Datastore.objects.get(name="shared-nfs"), network=Network.objects.get(name="VM Network"),
        root_password=APPLIANCE_ROOT_PASSWORD, user_password="User-Pass-7731!y",
    )
    operation = FleetOperation.objects.create(kind="deploy", state="running")
    FleetOperationItem.objects.create(operation=operation, appliance=appliance, appliance_name=appliance.name,
                                      phase="Copying the disk", percent=40)


REPOSITORY_PASSWORD = "Sftp-Pass-5521!z"
REPOSITORY_PASSPHRASE = "Repo-Passphrase-8812"


def job_rows(connection) -> None:
    """A repository, a job using it, a run with one task and its events, and a restore point."""
    from django.utils import timezone

    from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task, TaskEvent

    repository = Repository.objects.create(name="nas", kind="sftp", host="nas.example.test", path="backups",
                                           username="backup", password=REPOSITORY_PASSWORD,
                                           passphrase=REPOSITORY_PASSPHRASE)
    vm = VirtualMachine.objects.filter(connection=connection).order_by("name").first()
    job = BackupJob.objects.create(name="nightly vm", repository=repository)
    job.vms.set([vm])
    run = JobRun.objects.create(job=job, job_name=job.name, state="succeeded")
    point = RestorePoint.objects.create(repository=repository, rp_id="20261125T101500.000000Z-1a2b3c4d", vm=vm,
                                        vm_name=vm.name, kind="full", taken=timezone.now())
    task = Task.objects.create(run=run, vm=vm, vm_name=vm.name, connection=connection, repository=repository,
                               state="succeeded", restore_point=point)
    TaskEvent.objects.create(task=task, seq=1, type="log", data={"level": "info", "message": "Engine wrote chunks"})
    from django.contrib.auth import get_user_model

    from jobs.models import NotificationSettings

    reader = get_user_model().objects.create_user("mail-reader", email="reader@example.test")
    NotificationSettings.objects.create(user=reader, on_failure=True, daily_summary=True)


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_changelist_and_change_page_render(admin_client, model):
    listing = admin_client.get(url(model, "changelist"))
    assert listing.status_code == 200
    assert admin_client.get(url(model, "changelist"), {"q": "vm"}).status_code == 200
    obj = model._default_manager.first()
    assert obj is not None, f"the test needs a {model._meta.verbose_name} to open"
    key = obj.user_id if model._meta.label == "authtoken.TokenProxy" else obj.pk  # the token admin keys by user
    page = admin_client.get(url(model, "change", key))
    assert page.status_code == 200


@pytest.mark.parametrize("model", [Connection, Group], ids=lambda m: m._meta.label)
def test_add_page_renders(admin_client, model):
    assert admin_client.get(url(model, "add")).status_code == 200


@pytest.mark.parametrize("model", [VirtualMachine, VirtualDisk, AuditEntry], ids=lambda m: m._meta.label)
def test_synced_and_audit_rows_are_read_only(admin_client, model):
    assert admin_client.get(url(model, "add")).status_code == 403
    obj = model._default_manager.first()
    page = admin_client.get(url(model, "change", obj.pk)).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model._default_manager.filter(pk=obj.pk).exists()


def test_vm_page_shows_its_disks(admin_client):
    vm = VirtualMachine.objects.get(moref="vm-3")
    page = admin_client.get(url(VirtualMachine, "change", vm.pk)).content.decode()
    assert "[shared-nfs] vm-3/vm-3.vmdk" in page


def test_odd_characters_are_escaped(admin_client):
    page = admin_client.get(url(VirtualMachine, "changelist"), {"q": "finance"}).content.decode()
    assert "Finance &amp; &lt;Reports&gt; ünï" in page
    assert "<Reports>" not in page


def test_connection_password_field_is_write_only(admin_client, synced):
    page = admin_client.get(url(Connection, "change", synced.pk)).content.decode()
    assert 'type="password"' in page
    assert HYPERVISOR_PASSWORD not in page
    assert "Leave blank to keep the stored password." in page


def test_connection_admin_validates_kind(admin_client):
    form = {"name": "x", "kind": "hyperv", "host": "h", "port": "443", "options": "{}"}
    page = admin_client.post(url(Connection, "add"), form).content.decode()
    assert "Select a valid choice" in page
    assert not Connection.objects.filter(name="x").exists()


def test_sync_now_action_queues_a_sync(admin_client, synced, django_capture_on_commit_callbacks):
    synced.name = unique_name("vc")
    synced.save()
    action = {"action": "sync_now", "_selected_action": [synced.pk]}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url(Connection, "changelist"), action, follow=True)
    assert f"Sync of {synced.name} queued." in response.content.decode()
    again = admin_client.post(url(Connection, "changelist"), action, follow=True)
    assert f"A sync of {synced.name} is already running." in again.content.decode()
    assert len(take_queued(f"sync {synced.name}")) == 1
    entry = AuditEntry.objects.get(message="sync requested")
    assert (entry.username, entry.via, entry.remote_addr) == ("support", "admin", "127.0.0.1")


def test_test_action_reports_the_sentence(admin_client, synced):
    action = {"action": "test_now", "_selected_action": [synced.pk]}
    page = admin_client.post(url(Connection, "changelist"), action, follow=True).content.decode()
    assert "vcenter-1: cannot reach 127.0.0.1" in page.lower()  # the sentence of the refused connection
    assert 'class="error"' in page


def test_user_list_shows_roles_without_query_per_row(admin_client, make_user, django_assert_max_num_queries):
    for role in ("viewer", "operator", "administrator"):
        make_user(role)
    with django_assert_max_num_queries(12):
        page = admin_client.get(reverse("admin:auth_user_changelist"))
    html = page.content.decode()
    for role in ("viewer", "operator", "administrator"):
        assert f'<td class="field-role">{role}</td>' in html


def test_token_keys_are_masked(admin_client, superuser):
    key = Token.objects.get(user=superuser).key
    page = admin_client.get(reverse("admin:authtoken_tokenproxy_changelist")).content.decode()
    assert key not in page
    assert f"{key[:4]}…" in page


def test_appliance_passwords_are_write_only(admin_client):
    from appliances.models import Appliance

    appliance = Appliance.objects.get(name="va-admin")
    page = admin_client.get(url(Appliance, "change", appliance.pk)).content.decode()
    assert 'name="root_password"' in page and 'type="password"' in page
    assert APPLIANCE_ROOT_PASSWORD not in page
    assert "Leave blank to keep the stored password." in page
    assert 'name="engine_version"' not in page  # health is read-only


def test_appliance_admin_checks_with_validation_problems(admin_client):
    from appliances.models import Appliance
    from inventory.models import Datastore, Host, Network

    hosts = list(Host.objects.order_by("name"))
    form = {
        "name": "va-two", "connection": hosts[0].connection_id, "host": hosts[0].pk,
        "datastore": Datastore.objects.get(name="local-2").pk, "network": Network.objects.get(name="VM Network").pk,
        "addressing": "dhcp", "hostname": "va-admin", "root_password": "weak", "root_password_confirm": "weak",
        "user_name": "vauser", "user_password": "", "user_password_confirm": "", "vcpus": "2", "memory_mb": "2048",
        "transport": "ssh", "port": "22",
    }
    page = admin_client.post(url(Appliance, "add"), form).content.decode()
    assert "already used by appliance va-admin" in page
    assert "does not mount datastore local-2" in page
    assert "Enter a password for the non-root user." in page
    assert not Appliance.objects.filter(name="va-two").exists()


def test_fleet_operations_are_read_only_with_their_items(admin_client):
    from appliances.models import FleetOperation

    operation = FleetOperation.objects.get()
    page = admin_client.get(url(FleetOperation, "change", operation.pk)).content.decode()
    assert "Copying the disk" in page
    assert 'name="_save"' not in page
    assert admin_client.get(url(FleetOperation, "add")).status_code == 403


def test_repository_secrets_are_write_only(admin_client):
    from jobs.models import Repository

    repository = Repository.objects.get(name="nas")
    page = admin_client.get(url(Repository, "change", repository.pk)).content.decode()
    assert 'name="password"' in page and 'name="passphrase"' in page and 'type="password"' in page
    assert REPOSITORY_PASSWORD not in page and REPOSITORY_PASSPHRASE not in page
    assert "Leave blank to keep the stored password." in page


def test_job_runs_tasks_and_restore_points_are_read_only(admin_client):
    from jobs.models import JobRun, RestorePoint, Task

    task = Task.objects.get()
    page = admin_client.get(url(Task, "change", task.pk)).content.decode()
    assert "Engine wrote chunks" in page  # its events, inline
    assert 'name="_save"' not in page
    for model in (JobRun, Task, RestorePoint):
        assert admin_client.get(url(model, "add")).status_code == 403

"""Repositories through the API: CRUD with write-only secrets, the rules per kind, deletion refused while
in use, and the connection test run from the built-in local appliance against a local folder and a real
SFTP server (then initialisation, a second test, a wrong passphrase and a wrong password)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from core.models import AuditEntry
from jobs import repositories
from jobs.engine import EngineFailed
from jobs.models import BackupJob, Repository

PASSWORD = "Sftp-Secret-3391!q"
PASSPHRASE = "Repo-Passphrase-4471"
URL = "/api/jobs/repositories/"


@pytest.fixture
def admin_api(api_client_for):
    return api_client_for("administrator")


def sftp_body(**changes) -> dict:
    body = {"name": "nas", "kind": "sftp", "host": "nas.example.test", "path": "backups/vafleet",
            "username": "backup", "password": PASSWORD, "passphrase": PASSPHRASE}
    return {**body, **changes}


def test_create_read_update_with_write_only_secrets(admin_api):
    created = admin_api.post(URL, sftp_body(), format="json")
    assert created.status_code == 201, created.content
    text = created.content.decode()
    assert PASSWORD not in text and PASSPHRASE not in text
    assert "password" not in created.json() and "passphrase" not in created.json()
    assert created.json()["has_password"] is True and created.json()["chunk_size"] == 1 << 20
    repository = Repository.objects.get(name="nas")
    assert repository.password == PASSWORD and repository.passphrase == PASSPHRASE
    pk = created.json()["id"]

    listing = admin_api.get(URL)
    assert listing.status_code == 200
    assert PASSWORD not in listing.content.decode() and PASSPHRASE not in listing.content.decode()
    row = listing.json()["results"][0]
    assert (row["name"], row["has_password"], row["restore_points"]) == ("nas", True, 0)

    # Omitted or blank secrets keep the stored ones.
    changed = admin_api.patch(f"{URL}{pk}/", {"path": "other", "password": "", "passphrase": ""}, format="json")
    assert changed.status_code == 200, changed.content
    repository.refresh_from_db()
    assert (repository.path, repository.password, repository.passphrase) == ("other", PASSWORD, PASSPHRASE)
    assert AuditEntry.objects.filter(object_type="jobs.Repository", action=AuditEntry.Action.UPDATE).exists()


@pytest.mark.parametrize(("body", "field", "sentence"), [
    (sftp_body(host="", username=""), "host", "Enter the address of the SFTP server"),
    (sftp_body(username=""), "username", "Enter the user name to log in to the SFTP server"),
    (sftp_body(password=""), "password", "Enter the password of this user."),
    (sftp_body(host="sftp://nas/x"), "host", "without a scheme or a path"),
    (sftp_body(kind="smb", share=""), "share", "Enter the name of the SMB share"),
    (sftp_body(kind="local", path="relative/folder"), "path", "absolute path"),
    (sftp_body(kind="nfs", path=""), "path", "Enter the repository's folder on the NFS server"),
    (sftp_body(passphrase=""), "passphrase", "Choose a passphrase"),
    (sftp_body(passphrase="short"), "passphrase", "at least 8 characters"),
    (sftp_body(chunk_size=3000), "chunk_size", "3000"),
    (sftp_body(port=70000), "port", "between 1 and 65535"),
])
def test_rules_per_kind_are_sentences(admin_api, body, field, sentence):
    response = admin_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert sentence in " ".join(response.json()[field])
    assert not Repository.objects.exists()


def test_sftp_with_a_private_key_needs_no_password(admin_api):
    body = sftp_body(password="", options={"private_key": "/root/.ssh/id_ed25519"})
    assert admin_api.post(URL, body, format="json").status_code == 201


def test_passphrase_and_chunk_size_of_an_initialised_repository_are_fixed(admin_api):
    pk = admin_api.post(URL, sftp_body(), format="json").json()["id"]
    before = admin_api.patch(f"{URL}{pk}/", {"passphrase": "A-New-Passphrase-1"}, format="json")
    assert before.status_code == 200  # not initialised yet: it may change
    Repository.objects.filter(pk=pk).update(initialized_at=timezone.now())
    refused = admin_api.patch(f"{URL}{pk}/", {"passphrase": "Another-Passphrase-2"}, format="json")
    assert refused.status_code == 400 and "cannot be changed here" in refused.json()["passphrase"][0]
    refused = admin_api.patch(f"{URL}{pk}/", {"chunk_size": 1 << 22}, format="json")
    assert refused.status_code == 400 and "fixed" in refused.json()["chunk_size"][0]
    assert Repository.objects.get(pk=pk).passphrase == "A-New-Passphrase-1"


def test_delete_is_refused_while_a_job_uses_it(admin_api):
    pk = admin_api.post(URL, sftp_body(), format="json").json()["id"]
    job = BackupJob.objects.create(name="nightly", repository_id=pk)
    refused = admin_api.delete(f"{URL}{pk}/")
    assert refused.status_code == 409
    assert "backup job nightly uses it" in refused.json()["detail"]
    assert Repository.objects.filter(pk=pk).exists()
    job.delete()
    assert admin_api.delete(f"{URL}{pk}/").status_code == 204
    assert not Repository.objects.filter(pk=pk).exists()


def test_test_without_a_ready_appliance_is_a_400_sentence(admin_api):
    pk = admin_api.post(URL, sftp_body(), format="json").json()["id"]
    response = admin_api.post(f"{URL}{pk}/test/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "no_appliance" and "No appliance is ready" in response.json()["detail"]
    repository = Repository.objects.get(pk=pk)
    assert repository.last_test_ok is False and "No appliance is ready" in repository.last_test_message


# -- through the built-in local appliance, against a local folder and a real SFTP server -------------------
@pytest.fixture
def local_appliance(tmp_path, transactional_db):
    from inventory.connectors.lab import seed
    from inventory.models import Connection
    from inventory.sync import sync_connection

    seed(tmp_path / "lab", vms=2, disk_size=1 << 20)
    connection = Connection.objects.create(name="Lab", kind="lab", options={"root": str(tmp_path / "lab")})
    assert sync_connection(connection.pk).ok
    call_command("fleet", "local", "--connection", "Lab")
    from appliances.models import Appliance

    appliance = Appliance.objects.get(name="local-appliance")
    assert appliance.usable, appliance.state_message
    return appliance


@pytest.fixture
def sftp_server():
    from tests.harness.storage import STARTERS, ServerUnavailable

    try:
        server = STARTERS["sftp"]()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def check_round(repository: Repository, appliance) -> None:
    """Probe (nothing there), initialise, probe again (initialised, passphrase opens it)."""
    first = repositories.test_repository(repository)
    assert first.appliance == appliance.name
    assert first.initialized is False and first.passphrase_ok is None
    repository.refresh_from_db()
    assert repository.last_test_ok is True and "Reachable and writable from appliance local-appliance" in \
        repository.last_test_message
    assert repository.free_bytes is not None and repository.free_bytes > 0

    from appliances.actions import engine_ready_transport

    with engine_ready_transport(appliance) as transport:
        repositories.ensure_initialized(repository, transport, appliance)
    repository.refresh_from_db()
    assert repository.initialized_at is not None

    second = repositories.test_repository(repository)
    assert second.initialized is True and second.passphrase_ok is True and second.format_version == 1
    assert "the passphrase opens" in second.message


def test_repository_tests_run_on_the_local_appliance(local_appliance, sftp_server, tmp_path, api_client_for):
    # (a) a folder on the appliance
    local = Repository.objects.create(name="local", kind="local", path=str(tmp_path / "repo folder"),
                                      passphrase=PASSPHRASE, chunk_size=1 << 16)
    check_round(local, local_appliance)
    assert (tmp_path / "repo folder" / "config").exists()

    # (b) a real SFTP server, with password login
    remote = Repository.objects.create(
        name="sftp", kind="sftp", host=sftp_server.host, port=sftp_server.port, username=sftp_server.username,
        password=sftp_server.password, path=str(sftp_server.data_dir / "vafleet repo"), passphrase=PASSPHRASE,
        chunk_size=1 << 16)
    check_round(remote, local_appliance)
    assert (sftp_server.data_dir / "vafleet repo" / "config").exists()

    # The API's test gives the figures.
    client = api_client_for("operator")
    response = client.post(f"{URL}{remote.pk}/test/", {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["initialized"] is True and body["passphrase_ok"] is True and body["appliance"] == "local-appliance"

    # A wrong passphrase on the initialised repository: the engine's sentence, never initialised again.
    Repository.objects.filter(pk=remote.pk).update(initialized_at=None)
    remote = Repository.objects.get(pk=remote.pk)
    remote.passphrase = "Not-The-Passphrase-9"
    remote.save()
    config_before = (sftp_server.data_dir / "vafleet repo" / "config").read_bytes()
    with pytest.raises(EngineFailed) as caught:
        repositories.test_repository(remote)
    assert caught.value.code == "wrong_passphrase"
    remote.refresh_from_db()
    assert remote.last_test_ok is False and "passphrase does not open this repository" in remote.last_test_message
    from appliances.actions import engine_ready_transport

    with engine_ready_transport(local_appliance) as transport, pytest.raises(EngineFailed) as caught:
        repositories.ensure_initialized(remote, transport, local_appliance)
    assert caught.value.code == "wrong_passphrase"
    assert (sftp_server.data_dir / "vafleet repo" / "config").read_bytes() == config_before
    assert Repository.objects.get(pk=remote.pk).initialized_at is None

    # A bad SFTP password: the engine's auth sentence is stored, and the API answers 502 with its code.
    remote.password = "not-the-password"
    remote.save()
    response = client.post(f"{URL}{remote.pk}/test/", {}, format="json")
    assert response.status_code == 502, response.content
    assert response.json()["code"] == "target_auth_failed"
    remote.refresh_from_db()
    assert remote.last_test_ok is False
    assert "check the user name" in remote.last_test_message
    assert "tested from appliance local-appliance" in remote.last_test_message
    assert json.dumps(response.json()).count("not-the-password") == 0

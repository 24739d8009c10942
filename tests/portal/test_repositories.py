"""Repositories in the portal: the list with test results, free space and restore points, the form with
its fields per type and write-only secrets, the test button (operators) and deletion (administrators,
refused while jobs use the repository)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from core.models import AuditEntry
from jobs.models import BackupJob, Repository, RestorePoint

PASSWORD = "Smb-Secret-Pass-61"
PASSPHRASE = "Repo-Passphrase-2209"
ADD = "/jobs/repositories/add/"


def smb(**overrides) -> dict:
    data = {"name": "filer", "kind": "smb", "host": "filer.example.test", "port": "", "share": "backups",
            "path": "vafleet", "username": "backup", "password": PASSWORD, "passphrase": PASSPHRASE,
            "passphrase_confirm": PASSPHRASE, "chunk_size": str(1 << 20), "tls_verify": "on"}
    data.update(overrides)
    return data


@pytest.fixture
def stored(db) -> Repository:
    return Repository.objects.create(name="filer", kind="smb", host="filer.example.test", share="backups",
                                     path="vafleet", username="backup", password=PASSWORD, passphrase=PASSPHRASE)


def test_add_an_smb_repository(admin):
    response = admin.post(ADD, smb())
    repository = Repository.objects.get(name="filer")
    assert response.status_code == 302 and response["Location"] == f"/jobs/repositories/{repository.pk}/"
    assert (repository.share, repository.password, repository.passphrase) == ("backups", PASSWORD, PASSPHRASE)
    assert repository.options == {}  # the FTPS-only certificate setting is not kept for SMB
    entry = AuditEntry.objects.get(object_type="jobs.Repository", action=AuditEntry.Action.CREATE)
    assert PASSWORD not in str(entry.changes) and PASSPHRASE not in str(entry.changes)
    page = admin.get(response["Location"]).content.decode()
    assert "filer" in page and "Test connection" in page and "Not tested" in page
    assert PASSWORD not in page and PASSPHRASE not in page


def test_options_per_kind_are_kept(admin):
    admin.post(ADD, smb(name="ftps", kind="ftps", share="", tls_verify="", ca_file="/etc/ssl/ca.pem"))
    assert Repository.objects.get(name="ftps").options == {"tls_verify": False, "ca_file": "/etc/ssl/ca.pem"}
    admin.post(ADD, smb(name="nfs", kind="nfs", share="", username="", password="", export="/exports/backup"))
    nfs = Repository.objects.get(name="nfs")
    assert nfs.options == {"export": "/exports/backup"} and nfs.username == "" and nfs.password == ""


@pytest.mark.parametrize("overrides,field,sentence", [
    ({"share": ""}, "share", "Enter the name of the SMB share"),
    ({"host": ""}, "host", "Enter the address of the SMB server"),
    ({"username": ""}, "username", "Enter the user name to log in to the SMB server"),
    ({"kind": "sftp", "username": ""}, "username", "Enter the user name to log in to the SFTP server"),
    ({"kind": "sftp", "host": ""}, "host", "Enter the address of the SFTP server"),
    ({"password": ""}, "password", "Enter the password of this user."),
    ({"kind": "local", "path": "relative"}, "path", "absolute path"),
    ({"passphrase_confirm": "something else"}, "passphrase_confirm", "The two passphrases differ"),
    ({"passphrase": "", "passphrase_confirm": ""}, "passphrase", "Choose a passphrase"),
    ({"port": "0"}, "port", "between 1 and 65535"),
])
def test_bad_input_shows_a_sentence_and_saves_nothing(admin, overrides, field, sentence):
    response = admin.post(ADD, smb(**overrides))
    assert response.status_code == 200
    assert sentence in " ".join(response.context["form"].errors[field])
    assert sentence in response.content.decode()
    assert not Repository.objects.exists()
    assert PASSWORD not in response.content.decode() and PASSPHRASE not in response.content.decode()


def test_form_marks_fields_per_kind(admin):
    page = admin.get(ADD).content.decode()
    assert 'data-kinds="smb"' in page  # the share
    assert 'data-kinds="sftp ftp ftps smb nfs"' in page  # address and port
    assert 'data-kinds="nfs"' in page and 'data-kinds="ftps"' in page


def test_edit_keeps_secrets_when_blank_and_never_shows_them(admin, stored):
    url = f"/jobs/repositories/{stored.pk}/edit/"
    page = admin.get(url).content.decode()
    assert PASSWORD not in page and PASSPHRASE not in page
    assert "Leave blank to keep the stored password." in page
    response = admin.post(url, smb(path="moved", password="", passphrase="", passphrase_confirm=""))
    assert response.status_code == 302
    stored.refresh_from_db()
    assert (stored.path, stored.password, stored.passphrase) == ("moved", PASSWORD, PASSPHRASE)


def test_passphrase_of_an_initialised_repository_cannot_change(admin, stored):
    Repository.objects.filter(pk=stored.pk).update(initialized_at=timezone.now())
    url = f"/jobs/repositories/{stored.pk}/edit/"
    page = admin.get(url).content.decode()
    assert "passphrase and chunk size cannot be changed here" in page
    response = admin.post(url, smb(passphrase="A-Whole-New-One-1", passphrase_confirm="A-Whole-New-One-1",
                                   chunk_size=str(1 << 22)))
    assert response.status_code == 302  # the disabled fields are ignored; the rest is saved
    stored.refresh_from_db()
    assert stored.passphrase == PASSPHRASE and stored.chunk_size == 1 << 20


def test_list_shows_test_result_free_space_and_restore_points(admin, stored):
    Repository.objects.filter(pk=stored.pk).update(last_test=timezone.now(), last_test_ok=False,
                                                    last_test_message="Cannot reach smb://backup@filer",
                                                    free_bytes=5 * 1024**3)
    RestorePoint.objects.create(repository=stored, rp_id="rp-1", vm_name="web", taken=timezone.now())
    page = admin.get("/jobs/repositories/").content.decode()
    assert "filer" in page and "Failed" in page and "Cannot reach smb://backup@filer" in page
    assert "5.0\xa0GB" in page
    assert '<td class="num">1</td>' in page
    assert "Repositories</a>" in page  # the navigation entry


def test_delete_is_refused_while_a_job_uses_it(admin, stored):
    BackupJob.objects.create(name="nightly", repository=stored)
    url = f"/jobs/repositories/{stored.pk}/delete/"
    assert "backup job nightly uses it" in admin.get(url).content.decode()
    response = admin.post(url, follow=True)
    assert "backup job nightly uses it" in response.content.decode()
    assert Repository.objects.filter(pk=stored.pk).exists()
    BackupJob.objects.all().delete()
    assert admin.post(url).status_code == 302
    assert not Repository.objects.filter(pk=stored.pk).exists()


def test_test_button_shows_the_sentence(portal_client, stored):
    operator = portal_client("operator")
    response = operator.post(f"/jobs/repositories/{stored.pk}/test/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "No appliance is ready to test the repository from" in response.content.decode()
    stored.refresh_from_db()
    assert stored.last_test_ok is False
    assert AuditEntry.objects.filter(action=AuditEntry.Action.OPERATION, message="connection test: failed").exists()


@pytest.mark.parametrize("role", [None, "viewer", "operator", "administrator"])
def test_roles(portal_client, stored, role):
    client = portal_client(role)
    can_see = role is not None
    can_operate = role in ("operator", "administrator")
    can_administer = role == "administrator"
    for url in ("/jobs/repositories/", f"/jobs/repositories/{stored.pk}/"):
        assert client.get(url).status_code == (200 if can_see else 403)
    for url in (ADD, f"/jobs/repositories/{stored.pk}/edit/", f"/jobs/repositories/{stored.pk}/delete/"):
        assert client.get(url).status_code == (200 if can_administer else 403)
    detail = client.get(f"/jobs/repositories/{stored.pk}/").content.decode()
    if can_see:
        assert ("Test connection" in detail) == can_operate
        assert ("/edit/" in detail) == can_administer
    test = client.post(f"/jobs/repositories/{stored.pk}/test/")
    assert test.status_code == (302 if can_operate else 403)
    if not can_administer:
        assert client.post(ADD, smb(name="sneaky")).status_code == 403
        assert client.post(f"/jobs/repositories/{stored.pk}/delete/").status_code == 403
        assert not Repository.objects.filter(name="sneaky").exists()
        assert Repository.objects.filter(pk=stored.pk).exists()

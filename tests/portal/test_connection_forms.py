"""Adding, editing and deleting connections through the portal forms: clear sentences for bad
input, nothing saved then, the password never shown again, every change in the audit log."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection

from core.models import AuditEntry
from inventory.models import Connection
from tests.portal.conftest import STORED_PASSWORD

ADD = "/inventory/connections/add/"


def vsphere(**overrides) -> dict:
    data = {
        "name": "vc-prod", "kind": "vsphere", "host": "127.0.0.1", "port": "443",
        "username": "administrator@vsphere.local", "password": "New-Secret-77", "tls_thumbprint": "",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("overrides,sentence", [
    ({"host": ""}, "Enter the address of the vCenter or ESXi host"),
    ({"host": "https://vc.example.test/sdk"}, "without http:// or a path"),
    ({"username": ""}, "Enter the user name to log in with"),
    ({"password": ""}, "Enter the password of this user."),
    ({"port": "70000"}, "The port must be between 1 and 65535"),
    ({"tls_thumbprint": "AB:CD"}, "The thumbprint must be a SHA-256 fingerprint"),
    ({"name": ""}, "This field is required."),
    ({"kind": "hyperv"}, "Select a valid choice."),
])
def test_bad_vsphere_input_shows_a_sentence_and_saves_nothing(admin, db, overrides, sentence):
    response = admin.post(ADD, vsphere(**overrides))
    assert response.status_code == 200
    html = response.content.decode()
    assert sentence in html
    assert "The connection was not saved" in html
    assert not Connection.objects.exists()
    assert "New-Secret-77" not in html  # a typed password is not sent back either


def test_duplicate_name_is_refused_with_a_sentence(admin, lab):
    response = admin.post(ADD, vsphere(name="Lab A"))
    assert "A connection with this name already exists: choose another name." in response.content.decode()
    assert Connection.objects.count() == 1


def test_lab_folder_must_exist(admin, db, tmp_path):
    missing = tmp_path / "nowhere"
    response = admin.post(ADD, {"name": "demo", "kind": "lab", "lab_root": str(missing), "port": "443"})
    html = response.content.decode()
    assert f"The folder {missing} does not exist: seed a lab there first" in html
    response = admin.post(ADD, {"name": "demo", "kind": "lab", "lab_root": "relative/lab", "port": "443"})
    assert "absolute path" in response.content.decode()
    response = admin.post(ADD, {"name": "demo", "kind": "lab", "lab_root": "", "port": "443"})
    assert "Enter the folder of a seeded lab" in response.content.decode()
    assert not Connection.objects.exists()


def test_adding_a_lab_connection_saves_its_folder_and_is_audited(admin, db, tmp_path):
    response = admin.post(ADD, {"name": "demo", "kind": "lab", "lab_root": str(tmp_path), "port": "443"})
    connection = Connection.objects.get(name="demo")
    assert response.status_code == 302
    assert response["Location"] == connection.get_absolute_url()
    assert connection.options == {"root": str(tmp_path)}
    assert connection.host == "" and connection.password == ""
    entry = AuditEntry.objects.get(action="create", object_type="inventory.Connection")
    assert entry.username == admin.user.username
    assert entry.via == "portal"


def test_adding_vsphere_normalizes_the_thumbprint_and_encrypts_the_password(admin, db):
    thumbprint = "ab" * 32
    admin.post(ADD, vsphere(tls_thumbprint=thumbprint))
    connection = Connection.objects.get(name="vc-prod")
    assert connection.tls_thumbprint == ":".join(["AB"] * 32)
    assert connection.password == "New-Secret-77"
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT password FROM inventory_connection WHERE id = %s", [connection.pk])
        (raw,) = cursor.fetchone()
    assert "New-Secret-77" not in raw


def test_edit_with_a_blank_password_keeps_the_stored_one(admin, lab):
    url = f"/inventory/connections/{lab.connection.pk}/edit/"
    form = admin.get(url).content.decode()
    assert STORED_PASSWORD not in form
    assert 'name="password"' in form and 'value="' + STORED_PASSWORD not in form
    response = admin.post(url, vsphere(name="Lab A renamed", password="", port=str(lab.connection.port)))
    assert response.status_code == 302
    lab.connection.refresh_from_db()
    assert lab.connection.name == "Lab A renamed"
    assert lab.connection.password == STORED_PASSWORD
    update = AuditEntry.objects.filter(action="update", object_type="inventory.Connection").latest("id")
    assert update.changes["name"] == ["Lab A", "Lab A renamed"]
    assert "password" not in update.changes


def test_edit_with_a_new_password_replaces_it_and_audits_only_that_it_changed(admin, lab):
    url = f"/inventory/connections/{lab.connection.pk}/edit/"
    admin.post(url, vsphere(name="Lab A", password="Rotated-Pass-5", port=str(lab.connection.port)))
    lab.connection.refresh_from_db()
    assert lab.connection.password == "Rotated-Pass-5"
    entries = AuditEntry.objects.filter(object_type="inventory.Connection")
    assert not any("Rotated-Pass-5" in str(e.changes) or STORED_PASSWORD in str(e.changes) for e in entries)


def test_the_stored_password_is_in_no_rendered_page(admin, lab):
    c = lab.connection.pk
    admin.post(f"/inventory/connections/{c}/edit/", vsphere(name="Lab A", password="", port=str(lab.connection.port)))
    urls = [
        "/", "/audit/", "/inventory/connections/", f"/inventory/connections/{c}/", f"/inventory/connections/{c}/edit/",
        f"/inventory/connections/{c}/delete/", f"/inventory/connections/{c}/status/", "/inventory/hosts/",
        "/inventory/datastores/", "/inventory/networks/", "/inventory/vms/", f"/inventory/vms/{lab.vms[0].pk}/",
        f"/inventory/hosts/{lab.hosts[0].pk}/", f"/inventory/datastores/{lab.shared.pk}/",
    ]
    for url in urls:
        response = admin.get(url)
        assert response.status_code == 200, url
        assert STORED_PASSWORD not in response.content.decode(), url
    tested = admin.post(f"/inventory/connections/{c}/test/", headers={"HX-Request": "true"}).content.decode()
    assert STORED_PASSWORD not in tested


def test_delete_asks_first_then_deletes_with_its_inventory(admin, lab):
    url = f"/inventory/connections/{lab.connection.pk}/delete/"
    page = admin.get(url).content.decode()
    assert "Delete the connection Lab A?" in page
    assert "30 VMs" in page
    assert Connection.objects.filter(pk=lab.connection.pk).exists()
    response = admin.post(url)
    assert response.status_code == 302
    assert not Connection.objects.filter(pk=lab.connection.pk).exists()
    assert AuditEntry.objects.filter(action="delete", object_repr="Lab A", username=admin.user.username).exists()
    listing = admin.get(response["Location"]).content.decode()
    assert "Connection Lab A and its inventory were deleted." in listing


def test_a_password_that_cannot_be_decrypted_can_be_entered_again(admin, lab):
    # what a changed secrets key leaves behind: ciphertext no configured key opens
    with db_connection.cursor() as cursor:
        cursor.execute(
            "UPDATE inventory_connection SET password = %s WHERE id = %s", ["fernet:garbage", lab.connection.pk]
        )
    url = f"/inventory/connections/{lab.connection.pk}/edit/"
    assert admin.get(url).status_code == 200
    assert admin.get(f"/inventory/connections/{lab.connection.pk}/").status_code == 200
    tested = admin.post(f"/inventory/connections/{lab.connection.pk}/test/", headers={"HX-Request": "true"})
    assert "cannot be decrypted" in tested.content.decode()
    response = admin.post(url, vsphere(name="Lab A", password="Entered-Again-8", port=str(lab.connection.port)))
    assert response.status_code == 302
    lab.connection.refresh_from_db()
    assert lab.connection.password == "Entered-Again-8"

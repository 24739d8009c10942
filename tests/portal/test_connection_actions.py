"""Test, certificate trust and sync from the portal, against real endpoints on loopback:
a seeded lab folder, a closed port, and an HTTPS server with a self-signed certificate."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.models import AuditEntry
from inventory.connectors.lab import seed
from inventory.models import Connection

HTMX = {"HX-Request": "true"}


@pytest.fixture
def lab_connection(db, tmp_path):
    seed(tmp_path, vms=2, disk_size=1024 * 1024)
    return Connection.objects.create(name="Demo lab", kind="lab", options={"root": str(tmp_path)})


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server interface
        body = b"<namespaces></namespaces>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS server on loopback with a fresh self-signed certificate; yields (port, thumbprint)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vc.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    yield server.server_address[1], ":".join(digest[i:i + 2] for i in range(0, 64, 2))
    server.shutdown()
    server.server_close()


def test_testing_a_lab_connection_says_what_it_reached(operator, lab_connection):
    response = operator.post(f"/inventory/connections/{lab_connection.pk}/test/", headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Connected to" in html
    assert AuditEntry.objects.filter(action="operation", object_id=str(lab_connection.pk),
                                     message__startswith="test connection").exists()


def test_a_test_that_fails_shows_the_connector_sentence(operator, lab):
    html = operator.post(f"/inventory/connections/{lab.connection.pk}/test/", headers=HTMX).content.decode()
    assert f"Cannot reach 127.0.0.1:{lab.connection.port}" in html
    assert "connection refused" in html


def test_without_htmx_the_test_result_comes_back_on_the_detail_page(operator, lab_connection):
    response = operator.post(f"/inventory/connections/{lab_connection.pk}/test/", follow=True)
    assert response.redirect_chain[-1][0] == lab_connection.get_absolute_url()
    assert "Connected to" in response.content.decode()


def test_an_untrusted_certificate_shows_its_thumbprint_and_an_administrator_can_trust_it(
    admin, operator, https_server, db
):
    port, thumbprint = https_server
    connection = Connection.objects.create(
        name="vc", kind="vsphere", host="127.0.0.1", port=port, username="root", password="Pass-Word-9"
    )
    url = f"/inventory/connections/{connection.pk}/test/"

    as_operator = operator.post(url, headers=HTMX).content.decode()
    assert thumbprint in as_operator
    assert "Trust this certificate" not in as_operator  # operators may test, not change the pin
    assert "Ask an administrator to check and trust this certificate." in as_operator

    as_admin = admin.post(url, headers=HTMX).content.decode()
    assert "Trust this certificate" in as_admin and thumbprint in as_admin

    trusted = admin.post(f"/inventory/connections/{connection.pk}/trust/", {"thumbprint": thumbprint}, headers=HTMX)
    connection.refresh_from_db()
    assert connection.tls_thumbprint == thumbprint
    assert trusted.status_code == 200
    assert "First connection" not in trusted.content.decode()  # the re-test went past the certificate check
    entry = AuditEntry.objects.filter(action="update", object_id=str(connection.pk)).latest("id")
    assert entry.changes["tls_thumbprint"] == ["", thumbprint]
    assert entry.username == admin.user.username


def test_trusting_a_malformed_thumbprint_is_refused_with_a_sentence(admin, lab):
    response = admin.post(f"/inventory/connections/{lab.connection.pk}/trust/", {"thumbprint": "zz"}, headers=HTMX)
    assert response.status_code == 400
    assert "must be a SHA-256 fingerprint" in response.content.decode()
    lab.connection.refresh_from_db()
    assert lab.connection.tls_thumbprint == ""


def test_sync_now_claims_the_connection_and_polls_its_status(operator, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = operator.post(f"/inventory/connections/{lab.connection.pk}/sync/", headers=HTMX)
    html = response.content.decode()
    assert any("request_sync" in callback.__qualname__ for callback in queued)  # queued once the request commits
    assert 'data-status="syncing"' in html and 'hx-trigger="every 2s"' in html
    lab.connection.refresh_from_db()
    assert lab.connection.status == Connection.Status.SYNCING

    again = operator.post(f"/inventory/connections/{lab.connection.pk}/sync/", follow=True)
    assert "is already running; wait for it to finish." in again.content.decode()

    polling = operator.get(f"/inventory/connections/{lab.connection.pk}/status/?polling=1", headers=HTMX)
    assert "HX-Refresh" not in polling
    Connection.objects.filter(pk=lab.connection.pk).update(status=Connection.Status.OK)
    done = operator.get(f"/inventory/connections/{lab.connection.pk}/status/?polling=1", headers=HTMX)
    assert done["HX-Refresh"] == "true"  # the page reloads to show the new inventory
    assert "every 2s" not in done.content.decode()


def test_a_sync_runs_and_its_result_shows_on_the_pages(
    operator, lab_connection, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # the queued task runs in this process
    with django_capture_on_commit_callbacks(execute=True):
        operator.post(f"/inventory/connections/{lab_connection.pk}/sync/")
    lab_connection.refresh_from_db()
    assert lab_connection.status == Connection.Status.OK, lab_connection.status_message
    detail = operator.get(lab_connection.get_absolute_url()).content.decode()
    assert "Synced:" in detail
    vms = operator.get(f"/inventory/vms/?connection={lab_connection.pk}").content.decode()
    assert "2 VMs" in vms


def test_the_form_can_test_before_saving(admin, db, tmp_path, https_server):
    seed(tmp_path, vms=1, disk_size=1024 * 1024)
    url = "/inventory/connections/add/test/"
    ok = admin.post(url, {"name": "demo", "kind": "lab", "lab_root": str(tmp_path), "port": "443"}, headers=HTMX)
    assert "Connected to" in ok.content.decode() and "Save the connection" in ok.content.decode()

    bad = admin.post(url, {"name": "demo", "kind": "vsphere", "port": "443"}, headers=HTMX).content.decode()
    assert "Enter the address of the vCenter or ESXi host" in bad and "Enter the password of this user." in bad

    port, thumbprint = https_server
    fields = {"name": "vc", "kind": "vsphere", "host": "127.0.0.1", "port": str(port), "username": "root",
              "password": "Pass-Word-9"}
    untrusted = admin.post(url, fields, headers=HTMX).content.decode()
    assert f'data-use-thumbprint="{thumbprint}"' in untrusted
    assert "Pass-Word-9" not in untrusted
    assert not Connection.objects.exists()  # testing saves nothing


def test_testing_the_edit_form_uses_the_stored_password_when_left_blank(admin, lab):
    url = f"/inventory/connections/{lab.connection.pk}/edit/test/"
    fields = {"name": "Lab A", "kind": "vsphere", "host": "127.0.0.1", "port": str(lab.connection.port),
              "username": "administrator@vsphere.local", "password": ""}
    html = admin.post(url, fields, headers=HTMX).content.decode()
    assert f"Cannot reach 127.0.0.1:{lab.connection.port}" in html  # got past validation: the password was kept
    lab.connection.refresh_from_db()
    assert lab.connection.name == "Lab A"


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_testing_the_form_is_for_administrators(portal_client, db, role):
    response = portal_client(role).post("/inventory/connections/add/test/", {"name": "x"}, headers=HTMX)
    assert response.status_code == 403

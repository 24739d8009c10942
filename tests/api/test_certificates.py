"""Certificate trust through the API, against a real HTTPS server on loopback with a self-signed certificate.

The first test returns the server's thumbprint so a client can pin it; a wrong pin is refused with the
new thumbprint in the answer.
"""

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

from inventory.models import Connection

URL = "/api/inventory/connections/"


def self_signed(tmp_path) -> tuple[str, str, str]:
    """Certificate and key files for 127.0.0.1, and the certificate's SHA-256 thumbprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcenter.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return str(cert_file), str(key_file), ":".join(digest[i:i + 2] for i in range(0, 64, 2))


class NotVCenter(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_error(404)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS server on a free loopback port; yields (port, thumbprint)."""
    cert_file, key_file, thumbprint = self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotVCenter)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], thumbprint
    server.shutdown()
    server.server_close()


@pytest.fixture
def untrusted(db, https_server) -> tuple[Connection, str]:
    port, thumbprint = https_server
    conn = Connection.objects.create(
        name="vc-tls", kind="vsphere", host="127.0.0.1", port=port, username="root", password="x"
    )
    return conn, thumbprint


def test_first_test_shows_the_thumbprint_to_pin(api_client_for, untrusted):
    conn, thumbprint = untrusted
    response = api_client_for("operator").post(f"{URL}{conn.pk}/test/")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "untrusted_certificate"
    assert body["thumbprint"] == thumbprint
    assert thumbprint in body["detail"]


def test_pinned_thumbprint_passes_the_certificate_check(api_client_for, untrusted):
    conn, thumbprint = untrusted
    admin = api_client_for("administrator")
    pinned = admin.patch(f"{URL}{conn.pk}/", {"tls_thumbprint": thumbprint.lower()}, format="json")
    assert pinned.json()["tls_thumbprint"] == thumbprint
    response = admin.post(f"{URL}{conn.pk}/test/")
    # Trusted now; the server is no vCenter, so login fails for another reason.
    assert response.status_code == 502
    assert response.json()["code"] not in ("untrusted_certificate", "certificate_mismatch")


def test_wrong_pin_is_refused_with_the_new_thumbprint(api_client_for, untrusted):
    conn, thumbprint = untrusted
    conn.tls_thumbprint = ":".join(["AB"] * 32)
    conn.save()
    response = api_client_for("operator").post(f"{URL}{conn.pk}/test/")
    assert response.status_code == 502
    assert response.json()["code"] == "certificate_mismatch"
    assert response.json()["thumbprint"] == thumbprint

"""FTPS (explicit TLS) end to end on vsftpd with a certificate made for this test: the whole
engine pipeline over TLS with the certificate given as ca_file, and the clear refusal of a
certificate that is signed by someone else or issued for another name."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines import api
from engines.contract import DiskSpec
from engines.errors import TargetError
from engines.targets import open_target
from tests.engines.conftest import mutate, write_image
from tests.harness.storage import STARTERS, ServerUnavailable
from tests.harness.storage.process import HOST

PASSPHRASE = "ftps test passphrase"
CHUNK = 64 << 10


def make_cert(folder: Path, name: str, san: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def ftps(tmp_path_factory) -> Iterator[tuple]:
    """vsftpd serving the test's own certificate (for 127.0.0.1), plus two certificates it does not serve."""
    try:
        server = STARTERS["ftp"]()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("certs")
    try:
        cert, key = make_cert(folder, "vafleet-test-ftps", f"IP:{HOST}")
        (server.root / "cert.pem").write_bytes(cert.read_bytes())  # the paths the server's config names
        (server.root / "key.pem").write_bytes(key.read_bytes())
        server.restart()
        stranger, _ = make_cert(folder, "stranger", f"IP:{HOST}")
        yield server, cert, stranger, folder
    finally:
        server.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_whole_pipeline_over_ftps_with_a_ca_file(ftps, tmp_path: Path):
    server, cert, _, _ = ftps
    target = server.spec("ftps pipeline", tls=True, ca_file=str(cert)).__dict__
    assert target["type"] == "ftps"
    api.init(target, PASSPHRASE, chunk_size=CHUNK, kdf_n=1 << 12)
    disk = write_image(tmp_path / "disk.img", 40 * CHUNK + 123, seed=21)
    first = api.backup(target, PASSPHRASE, "tls vm", [DiskSpec("scsi0:0", str(disk))])
    first_sha = sha256(disk)
    changed = mutate(disk, [3 * CHUNK, 20 * CHUNK + 5], seed=22)
    second = api.backup(target, PASSPHRASE, "tls vm", [DiskSpec("scsi0:0", str(disk), changed_extents=changed)],
                        parent=first["restore_point"])
    assert second["kind"] == "incremental-cbt" and second["stats"]["new_chunks"] <= 2
    out = tmp_path / "restored.img"
    api.restore(target, PASSPHRASE, first["restore_point"], [DiskSpec("scsi0:0", str(out))], check_digest=True)
    assert sha256(out) == first_sha
    assert api.verify(target, PASSPHRASE)["ok"]
    pruned = api.prune(target, PASSPHRASE, retention={"keep_last": 1}, grace_seconds=0)
    assert [f["restore_point"] for f in pruned["forgotten"]] == [first["restore_point"]]
    assert pruned["deleted_files"] >= 1
    assert api.verify(target, PASSPHRASE)["ok"]
    api.restore(target, PASSPHRASE, second["restore_point"], [DiskSpec("scsi0:0", str(out))], check_digest=True)
    assert sha256(out) == sha256(disk)
    # The repository really is on the server, written through the TLS sessions.
    assert (server.local("ftps pipeline") / "config").is_file()


def test_certificate_signed_by_another_ca_is_refused(ftps):
    server, _, stranger, _ = ftps
    with open_target(server.spec("refused", tls=True, ca_file=str(stranger))) as target:
        with pytest.raises(TargetError, match="not trusted .*ca_file") as caught:
            target.put("config", b"never sent")
    assert caught.value.code == "target_tls_untrusted"
    assert not server.local("refused").exists()  # refused before login: nothing written


def test_certificate_for_another_name_is_refused(ftps, tmp_path: Path):
    server, _, _, folder = ftps
    other, other_key = make_cert(tmp_path, "other.example", "DNS:other.example")
    saved = (server.root / "cert.pem").read_bytes(), (server.root / "key.pem").read_bytes()
    (server.root / "cert.pem").write_bytes(other.read_bytes())
    (server.root / "key.pem").write_bytes(other_key.read_bytes())
    server.restart()
    try:
        # Trusted (its own CA file) but issued for other.example, not for 127.0.0.1.
        with open_target(server.spec("wrong name", tls=True, ca_file=str(other))) as target:
            with pytest.raises(TargetError, match=f"not issued for {HOST}") as caught:
                target.exists("config")
        assert caught.value.code == "target_tls_untrusted"
    finally:
        (server.root / "cert.pem").write_bytes(saved[0])
        (server.root / "key.pem").write_bytes(saved[1])
        server.restart()
    with open_target(server.spec("wrong name", tls=True, ca_file=str(folder / "vafleet-test-ftps.pem"))) as target:
        assert not target.exists("config")  # the right certificate again: the same settings work

"""Network mode in the lab: a snapshot disk served over HTTPS and read by the engine's HTTPS source."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from engines import api
from engines.contract import DiskSpec
from engines.errors import SourceAuthFailed, SourceError, SourceNotFound, SourceUnreachable
from engines.sources import open_source
from inventory.connectors.base import ConnectorError
from inventory.connectors.lab import network
from inventory.connectors.lab.vms import chain_of, disk_of

MIB = 1 << 20
PASSPHRASE = "network mode"
REPO_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def frozen(lab):
    """db-01 written to, snapshotted, then written to again: the snapshot's view differs from the live disk."""
    vm = lab.find_vm("db-01")
    lab.write(vm, percent=10, seed="before")
    snapshot = lab.create_snapshot(vm, "network backup")
    lab.write(vm, percent=10, seed="after")
    lab.write_at(vm, snapshot.disks[0]["key"], 0, b"written after the snapshot")
    for disk in snapshot.disks:
        assert lab.disk_digest(vm, disk["key"], snapshot.moref) != lab.disk_digest(vm, disk["key"])
    return vm, snapshot


def snapshot_bytes(lab, vm: str, key: int, snapshot: str) -> bytes:
    """The lab's own read of a disk as the snapshot froze it."""
    data = lab.state.read()
    vm_data = data["vms"][vm]
    entry = next(e for s in vm_data["snapshots"] if s["moref"] == snapshot for e in s["disks"] if e["key"] == key)
    chain = chain_of(lab.state, data, disk_of(vm_data, key, vm))
    return chain.read(0, chain.capacity, chain.index_of(entry["frozen"]))


def read_all(source, piece: int = MIB, workers: int = 4) -> bytes:
    """The whole disk through the engine's source, several threads at once as the backup pipeline reads."""
    pieces: dict[int, bytes] = {}

    def reader(first: int) -> None:
        buf = bytearray(piece)
        for offset in range(first * piece, source.size, workers * piece):
            n = source.read_into(offset, memoryview(buf))
            pieces[offset] = bytes(buf[:n])

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return b"".join(pieces[offset] for offset in sorted(pieces))


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def raw_request(served: dict, method: str = "GET", headers: dict | None = None, path: str | None = None):
    """One request with the session cookie, straight over http.client: (status, headers, body)."""
    url = urlsplit(served["path"])
    conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=10,
                                       context=ssl._create_unverified_context())  # noqa: S323 - our own test server
    try:
        conn.request(method, path or url.path, headers={"Cookie": served["options"]["cookie"], **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_engine_reads_the_snapshot_view_not_the_live_disk(lab, frozen):
    vm, snapshot = frozen
    assert len(snapshot.disks) == 2
    for disk in snapshot.disks:
        with lab.network_disk(vm, snapshot, disk, "127.0.0.1") as served:
            url = urlsplit(served["path"])
            assert url.scheme == "https" and url.hostname == "127.0.0.1" and url.port
            assert set(served["options"]) == {"cookie", "thumbprint"}
            with open_source("http", url=served["path"], **served["options"]) as source:
                assert source.size == disk["capacity_bytes"] == 8 * MIB
                data = read_all(source)
            assert port_open("127.0.0.1", url.port)
        assert data == snapshot_bytes(lab, vm, disk["key"], snapshot.moref)
        assert hashlib.sha256(data).hexdigest() == lab.disk_digest(vm, disk["key"], snapshot.moref)
        assert hashlib.sha256(data).hexdigest() != lab.disk_digest(vm, disk["key"])  # not the live disk
        assert not port_open("127.0.0.1", url.port)  # the server is gone once the context exits


def test_every_request_needs_the_session_cookie(lab, frozen):
    vm, snapshot = frozen
    with lab.network_disk(vm, snapshot, snapshot.disks[0]) as served:
        options = dict(served["options"])
        cookie = options.pop("cookie")
        with pytest.raises(SourceAuthFailed, match="HTTP 401"):
            open_source("http", url=served["path"], **options)
        with pytest.raises(SourceAuthFailed, match="HTTP 401"):
            open_source("http", url=served["path"], cookie=cookie[:-4] + "AAAA", **options)
        with pytest.raises(SourceAuthFailed, match="HTTP 401"):
            open_source("http", url=served["path"], cookie=f"other={cookie.partition('=')[2]}", **options)
        assert raw_request(served, headers={"Cookie": ""})[0] == 401
        with pytest.raises(SourceNotFound, match="HTTP 404"):  # only the one disk is served
            open_source("http", url=served["path"].replace("disk-", "disk-9"), **served["options"])
        with open_source("http", url=served["path"], **served["options"]) as source:
            assert source.size == 8 * MIB


def test_a_wrong_certificate_pin_is_refused(lab, frozen):
    vm, snapshot = frozen
    with lab.network_disk(vm, snapshot, snapshot.disks[0]) as served:
        options = {**served["options"], "thumbprint": "AB:" * 31 + "AB"}
        with pytest.raises(SourceError, match="thumbprint .* not the pinned"):
            open_source("http", url=served["path"], **options)
        options = {"cookie": served["options"]["cookie"]}  # CA checks instead of the pin: self-signed fails them
        with pytest.raises(SourceError, match="not trusted"):
            open_source("http", url=served["path"], **options)
    with lab.network_disk(vm, snapshot, snapshot.disks[0]) as again:  # a new certificate for every context
        assert again["options"]["thumbprint"] != served["options"]["thumbprint"]
        assert again["options"]["cookie"] != served["options"]["cookie"]



def test_leaving_the_context_ends_connections_still_open(lab, frozen):
    vm, snapshot = frozen
    buf = bytearray(MIB)
    with lab.network_disk(vm, snapshot, snapshot.disks[0]) as served:
        source = open_source("http", url=served["path"], readahead=0, retries=0, timeout=5, **served["options"])
        assert source.read_into(0, memoryview(buf)) == MIB  # a keep-alive connection stays open
    try:
        with pytest.raises(SourceUnreachable):
            source.read_into(MIB, memoryview(buf))
    finally:
        source.close()

def test_head_ranges_and_the_end_of_the_disk(lab, frozen):
    vm, snapshot = frozen
    disk = snapshot.disks[0]
    expected = snapshot_bytes(lab, vm, disk["key"], snapshot.moref)
    with lab.network_disk(vm, snapshot, disk) as served:
        status, headers, body = raw_request(served, "HEAD")
        assert (status, headers["Content-Length"], body) == (200, str(8 * MIB), b"")
        status, headers, body = raw_request(served, headers={"Range": "bytes=4096-8191"})
        assert status == 206 and headers["Content-Range"] == f"bytes 4096-8191/{8 * MIB}"
        assert body == expected[4096:8192]
        status, headers, body = raw_request(served, headers={"Range": "bytes=-10"})
        assert (status, body) == (206, expected[-10:])
        status, headers, _ = raw_request(served, headers={"Range": f"bytes={8 * MIB}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{8 * MIB}"
        status, _, body = raw_request(served)
        assert status == 200 and body == expected
        assert body[:26] != b"written after the snapshot"


def test_it_listens_on_one_address_only(lab, frozen):
    vm, snapshot = frozen
    with lab.network_disk(vm, snapshot, snapshot.disks[0], "") as served:
        port = urlsplit(served["path"]).port
        assert port_open("127.0.0.1", port)
        assert not port_open("127.0.0.2", port)  # a server on 0.0.0.0 would answer on every loopback address
    assert network.bind_address("") == network.bind_address("127.0.0.1") == "127.0.0.1"
    assert network.bind_address("10.231.0.6") == network.bind_address("10.231.0.5") == "10.231.0.5"
    assert network.bind_address("10.231.3.1") == "10.231.3.1"
    for elsewhere in ("0.0.0.0", "192.0.2.10", "10.231.0.7", "10.232.0.2"):
        with pytest.raises(ConnectorError, match="only to appliances on this machine"):
            network.bind_address(elsewhere)
    with pytest.raises(ConnectorError, match="not an IP address"):
        network.bind_address("va-01.example.test")


def test_an_appliance_that_is_not_running_gets_a_sentence(lab, frozen):
    vm, snapshot = frozen
    with pytest.raises(ConnectorError, match="No interface of this machine has address 10.231.255.253"):
        with lab.network_disk(vm, snapshot, snapshot.disks[0], "10.231.255.254"):
            pass  # pragma: no cover - the context must not open


def test_older_snapshots_may_be_consolidated_while_serving(lab):
    vm = lab.find_vm("web-01")
    lab.write(vm, percent=10, seed=1)
    older = lab.create_snapshot(vm, "older")
    lab.write(vm, percent=10, seed=2)
    newer = lab.create_snapshot(vm, "newer")
    lab.write(vm, percent=10, seed=3)
    key = newer.disks[0]["key"]
    expected = lab.disk_digest(vm, key, newer.moref)
    with lab.network_disk(vm, newer, newer.disks[0]) as served:
        lab.remove_snapshot(vm, older.moref)  # merges a delta of the served chain into the base and deletes it
        assert not Path(newer.disks[0]["chain"][1]).exists()
        with open_source("http", url=served["path"], **served["options"]) as source:
            data = read_all(source)
    assert hashlib.sha256(data).hexdigest() == expected == lab.disk_digest(vm, key, newer.moref)


def run_engine(job: dict, *prefix: str) -> list[dict]:
    proc = subprocess.run([*prefix, sys.executable, "-m", "engines"], input=json.dumps(job).encode(),
                          capture_output=True, cwd=REPO_DIR, timeout=120)
    events = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (events, proc.stderr.decode()[-2000:])
    return events


def backup_and_restore(tmp_path: Path, served: dict, *prefix: str) -> Path:
    """A backup by the engine process reading the served disk, then a restore into a file."""
    target = {"type": "local", "path": str(tmp_path / "repo")}
    api.init(target, PASSPHRASE, kdf_n=1 << 10)
    job = {"operation": "backup", "target": target, "passphrase": PASSPHRASE, "vm": {"name": "db-01"},
           "disks": [{"name": "disk-2000", "path": served["path"], "options": served["options"]}],
           "options": {"threads": 3}}
    result = next(e for e in run_engine(job, *prefix) if e["type"] == "result")
    output = tmp_path / "restored.img"
    api.restore(target, PASSPHRASE, result["restore_point"], [DiskSpec(name="disk-2000", path=str(output))],
                check_digest=True)
    return output


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_an_engine_backup_over_https_restores_the_snapshot(lab, frozen, tmp_path):
    vm, snapshot = frozen
    disk = snapshot.disks[0]
    with lab.network_disk(vm, snapshot, disk, "127.0.0.1") as served:
        output = backup_and_restore(tmp_path, served)
    assert os.path.getsize(output) == 8 * MIB
    assert file_digest(output) == lab.disk_digest(vm, disk["key"], snapshot.moref)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None
    or not Path("/usr/sbin/sshd").exists(),
    reason="LAB APPLIANCE NETWORK-MODE TEST SKIPPED: it needs root, iproute2, curl and openssh-server.")


@pytest.mark.appliance
@needs_root
def test_a_lab_appliance_reads_from_its_host_side_address(lab, frozen, tmp_path):
    from tests.appliances.conftest import create_lab

    vm, snapshot = frozen
    disk = snapshot.disks[0]
    (va,) = create_lab(1)
    try:
        info = va.info
        inside = ["ip", "netns", "exec", info.namespace]
        with lab.network_disk(vm, snapshot, disk, info.host_address) as served:
            url = urlsplit(served["path"])
            assert url.hostname == info.host_address != "127.0.0.1"
            assert not port_open("127.0.0.1", url.port)  # not on this machine's loopback
            curl = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--max-time", "10"]
            fetched = subprocess.run([*inside, *curl, "-H", f"Cookie: {served['options']['cookie']}",
                                      "-r", "0-65535", served["path"]], capture_output=True, text=True, timeout=30)
            assert fetched.stdout == "206 65536", fetched.stderr
            refused = subprocess.run([*inside, *curl, served["path"]], capture_output=True, text=True, timeout=30)
            assert refused.stdout.startswith("401")
            loopback = served["path"].replace(info.host_address, "127.0.0.1")
            blocked = subprocess.run([*inside, *curl, loopback], capture_output=True, text=True, timeout=30)
            assert blocked.stdout.startswith("000")  # the VA's own loopback has no such server
            output = backup_and_restore(tmp_path, served, *inside)  # the engine runs in the VA's network
        assert file_digest(output) == lab.disk_digest(vm, disk["key"], snapshot.moref)
    finally:
        va.destroy()

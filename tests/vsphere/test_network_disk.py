"""Network mode against the simulator: a snapshot disk's datastore URL, read by the engine's HTTPS source."""

from __future__ import annotations

import os
import random
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from engines.errors import SourceAuthFailed, SourceError
from engines.sources import open_source
from inventory.connectors.base import ConnectorError, NotFound, SnapshotRef
from inventory.connectors.vsphere import VSphereConnector
from inventory.connectors.vsphere.network import parse_file_name
from tests.vsphere.helpers import params_for

pytestmark = pytest.mark.vcsim

MIB = 1 << 20


@pytest.fixture
def simulator(vcsim_factory):
    return vcsim_factory(vms=4, cluster_hosts=1, standalone_hosts=1)


@pytest.fixture
def connector(simulator):
    with VSphereConnector(params_for(simulator)) as connector:
        yield connector


@pytest.fixture
def snapshot(connector):
    inventory = connector.fetch_inventory()
    vm = inventory.vms[0]
    snapshot = connector.create_snapshot(vm.moref, "network backup")
    folders = {d.moref: Path(d.url) for d in inventory.datastores}
    yield snapshot, folders, inventory
    connector.remove_snapshot(vm.moref, snapshot.moref)


def stored_file(folders: dict, disk: dict, suffix: str = "-flat.vmdk") -> Path:
    """Where the simulator keeps a disk's file (its datastores are folders of this machine)."""
    _, relative = parse_file_name(disk["file_name"])
    return folders[disk["datastore"]] / (relative.removesuffix(".vmdk") + suffix)


def read_all(source) -> bytes:
    out = bytearray()
    buf = bytearray(MIB)
    while len(out) < source.size:
        n = source.read_into(len(out), memoryview(buf))
        assert n > 0
        out += buf[:n]
    return bytes(out)


def test_the_engine_reads_the_flat_file_the_datastore_holds(connector, simulator, snapshot):
    snap, folders, inventory = snapshot
    disk = snap.disks[0]
    flat = stored_file(folders, disk)
    assert flat.is_file() and flat.stat().st_size == 0  # what the simulator stores: an empty flat file
    with connector.network_disk(snap.vm, snap, disk, "10.231.0.2") as served:
        url = urlsplit(served["path"])
        datastore, relative = parse_file_name(disk["file_name"])
        assert (url.scheme, url.hostname, url.port) == ("https", simulator.host, simulator.port)
        assert unquote(url.path) == "/folder/" + relative.removesuffix(".vmdk") + "-flat.vmdk"
        assert parse_qs(url.query) == {"dcPath": [inventory.datacenters[0].name], "dsName": [datastore]}
        assert served["options"]["cookie"].startswith("vmware_soap_session=")
        assert ";" not in served["options"]["cookie"]
        assert served["options"]["thumbprint"] == simulator.thumbprint
        with open_source("http", url=served["path"], **served["options"]) as source:
            assert source.size == 0 and list(source.extents()) == []
        content = random.Random(5).randbytes(3 * MIB + 777)  # give the simulator's file real bytes to serve
        flat.write_bytes(content)
        with open_source("http", url=served["path"], **served["options"]) as source:
            assert source.size == len(content)
            assert read_all(source) == content


def test_a_raw_image_under_the_disk_name_is_read_when_there_is_no_flat_file(connector, snapshot):
    snap, folders, _ = snapshot
    disk = snap.disks[0]
    stored_file(folders, disk).unlink()
    named = stored_file(folders, disk, ".vmdk")
    assert named.stat().st_size == 0
    with pytest.raises(ConnectorError, match="no flat extent .* not a raw image"):
        with connector.network_disk(snap.vm, snap, disk):
            pass  # pragma: no cover - refused before the context opens
    with open(named, "r+b") as f:  # a sparse raw image of the disk's capacity
        f.truncate(disk["capacity_bytes"])
        os.pwrite(f.fileno(), b"raw image marker", 5 * MIB)
    with connector.network_disk(snap.vm, snap, disk) as served:
        assert unquote(urlsplit(served["path"]).path).endswith(parse_file_name(disk["file_name"])[1])
        with open_source("http", url=served["path"], readahead=0, **served["options"]) as source:
            assert source.size == disk["capacity_bytes"]
            buf = bytearray(16)
            assert source.read_into(5 * MIB, memoryview(buf)) == 16 and bytes(buf) == b"raw image marker"
    named.unlink()
    with pytest.raises(NotFound, match="has neither"):
        with connector.network_disk(snap.vm, snap, disk):
            pass  # pragma: no cover


def test_a_delta_of_an_older_snapshot_is_refused(connector, snapshot):
    snap, _, _ = snapshot
    disk = dict(snap.disks[0])
    disk["file_name"] = disk["file_name"].replace(".vmdk", "-000001.vmdk")
    with pytest.raises(ConnectorError, match="delta of an older snapshot"):
        with connector.network_disk(snap.vm, SnapshotRef(snap.vm, snap.moref, snap.name, [disk]), disk):
            pass  # pragma: no cover


def test_a_wrong_certificate_pin_is_refused(connector, snapshot):
    snap, _, _ = snapshot
    with connector.network_disk(snap.vm, snap, snap.disks[0]) as served:
        wrong = {**served["options"], "thumbprint": "00:" * 31 + "00"}
        with pytest.raises(SourceError, match="not the pinned"):
            open_source("http", url=served["path"], **wrong)


def test_a_wrong_session_cookie_is_refused(connector, snapshot):
    snap, _, _ = snapshot
    with connector.network_disk(snap.vm, snap, snap.disks[0]) as served:
        wrong = {**served["options"], "cookie": "vmware_soap_session=00000000-0000-0000-0000-000000000000"}
        with pytest.raises(SourceAuthFailed, match="HTTP 401"):
            open_source("http", url=served["path"], **wrong)

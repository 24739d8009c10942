"""The HTTPS range-read source against a real HTTPS server serving a datastore folder."""

from __future__ import annotations

import hashlib
import socket
import threading

import pytest

from engines.errors import SourceAuthFailed, SourceError, SourceNotFound, SourceUnreachable
from engines.sources import open_source
from engines.sources.http import HttpSource
from tests.harness.rangeserver import RangeServer
from tests.sources.conftest import PIECES, SIZE, MiB, make_sparse

USER, PASSWORD = "backup", "S3cret pass"


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    root = tmp_path_factory.mktemp("datastore")
    (root / "vm one").mkdir()
    content = make_sparse(root / "vm one" / "disk-flat.vmdk", SIZE, PIECES)
    with RangeServer(root, user=USER, password=PASSWORD, cookie='vmware_soap_session="abc123"') as server:
        yield server, content


def open_disk(server: RangeServer, **options) -> HttpSource:
    options.setdefault("thumbprint", server.thumbprint)
    return HttpSource(server.url("vm one/disk-flat.vmdk"), (USER, PASSWORD), **options)


def test_size_and_whole_disk_extents(datastore):
    server, _ = datastore
    with open_disk(server) as source:
        assert source.size == SIZE
        assert list(source.extents()) == [(0, SIZE)]


def test_parallel_readers_get_the_files_bytes(datastore):
    server, content = datastore
    pieces: dict[int, bytes] = {}
    with open_disk(server) as source:

        def reader(first: int) -> None:
            buf = bytearray(MiB)
            for offset in range(first * MiB, SIZE, 4 * MiB):
                n = source.read_into(offset, memoryview(buf))
                pieces[offset] = bytes(buf[:n])

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    whole = b"".join(pieces[offset] for offset in sorted(pieces))
    assert hashlib.sha256(whole).digest() == hashlib.sha256(content).digest()


def test_reads_at_the_end_and_keep_one_connection_per_thread(datastore):
    server, content = datastore
    buf = bytearray(MiB)
    before = server.server.connections
    with open_disk(server) as source:
        assert source.read_into(SIZE - 10, memoryview(buf)) == 10
        assert buf[:10] == content[-10:]
        assert source.read_into(SIZE, memoryview(buf)) == 0
        for offset in (0, MiB - 5, 8 * MiB):
            assert source.read_into(offset, memoryview(buf)[:4096]) == 4096
            assert buf[:4096] == content[offset : offset + 4096]
    assert server.server.connections - before == 1  # probe and five reads shared one keep-alive connection


def test_read_ahead_serves_a_sequential_reader_without_fetching_twice(datastore):
    server, content = datastore
    buf = bytearray(MiB)
    out = bytearray()
    with open_disk(server, readahead=4) as source:
        start = server.requests
        for offset in range(0, SIZE, MiB):
            n = source.read_into(offset, memoryview(buf))
            out += buf[:n]
        fetched = server.requests - start
    assert bytes(out) == content
    assert fetched == SIZE // MiB


def test_read_ahead_drops_finished_pieces_when_the_reader_jumps(datastore):
    server, content = datastore
    buf = bytearray(MiB)
    with open_disk(server, readahead=4) as source:

        def jump() -> None:
            source.read_into(0, memoryview(buf))
            source.read_into(MiB, memoryview(buf))  # sequential: pieces 2..5 MiB are fetched ahead
            for future in list(source._readahead.pending.values()):
                future.result(timeout=10)
            source.read_into(20 * MiB, memoryview(buf))  # far away: the finished pieces are released

        reader = threading.Thread(target=jump, daemon=True)
        reader.start()
        reader.join(timeout=20)
        assert not reader.is_alive(), "the read-ahead deadlocked on a finished piece"
        assert bytes(buf) == content[20 * MiB : 21 * MiB]
        assert source._readahead.pending == {} or min(k[0] for k in source._readahead.pending) > 20 * MiB


def test_changed_extents_and_cookie_session(datastore):
    server, content = datastore
    url = server.url("vm one/disk-flat.vmdk")
    with HttpSource(url, cookie='vmware_soap_session="abc123"', verify=False, changed_extents=[[MiB, 10]]) as source:
        assert list(source.extents()) == [(MiB, 10)]
        buf = bytearray(10)
        assert source.read_into(MiB, memoryview(buf)) == 10
        assert bytes(buf) == content[MiB : MiB + 10]
    with pytest.raises(SourceError, match="lies outside the disk"):
        open_disk(server, changed_extents=[[SIZE, 1]])


def test_wrong_password_says_so(datastore):
    server, _ = datastore
    with pytest.raises(SourceAuthFailed, match=r"rejected the credentials of user 'backup' \(HTTP 401\): check"):
        HttpSource(server.url("vm one/disk-flat.vmdk"), (USER, "wrong"), thumbprint=server.thumbprint)


def test_missing_disk_file_says_so(datastore):
    server, _ = datastore
    with pytest.raises(SourceNotFound, match=r"Disk file /folder/vm one/gone-flat.vmdk was not found .* \(HTTP 404\)"):
        HttpSource(server.url("vm one/gone-flat.vmdk"), (USER, PASSWORD), thumbprint=server.thumbprint)


def test_pinned_thumbprint_mismatch_names_both_thumbprints(datastore):
    server, _ = datastore
    wrong = "ab" * 32
    with pytest.raises(SourceError) as caught:
        open_disk(server, thumbprint=wrong)
    message = str(caught.value)
    assert ":".join([server.thumbprint[i : i + 2] for i in range(0, 64, 2)]).upper() in message
    assert ("AB:" * 32)[:-1] in message and "update the pinned thumbprint" in message


def test_untrusted_certificate_without_pin_is_refused(datastore):
    server, _ = datastore
    with pytest.raises(SourceError, match="is not trusted .*give its SHA-256 thumbprint to pin it"):
        open_disk(server, thumbprint=None)


def test_connection_refused_says_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnreachable, match=rf"Cannot reach 127.0.0.1:{port} \(connection refused\)"):
        HttpSource(f"https://127.0.0.1:{port}/folder/d.vmdk?dcPath=dc1&dsName=ds", verify=False)


def test_silent_host_times_out_with_a_sentence():
    with socket.socket() as silent:  # accepts TCP (backlog) but never answers the TLS handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        with pytest.raises(SourceUnreachable, match=r"\(timed out after 0.3 s\): check the host address"):
            HttpSource(f"https://127.0.0.1:{port}/folder/d.vmdk?dcPath=dc1&dsName=ds", verify=False, timeout=0.3)


def test_registry_opens_http_sources(datastore):
    server, _ = datastore
    url = server.url("vm one/disk-flat.vmdk")
    with open_source("http", url=url, auth=(USER, PASSWORD), thumbprint=server.thumbprint) as source:
        assert source.size == SIZE

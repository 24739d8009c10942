"""The storage harness itself: every server stops completely (its forked connections, its
tmpfs and its scratch folder too), so test runs never leak daemons, ports or mounts."""

from __future__ import annotations

import os
import socket

import pytest

from engines.targets import open_target
from tests.harness.storage import STARTERS, ServerUnavailable
from tests.harness.storage.process import HOST, process_tree


@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_server_stops_with_its_connections_and_mounts(kind: str):
    try:
        server = STARTERS[kind]()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        target = open_target(server.spec("harness"))
        target.put("probe", b"ok")  # leaves a live connection (a forked child for sshd/vsftpd/smbd)
        tree = process_tree(server.daemon.process.pid)
        assert len(tree) >= 1
    finally:
        server.stop()
    target.close()
    for pid in tree:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with socket.socket() as sock:
        assert sock.connect_ex((HOST, server.port)) != 0  # nothing listens any more
    assert not server.root.exists()
    if server.small_dir is not None:
        assert not os.path.ismount(server.small_dir)

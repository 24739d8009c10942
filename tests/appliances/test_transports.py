"""The `ssh` transport against real lab appliances, and the `local` transport, through one interface."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliances.injection import bootstrap, fleet_key
from appliances.keys import fingerprint, ssh_public_line
from appliances.transports import (
    AuthenticationError,
    CommandTimeoutError,
    HostKeyMismatchError,
    TransportError,
    UnreachableError,
    get_transport,
    open_transport,
)
from appliances.transports.ssh import SSHTransport
from tests.appliances.conftest import ROOT_PASSWORD, needs_root

TRAP_SCRIPT = "trap 'echo stopping; exit 3' TERM; echo ready; while :; do sleep 0.05; done"


def _ssh(info, **options) -> SSHTransport:
    return SSHTransport(info.address, info.port, "root", host_key=info.host_key, **options)


def test_malformed_pinned_key_is_refused_with_a_sentence():
    with pytest.raises(TransportError, match="is not a valid `ssh-ed25519 AAAA...` line"):
        SSHTransport("127.0.0.1", 9, host_key="ssh-ed25519 AAAAnot-a-key", password="x")


def test_registry_names_and_unknown_name():
    assert get_transport("ssh").name == "ssh" and get_transport("local").name == "local"
    with pytest.raises(TransportError, match="Unknown transport 'telnet': choose one of local, ssh"):
        get_transport("telnet")


def test_local_transport_runs_streams_cancels_and_copies(tmp_path):
    t = open_transport("local", home=tmp_path)
    reverse = "import sys; sys.stdout.write(sys.stdin.read()[::-1])"
    assert t.run([sys.executable, "-c", reverse], b"abc") == (0, b"cba", b"")
    stream = t.stream(["sh", "-c", TRAP_SCRIPT])
    lines = iter(stream)
    assert next(lines) == "ready"
    stream.terminate()
    assert list(lines) == ["stopping"] and stream.wait(5) == 3
    with pytest.raises(CommandTimeoutError, match="did not finish within 0.5 s"):
        t.run(["sleep", "5"], timeout=0.5)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(4096))
    assert t.put_file(str(src), "sub/dst.bin") == 4096
    assert (tmp_path / "sub" / "dst.bin").read_bytes() == src.read_bytes()
    assert not (tmp_path / "sub" / "dst.bin.part").exists()


@pytest.mark.appliance
@needs_root
def test_bootstrap_with_password_then_fleet_key(fleet):
    info = fleet[0].info
    with bootstrap(info.address, info.port, info.host_key, ROOT_PASSWORD) as t:
        assert t.run(["id", "-u"]).stdout == b"0\n"
        keys = t.run(["cat", ".ssh/authorized_keys"]).stdout.decode()
        with bootstrap(info.address, info.port, info.host_key, ROOT_PASSWORD):
            pass  # a second bootstrap must not add the key twice
        assert t.run(["cat", ".ssh/authorized_keys"]).stdout.decode() == keys
    assert keys.count(ssh_public_line().split()[1]) == 1
    # the key alone now logs in; no password involved
    with _ssh(info, key=fleet_key()) as t:
        assert t.run(["hostname"]).stdout.decode().strip() == info.name


@pytest.mark.appliance
@needs_root
def test_wrong_password_and_missing_key_are_refused_with_a_sentence(fleet):
    info = fleet[1].info
    with pytest.raises(AuthenticationError, match=rf"root@{info.address}:22 refused the password: check the password"):
        _ssh(info, password="not-the-password")
    with pytest.raises(AuthenticationError, match="refused the fleet key: bootstrap the appliance again"):
        _ssh(info, key=fleet_key())  # fleet[1] was never bootstrapped


@pytest.mark.appliance
@needs_root
def test_changed_host_key_is_refused_with_both_fingerprints(lab_va):
    info = lab_va.info
    old_key = info.host_key
    new_fp = lab_va.replace_host_key()  # as a reinstalled (or impersonated) appliance would present
    with pytest.raises(HostKeyMismatchError) as caught:
        SSHTransport(info.address, info.port, "root", host_key=old_key, password=ROOT_PASSWORD)
    message = str(caught.value)
    assert fingerprint(old_key) in message and new_fp in message and "Nothing was sent" in message
    with SSHTransport(info.address, info.port, "root", host_key=lab_va.info.host_key, password=ROOT_PASSWORD) as t:
        assert t.run(["true"]).exit == 0  # re-pinned: accepted


@pytest.mark.appliance
@needs_root
def test_hung_appliance_and_closed_port_fail_within_the_timeout(lab_va):
    info = lab_va.info
    os.kill(lab_va.state["sshd_pid"], signal.SIGSTOP)  # the kernel still accepts TCP, sshd never answers
    try:
        start = time.monotonic()
        with pytest.raises(UnreachableError, match=rf"Cannot reach {info.address}:22 \(no SSH answer within 1 s"):
            _ssh(info, password=ROOT_PASSWORD, connect_timeout=1)
        assert time.monotonic() - start < 3
    finally:
        os.kill(lab_va.state["sshd_pid"], signal.SIGCONT)
    with pytest.raises(UnreachableError, match=rf"Cannot reach {info.address}:2222 \(connection refused\)"):
        SSHTransport(info.address, 2222, "root", host_key=info.host_key, password=ROOT_PASSWORD, connect_timeout=1)
    # the VA's replies vanish (as with a powered-off host or a dropping firewall): the TCP connect times out
    subprocess.run(["ip", "netns", "exec", info.namespace, "ip", "route", "add", "blackhole",
                    f"{info.host_address}/32"], check=True)
    start = time.monotonic()
    with pytest.raises(UnreachableError, match=rf"Cannot reach {info.address}:22 \(timed out after 1 s\): check "
                       "the appliance is powered on"):
        _ssh(info, password=ROOT_PASSWORD, connect_timeout=1)
    assert time.monotonic() - start < 3


def test_silent_server_times_out_with_a_sentence():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts TCP, never speaks SSH
        port = server.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(UnreachableError, match=rf"Cannot reach 127.0.0.1:{port} \(no SSH answer within 1 s"):
            SSHTransport("127.0.0.1", port, host_key=ssh_public_line(), password="x", connect_timeout=1)
        assert time.monotonic() - start < 3


@pytest.mark.appliance
@needs_root
def test_ssh_run_stream_cancel_timeout_and_sftp(fleet, tmp_path):
    info = fleet[2].info
    with _ssh(info, password=ROOT_PASSWORD) as t:
        odd = "it's a \"quoted\" $HOME; rm -rf / `x`"
        assert t.run(["printf", "%s", odd]).stdout.decode() == odd  # argv is quoted, never interpreted
        assert t.run(["cat"], stdin=b"payload").stdout == b"payload"
        assert t.run(["sh", "-c", "echo oops >&2; exit 7"]) == (7, b"", b"oops\n")
        stream = t.stream(["sh", "-c", TRAP_SCRIPT])
        lines = iter(stream)
        assert next(lines) == "ready"
        stream.terminate()
        assert list(lines) == ["stopping"] and stream.wait(5) == 3
        start = time.monotonic()
        with pytest.raises(CommandTimeoutError, match=rf"`sleep` on {info.address}:22 did not finish within 1 s"):
            t.run(["sleep", "31.4159"], timeout=1)
        assert time.monotonic() - start < 5
        time.sleep(0.2)
        assert not any(b"31.4159" in p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists())
        src = tmp_path / "blob"
        src.write_bytes(os.urandom(3 << 20))
        assert t.put_file(str(src), "blob.bin") == 3 << 20
        assert t.run(["sha256sum", "blob.bin"]).stdout.split()[0].decode() == __import__("hashlib").sha256(
            src.read_bytes()).hexdigest()
        assert t.run(["ls", "blob.bin.part"]).exit != 0

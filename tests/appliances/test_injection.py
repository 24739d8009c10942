"""Binary injection: the signed engine bundle reaches lab VAs over SSH/SFTP and runs there."""

from __future__ import annotations

import base64
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliances.injection import (
    InjectionError,
    bootstrap,
    engine_version,
    ensure_engine,
    install_uploaded,
    install_va_side,
    run_engine,
)
from appliances.transports import UploadError, open_transport
from tests.appliances.conftest import ROOT_PASSWORD, create_lab, needs_root

ENGINE_VERSION = __import__("engines").__version__


def _bootstrap(host):
    info = host.info
    return bootstrap(info.address, info.port, info.host_key, ROOT_PASSWORD)


def _current(t) -> str:
    return t.run(["readlink", "vafleet/current"]).stdout.decode().strip()


def _releases(t) -> list[str]:
    return sorted(t.run(["ls", "-a", "vafleet/releases"]).stdout.decode().split())


@pytest.fixture(scope="module")
def injected(fleet, bundle):
    """All lab VAs bootstrapped and injected at once."""
    transports = [_bootstrap(host) for host in fleet]
    with ThreadPoolExecutor(len(transports)) as pool:
        results = list(pool.map(lambda t: ensure_engine(t, bundle), transports))
    yield transports, results
    for t in transports:
        t.close()


@pytest.mark.appliance
@needs_root
def test_inject_into_several_appliances_then_nothing_to_send(injected, bundle):
    transports, results = injected
    assert [r.uploaded for r in results] == [True] * len(transports)
    assert all(r.bytes_sent == bundle.size for r in results)
    for t in transports:
        assert engine_version(t).version == bundle.version
        assert ensure_engine(t, bundle).uploaded is False  # same version: one round trip, no upload
        assert _current(t) == f"releases/{bundle.version}"


@pytest.mark.appliance
@needs_root
def test_injected_engine_runs_and_streams_json_events(injected, bundle):
    t = injected[0][0]
    stream = run_engine(t, ["--version"])
    assert list(stream) == [ENGINE_VERSION] and stream.wait(10) == 0
    stream = run_engine(t, [], stdin=b'{"operation": "no-such-operation"}')
    events = [json.loads(line) for line in stream]
    assert stream.wait(10) != 0
    assert events[-1]["type"] == "error" and "no-such-operation" in events[-1]["message"]
    # the engine imported the bundle's own wheels, not the appliance image's packages
    image = t.run(["python3", "-c", "import cryptography; print(cryptography.__version__)"]).stdout
    probe = t.run(["env", "PYTHONPATH=vafleet/current/site", "python3", "-s", "-c",
                   "import cryptography; print(cryptography.__version__)"]).stdout
    assert probe.decode().strip() == __import__("cryptography").__version__ != image.decode().strip()


@pytest.mark.appliance
@needs_root
def test_reinjection_after_the_engine_changes_keeps_previous_for_rollback(injected, bundle, changed_bundle):
    t = injected[0][1]
    assert changed_bundle.version != bundle.version
    assert changed_bundle.version.startswith(ENGINE_VERSION + "+")
    result = ensure_engine(t, changed_bundle)
    assert (result.version, result.previous, result.uploaded) == (changed_bundle.version, bundle.version, True)
    state = engine_version(t)
    assert (state.version, state.previous) == (changed_bundle.version, bundle.version)
    assert _releases(t) == sorted([".", "..", bundle.version, changed_bundle.version])
    rolled = t.run(["python3", "vafleet/install.py", "rollback"])
    assert rolled.exit == 0 and engine_version(t).version == bundle.version
    assert ensure_engine(t, bundle).uploaded is False


def _refused(t, bundle, data: bytes, match: str, envelope: bytes | None = None) -> None:
    before = _current(t)
    local = bundle.path.with_name(f"bad-{bundle.path.name}-{id(data)}")
    local.write_bytes(data)
    try:
        t.put_file(str(local), "vafleet/incoming-bad.tar")
    finally:
        local.unlink()
    with pytest.raises(InjectionError, match=match):
        install_uploaded(t, bundle, "vafleet/incoming-bad.tar", envelope=envelope)
    assert _current(t) == before
    assert not any(name.startswith(".tmp-") for name in _releases(t))
    assert t.run(["ls", "vafleet/incoming-bad.tar"]).exit != 0  # a refused bundle is deleted


@pytest.mark.appliance
@needs_root
def test_tampered_truncated_and_unsigned_bundles_never_install(injected, bundle):
    t = injected[0][2]
    good = bundle.path.read_bytes()
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0xFF
    _refused(t, bundle, bytes(tampered), "SHA-256 does not match its signed descriptor")
    _refused(t, bundle, good[: len(good) // 3], "truncated or padded upload")
    _refused(t, bundle, good, "without a valid signed descriptor", envelope=b"")
    forged = Ed25519PrivateKey.generate().sign(bundle.descriptor_text.encode())
    envelope = json.dumps({"descriptor": bundle.descriptor_text, "signature": base64.b64encode(forged).decode()})
    _refused(t, bundle, good, "signature does not match the fleet key", envelope=envelope.encode())
    # a descriptor rewritten to match tampered content fails the signature too
    descriptor = dict(bundle.descriptor, sha256=__import__("hashlib").sha256(bytes(tampered)).hexdigest())
    envelope = json.dumps({"descriptor": json.dumps(descriptor, sort_keys=True), "signature": bundle.signature})
    _refused(t, bundle, bytes(tampered), "signature does not match the fleet key", envelope=envelope.encode())
    assert engine_version(t).version == bundle.version


@pytest.mark.appliance
@needs_root
def test_installer_killed_mid_way_keeps_the_previous_release(lab_va, bundle, changed_bundle):
    with _bootstrap(lab_va) as t:
        ensure_engine(t, bundle)
        t.put_file(str(changed_bundle.path), "vafleet/incoming.tar")
        stream = t.stream(["python3", "vafleet/install.py", "install", "vafleet/incoming.tar"],
                          changed_bundle.envelope())
        for line in stream:
            if json.loads(line)["event"] == "unpacking":
                stream.kill()  # SIGKILL while it writes the new release
                break
        stream.wait(10)
        assert engine_version(t).version == bundle.version
        assert any(name.startswith(".tmp-") for name in _releases(t))  # the half-written release, never active
        check = run_engine(t, ["--version"])
        assert list(check) == [ENGINE_VERSION] and check.wait(10) == 0
        result = ensure_engine(t, changed_bundle)  # the next injection completes and tidies up
        assert result.version == changed_bundle.version
        assert not any(name.startswith(".tmp-") for name in _releases(t))


@pytest.mark.appliance
@needs_root
def test_full_disk_is_refused_before_and_during_upload(bundle):
    (host,) = create_lab(1, disk_mib=8)
    try:
        with _bootstrap(host) as t:
            with pytest.raises(UploadError, match=r"MiB free in vafleet, the engine needs \d+ MiB: free space"):
                ensure_engine(t, bundle)
            with pytest.raises(UploadError, match="the appliance's disk may be full"):
                t.put_file(str(bundle.path), "vafleet/incoming.tar")
            assert t.run(["ls", "vafleet"]).stdout.decode().split() == ["fleet-signing.pem", "install.py"]
            assert engine_version(t).version is None
    finally:
        host.destroy()


def test_local_transport_injects_and_runs_the_engine(tmp_path, bundle):
    t = open_transport("local", home=tmp_path)
    install_va_side(t)
    result = ensure_engine(t, bundle, python=sys.executable)
    assert result.uploaded and engine_version(t, python=sys.executable).version == bundle.version
    assert ensure_engine(t, bundle, python=sys.executable).uploaded is False
    stream = run_engine(t, ["--version"], python=sys.executable)
    assert list(stream) == [ENGINE_VERSION] and stream.wait(10) == 0


@pytest.mark.appliance
@needs_root
def test_upgrade_never_removes_the_release_a_running_job_uses(lab_va, bundle, make_changed_bundle):
    second, third = make_changed_bundle("b"), make_changed_bundle("c")
    with _bootstrap(lab_va) as t:
        ensure_engine(t, bundle)
        assert t.run(["mkfifo", "vafleet/job.fifo"]).exit == 0
        job = run_engine(t, ["vafleet/job.fifo"])  # the engine blocks opening its job file: a long job
        time.sleep(0.5)
        ensure_engine(t, second)
        ensure_engine(t, third)  # `bundle` is neither current nor previous now, but the job holds it
        assert bundle.version in _releases(t)
        assert not job.channel.exit_status_ready()  # the job really was running throughout
        assert engine_version(t).version == third.version
        job.kill()
        job.wait(10)
        ensure_engine(t, second)  # the next install prunes what no job uses any more
        assert _releases(t) == sorted([".", "..", second.version, third.version])

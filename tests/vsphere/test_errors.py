"""Bad input ends in a sentence, and a failed sync leaves the inventory as it was."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from inventory.connectors.base import (
    AuthenticationFailed,
    CertificateMismatch,
    Unreachable,
    UntrustedCertificate,
)
from inventory.connectors.vsphere import VSphereConnector
from inventory.models import Connection, Datastore, Host, VirtualDisk, VirtualMachine
from inventory.services import test_connection as check_connection
from inventory.sync import sync_connection
from tests.vsphere.helpers import connection_for, params_for

pytestmark = [pytest.mark.vcsim, pytest.mark.django_db]


def snapshot_of(connection: Connection) -> dict:
    """Everything a sync could change, to compare before and after a failure."""
    return {
        "vms": sorted(VirtualMachine.objects.filter(connection=connection).values_list("pk", "moref", "vanished_at")),
        "hosts": sorted(Host.objects.filter(connection=connection).values_list("pk", "moref", "vanished_at")),
        "mounts": sorted(Datastore.hosts.through.objects.filter(datastore__connection=connection)
                         .values_list("datastore_id", "host_id")),
        "disks": VirtualDisk.objects.filter(vm__connection=connection).count(),
    }


@pytest.fixture
def synced(vcsim_lab):
    connection = connection_for(vcsim_lab)
    assert sync_connection(connection.pk).ok
    return connection


def resync_with(connection: Connection, **fields) -> tuple[str, dict, dict]:
    before = snapshot_of(connection)
    Connection.objects.filter(pk=connection.pk).update(**fields)
    result = sync_connection(connection.pk)
    assert not result.ok
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ERROR
    assert connection.status_message == result.message
    return result.message, before, snapshot_of(connection)


def test_wrong_password(synced):
    synced.password = "not-the-password"
    synced.save()

    message, before, after = resync_with(synced)

    assert message == (
        f"127.0.0.1:{synced.port} rejected the user name or password: check the credentials of the connection."
    )
    assert after == before
    with pytest.raises(AuthenticationFailed):
        check_connection(synced)


def test_refused_port(synced):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]

    message, before, after = resync_with(synced, port=free_port)

    assert message == (
        f"Cannot reach 127.0.0.1:{free_port} (connection refused): "
        "check the address and port and that vCenter is running."
    )
    assert after == before


def test_silent_server_times_out(vcsim_lab):
    """A port that accepts connections but never answers: bounded by the timeout, then a sentence."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        params = params_for(vcsim_lab, port=silent.getsockname()[1])
        params.timeout = 1.0
        started = time.monotonic()
        with pytest.raises(Unreachable) as caught, VSphereConnector(params) as connector:
            connector.test()
        elapsed = time.monotonic() - started

    assert str(caught.value) == (
        f"Cannot reach 127.0.0.1:{params.port} (timed out after 1 s): check the address and that vCenter is running."
    )
    assert elapsed < 5


def test_silent_server_during_sync_keeps_inventory(synced, settings):
    settings.VAFLEET_CONNECT_TIMEOUT = 1
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        message, before, after = resync_with(synced, port=silent.getsockname()[1])

    assert "(timed out after 1 s)" in message
    assert after == before


def test_certificate_pinning(vcsim_factory):
    """First contact shows the thumbprint, a wrong pin is refused, the right pin works.

    On 127.0.0.2: pyvmomi skips certificate checks for 127.0.0.1.
    """
    simulator = vcsim_factory(listen="127.0.0.2", vms=4)
    connection = connection_for(simulator, tls_thumbprint="")

    with pytest.raises(UntrustedCertificate) as first:
        check_connection(connection)
    assert first.value.thumbprint == simulator.thumbprint
    assert simulator.thumbprint in str(first.value) and "pin it" in str(first.value)
    failed = sync_connection(connection.pk)
    assert not failed.ok and simulator.thumbprint in failed.message
    assert not VirtualMachine.objects.filter(connection=connection).exists()

    wrong = "AB:" * 31 + "CD"
    connection.tls_thumbprint = wrong
    connection.save()
    with pytest.raises(CertificateMismatch) as mismatch:
        check_connection(connection)
    assert not isinstance(mismatch.value, UntrustedCertificate)
    assert f"does not match the pinned thumbprint: it now has {simulator.thumbprint}" in str(mismatch.value)
    assert not sync_connection(connection.pk).ok
    assert not VirtualMachine.objects.filter(connection=connection).exists()

    connection.tls_thumbprint = simulator.thumbprint.lower().replace(":", "")  # pins are accepted in any spelling
    connection.save()
    assert check_connection(connection).thumbprint == simulator.thumbprint
    assert sync_connection(connection.pk).ok
    assert VirtualMachine.objects.filter(connection=connection).count() == 4


def test_verify_against_system_cas_refuses_self_signed(vcsim_factory):
    simulator = vcsim_factory(listen="127.0.0.2", vms=1)
    params = params_for(simulator, tls_verify=True, tls_thumbprint="")

    with pytest.raises(UntrustedCertificate) as caught, VSphereConnector(params) as connector:
        connector.test()

    assert caught.value.thumbprint == simulator.thumbprint
    assert "not trusted by this server's certificate authorities" in str(caught.value)


def test_sync_interrupted_halfway_changes_nothing(vcsim_factory):
    """The simulator dies while the inventory is being read: a sentence, and the old inventory intact."""
    simulator = vcsim_factory(vms=8, method_delays_ms=(("RetrievePropertiesEx", 2000),))
    connection = connection_for(simulator)
    assert sync_connection(connection.pk).ok
    before = snapshot_of(connection)

    killer = threading.Timer(1.0, simulator.process.kill)  # lands inside the slow RetrievePropertiesEx
    killer.start()
    try:
        result = sync_connection(connection.pk)
    finally:
        killer.join()

    assert not result.ok
    where = f"127.0.0.1:{simulator.port}"
    assert result.message.startswith((f"Cannot reach {where} (", f"Cannot talk to the vSphere API at {where} ("))
    assert result.message.endswith(("that vCenter is running.", "check the address and port."))
    assert snapshot_of(connection) == before

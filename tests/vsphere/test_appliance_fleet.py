"""A fleet deployment on vSphere from end to end: the server's deploy operation imports the OVF on the
simulator, then pins, bootstraps and injects the engine over real SSH.

The simulator runs no guest, so a lab appliance (network namespace + its own sshd, made with the same
root password) stands in for the booted image at the configured static address.
"""

from __future__ import annotations

import pytest

from appliances import services
from appliances.actions import current_bundle
from appliances.connect import transport_for
from appliances.models import Appliance, FleetOperation
from appliances.operations import run_operation
from inventory.connectors.vsphere import VSphereConnector
from inventory.models import Datastore, Host, Network
from inventory.sync import sync_connection
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, create_lab, needs_root
from tests.vsphere.helpers import connection_for, params_for

pytestmark = [pytest.mark.vcsim, pytest.mark.appliance]


@pytest.fixture
def vcenter(vcsim_own, transactional_db):
    connection = connection_for(vcsim_own, name="vc-fleet")
    assert sync_connection(connection.pk).ok
    return connection


def appliance_on(vcenter, name: str, address: str, **fields) -> Appliance:
    host = Host.objects.filter(connection=vcenter).order_by("name").first()
    appliance = Appliance.objects.create(
        name=name, hostname=name, connection=vcenter, host=host,
        datastore=Datastore.objects.filter(hosts=host).order_by("-free_bytes").first(),
        network=Network.objects.filter(hosts=host, kind="distributed").first(), addressing="static",
        address=address, prefix=30, gateway="", root_password=ROOT_PASSWORD, user_password=USER_PASSWORD,
        vcpus=2, memory_mb=2048, **fields)
    appliance.served_hosts.set([host])
    return appliance


def vm_exists(vcsim_own, moref: str) -> bool:
    with VSphereConnector(params_for(vcsim_own)) as connector:
        return moref in {vm.moref for vm in connector.fetch_inventory().vms}


@needs_root
def test_deploy_imports_the_ovf_then_bootstraps_and_injects(vcenter, vcsim_own):
    (guest,) = create_lab(1)  # the "booted image" answering at the appliance's address
    try:
        appliance = appliance_on(vcenter, "va-vc", guest.info.address)
        operation = run_operation(services.start_deploy([appliance], queue=False).pk)
        item = operation.items.get()
        assert operation.state == FleetOperation.State.SUCCEEDED, item.message
        appliance.refresh_from_db()
        assert appliance.state == Appliance.State.READY
        assert appliance.vm_moref.startswith("vm-") and vm_exists(vcsim_own, appliance.vm_moref)
        assert appliance.host_key.split()[1] == guest.info.host_key.split()[1]  # pinned at first contact
        assert appliance.engine_version == current_bundle().version and item.bytes_sent > 0
        with transport_for(appliance) as transport:
            assert transport.run(["hostname"]).exit == 0

        removed = run_operation(services.start_remove(appliance, queue=False).pk)
        assert removed.state == FleetOperation.State.SUCCEEDED, removed.items.get().message
        assert not vm_exists(vcsim_own, appliance.vm_moref)
    finally:
        guest.destroy()


def test_no_ssh_answer_fails_with_a_sentence_and_removes_the_vm(vcenter, vcsim_own, settings):
    settings.VAFLEET_APPLIANCE_BOOT_SECONDS = 1
    appliance = appliance_on(vcenter, "va-silent", "127.0.0.1", port=1)  # nothing listens there
    operation = run_operation(services.start_deploy([appliance], queue=False).pk)
    item = operation.items.get()
    appliance.refresh_from_db()
    assert operation.state == FleetOperation.State.FAILED
    assert "did not answer on SSH within 1 s" in item.message
    assert appliance.state == Appliance.State.FAILED and appliance.state_message == item.message
    assert appliance.vm_moref == ""  # the imported VM was removed again
    with VSphereConnector(params_for(vcsim_own)) as connector:
        assert "va-silent" not in {vm.name for vm in connector.fetch_inventory().vms}


@needs_root
def test_wrong_root_password_at_bootstrap_fails_and_removes_the_vm(vcenter, vcsim_own):
    (guest,) = create_lab(1)  # its root password is not the one configured below
    try:
        appliance = appliance_on(vcenter, "va-wrongpw", guest.info.address)
        Appliance.objects.filter(pk=appliance.pk).update(root_password="Another-Root-Pass-9")
        appliance.refresh_from_db()
        operation = run_operation(services.start_deploy([appliance], queue=False).pk)
        item = operation.items.get()
        appliance.refresh_from_db()
        assert item.state == "failed" and "refused the password" in item.message
        assert appliance.state == Appliance.State.FAILED and appliance.vm_moref == ""
        with VSphereConnector(params_for(vcsim_own)) as connector:
            assert "va-wrongpw" not in {vm.name for vm in connector.fetch_inventory().vms}
    finally:
        guest.destroy()

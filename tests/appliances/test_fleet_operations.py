"""The fleet end to end in the lab: configure, deploy (real namespaces + sshd), protect, upgrade, remove.

Operations run here as a django-q2 worker would run them (`run_operation`), against real lab VAs.
"""

from __future__ import annotations

import subprocess

import pytest
from django.core.management import call_command

from appliances import services
from appliances.actions import current_bundle, engine_ready_transport
from appliances.connect import transport_for
from appliances.injection import engine_version, ensure_engine
from appliances.labhost import LabHost
from appliances.models import Appliance, FleetOperation, FleetOperationItem
from appliances.operations import run_operation
from appliances.transports import UnreachableError
from inventory.connectors.lab import seed
from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from inventory.sync import sync_connection
from tests.appliances.conftest import ROOT_PASSWORD, USER_PASSWORD, needs_root

pytestmark = [pytest.mark.appliance]


@pytest.fixture
def lab(tmp_path):
    seed(tmp_path / "lab", vms=8, disk_size=1 << 20)
    connection = Connection.objects.create(name=f"Lab {tmp_path.name}", kind="lab",
                                           options={"root": str(tmp_path / "lab")})
    result = sync_connection(connection.pk)
    assert result.ok, result.message
    return connection


def hosts_of(connection) -> list[Host]:
    return list(Host.objects.filter(connection=connection).order_by("name"))


def make_appliance(connection, host, name, *, transport="ssh", address=None, served=None) -> Appliance:
    datastore = Datastore.objects.filter(hosts=host).order_by("-free_bytes").first()
    network = Network.objects.filter(hosts=host).order_by("name").first()
    appliance = Appliance.objects.create(
        name=name, hostname=name, connection=connection, host=host, datastore=datastore, network=network,
        addressing="static" if address else "dhcp", address=address, prefix=30 if address else None,
        root_password=ROOT_PASSWORD, user_password=USER_PASSWORD, vcpus=2, memory_mb=1024, transport=transport)
    appliance.served_hosts.set(served or [host])
    return appliance


def lab_hosts_alive(appliance) -> bool:
    ident = appliance.deploy_handle.get("labhost")
    return bool(ident) and LabHost.find(ident) is not None


@pytest.fixture
def cleanup():
    """Remove every lab VA the test deployed, even when it fails."""
    made: list[Appliance] = []
    yield made
    for appliance in made:
        ident = (Appliance.objects.filter(pk=appliance.pk).values_list("deploy_handle", flat=True).first()
                 or appliance.deploy_handle or {}).get("labhost")
        host = LabHost.find(ident) if ident else None
        if host is not None:
            host.destroy()


@needs_root
def test_bulk_deploy_protect_upgrade_and_remove(transactional_db, lab, cleanup, make_changed_bundle):
    hosts = hosts_of(lab)
    appliances = [make_appliance(lab, host, f"va-{n}") for n, host in enumerate(hosts[:2])]
    cleanup.extend(appliances)

    operation = run_operation(services.start_deploy(appliances, queue=False).pk)

    items = {i.appliance_name: i for i in operation.items.all()}
    assert operation.state == FleetOperation.State.SUCCEEDED, [i.message for i in items.values()]
    bundle = current_bundle()
    for appliance in appliances:
        appliance.refresh_from_db()
        assert appliance.state == Appliance.State.READY, appliance.state_message
        assert appliance.engine_version == bundle.version
        assert appliance.host_key.startswith("ssh-ed25519 ") and appliance.host_key_fingerprint.startswith("SHA256:")
        assert appliance.address and appliance.address.startswith("10.231.")
        assert items[appliance.name].bytes_sent > 0 and items[appliance.name].percent == 100
        assert lab_hosts_alive(appliance)
        with transport_for(appliance) as transport:  # fleet key + pinned host key
            result = transport.run(["hostname"])
        assert result.stdout.decode().strip() == appliance.hostname

    # Protection: a VM on the first host is served by va-0 only; hot-add when va-0's host mounts its stores.
    vm = VirtualMachine.objects.filter(connection=lab, host=hosts[0]).first()
    options = services.protection_for_vm(vm)
    assert [o.appliance.name for o in options] == ["va-0"]
    assert options[0].mode == "hotadd", options[0].reason

    # An engine changed behind the server's back: the fleet upgrade sends the current bundle again.
    with transport_for(appliances[0]) as transport:
        assert ensure_engine(transport, make_changed_bundle("older")).uploaded
    upgrade = run_operation(services.start_upgrade(queue=False).pk)
    assert upgrade.state == FleetOperation.State.SUCCEEDED
    sent = {i.appliance_name: i.bytes_sent for i in upgrade.items.all()}
    assert sent["va-0"] > 0 and sent["va-1"] == 0  # only the changed VA got the bundle
    appliances[0].refresh_from_db()
    assert appliances[0].engine_version == bundle.version

    # Removal is refused while the appliance takes part in an operation, then removes everything.
    busy = services.start_health_round(queue=False, appliances=[appliances[1]])
    with pytest.raises(services.ApplianceBusy, match="in progress"):
        services.start_remove(appliances[1])
    run_operation(busy.pk)
    handle = dict(appliances[1].deploy_handle)
    removed = run_operation(services.start_remove(appliances[1], queue=False).pk)
    assert removed.state == FleetOperation.State.SUCCEEDED, removed.items.get().message
    assert not Appliance.objects.filter(pk=appliances[1].pk).exists()
    assert LabHost.find(handle["labhost"]) is None
    assert removed.items.get().appliance_name == "va-1"


@needs_root
def test_redeploy_gives_a_fresh_appliance_with_its_new_key_pinned(transactional_db, lab, cleanup):
    appliance = make_appliance(lab, hosts_of(lab)[0], "va-again")
    cleanup.append(appliance)
    run_operation(services.start_deploy([appliance], queue=False).pk)
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.READY, appliance.state_message
    old_handle, old_key = dict(appliance.deploy_handle), appliance.host_key
    with pytest.raises(services.NotApplicable, match="redeploy"):
        services.start_deploy([appliance])

    operation = run_operation(services.start_redeploy(appliance, queue=False).pk)

    assert operation.state == FleetOperation.State.SUCCEEDED, operation.items.get().message
    appliance.refresh_from_db()
    cleanup.append(appliance)
    assert appliance.state == Appliance.State.READY
    assert LabHost.find(old_handle["labhost"]) is None  # the old VA is gone
    assert appliance.deploy_handle["labhost"] != old_handle["labhost"]
    assert appliance.host_key != old_key  # a new machine, a new key, pinned again
    with transport_for(appliance) as transport:
        assert transport.run(["hostname"]).stdout.decode().strip() == "va-again"


@needs_root
def test_deploy_failure_marks_failed_and_removes_the_vm(transactional_db, lab, cleanup):
    host = hosts_of(lab)[0]
    appliance = make_appliance(lab, host, "va-bad", address="10.231.255.1")  # not a VA address of the lab
    cleanup.append(appliance)
    operation = run_operation(services.start_deploy([appliance], queue=False).pk)
    item = operation.items.get()
    appliance.refresh_from_db()
    assert operation.state == FleetOperation.State.FAILED
    assert item.state == FleetOperationItem.State.FAILED and "10.231.255.1" in item.message
    assert appliance.state == Appliance.State.FAILED and appliance.state_message == item.message
    assert appliance.vm_moref == "" and not lab_hosts_alive(appliance)
    assert not VirtualMachine.objects.filter(connection=lab, name="va-bad").exists()
    assert "va-bad" not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout


def test_builtin_local_appliance_serves_every_lab_host(transactional_db, lab, capsys):
    call_command("fleet", "local", "--connection", lab.name)
    appliance = Appliance.objects.get(name="local-appliance")
    assert appliance.state == Appliance.State.READY, appliance.state_message
    assert appliance.transport == "local" and appliance.vm_moref
    assert appliance.engine_version == current_bundle().version
    assert set(appliance.served_hosts.all()) == set(hosts_of(lab))  # one-to-many
    assert "Ready" in capsys.readouterr().out
    # Again: nothing to do, the engine is current.
    call_command("fleet", "local", "--connection", lab.name)
    upgrade = FleetOperation.objects.filter(kind="upgrade").latest("created")
    assert upgrade.items.get().bytes_sent == 0
    # Every lab VM can be protected by it; hot-add only where its host mounts the VM's datastores.
    vms = list(VirtualMachine.objects.filter(connection=lab))
    options = services.protection_map(vms)
    assert all(len(options[vm.pk]) == 1 for vm in vms)
    mounted = set(appliance.host.datastores.values_list("pk", flat=True))
    for vm in vms:
        expected = "hotadd" if set(vm.datastores.values_list("pk", flat=True)) <= mounted else "network"
        assert options[vm.pk][0].mode == expected, (vm.name, options[vm.pk][0].reason)
    assert {o[0].mode for o in options.values()} == {"hotadd", "network"}


@needs_root
def test_before_a_job_the_engine_is_checked_and_a_lost_appliance_is_marked(transactional_db, lab, cleanup,
                                                                            make_changed_bundle):
    appliance = make_appliance(lab, hosts_of(lab)[0], "va-job")
    cleanup.append(appliance)
    run_operation(services.start_deploy([appliance], queue=False).pk)
    appliance.refresh_from_db()
    with transport_for(appliance) as transport:
        ensure_engine(transport, make_changed_bundle("stale"))

    with engine_ready_transport(appliance) as transport:
        assert engine_version(transport).version == current_bundle().version
    appliance.refresh_from_db()
    assert appliance.engine_version == current_bundle().version

    LabHost.find(appliance.deploy_handle["labhost"]).destroy()  # the appliance dies
    with pytest.raises(UnreachableError, match="Cannot reach"):
        engine_ready_transport(appliance)
    appliance.refresh_from_db()
    assert appliance.state == Appliance.State.UNREACHABLE and "Cannot reach" in appliance.state_message
    assert not appliance.usable

"""Syncing a simulated vCenter into the database: what arrives, and what a re-sync keeps."""

from __future__ import annotations

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from inventory.connectors.base import NewVmSpec
from inventory.connectors.vsphere import VSphereConnector
from inventory.connectors.vsphere.collector import Collector
from inventory.models import (
    Cluster,
    Connection,
    Datacenter,
    Datastore,
    Host,
    Network,
    VirtualDisk,
    VirtualMachine,
)
from inventory.sync import sync_connection
from tests.vsphere.helpers import LARGE, connection_for, params_for

pytestmark = [pytest.mark.vcsim, pytest.mark.django_db]

TB = 1 << 40


def live(model, connection: Connection):
    return model.objects.filter(connection=connection, vanished_at__isnull=True)


def test_full_sync_reads_the_whole_inventory(vcsim_lab):
    connection = connection_for(vcsim_lab)

    result = sync_connection(connection.pk)

    assert result.ok, result.message
    connection.refresh_from_db()
    assert connection.status == Connection.Status.OK
    assert connection.product.startswith("VMware vCenter Server")
    assert live(Datacenter, connection).count() == 1
    assert live(Cluster, connection).count() == 1
    assert live(Host, connection).count() == 4
    assert Host.objects.filter(connection=connection, cluster__isnull=False).count() == 3
    assert live(VirtualMachine, connection).count() == 32
    assert VirtualMachine.objects.filter(connection=connection, is_template=True).count() == 1
    # a handful of PropertyCollector pages, never one call per object
    assert result.round_trips <= 4


def test_datastores_know_which_hosts_mount_them(vcsim_lab):
    connection = connection_for(vcsim_lab)
    assert sync_connection(connection.pk).ok

    all_hosts = set(live(Host, connection).values_list("pk", flat=True))
    shared = live(Datastore, connection).filter(name__contains="_shared")
    local = live(Datastore, connection).filter(name__endswith="_local")
    assert shared.count() == 2 and local.count() == 4
    for datastore in shared:
        assert set(datastore.hosts.values_list("pk", flat=True)) == all_hosts
    for datastore in local:
        (host,) = datastore.hosts.all()
        assert datastore.name == f"{host.name}_local"
    # a VM whose disk sits on a host-local datastore runs on that host
    for vm in VirtualMachine.objects.filter(connection=connection, datastores__name__endswith="_local"):
        assert vm.datastores.filter(hosts=vm.host).exists()


def test_networks_standard_and_distributed(vcsim_lab):
    connection = connection_for(vcsim_lab)
    assert sync_connection(connection.pk).ok

    networks = {n.name: n for n in live(Network, connection)}
    assert {"VM Network", "DC0_PG0", "DC0_PG1", "DC0_DVPG0", "DC0_DVPG1"} == set(networks)  # no uplink group
    assert networks["DC0_DVPG0"].kind == Network.Kind.DISTRIBUTED
    assert networks["DC0_DVPG0"].switch == "DVS0"
    assert networks["DC0_PG1"].kind == Network.Kind.STANDARD
    assert networks["DC0_PG1"].vlan == "101"
    assert networks["DC0_PG1"].hosts.count() == 4
    attached = VirtualMachine.objects.filter(connection=connection, networks__kind=Network.Kind.DISTRIBUTED)
    assert attached.distinct().count() > 0


def test_vms_and_their_disks(vcsim_lab):
    connection = connection_for(vcsim_lab)
    assert sync_connection(connection.pk).ok

    vm = VirtualMachine.objects.get(connection=connection, name="DC0_VM005")
    assert vm.folder == "Folder0/Folder1"
    assert vm.tags == ["backup-policy=silver"]
    assert vm.num_cpu == 2 and vm.memory_mb == 3072
    assert vm.power_state == VirtualMachine.PowerState.OFF
    disks = list(vm.disks.order_by("capacity_bytes"))
    assert [d.capacity_bytes for d in disks] == [8 << 30, 100 << 30]
    assert disks[0].file_name == "[DC0_C0_H0_local] DC0_VM005/DC0_VM005.vmdk"
    assert disks[0].datastore.name == "DC0_C0_H0_local" and not disks[0].thin
    assert disks[1].thin and disks[1].disk_mode == "independent_persistent"
    assert vm.provisioned_bytes == 108 << 30
    assert vm.datastores.count() == 2

    tracked = VirtualMachine.objects.get(connection=connection, name="DC0_VM003")
    assert tracked.cbt_enabled and tracked.power_state == VirtualMachine.PowerState.ON
    assert all(d.cbt_enabled for d in tracked.disks.all())
    assert VirtualDisk.objects.filter(vm__connection=connection).count() == 32 + 8  # every 4th VM has 2 disks


def test_resync_keeps_ids_and_marks_vanished(vcsim_own):
    connection = connection_for(vcsim_own)
    assert sync_connection(connection.pk).ok
    ids = dict(VirtualMachine.objects.filter(connection=connection).values_list("moref", "pk"))
    host_ids = dict(Host.objects.filter(connection=connection).values_list("moref", "pk"))
    victim = VirtualMachine.objects.get(connection=connection, name="DC0_VM002")

    _destroy_vm(vcsim_own, victim.moref)
    with VSphereConnector(params_for(vcsim_own)) as connector:
        inv = connector.fetch_inventory()
        host = next(h for h in inv.hosts if h.cluster)
        datastore = next(d for d in inv.datastores if host.moref in d.hosts)
        new_moref = connector.create_vm(NewVmSpec(
            name="added-later", datacenter=inv.datacenters[0].moref, host=host.moref, datastore=datastore.moref,
            disk_capacities=[1 << 30],
        ))
    result = sync_connection(connection.pk)

    assert result.ok, result.message
    after = dict(VirtualMachine.objects.filter(connection=connection).values_list("moref", "pk"))
    assert {m: after[m] for m in ids} == ids  # same rows, same ids
    assert dict(Host.objects.filter(connection=connection).values_list("moref", "pk")) == host_ids
    victim.refresh_from_db()
    assert victim.vanished_at is not None
    added = VirtualMachine.objects.get(connection=connection, moref=new_moref)
    assert added.name == "added-later" and added.vanished_at is None and added.disks.count() == 1
    assert live(VirtualMachine, connection).count() == 32


def test_odd_names_and_disks_over_2_tb(vcsim_own):
    connection = connection_for(vcsim_own)
    odd = "db \"prod\" / 'eu' \\ 100% ünïcødé ✓"
    with VSphereConnector(params_for(vcsim_own)) as connector:
        inv = connector.fetch_inventory()
        host = inv.hosts[0]
        datastore = next(d for d in inv.datastores if host.moref in d.hosts)
        connector.create_vm(NewVmSpec(
            name=odd, datacenter=inv.datacenters[0].moref, host=host.moref, datastore=datastore.moref,
            disk_capacities=[3 * TB, 62 * TB], folder="Folder0",
        ))

    result = sync_connection(connection.pk)

    assert result.ok, result.message
    vm = VirtualMachine.objects.get(connection=connection, name=odd)
    assert vm.folder == "Folder0"
    assert sorted(vm.disks.values_list("capacity_bytes", flat=True)) == [3 * TB, 62 * TB]
    assert vm.provisioned_bytes == 65 * TB


def test_paging_gives_the_same_inventory(vcsim_lab):
    with VSphereConnector(params_for(vcsim_lab)) as connector:
        whole = connector.fetch_inventory()
    paged_params = params_for(vcsim_lab)
    paged_params.options = {"page_size": 7}
    with VSphereConnector(paged_params) as connector:
        paged = connector.fetch_inventory()

    assert paged.round_trips > whole.round_trips + 5  # ContinueRetrievePropertiesEx really paged
    assert sorted(v.moref for v in paged.vms) == sorted(v.moref for v in whole.vms)
    assert sorted((d.moref, tuple(d.hosts)) for d in paged.datastores) == sorted(
        (d.moref, tuple(d.hosts)) for d in whole.datastores
    )


def test_500_vms_on_20_hosts(vcsim_factory):
    simulator = vcsim_factory(LARGE)
    connection = connection_for(simulator)

    result = sync_connection(connection.pk)

    assert result.ok, result.message
    assert live(VirtualMachine, connection).count() == 500
    assert live(Host, connection).count() == 20
    assert VirtualDisk.objects.filter(vm__connection=connection).count() == 500 + 125
    assert result.round_trips <= 5
    # an unchanged re-sync rewrites nothing and keeps every id
    ids = set(VirtualMachine.objects.filter(connection=connection).values_list("pk", flat=True))
    assert sync_connection(connection.pk).ok
    assert set(VirtualMachine.objects.filter(connection=connection).values_list("pk", flat=True)) == ids


def _destroy_vm(simulator, moref: str) -> None:
    """Remove a VM behind VA Fleet's back, as an administrator would in vCenter."""
    si = SmartConnect(host=simulator.host, port=simulator.port, user=simulator.user, pwd=simulator.password,
                      disableSslCertValidation=True)
    try:
        collector = Collector(si)
        vm = vim.VirtualMachine(moref, si._stub)
        if collector.properties(vm, ["runtime.powerState"])["runtime.powerState"] == "poweredOn":
            collector.wait(vm.PowerOffVM_Task(), timeout=30)
        collector.wait(vm.Destroy_Task(), timeout=30)
    finally:
        Disconnect(si)


def test_standalone_esxi(vcsim_factory):
    simulator = vcsim_factory(esx=True, vms=6)
    connection = connection_for(simulator)

    result = sync_connection(connection.pk)

    assert result.ok, result.message
    connection.refresh_from_db()
    assert connection.product.startswith("VMware ESXi")
    (host,) = live(Host, connection)
    assert host.cluster is None
    assert live(VirtualMachine, connection).filter(host=host).count() == 6
    assert {d.name for d in live(Datastore, connection).filter(hosts=host)} == {
        "ha-datacenter_shared0", "ha-datacenter_shared1", "localhost.localdomain_local",
    }


def test_two_datacenters_keep_their_objects_apart(vcsim_factory):
    simulator = vcsim_factory(datacenters=2, clusters=1, cluster_hosts=2, standalone_hosts=0, vms=5)
    connection = connection_for(simulator)

    assert sync_connection(connection.pk).ok

    for dc in live(Datacenter, connection):
        vms = VirtualMachine.objects.filter(connection=connection, datacenter=dc)
        assert vms.count() == 5
        assert {vm.name.split("_")[0] for vm in vms} == {dc.name}
        assert all(vm.host.datacenter_id == dc.pk for vm in vms.select_related("host"))
        assert set(Datastore.objects.filter(datacenter=dc).values_list("hosts__datacenter", flat=True)) == {dc.pk}

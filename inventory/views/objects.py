"""Portal pages of the synced inventory: hosts, datastores, networks and VMs (lists and details).

Every list runs a fixed number of queries whatever its size: related rows come through
select_related / prefetch_related / annotations, never one query per row.
"""

from __future__ import annotations

from django.db.models import Prefetch, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from appliances.services import protection_for_vm
from core.rbac import VIEW
from core.views import role_required
from inventory.filtersets import DatastoreFilterSet, HostFilterSet, NetworkFilterSet, VirtualMachineFilterSet
from inventory.models import Connection, Datastore, Host, Network, VirtualDisk, VirtualMachine
from inventory.views.listing import ListSpec, count_of, narrowing, render_list

# How many related VMs a detail page lists before linking to the filtered VM list.
DETAIL_VM_LIMIT = 25


def _connections() -> list:
    return list(Connection.objects.only("pk", "name").order_by("name"))


def _present(request: HttpRequest):
    """Objects a sync no longer found are hidden unless the user asks for them."""
    return Q() if request.GET.get("vanished") else Q(vanished_at__isnull=True)


HOST_STATES = ("connected", "disconnected", "notResponding")

HOSTS = ListSpec(
    template="inventory/host_list.html",
    rows_template="inventory/_host_rows.html",
    filterset_class=HostFilterSet,
    sorts={
        "name": ("name",),
        "connection": ("connection__name", "name"),
        "cluster": ("cluster__name", "name"),
        "state": ("connection_state", "name"),
        "cpu": ("cpu_cores",),
        "memory": ("memory_bytes",),
        "vms": ("vm_count",),
    },
)


@role_required(VIEW)
def host_list(request: HttpRequest) -> HttpResponse:
    hosts = (
        Host.objects.filter(_present(request))
        .select_related("connection", "datacenter", "cluster")
        .defer("connection__password")
        .annotate(
            vm_count=count_of(VirtualMachine, "host", vanished_at__isnull=True),
            datastore_count=count_of(Datastore.hosts.through, "host"),
        )
    )
    return render_list(request, HOSTS, hosts, connections=_connections(), host_states=HOST_STATES)


@role_required(VIEW)
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    hosts = Host.objects.select_related("connection", "datacenter", "cluster").defer("connection__password")
    host = get_object_or_404(hosts, pk=pk)
    vms = host.vms.filter(vanished_at__isnull=True).order_by("name")
    context = {
        "host": host,
        # a subquery: Count("hosts") here would count only this host, through the filter's own join
        "datastores": host.datastores.annotate(host_count=count_of(Datastore.hosts.through, "datastore")).order_by(
            "name"
        ),
        "networks": host.networks.order_by("name"),
        "vms": vms[:DETAIL_VM_LIMIT],
        "vm_total": vms.count(),
        "all_vms_url": f"{reverse('inventory:vm_list')}?host={host.pk}",
    }
    return render(request, "inventory/host_detail.html", context)


DATASTORES = ListSpec(
    template="inventory/datastore_list.html",
    rows_template="inventory/_datastore_rows.html",
    filterset_class=DatastoreFilterSet,
    sorts={
        "name": ("name",),
        "connection": ("connection__name", "name"),
        "type": ("type", "name"),
        "capacity": ("capacity_bytes",),
        "free": ("free_bytes",),
        "hosts": ("host_count",),
        "vms": ("vm_count",),
    },
)


@role_required(VIEW)
def datastore_list(request: HttpRequest) -> HttpResponse:
    datastores = (
        Datastore.objects.filter(_present(request))
        .select_related("connection", "datacenter")
        .defer("connection__password")
        .annotate(
            host_count=count_of(Datastore.hosts.through, "datastore"),
            vm_count=count_of(VirtualMachine.datastores.through, "datastore"),
        )
        .prefetch_related(Prefetch("hosts", queryset=Host.objects.only("pk", "name").order_by("name")))
    )
    narrowed_by = narrowing(request, (("host", Host, "Mounted by"),))
    return render_list(request, DATASTORES, datastores, connections=_connections(), narrowed_by=narrowed_by)


@role_required(VIEW)
def datastore_detail(request: HttpRequest, pk: int) -> HttpResponse:
    datastores = Datastore.objects.select_related("connection", "datacenter").defer("connection__password")
    datastore = get_object_or_404(datastores, pk=pk)
    hosts = list(datastore.hosts.select_related("cluster").order_by("name"))
    vms = datastore.vms.filter(vanished_at__isnull=True).select_related("host").order_by("name")
    context = {
        "datastore": datastore,
        "hosts": hosts,
        "shared": len(hosts) > 1,
        "vms": vms[:DETAIL_VM_LIMIT],
        "vm_total": vms.count(),
        "all_vms_url": f"{reverse('inventory:vm_list')}?datastore={datastore.pk}",
    }
    return render(request, "inventory/datastore_detail.html", context)


NETWORKS = ListSpec(
    template="inventory/network_list.html",
    rows_template="inventory/_network_rows.html",
    filterset_class=NetworkFilterSet,
    sorts={
        "name": ("name",),
        "connection": ("connection__name", "name"),
        "kind": ("kind", "name"),
        "switch": ("switch", "name"),
        "vlan": ("vlan", "name"),
        "vms": ("vm_count",),
    },
)


@role_required(VIEW)
def network_list(request: HttpRequest) -> HttpResponse:
    networks = (
        Network.objects.filter(_present(request))
        .select_related("connection", "datacenter")
        .defer("connection__password")
        .annotate(
            vm_count=count_of(VirtualMachine.networks.through, "network"),
            host_count=count_of(Network.hosts.through, "network"),
        )
    )
    return render_list(request, NETWORKS, networks, connections=_connections(), kinds=Network.Kind.choices)


VMS = ListSpec(
    template="inventory/vm_list.html",
    rows_template="inventory/_vm_rows.html",
    filterset_class=VirtualMachineFilterSet,
    sorts={
        "name": ("name",),
        "connection": ("connection__name", "name"),
        "host": ("host__name", "name"),
        "power": ("power_state", "name"),
        "guest": ("guest_os", "name"),
        "cpu": ("num_cpu",),
        "memory": ("memory_mb",),
        "size": ("provisioned_bytes",),
    },
)


@role_required(VIEW)
def vm_list(request: HttpRequest) -> HttpResponse:
    vms = (
        VirtualMachine.objects.filter(_present(request))
        .select_related("connection", "host")
        .defer("connection__password")
    )
    linked = (("host", Host, "Host"), ("datastore", Datastore, "Datastore"), ("network", Network, "Network"))
    narrowed_by = narrowing(request, linked)
    return render_list(
        request, VMS, vms, connections=_connections(), power_states=VirtualMachine.PowerState.choices,
        narrowed_by=narrowed_by,
    )


RESTORE_POINTS_SHOWN = 5  # the VM page's latest points; the restore point list has them all


@role_required(VIEW)
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    vm = get_object_or_404(
        VirtualMachine.objects.select_related("connection", "datacenter", "host", "host__cluster").defer(
            "connection__password"
        ),
        pk=pk,
    )
    disks = VirtualDisk.objects.filter(vm=vm).select_related("datastore").order_by("vanished_at", "key")
    context = {
        "vm": vm,
        "disks": disks,
        "disk_total": sum(d.capacity_bytes for d in disks if d.vanished_at is None),
        "datastores": vm.datastores.annotate(host_count=count_of(Datastore.hosts.through, "datastore")).order_by(
            "name"
        ),
        "networks": vm.networks.order_by("name"),
        "protection": protection_for_vm(vm),
        "restore_points": vm.restore_points.select_related("repository").order_by("-taken")[:RESTORE_POINTS_SHOWN],
        "restore_point_count": vm.restore_points.count(),
    }
    return render(request, "inventory/vm_detail.html", context)

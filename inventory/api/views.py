"""Inventory API: connections (CRUD plus test and sync) and read-only inventory lists.

Every list runs a constant number of queries (select_related / prefetch_related), whatever
the number of rows; filters are the FilterSets the portal uses.
"""

from __future__ import annotations

import logging

from django.db.models import BooleanField, Count, ExpressionWrapper, Prefetch, Q
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import audit
from core.models import AuditEntry
from core.secrets import SecretUnreadable
from inventory import filtersets
from inventory.api import serializers
from inventory.connectors.base import CertificateMismatch, ConnectorError
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
from inventory.services import test_connection
from inventory.tasks import request_sync

log = logging.getLogger(__name__)

INVENTORY_ORDERING = ("name", "id", "first_seen", "last_seen", "vanished_at")


@extend_schema_view(
    test=extend_schema(
        request=None,
        responses={
            200: serializers.ConnectionTestResultSerializer,
            502: OpenApiResponse(serializers.ConnectionErrorSerializer, description="The server refused or failed."),
        },
    ),
    sync=extend_schema(
        request=None,
        responses={
            202: serializers.MessageSerializer,
            409: OpenApiResponse(serializers.MessageSerializer, description="A sync is already running."),
        },
    ),
)
class ConnectionViewSet(viewsets.ModelViewSet):
    """Hypervisor connections. Viewers read, operators test and sync, administrators change them."""

    serializer_class = serializers.ConnectionSerializer
    filterset_class = filtersets.ConnectionFilterSet
    search_fields = ("name", "host")
    ordering_fields = ("name", "kind", "host", "status", "last_sync_finished", "created")
    operator_actions = ("test", "sync")

    def get_queryset(self):
        # The password is never read for display: lists work even if a secret cannot be decrypted.
        stored = ExpressionWrapper(~Q(password=""), output_field=BooleanField())
        return Connection.objects.defer("password").annotate(password_stored=stored)

    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Connect and log in; returns what the server is, or the sentence that says why not."""
        connection = self.get_object()
        try:
            info = test_connection(connection)
        except CertificateMismatch as exc:
            # The client shows the fingerprint so the user can check and pin it.
            body = {"detail": str(exc), "code": exc.code, "thumbprint": exc.thumbprint}
            return Response(body, status=status.HTTP_502_BAD_GATEWAY)
        except ConnectorError as exc:
            return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_502_BAD_GATEWAY)
        except SecretUnreadable as exc:
            return secret_unreadable(exc)
        except Exception as exc:  # a bug or an unexpected reply: a sentence instead of a bare server error
            log.exception("test of connection %s failed", connection)
            body = {"detail": f"The test failed unexpectedly ({exc}); see the server log for details.", "code": "error"}
            return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
        return Response({"product": info.product, "version": info.version, "thumbprint": info.thumbprint})

    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Queue a sync of this connection's inventory."""
        connection = self.get_object()
        if not request_sync(connection, request.user):
            return Response(
                {"detail": f"A sync of {connection.name} is already running; wait for it to finish."},
                status=status.HTTP_409_CONFLICT,
            )
        audit.record(AuditEntry.Action.OPERATION, connection, message="sync requested")
        return Response({"detail": f"Sync of {connection.name} queued."}, status=status.HTTP_202_ACCEPTED)


def secret_unreadable(exc: SecretUnreadable) -> Response:
    return Response(
        {"detail": f"The connection's password cannot be read: {exc}.", "code": "secret_unreadable"},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


class InventoryViewSet(viewsets.ReadOnlyModelViewSet):
    """Objects found by syncs: read-only here, they change when the hypervisor changes."""

    search_fields = ("name",)
    ordering_fields = INVENTORY_ORDERING


class DatacenterViewSet(InventoryViewSet):
    queryset = Datacenter.objects.all()
    serializer_class = serializers.DatacenterSerializer
    filterset_fields = ("connection",)


class ClusterViewSet(InventoryViewSet):
    queryset = Cluster.objects.all()
    serializer_class = serializers.ClusterSerializer
    filterset_fields = ("connection", "datacenter")


class HostViewSet(InventoryViewSet):
    queryset = Host.objects.select_related("cluster")
    serializer_class = serializers.HostSerializer
    filterset_class = filtersets.HostFilterSet
    ordering_fields = (*INVENTORY_ORDERING, "connection_state", "power_state", "cpu_cores", "memory_bytes")


class DatastoreViewSet(InventoryViewSet):
    queryset = Datastore.objects.prefetch_related(Prefetch("hosts", queryset=Host.objects.only("id", "name")))
    serializer_class = serializers.DatastoreSerializer
    filterset_class = filtersets.DatastoreFilterSet
    ordering_fields = (*INVENTORY_ORDERING, "type", "capacity_bytes", "free_bytes", "accessible")


class NetworkViewSet(InventoryViewSet):
    queryset = Network.objects.all()
    serializer_class = serializers.NetworkSerializer
    filterset_class = filtersets.NetworkFilterSet
    ordering_fields = (*INVENTORY_ORDERING, "kind", "switch", "vlan")


class VirtualMachineViewSet(InventoryViewSet):
    queryset = VirtualMachine.objects.select_related("host").prefetch_related(
        Prefetch("datastores", queryset=Datastore.objects.only("id", "name")),
        Prefetch("networks", queryset=Network.objects.only("id", "name")),
    )
    filterset_class = filtersets.VirtualMachineFilterSet
    search_fields = ("name", "guest_os", "folder", "uuid")
    ordering_fields = (
        *INVENTORY_ORDERING, "power_state", "guest_os", "num_cpu", "memory_mb", "provisioned_bytes", "host__name",
    )

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            disks = VirtualDisk.objects.select_related("datastore").order_by("key")
            queryset = queryset.prefetch_related(Prefetch("disks", queryset=disks))
        return queryset

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.VirtualMachineDetailSerializer
        return serializers.VirtualMachineSerializer


class SummaryView(APIView):
    """What the dashboard shows: connections by status and counts of present hosts, datastores and VMs."""

    @extend_schema(responses=serializers.SummarySerializer)
    def get(self, request: Request) -> Response:
        by_status = dict(Connection.objects.values_list("status").annotate(n=Count("pk")).order_by())
        present = Q(vanished_at__isnull=True)
        vms = VirtualMachine.objects.filter(present).aggregate(
            total=Count("pk"),
            powered_on=Count("pk", filter=Q(power_state=VirtualMachine.PowerState.ON)),
            powered_off=Count("pk", filter=Q(power_state=VirtualMachine.PowerState.OFF)),
        )
        body = {
            "connections": {value: by_status.get(value, 0) for value in Connection.Status.values},
            "hosts": Host.objects.filter(present).count(),
            "datastores": Datastore.objects.filter(present).count(),
            "vms": vms,
        }
        return Response(serializers.SummarySerializer(body).data)
